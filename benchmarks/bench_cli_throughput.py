"""Throughput of the command-line tool's engine (cli.engine.run_tasks) with the tiny stand-in
models: in-process, one ComfyUI server, two servers, on the same synthetic pictures.

The tiny models make the model's share of the time small, so this measures the tool's own
overhead (reading, PNG round trips, HTTP, ComfyUI's executor), not what a GPU would do with Flux.

    COMFYUI_PATH=/opt/ComfyUI python benchmarks/bench_cli_throughput.py [--count 40] [--size 256]

Prints a markdown table: wall time of the whole run (servers already started; in-process includes
loading ComfyUI) and the steady rate (pictures after the first, from the first result to the last).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import threading
import time

import numpy as np
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from pack import load_pack  # noqa: E402  (tests/support: the one loader of the pack)

load_pack(ROOT)
from concept_attention_pack.cli import engine, workflow  # noqa: E402

CONCEPTS = ["sky", "dog", "background"]


def tiny_workflow(path: pathlib.Path) -> pathlib.Path:
    graph = workflow.default_workflow(engine.Settings())
    graph["unet"] = {"class_type": "TinyFluxLoader", "inputs": {"seed": 0, "schnell": True}}
    graph["clip"] = {"class_type": "TinyFluxClipLoader", "inputs": {"seed": 0}}
    graph["vae"] = {"class_type": "TinyVAELoader", "inputs": {}}
    path.write_text(json.dumps(graph))
    return path


def measure(label, tasks, settings, **where) -> dict:
    started = time.perf_counter()
    stamps, errors = [], 0
    for result in engine.run_tasks(tasks, settings, **where):
        stamps.append(time.perf_counter())
        errors += result.error is not None
    wall = time.perf_counter() - started
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"run": label, "pictures": len(stamps), "failed": errors, "wall_s": wall,
            "images_per_s": len(stamps) / wall, "steady_images_per_s": steady}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=1)
    options = parser.parse_args()
    comfyui = pathlib.Path(os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_cli_"))
    rng = np.random.default_rng(0)
    tasks = []
    for i in range(options.count):
        path = work / f"pic{i:03d}.png"
        Image.fromarray((rng.random((options.size, options.size, 3)) * 255).astype(np.uint8)).save(path)
        tasks.append(engine.MaskTask(path.name, path, CONCEPTS))
    base = work / "base"
    (base / "custom_nodes").mkdir(parents=True)
    os.symlink(ROOT / "tests" / "support" / "stand_in_nodes", base / "custom_nodes" / "test_stand_ins")
    settings = engine.Settings(workflow=tiny_workflow(work / "tiny.json"), seed_count=options.seeds,
                               base_directory=base)

    from comfy_server import ComfyServer
    servers = [None, None]

    def start(i):
        servers[i] = ComfyServer(comfyui, work / f"server{i}")
    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    try:
        for server in servers:  # warm: each server has built its tiny models once
            list(engine.run_tasks(tasks[:1], settings, servers=[server.url]))
        rows = [measure("one server", tasks, settings, servers=[servers[0].url]),
                measure("two servers", tasks, settings, servers=[s.url for s in servers])]
    finally:
        for server in servers:
            server.stop()
    rows.append(measure("in-process (includes loading ComfyUI)", tasks, settings, comfyui=comfyui))
    print(f"\n{options.count} pictures of {options.size}x{options.size}, {len(CONCEPTS)} concepts, "
          f"{options.seeds} seed(s), tiny stand-in models, {os.cpu_count()} CPU cores\n")
    print("| run | wall s | images/s | steady images/s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['run']} | {row['wall_s']:.1f} | {row['images_per_s']:.2f} | {row['steady_images_per_s']:.2f} |")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "cli_throughput.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
