"""Image-guided refinement of concept maps: none (bilinear) vs guided vs pamr, on a fixed synthetic set.

The set is generated from seeds (nothing downloaded; the same set on every run): pictures with
several objects of different colours and textures, curved edges and thin parts, rendered at 4x
and averaged down (anti-aliased), with the ground-truth label map of each picture. Four scene
types, `--per-type` pictures each:

- flat: flat-coloured wavy blobs and ellipses on a shaded background;
- textured: the same kinds of shapes, objects and background carrying stripes, checks or noise;
- thin: rings, curved strokes (5-12 px wide) and spiky stars, i.e. parts thinner than a token;
- cluttered: 7 overlapping smaller objects (8 concepts), textured, with sensor noise.

Two kinds of concept maps per picture, on Flux's 16-pixel token grid:

- token-perfect: the ground truth averaged over each token (what a perfect token-level map
  would be), upsampled without the 3x3 blur;
- attention-like: those shares blurred (Gaussian, sigma 1 token), then a softmax over concepts of
  t * log(share) plus noise, with a sharpness t drawn per picture (real maps are blurred, noisy
  and not a linear function of the shares), then the node's default 3x3 blur.

For each refine mode the exclusive masks (each pixel to its arg-max concept) are scored against
the ground truth: pixel mIoU (per picture, over its concepts) and boundary F-score (per concept:
precision and recall of boundary pixels within 2 pixels, Perazzi et al. 2016), averaged over the
pictures of a type. The time is that of the whole soft-map step (bilinear upsampling plus the
refinement) at 1024x1024 with 8 concepts, median of --repeats runs, with torch's threads as set.

    python benchmarks/bench_refine.py                 # the README numbers (about a minute on 2 cores)
    python benchmarks/bench_refine.py --save-crops    # also writes docs/refine_comparison.png

Prints a markdown table and writes benchmarks/results/refine.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACK = "concept_attention_pack"
SCENE_TYPES = ("flat", "textured", "thin parts", "cluttered", "hairline")
VARIANTS = ("token-perfect", "attention-like")
MODES = ("none", "guided", "pamr")
SUPERSAMPLE = 4
TOKEN = 16


def load_pack():
    sys.path.insert(0, str(ROOT / "tests" / "support"))
    from pack import load_pack as load
    load(ROOT)
    from concept_attention_pack.nodes import masks, refine  # noqa: E402  (pure torch, no ComfyUI)
    return masks, refine


# ----------------------------------------------------------------------------- the synthetic set

def _coords(size: int):
    n = size * SUPERSAMPLE
    axis = (torch.arange(n, dtype=torch.float32) + 0.5) / SUPERSAMPLE  # pixel units
    return torch.meshgrid(axis, axis, indexing="ij")


def _u(g, low=0.0, high=1.0) -> float:
    return low + (high - low) * torch.rand(1, generator=g).item()


def _blob(y, x, g, size, radius_range, waviness=0.25):
    """A wavy closed shape: r(theta) = r0 (1 + sum a_k sin(k theta + phi_k))."""
    cy, cx = _u(g, 0.15, 0.85) * size, _u(g, 0.15, 0.85) * size
    r0 = _u(g, *radius_range) * size
    theta = torch.atan2(y - cy, x - cx)
    radius = torch.full_like(theta, r0)
    for k in (2, 3, 5):
        radius = radius + r0 * _u(g, 0, waviness) * torch.sin(k * theta + _u(g, 0, 2 * math.pi))
    return (y - cy).square() + (x - cx).square() < radius.square()


def _ellipse(y, x, g, size, radius_range):
    cy, cx = _u(g, 0.15, 0.85) * size, _u(g, 0.15, 0.85) * size
    a, b = _u(g, *radius_range) * size, _u(g, *radius_range) * size * 0.6
    angle = _u(g, 0, math.pi)
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    return (u / a).square() + (v / b).square() < 1


def _ring(y, x, g, size, widths):
    cy, cx = _u(g, 0.25, 0.75) * size, _u(g, 0.25, 0.75) * size
    r = _u(g, 0.08, 0.2) * size
    width = _u(g, *widths)
    d = ((y - cy).square() + (x - cx).square()).sqrt()
    return (d - r).abs() < width / 2


def _stroke(y, x, g, size, widths):
    """A sine-wave stroke of a width drawn from `widths` (pixels) across part of the picture."""
    angle = _u(g, 0, math.pi)
    cy, cx = _u(g, 0.3, 0.7) * size, _u(g, 0.3, 0.7) * size
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    amplitude, wavelength = _u(g, 0.03, 0.08) * size, _u(g, 0.2, 0.4) * size
    width, length = _u(g, *widths), _u(g, 0.25, 0.4) * size
    return ((v - amplitude * torch.sin(2 * math.pi * u / wavelength)).abs() < width / 2) & (u.abs() < length)


def _limbed(y, x, g, size, widths):
    """A body (ellipse) with 2-4 straight limbs of a width drawn from `widths` (pixels)."""
    cy, cx = _u(g, 0.25, 0.75) * size, _u(g, 0.25, 0.75) * size
    a, b, angle = _u(g, 0.06, 0.1) * size, _u(g, 0.04, 0.07) * size, _u(g, 0, math.pi)
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    shape = (u / a).square() + (v / b).square() < 1
    for _ in range(int(_u(g, 2, 5))):
        direction, length, width = _u(g, 0, 2 * math.pi), _u(g, 0.12, 0.22) * size, _u(g, *widths)
        along = (x - cx) * math.cos(direction) + (y - cy) * math.sin(direction)
        across = -(x - cx) * math.sin(direction) + (y - cy) * math.cos(direction)
        shape |= (across.abs() < width / 2) & (along > 0) & (along < length)
    return shape


def _star(y, x, g, size):
    """A star with thin spikes: a small disc plus spikes narrowing to points."""
    cy, cx = _u(g, 0.2, 0.8) * size, _u(g, 0.2, 0.8) * size
    core, spike = _u(g, 0.03, 0.06) * size, _u(g, 0.12, 0.2) * size
    points, phase = int(_u(g, 5, 9)), _u(g, 0, 2 * math.pi)
    theta = torch.atan2(y - cy, x - cx)
    d = ((y - cy).square() + (x - cx).square()).sqrt()
    sharp = torch.cos(points * (theta - phase) / 2).abs().pow(12)
    return d < core + (spike - core) * sharp


def _texture(y, x, g, kind: str, size: int) -> torch.Tensor:
    """A luminance texture in -1..1 (stripes, checks, smooth noise) or zeros for flat."""
    if kind == "flat":
        return torch.zeros_like(y)
    if kind == "stripes":
        angle, period = _u(g, 0, math.pi), _u(g, 5, 14)
        return torch.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period)
    if kind == "checks":
        period = _u(g, 6, 16)
        return torch.sign(torch.sin(math.pi * x / period) * torch.sin(math.pi * y / period))
    coarse = torch.rand(1, 1, size // 4 + 2, size // 4 + 2, generator=g) * 2 - 1
    noise = F.interpolate(coarse, size=y.shape, mode="bicubic", align_corners=False)[0, 0]
    return noise / noise.abs().amax().clamp(min=1e-6)


def _palette(g, count: int) -> torch.Tensor:
    """Distinct colours: hues spread around the circle, random saturation and value."""
    offset = _u(g, 0, 1)
    hues = (offset + torch.arange(count) / count + 0.3 * torch.rand(count, generator=g) / count) % 1
    hues = hues[torch.randperm(count, generator=g)]
    sat = 0.35 + 0.55 * torch.rand(count, generator=g)
    val = 0.35 + 0.6 * torch.rand(count, generator=g)
    k = (torch.tensor([5.0, 3.0, 1.0])[None] + hues[:, None] * 6) % 6
    rgb = val[:, None] - val[:, None] * sat[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))
    return rgb


def make_scene(scene_type: str, seed: int, size: int):
    """(picture [H, W, 3] 0..1, labels [H, W] int64, concept count) for one seeded scene."""
    g = torch.Generator().manual_seed(SCENE_TYPES.index(scene_type) * 1000 + seed)
    y, x = _coords(size)
    shapes = []
    if scene_type == "flat":
        for k in range(int(_u(g, 3, 6))):
            shapes.append(_blob(y, x, g, size, (0.08, 0.2)) if k % 2 == 0 else _ellipse(y, x, g, size, (0.08, 0.22)))
    elif scene_type == "textured":
        for k in range(int(_u(g, 3, 6))):
            shapes.append(_blob(y, x, g, size, (0.1, 0.22)) if k % 2 == 0 else _ellipse(y, x, g, size, (0.1, 0.24)))
    elif scene_type == "thin parts":
        shapes = [_limbed(y, x, g, size, (6, 14)), _limbed(y, x, g, size, (6, 14)), _star(y, x, g, size),
                  _ring(y, x, g, size, (10, 20)), _stroke(y, x, g, size, (8, 16))]
    elif scene_type == "hairline":
        shapes = [_blob(y, x, g, size, (0.08, 0.15)), _ring(y, x, g, size, (3, 6)), _stroke(y, x, g, size, (2, 6)),
                  _stroke(y, x, g, size, (2, 6))]
    else:
        for k in range(7):
            maker = (_blob, _ellipse, _star)[k % 3]
            shapes.append(maker(y, x, g, size) if maker is _star else maker(y, x, g, size, (0.05, 0.14)))
    labels_fine = torch.zeros(y.shape, dtype=torch.long)
    for k, shape in enumerate(shapes):
        labels_fine[shape] = k + 1  # later shapes on top
    count = len(shapes) + 1
    colors = _palette(g, count)
    textured = scene_type in ("textured", "cluttered")
    picture_fine = torch.zeros(*y.shape, 3)
    shade = 1 + 0.15 * (y / size - 0.5) + 0.1 * (x / size - 0.5)  # soft lighting across the picture
    for k in range(count):
        region = labels_fine == k
        kind = ("stripes", "checks", "noise")[int(_u(g, 0, 3))] if textured else "flat"
        amplitude = _u(g, 0.2, 0.4) if textured else 0.0
        tex = _texture(y, x, g, kind, size)
        value = colors[k][None, None] * shade[..., None] * (1 + amplitude * tex[..., None])
        picture_fine[region] = value[region]
    picture = F.avg_pool2d(picture_fine.movedim(-1, 0)[None], SUPERSAMPLE)[0].movedim(0, -1)
    if scene_type == "cluttered":
        picture = picture + 0.02 * torch.randn(picture.shape, generator=g)
    one_hot = F.one_hot(labels_fine, count).movedim(-1, 0).float()[None]
    labels = F.avg_pool2d(one_hot, SUPERSAMPLE)[0].argmax(0)  # majority of the 4x4 samples
    return picture.clamp(0, 1), labels, count


def token_maps(labels: torch.Tensor, count: int, variant: str, seed: int) -> torch.Tensor:
    """[1, C, h, w] on the 16-pixel grid: the ground truth's share of each token (token-perfect),
    or attention-like: those shares blurred (Gaussian, sigma 1 token), then a softmax over
    concepts of t * log(share) plus noise (sd 0.5), with a sharpness t drawn from 0.5..2 per
    picture: not a linear function of the shares, as real maps are not."""
    one_hot = F.one_hot(labels, count).movedim(-1, 0).float()[None]
    perfect = F.avg_pool2d(one_hot, TOKEN)
    if variant == "token-perfect":
        return perfect
    g = torch.Generator().manual_seed(10_000 + seed)
    taps = torch.exp(-torch.arange(-2, 3, dtype=torch.float32).square() / 2)
    kernel = (torch.outer(taps, taps) / taps.sum() ** 2)[None, None].repeat(count, 1, 1, 1)
    blurred = F.conv2d(F.pad(perfect, (2, 2, 2, 2), mode="replicate"), kernel, groups=count)
    sharpness = 0.5 + 1.5 * torch.rand(1, generator=g).item()
    logits = sharpness * torch.log(blurred + 0.02) + 0.5 * torch.randn(blurred.shape, generator=g)
    return logits.softmax(dim=1)


# ----------------------------------------------------------------------------- the scores

def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of a boolean mask [H, W] with a 4-neighbour outside it (image borders do not count)."""
    m = mask.float()[None, None]
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return mask & (eroded[0, 0] < 0.5)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    disk = ((r[:, None].square() + r[None].square()) <= radius * radius + 0.5).float()[None, None]
    return F.conv2d(mask.float()[None, None], disk, padding=radius)[0, 0] > 0


