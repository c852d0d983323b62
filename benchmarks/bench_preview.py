"""Time of Concept Saliency's on-node preview (its `ui` output: the compact map payload and the
preview pictures written to ComfyUI's temp folder, `nodes/concept_nodes.saliency_ui`) next to
the time of its five outputs (`nodes/outputs.saliency_outputs`), for the same soft maps and
picture as benchmarks/bench_pictures.py (random token-grid maps, blurred and upsampled; a random
picture, the worst case for PNG/JPEG size). Runs inside ComfyUI (its folder_paths gives the temp
folder): COMFYUI_PATH=/opt/ComfyUI python benchmarks/bench_preview.py [--cases ...] [--repeats N]

Prints a markdown table: medians of --repeats calls after one warm-up call on a small copy."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_pictures  # noqa: E402  (same maps, picture and pack loading)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(bench_pictures.CASES), help="BxCxHxW, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    comfyui = os.environ.get("COMFYUI_PATH")
    if not comfyui or not pathlib.Path(comfyui, "folder_paths.py").is_file():
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout (the preview is written to its temp folder)")
    sys.path.insert(0, comfyui)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported: no GPU needed
    import torch
    torch.set_num_threads(args.threads)
    masks, _ = bench_pictures.load_pack(str(HERE.parent))
    import importlib
    nodes = importlib.import_module(f"{bench_pictures.PACK}.nodes.concept_nodes")
    outputs_module = importlib.import_module(f"{bench_pictures.PACK}.nodes.outputs")

    class Maps:  # what saliency_ui reads of api.concept_maps' result
        source, detail = "sampling", "captured while sampling"

    rows = []
    for case in args.cases.split(","):
        b, c, h, w = (int(v) for v in case.split("x"))
        soft = bench_pictures.soft_maps(masks, b, c, h, w)
        image = torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(1))
        maps = Maps()
        maps.names = [bench_pictures.WORDS[k % len(bench_pictures.WORDS)] + (f" {k}" if k >= len(bench_pictures.WORDS) else "")
                      for k in range(c)]
        call = (maps.names, [0], "exclusive", 0.5, False)
        small = outputs_module.saliency_outputs(soft[..., :64, :64].contiguous(), *call, image[:, :64, :64].contiguous())
        nodes.saliency_ui(maps, soft[..., :64, :64].contiguous(), small[3], small[4])  # warm-up
        out_times, ui_times = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs = outputs_module.saliency_outputs(soft, *call, image)
            out_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            ui = nodes.saliency_ui(maps, soft, outputs[3], outputs[4])
            ui_times.append(time.perf_counter() - start)
        rows.append((case, statistics.median(out_times), statistics.median(ui_times), len(json.dumps(ui)) / 2**20))
    print(f"{args.repeats} calls per case, median; {args.threads} torch threads; CPUs: {os.cpu_count()}")
    print("| B x C x H x W | outputs s | preview (ui) s | preview / outputs | ui payload MiB |")
    print("|---|---|---|---|---|")
    for case, out_s, ui_s, mib in rows:
        print(f"| {case.replace('x', ' x ')} | {out_s:.2f} | {ui_s:.2f} | {ui_s / out_s:.2f}x | {mib:.2f} |")


if __name__ == "__main__":
    main()
