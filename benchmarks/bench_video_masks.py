"""Time and peak memory of a long video's masks: Concept Mask (nodes/api.py concept_mask, what the
node runs) on the maps of a video, and what Concept Saliency's outputs for the same maps would need.

The maps are synthetic but shaped like a real run's: random token-grid scores of a HunyuanVideo 1.0
latent (8x VAE, 2x2 patches: 16-pixel tokens; T latent frames), softmax over the concepts, as
ConceptMaps [1, C, T, h, w] with temporal_scale 4, so 1 + 4(T-1) video frames. Each case runs in a
fresh subprocess: one measured call, its wall and CPU time, and its peak resident memory above the
level just before the call (VmHWM reset through /proc/self/clear_refs, as bench_pictures.py does),
beside the bytes of the mask it returns. With `--refine guided` a picture per frame (random, float32,
allocated before the measurement) is the guide, as VAE Decode's frames would be.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_video_masks.py                 # 121 frames, 1280x720, 8 concepts
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench_video_masks.py --refine guided

Prints a markdown table and writes benchmarks/results/<name>.json (git-ignored)."""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=121, help="video frames (1 + 4k)")
    parser.add_argument("--size", default="1280x720", help="width x height in pixels (multiples of 16)")
    parser.add_argument("--concepts", type=int, default=8)
    parser.add_argument("--refine", default="none", choices=("none", "guided"))
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    parser.add_argument("--name", help="results file name (default from the settings)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if (args.frames - 1) % 4:
        parser.error(f"--frames {args.frames}: a video of 1 + 4k frames")
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    args.name = args.name or f"video-masks-{args.frames}f-{args.width}x{args.height}-c{args.concepts}-{args.refine}"
    return args


def child(args):
    sys.path[:0] = [args.comfyui, str(ROOT / "tests" / "support"), str(ROOT / "benchmarks")]
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import torch
    from bench_pictures import PeakRSS
    from pack import load_pack
    load_pack(ROOT)
    from concept_attention_pack.nodes import api
    latent_frames = 1 + (args.frames - 1) // 4
    grid = (latent_frames, args.height // 16, args.width // 16)
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(1, args.concepts, *grid, generator=g) * 3
    maps = api.ConceptMaps(tuple(f"c{i}" for i in range(args.concepts)), scores.softmax(dim=1),
                           (args.height // 8, args.width // 8), "sampling", latent_scale=8, patch_size=2,
                           temporal_scale=4)
    image = torch.rand(args.frames, args.height, args.width, 3, generator=g) if args.refine == "guided" else None
    from concept_attention_pack.nodes.frames import as_frames
    frames = as_frames(maps)
    pixels = frames.maps.shape[0] * args.height * args.width
    saliency_bytes = pixels * 4 * (8 * args.concepts + 4)  # api.check_saliency_memory's estimate
    peak = PeakRSS()
    cpu0, t0 = time.process_time(), time.perf_counter()
    peak.start()
    mask = api.concept_mask(maps, [0], "exclusive", 0.5, False, True, refine=args.refine, image=image)
    extra = peak.stop()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    print(json.dumps({"frames": frames.maps.shape[0], "mask_shape": list(mask.shape), "mask_bytes": mask.numel() * 4,
                      "seconds": seconds, "cpu_seconds": cpu, "extra_peak_bytes": extra, "peak_method": peak.method,
                      "saliency_outputs_bytes": saliency_bytes, "chunk_bytes": api.MASK_CHUNK_BYTES,
                      "threads": torch.get_num_threads()}))


def main():
    args = parse_args()
    if args.child:
        return child(args)
    command = [sys.executable, __file__, "--child", "--frames", str(args.frames), "--size", args.size,
               "--concepts", str(args.concepts), "--refine", args.refine, "--comfyui", args.comfyui]
    load0 = os.getloadavg()[0]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    result["loadavg_before"], result["loadavg_after"] = load0, os.getloadavg()[0]
    gib = 2 ** 30
    print(f"| video | concepts | refine | Concept Mask s (CPU s) | mask output | extra peak (above the call's start) "
          f"| Concept Saliency's outputs would need |\n|---|---|---|---|---|---|---|\n"
          f"| {result['frames']} frames {args.width}x{args.height} | {args.concepts} | {args.refine} | "
          f"{result['seconds']:.1f} ({result['cpu_seconds']:.1f}) | {result['mask_bytes'] / gib:.2f} GiB | "
          f"{result['extra_peak_bytes'] / gib:.2f} GiB | {result['saliency_outputs_bytes'] / gib:.1f} GiB |")
    print(f"peak: {result['peak_method']}; chunk budget {result['chunk_bytes'] / 2**20:.0f} MiB of soft maps; "
          f"{result['threads']} threads; load average {result['loadavg_before']:.2f} -> {result['loadavg_after']:.2f}")
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
