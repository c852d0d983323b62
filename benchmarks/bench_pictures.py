"""Time and peak memory of Concept Saliency's five outputs (masks, heatmaps, mask, overlay,
segmentation), built from soft maps by exactly the code the node runs. No ComfyUI needed.

Each case runs in a fresh subprocess:

1. random soft maps like the real ones: random token-grid scores [B, C, H/16, W/16], softmax
   over the concepts, the paper's 3x3 blur and bilinear upsampling to pixels
   (masks.gaussian_blur_3x3 + masks.grid_to_pixels, what api.concept_masks does), and a picture
   [B, H, W, 3] for the overlay;
2. a warm-up call on a 64x64 copy with the same names, so that fonts are found and loaded once,
   as they are after a node's first run in a ComfyUI process;
3. one measured call: wall time, and the peak resident memory (RSS) of the process above the
   level just before the call. On Linux the kernel's high-water mark (VmHWM) is reset just before
   the call by writing 5 to /proc/self/clear_refs and read just after it, so the peak is exact
   (it sees torch's allocations, which tracemalloc does not). Elsewhere, a psutil thread samples
   RSS every millisecond (a lower bound). The returned tensors are counted in the peak: "peak /
   outputs" compares it with the bytes of the returned tensors that are new (a `soft` mask_mode
   returns the input itself, which is not counted);
4. more calls, time only (--repeats in all): median and minimum;
5. the fresh-memory floor: the time to allocate and fill (with zeros) tensors of the outputs'
   shapes, median of --repeats. It is the kernel's page-fault cost of the outputs' memory, which
   no implementation avoids (on this project's virtual machine about 5 us per 4 KiB page).

"CPU s" is the median CPU time (user + system, all threads) of a call: with --threads 1 it is
the call's single-core cost, which other processes on the machine change much less than its wall
time (with more threads it also counts the threads' waiting at each operation's end).
"others' CPU" is the largest share of the machine's CPUs that other processes (and the
hypervisor, as steal time) took during a timed call: on a shared machine timings are only as good
as it is small.

The code measured is nodes/outputs.py `saliency_outputs`, which ConceptSaliency.execute calls.
`--pack DIR` measures another checkout of the pack (e.g. an older commit exported with
`git archive`); when it has no `saliency_outputs`, the lines of its ConceptSaliency.execute
that built the outputs are run instead (they are reproduced below, `_inline_outputs`).

    python benchmarks/bench_pictures.py                    # the three cases below
    python benchmarks/bench_pictures.py --cases 1x64x1024x1024 --repeats 5
    python benchmarks/bench_pictures.py --pack /tmp/old --name before

Prints a markdown table and writes benchmarks/results/<name>.json (git-ignored).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACK = "concept_attention_pack"
CASES = ("1x64x1024x1024", "4x16x1088x1920", "1x8x1024x1024")  # B x C x H x W
WORDS = ("dragon", "sky", "forêt", "лес", "森林", "background", "castle", "water", "tree", "person",
         "mountain", "grass", "cloud", "road", "building", "car")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help="BxCxHxW, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="calls per case (the first one also measures memory)")
    parser.add_argument("--mask-mode", default="exclusive")
    parser.add_argument("--no-image", action="store_true", help="overlay without a picture under it")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--pack", default=str(ROOT), help="the pack checkout to measure")
    parser.add_argument("--name", default="bench_pictures", help="results file name")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def load_pack(path: str):
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from pack import load_pack as load
    load(path)
    import importlib as il
    return il.import_module(f"{PACK}.nodes.masks"), il.import_module(f"{PACK}.nodes.render")


def _inline_outputs(masks, render, soft, names, chosen, mask_mode, threshold, invert, image):
    """The original ConceptSaliency.execute lines (before nodes/outputs.py existed)."""
    out = masks.apply_mask_mode(soft, mask_mode, threshold)
    mask = out[:, chosen].amax(dim=1)
    if invert:
        mask = 1.0 - mask
    return (out.flatten(0, 1), masks.colorize(soft), mask, render.overlay(soft, names, image),
            render.segmentation(soft, names))


def soft_maps(masks, b, c, h, w, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    grid = (torch.randn(b, c, (h + 15) // 16, (w + 15) // 16, generator=g) * 3).softmax(dim=1)
    return masks.grid_to_pixels(masks.gaussian_blur_3x3(grid), (h // 8, w // 8))


class PeakRSS:
    """Peak RSS above the level at start(), in bytes."""

    def __init__(self):
        self.method = "VmHWM after clear_refs"
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            self.method = "psutil sampling every 1 ms (lower bound)"

    @staticmethod
    def _status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def start(self):
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.base = self._status("VmRSS")
            return
        import psutil
        process = psutil.Process()
        self.base = self.peak = process.memory_info().rss
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, process.memory_info().rss)
                time.sleep(0.001)
        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()

    def stop(self) -> int:
        if self.method.startswith("VmHWM"):
            return self._status("VmHWM") - self.base
        self.running = False
        self.thread.join()
        return self.peak - self.base


def cpu_taken_by_others():
    """CPU seconds used so far by other processes, and stolen by the hypervisor ((0, 0) without psutil)."""
    try:
        import psutil
    except ImportError:
        return 0.0, 0.0
    system, own = psutil.cpu_times(), psutil.Process().cpu_times()
    busy = system.user + system.system + getattr(system, "nice", 0.0)
    return busy - own.user - own.system, getattr(system, "steal", 0.0)


def worker(args):
    import gc
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    masks, render = load_pack(args.pack)
    try:
        from concept_attention_pack.nodes.outputs import saliency_outputs
        path = "nodes/outputs.py saliency_outputs"
    except ImportError:
        def saliency_outputs(*a):
            return _inline_outputs(masks, render, *a)
        path = "inline lines of ConceptSaliency.execute"
    b, c, h, w = (int(v) for v in args.worker.split("x"))
    names = tuple(f"{WORDS[k % len(WORDS)]} {k}" if k >= len(WORDS) else WORDS[k] for k in range(c))
    soft = soft_maps(masks, b, c, h, w)
    image = None if args.no_image else torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(1))
    call = (names, [0], args.mask_mode, 0.5, False)
    small_image = None if image is None else image[:, :64, :64].contiguous()
    saliency_outputs(soft[..., :64, :64].contiguous(), *call, small_image)  # warm-up: fonts found, loaded
    gc.collect()
    meter = PeakRSS()
    times, others, cpu = [], [], []
    for repeat in range(args.repeats):
        gc.collect()
        if repeat == 0:
            meter.start()
        other_before, steal_before = cpu_taken_by_others()
        cpu_start, start = time.process_time(), time.perf_counter()
        outputs = saliency_outputs(soft, *call, image)
        seconds = time.perf_counter() - start
        cpu.append(time.process_time() - cpu_start)
        other_after, steal_after = cpu_taken_by_others()
        others.append(((other_after - other_before) + (steal_after - steal_before)) / seconds / os.cpu_count())
        times.append(seconds)
        if repeat == 0:
            peak = meter.stop()
            inputs = {soft.untyped_storage().data_ptr()}
            storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in outputs
                        if t.untyped_storage().data_ptr() not in inputs}
            output_bytes = sum(storages.values())
            shapes = [list(t.shape) for t in outputs]
        del outputs
    floor = []  # what the kernel alone takes to hand out fresh memory for the outputs (page faults)
    for repeat in range(args.repeats):
        gc.collect()
        start = time.perf_counter()
        buffers = [torch.empty(shape).fill_(0) for shape in shapes]
        floor.append(time.perf_counter() - start)
        del buffers
    print(json.dumps(dict(case=args.worker, path=path, seconds=times, first_s=times[0], floor_s=floor,
                          cpu_s=cpu, cpu_median_s=statistics.median(cpu),
                          floor_median_s=statistics.median(floor),
                          median_s=statistics.median(times), min_s=min(times), peak_bytes=peak,
                          output_bytes=output_bytes, peak_over_outputs=peak / output_bytes, shapes=shapes,
                          memory_method=meter.method, cpu_share_taken_by_others=max(others),
                          torch_threads=torch.get_num_threads())))


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--worker", case, "--repeats", str(args.repeats), "--pack", args.pack,
                   "--mask-mode", args.mask_mode, "--threads", str(args.threads)]
        command += ["--no-image"] if args.no_image else []
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"{case} failed:\n{result.stderr}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{case}: first {r['first_s']:.2f} s, median {r['median_s']:.2f} s, "
              f"peak {r['peak_bytes'] / 2**20:.0f} MiB ({r['peak_over_outputs']:.2f}x outputs)", flush=True)
    lines = ["| B x C x H x W | first call s | median s (min) | CPU s | fresh-memory floor s | peak RSS MiB "
             "| outputs MiB | peak / outputs | others' CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, c, h, w = r["case"].split("x")
        lines.append(f"| {b} x {c} x {h} x {w} | {r['first_s']:.2f} | {r['median_s']:.2f} ({r['min_s']:.2f}) | "
                     f"{r['cpu_median_s']:.2f} | {r['floor_median_s']:.2f} | "
                     f"{r['peak_bytes'] / 2**20:.0f} | {r['output_bytes'] / 2**20:.0f} | "
                     f"{r['peak_over_outputs']:.2f} | "
                     f"{100 * r['cpu_share_taken_by_others']:.0f}% |")
    table = "\n".join(lines)
    print(f"\ncode measured: {rows[0]['path']} in {args.pack}; mask_mode {args.mask_mode}; "
          f"{'no picture' if args.no_image else 'with a picture'}; {args.repeats} calls per case; "
          f"memory: {rows[0]['memory_method']}; torch threads {rows[0]['torch_threads']}\n")
    print(table)
    import torch
    machine = dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                   torch=torch.__version__)
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(settings=vars(args), machine=machine, cases=rows, table=table), indent=1))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
