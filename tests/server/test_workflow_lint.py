"""Every shipped API workflow passes comfy-lint --strict (node types, required and undeclared inputs,
combo values, links and their types) against the object_info of a real ComfyUI server of the version
under test, with the workflow's model files present (empty placeholders: nothing is loaded) and its
photo and clip in the input folder. A workflow that needs a newer ComfyUI skips with the reason; the
inputs that 0.3.64 does not declare (and ignores: the workflows run there, see
test_workflows_through_server.py) are listed per workflow (`ignored_by_0_3_64` in workflow_layouts.py)
and in docs/workflows.md, and nothing else may fail."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import pytest

from conftest import COMFYUI, comfyui_version

pytestmark = pytest.mark.comfy

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "workflows" / "api").glob("*.json"))


@pytest.fixture(scope="module")
def lint_server(tmp_path_factory):
    from comfy_server import ComfyServer
    from workflow_layouts import MODEL_SOURCES
    base = tmp_path_factory.mktemp("comfy_lint")
    for name, source in MODEL_SOURCES.items():
        folder = base / "models" / source["directory"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    (base / "input").mkdir(exist_ok=True)
    for name in ("example.png", "example.mp4"):
        (base / "input" / name).write_bytes(b"")
    server = ComfyServer(COMFYUI, base)
    yield server
    server.stop()


def _comfy_lint() -> str:
    found = shutil.which("comfy-lint") or str(pathlib.Path(__import__("sys").executable).parent / "comfy-lint")
    if not pathlib.Path(found).exists():
        pytest.fail("comfy-lint is not installed (pip install comfy-lint; .ci/run installs it)")
    return found


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_api_workflow_passes_comfy_lint_strict(lint_server, path):
    from workflow_layouts import LAYOUTS, missing_in_this_comfyui
    reason = missing_in_this_comfyui(path.stem)
    if reason:
        pytest.skip(reason)
    result = subprocess.run([_comfy_lint(), "--strict", "--json", "--server", lint_server.url, str(path)],
                            capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout)
    problems = [d for entry in report["files"] for d in entry["diagnostics"]]
    allowed = set(LAYOUTS[path.stem].get("ignored_by_0_3_64", ())) if comfyui_version().startswith("0.3.") else set()
    unexpected = [p for p in problems
                  if not (p.get("rule") == "extraneous-input" and f"{p.get('class_type')}.{p.get('field')}" in allowed)]
    assert not unexpected, json.dumps(unexpected, indent=1)
    if not problems:
        assert result.returncode == 0, result.stdout + result.stderr
