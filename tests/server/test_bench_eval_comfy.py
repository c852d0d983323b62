"""`concept_masks.py eval` end to end against real ComfyUI with the tiny stand-in models: a
synthetic PascalVOC tree (real formats, tests/unit/test_bench_datasets.py) scored through a real
server's HTTP API and in-process; both paths must give the same report. The tiny Flux has two
double blocks, so `--blocks all` replaces the protocol's 14-17/14-18 (the report says so)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import COMFYUI, PACK, ROOT

pytest.importorskip("h5py", reason="the bench extra (h5py) is needed")
from test_bench_datasets import voc_items, write_voc  # noqa: E402

pytestmark = pytest.mark.comfy


def tiny_workflow() -> dict:
    import importlib
    engine = importlib.import_module(PACK + ".cli.engine")
    workflow = importlib.import_module(PACK + ".cli.workflow")
    graph = workflow.default_workflow(engine.Settings())
    graph["unet"] = {"class_type": "TinyFluxLoader", "inputs": {"seed": 0, "schnell": True}}
    graph["clip"] = {"class_type": "TinyFluxClipLoader", "inputs": {"seed": 0}}
    graph["vae"] = {"class_type": "TinyVAELoader", "inputs": {}}
    return graph


def run_tool(*args):
    command = [sys.executable, str(ROOT / "concept_masks.py"), *map(str, args)]
    return subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=600)


def test_eval_on_a_server_and_in_process_gives_one_report(server, tmp_path):
    voc = write_voc(tmp_path / "data", voc_items())
    workflow = tmp_path / "tiny_workflow.json"
    workflow.write_text(json.dumps(tiny_workflow()))
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT / "tests" / "support" / "stand_in_nodes", base / "custom_nodes" / "test_stand_ins")
    common = ["eval", voc, "--workflow", workflow, "--blocks", "all"]
    on_server = run_tool(*common, "--out", tmp_path / "server", "--server", server.url)
    in_process = run_tool(*common, "--out", tmp_path / "local", "--comfyui", COMFYUI, "--base-directory", base)
    assert on_server.returncode == 0, on_server.stderr[-3000:]
    assert in_process.returncode == 0, in_process.stderr[-3000:]
    reports = [json.loads((tmp_path / where / "report.json").read_text())["splits"] for where in ("server", "local")]
    for splits in reports:
        assert [s["benchmark"] for s in splits] == ["voc-single", "voc-multi"]
        assert [(s["scored"], s["failed"]) for s in splits] == [(2, 0), (3, 0)]
        for split in splits:
            assert split["protocol"]["changed_from_protocol"] == {"blocks": "all"}
            assert 0 <= split["metrics"]["accuracy"] <= 1 and 0 <= split["metrics"]["miou"] <= 1
    for served, local in zip(*reports):
        assert served["metrics"] == local["metrics"], served["benchmark"]
    assert "pixel accuracy" in on_server.stdout and "87.85" in on_server.stdout  # Table 1 beside ours
