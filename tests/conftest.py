"""Test setup: the pack is imported as the package `concept_attention_pack`; ComfyUI is found
through COMFYUI_PATH (or /opt/ComfyUI). Tests marked `comfy` skip, with one reason, without it."""
from __future__ import annotations

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACK = "concept_attention_pack"
TESTS = pathlib.Path(__file__).resolve().parent


def comfyui_path() -> pathlib.Path | None:
    """COMFYUI_PATH when set (and only it), else /opt/ComfyUI when it holds a checkout."""
    candidate = pathlib.Path(os.environ.get("COMFYUI_PATH") or "/opt/ComfyUI")
    return candidate if (candidate / "comfy" / "model_patcher.py").is_file() else None


COMFYUI = comfyui_path()
SKIP_REASON = ("ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests') "
               "to run the integration tests")

# The tests by layer (unit: pure torch; comfy: inside ComfyUI; server: a real server; browser: its
# frontend) and their shared support (tiny models per family, references, stand-in nodes, the test
# server): importable by name from any of them.
for _folder in ("support", "unit", "comfy", "server", "browser"):
    if str(TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(TESTS / _folder))
from pack import load_pack  # noqa: E402  (tests/support: the one loader of the pack)

load_pack()


def _start_comfy(path: pathlib.Path) -> None:
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)
    # ComfyUI's nodes.py, now, while ComfyUI is first on sys.path: pytest later puts the repo root
    # (python -m) and tests/ before it, and the pack's own `nodes` package would then shadow it for
    # tests that `import nodes` (e.g. ConditioningSetArea) when no earlier test imported ComfyUI's
    import nodes  # noqa: F401


if COMFYUI is not None:
    _start_comfy(COMFYUI)


def comfyui_version() -> str:
    version_file = COMFYUI / "comfyui_version.py" if COMFYUI is not None else None
    if version_file is None or not version_file.is_file():
        return "unknown"
    return version_file.read_text().split("=")[-1].strip().strip('"')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ComfyUI server with the pack and the tiny stand-in loaders, one per test module."""
    from comfy_server import ComfyServer
    server = ComfyServer(COMFYUI, tmp_path_factory.mktemp("comfy_base"))
    yield server
    server.stop()


def pytest_report_header(config):
    if COMFYUI is None:
        return f"concept attention: {SKIP_REASON}"
    return f"concept attention: ComfyUI {comfyui_version()} at {COMFYUI}"


def pytest_collection_modifyitems(config, items):
    if COMFYUI is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "comfy" in item.keywords:
            item.add_marker(skip)


# Under CI=true a ComfyUI test that skips fails the run: CI must prove the integration tests ran.
_skipped_comfy_tests: list[str] = []


# Tests of the families only 0.29 has (Flux.2, Chroma on Flux blocks) skip on 0.3.64 by design
# (tiny_flux.FAMILIES_SKIP_REASON); CI runs them on 0.29, so that skip on a 0.3.x checkout does not
# fail the run (on any other version it does).
# Z-Image and Krea 2 likewise (tiny_single_stream.VERSION_SKIP_REASON): 0.3.64 has no Krea 2 and its
# NextDiT does not mark its layers (that refusal is tested on 0.3.64).
FAMILIES_VERSION_GATES = ("has no Flux.2/Chroma-on-Flux classes", "has no single-stream (Z-Image, Krea 2) support",
                          "has no HunyuanVideo 1.5 class", "has no CogVideoX class")


def pytest_runtest_logreport(report):
    gated = (any(gate in str(report.longrepr) for gate in FAMILIES_VERSION_GATES)
             and comfyui_version().startswith("0.3."))
    if report.skipped and "comfy" in report.keywords and not gated:
        _skipped_comfy_tests.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") == "true" and _skipped_comfy_tests:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("CI") == "true" and _skipped_comfy_tests:
        terminalreporter.write_line(
            f"CI: {len(_skipped_comfy_tests)} ComfyUI test(s) skipped, which fails the run under CI=true: "
            + ", ".join(_skipped_comfy_tests[:5]), red=True)
