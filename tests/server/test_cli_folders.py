"""The command-line tool (concept_masks.py mask) against real ComfyUI: two servers on localhost
with the tiny stand-in loaders, a folder of 20 pictures of mixed sizes, a server killed mid-run, an
interrupted run restarted, bad inputs, and the in-process path giving the server path's masks.

The tool runs as a user runs it (a subprocess, `python <pack>/concept_masks.py`) with `--workflow`:
the default workflow with its three loaders swapped for the stand-ins."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import COMFYUI, PACK, ROOT

pytestmark = pytest.mark.comfy

CONCEPTS = ["sky", "dog", "background"]
SIZES = [(64, 64), (100, 75), (128, 96), (48, 80), (96, 160), (72, 72), (160, 64), (33, 47), (200, 120),
         (80, 80)] * 2


def cli():
    import importlib
    return importlib.import_module(PACK + ".cli.engine"), importlib.import_module(PACK + ".cli.workflow")


def tiny_workflow() -> dict:
    """The tool's default workflow with the stand-in loaders instead of UNET/DualCLIP/VAE loaders."""
    engine, workflow = cli()
    graph = workflow.default_workflow(engine.Settings())
    graph["unet"] = {"class_type": "TinyFluxLoader", "inputs": {"seed": 0, "schnell": True}}
    graph["clip"] = {"class_type": "TinyFluxClipLoader", "inputs": {"seed": 0}}
    graph["vae"] = {"class_type": "TinyVAELoader", "inputs": {}}
    return graph


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    pictures = root / "pictures"
    (pictures / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(SIZES):
        pixels = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        pixels[: h // 2] = [40, 90, 200]  # a flat "sky" half, so maps are not pure noise
        folder = pictures / "sub" if i % 4 == 0 else pictures
        Image.fromarray(pixels).save(folder / f"pic{i:02d}.{'jpg' if i % 3 == 0 else 'png'}", quality=95)
    workflow_file = root / "tiny_workflow.json"
    workflow_file.write_text(json.dumps(tiny_workflow()))
    base = root / "base"  # a ComfyUI --base-directory with the stand-in loaders, for the in-process runs
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT / "tests" / "support" / "stand_in_nodes", base / "custom_nodes" / "test_stand_ins")
    return {"root": root, "pictures": pictures, "workflow": workflow_file, "base": base}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from comfy_server import ComfyServer
    started: list = [None, None]

    def start(i):
        started[i] = ComfyServer(COMFYUI, tmp_path_factory.mktemp(f"server{i}"))
    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(started), "a ComfyUI server did not start"
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop()


def run_cli(*args, cwd=None, wait=True):
    command = [sys.executable, str(ROOT / "concept_masks.py"), *map(str, args)]
    env = dict(os.environ)
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def manifest(out: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def read_masks(out: pathlib.Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in sorted((out / "masks").rglob("*.png"))}


def test_two_servers_write_every_mask_once_and_a_complete_manifest(dataset, servers, tmp_path):
    out = tmp_path / "out"
    result = run_cli("mask", dataset["pictures"], "--concepts", ", ".join(CONCEPTS), "--out", out,
                     "--workflow", dataset["workflow"], "--server", servers[0].url, "--server", servers[1].url,
                     "--segmentation")
    assert result.returncode == 0, result.stderr
    records = manifest(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 20 and all(r.get("error") is None for r in records)
    assert {r["source"] for r in records} == {servers[0].url, servers[1].url}  # both servers worked
    written = sorted((out / "masks").rglob("*.png"))
    assert len(written) == 20 * len(CONCEPTS)  # one file per picture and concept, nothing else
    assert sorted(f for r in records for f in r["masks"].values()) == sorted(
        p.relative_to(out).as_posix() for p in written)
    sizes = {r["key"]: tuple(r["size"]) for r in records}
    for record in records:
        picture = Image.open(record["input"])
        assert sizes[record["key"]] == picture.size
        stack = np.stack([np.asarray(Image.open(out / record["masks"][c])) for c in CONCEPTS])
        assert stack.shape == (3, picture.size[1], picture.size[0])  # at the picture's own size
        assert set(np.unique(stack)) <= {0, 255} and (stack.sum(0) == 255).all()  # exclusive: a partition
        assert Image.open(out / record["segmentation"]).size == picture.size
        assert record["concepts"] == CONCEPTS and record["seeds"] == [0] and record["seconds"] > 0
    assert "sub/pic00.jpg" in sizes and "done: 20 masked" in result.stderr


def test_in_process_gives_the_servers_masks(dataset, servers, tmp_path):
    pictures = [dataset["pictures"] / name for name in ("pic01.png", "pic02.png", "pic07.png", "pic03.jpg")]
    common = ["--concepts", ", ".join(CONCEPTS), "--workflow", dataset["workflow"], "--mask-mode", "soft",
              "--seeds", "2"]
    on_server = run_cli("mask", *pictures, *common, "--out", tmp_path / "server", "--server", servers[0].url)
    in_process = run_cli("mask", *pictures, *common, "--out", tmp_path / "local", "--comfyui", COMFYUI,
                         "--base-directory", dataset["base"])
    assert on_server.returncode == 0 and in_process.returncode == 0, on_server.stderr + in_process.stderr
    assert "loaded in-process" in in_process.stderr
    server_masks, local_masks = read_masks(tmp_path / "server"), read_masks(tmp_path / "local")
    assert len(server_masks) == 4 * len(CONCEPTS) and server_masks.keys() == local_masks.keys()
    for name, mask in server_masks.items():
        np.testing.assert_array_equal(mask, local_masks[name], err_msg=name)
    # soft maps: shares of each pixel, not all one concept; 8-bit (truncated) and, for a picture
    # whose sides are not multiples of 16, resized back to its size (each value rounded)
    for picture in pictures:
        stack = np.stack([server_masks[f"masks/{picture.name}.{c}.png"].astype(int) for c in CONCEPTS])
        assert (np.abs(stack.sum(0) - 255) <= len(CONCEPTS)).all()
        assert len({int(a) for a in stack.argmax(0).ravel()}) > 1 or stack.std() > 0
    assert {r["source"] for r in manifest(tmp_path / "local")} == {"in-process"}


def test_masks_follow_the_picture_by_default_as_the_node_does_with_one(dataset, servers, tmp_path):
    """The tool connects the picture, so its default refine is the node's 'auto' with a picture
    (guided); --refine none gives the upsampled token grid instead."""
    picture = dataset["pictures"] / "pic02.png"
    common = ["--concepts", ", ".join(CONCEPTS), "--workflow", dataset["workflow"], "--mask-mode", "soft",
              "--server", servers[0].url]
    default = run_cli("mask", picture, *common, "--out", tmp_path / "default")
    plain = run_cli("mask", picture, *common, "--refine", "none", "--out", tmp_path / "none")
    assert default.returncode == 0 and plain.returncode == 0, default.stderr + plain.stderr
    assert manifest(tmp_path / "default")[0]["settings"]["refine"] == "guided"
    guided, upsampled = read_masks(tmp_path / "default"), read_masks(tmp_path / "none")
    assert guided.keys() == upsampled.keys()
    differences = [np.abs(guided[k].astype(int) - upsampled[k].astype(int)).max() for k in guided]
    assert max(differences) > 8, differences


def test_default_workflow_in_process_names_the_missing_model_file(dataset, tmp_path):
    """The real user path (standard loaders, no --workflow) on a ComfyUI without Flux files."""
    result = run_cli("mask", dataset["pictures"] / "pic01.png", "--concepts", "sky, background", "--out",
                     tmp_path / "out", "--comfyui", COMFYUI, "--base-directory", dataset["base"])
    assert result.returncode == 1
    assert "ComfyUI refused the workflow" in result.stderr and "flux1-schnell.safetensors" in result.stderr
    assert "A model file is missing" in result.stderr and "not found" not in result.stderr


def test_interrupted_run_restarted_redoes_nothing_it_finished(dataset, servers, tmp_path):
    out = tmp_path / "out"
    args = ["mask", dataset["pictures"], "--concepts", ", ".join(CONCEPTS), "--out", out, "--workflow",
            dataset["workflow"], "--server", servers[0].url, "--in-flight", "4", "--seeds", "8"]
    history_before = set(servers[0].get("/history"))
    first = run_cli(*args, wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if (out / "manifest.jsonl").is_file() and len(manifest(out)) >= 5:
            first.send_signal(signal.SIGINT)  # Ctrl-C in the middle
            break
        time.sleep(0.02)
    stderr = first.communicate(timeout=60)[1]
    assert first.returncode == 130 and "run the same command again" in stderr, stderr
    # the prompts it still had on the server (4 in flight: one running, the others waiting) were
    # taken off: the waiting ones never run. The tool forgets what it finished, so what the server's
    # history keeps of this run is at most the interrupted prompt (and one caught between its
    # result and its clean-up); left queued, all 4 would run and stay.
    time.sleep(3)
    assert servers[0].get("/queue")["queue_pending"] == []
    leftovers = set(servers[0].get("/history")) - history_before
    assert len(leftovers) <= 2, f"an interrupted run left {len(leftovers)} prompts to run on the server"
    assert "unfinished prompts from the servers" in stderr, stderr
    finished = {r["key"]: r for r in manifest(out) if not r.get("error")}
    assert 5 <= len(finished) < 20
    stamps = {key: [(out / f).stat().st_mtime_ns for f in r["masks"].values()] for key, r in finished.items()}
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert f"{len(finished)} of 20 pictures already done" in second.stderr
    records = manifest(out)
    assert sorted(r["key"] for r in records) == sorted({r["key"] for r in records})  # no item done twice
    assert len(records) == 20 and all(not r.get("error") for r in records)
    for key, record in finished.items():  # the files of finished items were not written again
        assert [(out / f).stat().st_mtime_ns for f in record["masks"].values()] == stamps[key]
    assert len(list((out / "masks").rglob("*.png"))) == 20 * len(CONCEPTS)
    third = run_cli(*args)
    assert third.returncode == 0 and "nothing to do" in third.stderr


def test_bad_inputs_give_clear_messages_and_fail_only_when_a_rerun_could_do_more(dataset, servers, tmp_path):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("pic01.png", "pic02.png"):
        (mixed / name).write_bytes((dataset["pictures"] / name).read_bytes())
    (mixed / "truncated.png").write_bytes((dataset["pictures"] / "pic05.png").read_bytes()[:200])
    (mixed / "notes.png").write_text("not a picture")
    common = ["--concepts", "sky, background", "--workflow", dataset["workflow"], "--server", servers[0].url]

    some_bad = run_cli("mask", mixed, *common, "--out", tmp_path / "out")
    assert some_bad.returncode == 0, some_bad.stderr  # two pictures were masked
    assert "done: 2 masked" in some_bad.stderr and "2 failed" in some_bad.stderr
    assert "failed: truncated.png: cannot read" in some_bad.stderr
    assert "failed: notes.png: cannot read" in some_bad.stderr
    # the rerun has only the two unreadable files left: done (status 0), without loading ComfyUI
    rerun = run_cli("mask", mixed, *common[:4], "--out", tmp_path / "out", "--comfyui", COMFYUI,
                    "--base-directory", dataset["base"])
    assert rerun.returncode == 0, rerun.stderr
    assert "2 of 4 pictures already done" in rerun.stderr and "failed: notes.png: cannot read" in rerun.stderr
    assert "loaded in-process" not in rerun.stderr

    (tmp_path / "empty").mkdir()
    empty = run_cli("mask", tmp_path / "empty", *common, "--out", tmp_path / "out2")
    assert empty.returncode == 1 and "no pictures in this folder" in empty.stderr

    only_bad = run_cli("mask", mixed / "notes.png", *common, "--out", tmp_path / "out3")
    assert only_bad.returncode == 1 and "failed: notes.png: cannot read" in only_bad.stderr

    typo = run_cli("mask", mixed, *common, "--out", tmp_path / "out4", "--mask-mdoe", "soft")
    assert typo.returncode == 2 and "--mask-mdoe: did you mean --mask-mode?" in typo.stderr
    no_concepts = run_cli("mask", mixed, "--concpets", "sky", "--out", tmp_path / "out5")
    assert no_concepts.returncode == 2 and "--concepts" in no_concepts.stderr
    one_concept = run_cli("mask", mixed, *common[:0], "--concepts", "sky", "--out", tmp_path / "out6",
                          "--server", servers[0].url)
    assert one_concept.returncode == 2 and "argument --concepts: need at least two" in one_concept.stderr

    unreachable = run_cli("mask", mixed, *common[:4], "--server", "http://127.0.0.1:9", "--out", tmp_path / "out7")
    assert unreachable.returncode == 1
    assert "no usable ComfyUI server: http://127.0.0.1:9 does not answer" in unreachable.stderr
    one_down = run_cli("mask", mixed, *common, "--server", "http://127.0.0.1:9", "--out", tmp_path / "out8")
    assert one_down.returncode == 0 and "not using http://127.0.0.1:9" in one_down.stderr
    assert "done: 2 masked" in one_down.stderr


def test_a_server_killed_mid_run_loses_and_duplicates_nothing(dataset, servers):
    """Last in the module: it kills the second server."""
    engine, _ = cli()
    keep, victim = servers
    pictures = sorted(p for p in dataset["pictures"].rglob("*") if p.is_file())
    tasks = [engine.MaskTask(p.relative_to(dataset["pictures"]).as_posix(), p, CONCEPTS) for p in pictures]
    settings = engine.Settings(workflow=dataset["workflow"], in_flight=2, seed_count=8)
    messages, results = [], []
    for result in engine.run_tasks(tasks, settings, servers=[keep.url, victim.url], progress=messages.append):
        results.append(result)
        if len(results) == 6:
            victim.process.kill()  # gone without a word, items of it still queued
            victim.process.wait()
    keys = [r.key for r in results]
    assert sorted(keys) == sorted(t.key for t in tasks) and len(set(keys)) == len(keys) == 20
    assert all(r.error is None and r.soft.shape[0] == 3 for r in results), [r.error for r in results]
    assert any(f"server {victim.url} failed" in m for m in messages), messages
    late = [r.source for r in results[8:]]
    assert late and set(late) == {keep.url}  # after the kill, the other server did everything