def scores(prediction: torch.Tensor, labels: torch.Tensor, count: int, tolerance: int = 2):
    """(mIoU, boundary F) of label maps [H, W] over the concepts present in the ground truth."""
    ious, fscores = [], []
    for k in range(count):
        truth, guess = labels == k, prediction == k
        if not truth.any():
            continue
        ious.append(((truth & guess).sum() / (truth | guess).sum()).item())
        truth_b, guess_b = _boundary(truth), _boundary(guess)
        if not guess_b.any() or not truth_b.any():
            fscores.append(float(guess_b.any() == truth_b.any()))
            continue
        precision = (guess_b & _dilate(truth_b, tolerance)).sum().item() / guess_b.sum().item()
        recall = (truth_b & _dilate(guess_b, tolerance)).sum().item() / truth_b.sum().item()
        fscores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return sum(ious) / len(ious), sum(fscores) / len(fscores)


# ----------------------------------------------------------------------------- running

def soft_maps(masks, refine, grid, picture, mode, blur, **params):
    """What api.concept_masks does: 'none' is the 3x3 blur (optional) and bilinear from the grid,
    the others nodes.refine.refine_maps with the picture."""
    if mode == "none":
        grid = masks.gaussian_blur_3x3(grid) if blur else grid
        return masks.grid_to_pixels(grid, (picture.shape[0] // 8, picture.shape[1] // 8))
    return refine.refine_maps(grid, picture[None], mode, blur=blur, **params)


def scene_set(size: int, per_type: int):
    """{scene type: [(picture, labels, concept count, seed), ...]}: the fixed synthetic set."""
    return {scene_type: [(*make_scene(scene_type, seed, size), seed) for seed in range(per_type)]
            for scene_type in SCENE_TYPES}


def evaluate(masks, refine, args, scenes):
    """{(scene type, maps variant): {mode: [mIoU, boundary F]}} averaged over the pictures, and
    the first picture's exclusive masks per mode (for the comparison picture)."""
    rows = {}
    examples = {}
    for scene_type, pictures in scenes.items():
        for variant in VARIANTS:
            totals = {mode: [0.0, 0.0] for mode in args.modes}
            for picture, labels, count, seed in pictures:
                grid = token_maps(labels, count, variant, seed)
                for mode in args.modes:
                    soft = soft_maps(masks, refine, grid, picture, mode, blur=variant == "attention-like",
                                     **_params(args, mode))
                    miou, fscore = scores(soft[0].argmax(0), labels, count)
                    totals[mode][0] += miou / len(pictures)
                    totals[mode][1] += fscore / len(pictures)
                    if seed == 0:
                        examples[(scene_type, variant, mode)] = soft[0].argmax(0)
            examples[(scene_type, variant, "picture")] = pictures[0][0]
            examples[(scene_type, variant, "labels")] = pictures[0][1]
            rows[(scene_type, variant)] = totals
    return rows, examples


def _params(args, mode):
    names = ("radius", "eps") + (("iterations",) if mode == "pamr" else ())
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def timing(masks, refine, args):
    """Median seconds of the soft-map step per mode at 1024x1024 with 8 concepts (a cluttered
    scene), and the load average around the runs (the machine may be shared)."""
    picture, labels, _ = make_scene("cluttered", 0, 1024)
    grid = token_maps(labels, 8, "attention-like", 0)
    times, load_before = {}, os.getloadavg()[0]
    for mode in args.modes:
        runs = []
        soft_maps(masks, refine, grid, picture, mode, blur=True, **_params(args, mode))  # warm-up
        for _ in range(args.repeats if mode != "pamr" else max(1, args.repeats // 2)):
            start = time.perf_counter()
            soft_maps(masks, refine, grid, picture, mode, blur=True, **_params(args, mode))
            runs.append(time.perf_counter() - start)
        times[mode] = {"median_s": statistics.median(runs), "min_s": min(runs), "runs": len(runs)}
    return times, (load_before, os.getloadavg()[0])


def memory_probe(mode: str, concepts: int = 64, size: int = 1024) -> None:
    """Run in a fresh process: the peak memory the soft-map step adds for `concepts` concepts at
    size x size (output included), from the process's peak RSS (Linux). PAMR with 1 iteration (each
    iteration reuses the same buffers)."""
    masks, refine = load_pack()
    grid = torch.rand(1, concepts, size // TOKEN, size // TOKEN, generator=torch.Generator().manual_seed(0))
    grid = grid.mul(4).softmax(1)
    picture = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(1))
    soft_maps(masks, refine, grid[:, :2], picture, mode, blur=True, iterations=1)  # load code paths
    with open("/proc/self/statm") as statm:
        before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    out = soft_maps(masks, refine, grid, picture, mode, blur=True, **({"iterations": 1} if mode == "pamr" else {}))
    # VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's peak over the fork)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))
    print(json.dumps({"mode": mode, "concepts": concepts, "size": size, "extra_peak_mb": (peak - before) / 2**20,
                      "output_mb": out.numel() * 4 / 2**20}))


def memory(args):
    results = {}
    for mode in args.modes:
        run = subprocess.run([sys.executable, __file__, "--memory-probe", mode], capture_output=True, text=True,
                             check=True)
        results[mode] = json.loads(run.stdout.strip().splitlines()[-1])
    return results


def save_crops(examples, path: pathlib.Path, modes=MODES, scene_type="thin parts", variant="attention-like",
               crop=256, corner=(96, 160)):
    """The same crop of one picture, one panel per mode (bilinear | guided | pamr), each with the
    exclusive masks' boundaries drawn in white over the picture and the mode's name."""
    import numpy as np
    from PIL import Image, ImageDraw
    picture = examples[(scene_type, variant, "picture")]
    top, left = corner
    panels = []
    for mode in modes:
        prediction = examples[(scene_type, variant, mode)]
        panel = picture[top:top + crop, left:left + crop].clone() * 0.8
        edges = torch.zeros(crop, crop, dtype=torch.bool)
        for k in prediction.unique():
            edges |= _boundary(prediction == k)[top:top + crop, left:left + crop]
        panel[edges] = torch.tensor([1.0, 1.0, 1.0])
        panels += [panel, torch.ones(crop, 4, 3)]
    strip = Image.fromarray((torch.cat(panels[:-1], dim=1).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(strip)
    for n, mode in enumerate(modes):
        label = {"none": "bilinear (none)"}.get(mode, mode)
        x = n * (crop + 4) + 6
        box = draw.textbbox((x, 6), label)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((x, 6), label, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, optimize=True)
    return path


def targets(rows, times, modes):
    """The issue's targets, each with its verdict."""
    checks = []
    if {"none", "guided"} <= set(modes):
        for (scene_type, variant), totals in rows.items():
            gain = 100 * (totals["guided"][1] - totals["none"][1])
            miou = 100 * (totals["guided"][0] - totals["none"][0])
            checks.append((f"guided vs none, {scene_type} / {variant}: boundary F {gain:+.1f} (>= +10), "
                           f"mIoU {miou:+.1f} (>= 0)", gain >= 10 and miou >= 0))
    if {"guided", "pamr"} <= set(modes):
        for (scene_type, variant), totals in rows.items():
            f_diff = 100 * (totals["pamr"][1] - totals["guided"][1])
            miou_diff = 100 * (totals["pamr"][0] - totals["guided"][0])
            checks.append((f"pamr vs guided, {scene_type} / {variant}: boundary F {f_diff:+.1f}, mIoU {miou_diff:+.1f} "
                           "(both >= 0)", f_diff >= 0 and miou_diff >= 0))
    if "guided" in times:
        checks.append((f"guided at 1024x1024, 8 concepts: {times['guided']['median_s']:.3f} s (<= 0.5 s)",
                       times["guided"]["median_s"] <= 0.5))
    return checks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="picture size of the scored set (pixels)")
    parser.add_argument("--per-type", type=int, default=4, help="pictures per scene type")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per mode (pamr: half)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--radius", type=int, help="guided window radius (tokens); default the pack's")
    parser.add_argument("--eps", type=float, help="guided filter eps; default the pack's")
    parser.add_argument("--iterations", type=int, help="pamr iterations; default the pack's")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of none,guided,pamr")
    parser.add_argument("--no-timing", action="store_true", help="skip the 1024x1024 timing and memory runs")
    parser.add_argument("--save-crops", action="store_true", help="write docs/refine_comparison.png")
    parser.add_argument("--name", default="refine", help="results file name")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args.memory_probe)
    args.modes = tuple(m for m in MODES if m in args.modes.split(","))
    masks, refine = load_pack()
    rows, examples = evaluate(masks, refine, args, scene_set(args.size, args.per_type))
    times, load = ({}, None) if args.no_timing else timing(masks, refine, args)
    peaks = {} if args.no_timing else memory(args)

    print(f"\n{args.per_type} pictures per scene type, {args.size}x{args.size}; exclusive masks against the "
          "ground truth (percent)\n")
    modes = " / ".join(args.modes)
    print(f"| scene | maps | mIoU {modes} | boundary F (2 px) {modes} |")
    print("|---|---|---|---|")
    for (scene_type, variant), totals in rows.items():
        miou = " / ".join(f"{100 * totals[m][0]:.1f}" for m in args.modes)
        fscore = " / ".join(f"{100 * totals[m][1]:.1f}" for m in args.modes)
        print(f"| {scene_type} | {variant} | {miou} | {fscore} |")
    if times:
        print(f"\n1024x1024, 8 concepts, {torch.get_num_threads()} threads, load average {load[0]:.1f} before / "
              f"{load[1]:.1f} after (blur + upsampling + refinement, median):")
        print("\n| | " + " | ".join(args.modes) + " |\n|---|" + "---|" * len(args.modes))
        print("| seconds | " + " | ".join(f"{times[m]['median_s']:.3f}" for m in args.modes) + " |")
        print("| extra peak memory, 64 concepts (MB) | "
              + " | ".join(f"{peaks[m]['extra_peak_mb']:.0f}" for m in args.modes) + " |")
        print(f"\n(the output itself, 64 concepts at 1024x1024: {peaks[args.modes[0]]['output_mb']:.0f} MB)")
    checks = targets(rows, times, args.modes)
    if checks:
        print("\ntargets:")
        for text, passed in checks:
            print(f"  [{'pass' if passed else 'FAIL'}] {text}")

    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "threads": torch.get_num_threads(), "torch": torch.__version__, "load_average": load},
        "settings": {k: v for k, v in vars(args).items() if k != "memory_probe"},
        "scores": [{"scene": s, "maps": v, "mode": m, "miou": rows[(s, v)][m][0], "boundary_f": rows[(s, v)][m][1]}
                   for (s, v) in rows for m in args.modes],
        "time_1024_8_concepts": times,
        "memory_1024_64_concepts": peaks,
        "targets": [{"check": text, "pass": passed} for text, passed in checks],
    }
    out = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")
    if args.save_crops:
        print(f"wrote {save_crops(examples, ROOT / 'docs' / 'refine_comparison.png', args.modes)}")


if __name__ == "__main__":
    main()
