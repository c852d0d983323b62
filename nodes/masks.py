"""From token-grid concept maps to ComfyUI MASK and IMAGE tensors. Pure torch.

MASK is [B, H, W] float 0..1 (1 = the concept); IMAGE is [B, H, W, 3] float 0..1.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from .capture import ConceptInputError

# matplotlib's "plasma" sampled at 17 evenly spaced points (perceptually uniform, as the authors use).
PLASMA = torch.tensor([
    (0.0504, 0.0298, 0.5280), (0.1934, 0.0184, 0.5903), (0.2999, 0.0096, 0.6316),
    (0.3994, 0.0009, 0.6561), (0.4949, 0.0120, 0.6579), (0.5844, 0.0686, 0.6328),
    (0.6651, 0.1386, 0.5856), (0.7360, 0.2094, 0.5279), (0.7982, 0.2802, 0.4695),
    (0.8533, 0.3516, 0.4137), (0.9018, 0.4251, 0.3597), (0.9426, 0.5026, 0.3058),
    (0.9734, 0.5858, 0.2515), (0.9914, 0.6754, 0.1985), (0.9930, 0.7717, 0.1548),
    (0.9744, 0.8746, 0.1441), (0.9400, 0.9752, 0.1313),
])


def grid_to_pixels(maps: torch.Tensor, latent_size: tuple[int, int], latent_scale: int = 8,
                   patch_size: int = 2) -> torch.Tensor:
    """[B, C, h, w] token grid -> [B, C, H, W] at image resolution, bilinear.

    Token (r, c) covers pixels [r*p, (r+1)*p) with p = patch_size * latent_scale. When the latent
    is not a multiple of the patch size, Flux pads it at the bottom/right: the grid covers the
    padded area, so the map is resized to the padded size and then cropped, never stretched.
    """
    h, w = maps.shape[-2:]
    pixels_per_token = patch_size * latent_scale
    padded = F.interpolate(maps.float(), size=(h * pixels_per_token, w * pixels_per_token),
                           mode="bilinear", align_corners=False)
    height, width = latent_size[0] * latent_scale, latent_size[1] * latent_scale
    return padded[..., :height, :width].clamp(0.0, 1.0)


def gaussian_blur_3x3(maps: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The paper's 3x3 Gaussian blur (sigma 1) on the token grid [B, C, h, w], edges replicated.
    The kernel sums to 1, so per pixel the concepts still sum to what they summed to."""
    taps = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * sigma ** 2))
    kernel = torch.outer(taps, taps)
    kernel = (kernel / kernel.sum()).to(maps)
    b, c, h, w = maps.shape
    padded = F.pad(maps.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kernel[None, None]).reshape(b, c, h, w)


LUT_SIZE = 1024  # colour-map entries: nearest entry within 0.0012 of the interpolated colour (< half an 8-bit step)


@functools.lru_cache(maxsize=4)
def plasma_lut(device: str = "cpu") -> torch.Tensor:
    """[LUT_SIZE, 3] float32: PLASMA interpolated linearly at LUT_SIZE evenly spaced positions."""
    position = torch.linspace(0, 1, LUT_SIZE, dtype=torch.float64) * (len(PLASMA) - 1)
    index = position.floor().long().clamp(max=len(PLASMA) - 2)
    frac = (position - index)[:, None]
    table = PLASMA.double()
    return (table[index] * (1 - frac) + table[index + 1] * frac).clamp(0, 1).float().to(device)


# pixels per chunk of concepts: large enough for few torch operations (each one a parallel region,
# costly on a busy CPU), small enough that a chunk's temporaries (8 bytes a pixel) stay in cache
CHUNK_PIXELS = 1 << 21


def concept_chunks(c: int, pixels: int, budget: int = CHUNK_PIXELS):
    """(first, end) ranges of concepts covering about `budget` pixels each (at least one concept).
    Work is done a chunk at a time: temporaries are of one chunk only."""
    step = max(1, min(c, budget // max(1, pixels)))
    return [(k, min(c, k + step)) for k in range(0, c, step)]


def colorize(maps: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, H, W] -> IMAGE [B*C, H, W, 3], image-major; one min/max per image over all concepts.

    Each map is scaled to the colour table's positions, rounded to the nearest entry and gathered,
    a chunk of concepts at a time into the output (no full-size temporaries)."""
    b, c, h, w = maps.shape
    if out is None:
        out = torch.empty(b * c, h, w, 3, device=maps.device)
    lut = plasma_lut(str(maps.device))
    chunks = concept_chunks(c, h * w)
    step = chunks[0][1]
    position = torch.empty(step, h, w, device=maps.device)
    index = torch.empty(step, h, w, dtype=torch.int32, device=maps.device)
    for i in range(b):
        low, high = (v.item() for v in torch.aminmax(maps[i]))
        finite = math.isfinite(low) and math.isfinite(high)
        scale = (LUT_SIZE - 1) / max(high - low, 1e-12) if finite else 0.0
        offset = torch.tensor(0.5 - low * scale if finite else 0.0, device=maps.device)  # +0.5: nearest entry
        for first, end in chunks:
            n = end - first
            # low..high -> 0.5..LUT_SIZE - 0.5 (float32 rounding is far below 0.5): no clamp needed
            torch.add(offset, maps[i, first:end], alpha=scale, out=position[:n])
            if not finite:
                position[:n].nan_to_num_(0.0).clamp_(0, LUT_SIZE - 1)
            index[:n].copy_(position[:n])  # truncation of values >= 0
            torch.index_select(lut, 0, index[:n].view(-1), out=out[i * c + first:i * c + end].view(-1, 3))
    return out


def winners(maps: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H, W] int64: each pixel's strongest concept (the first one on ties, as
    argmax), in one reduction."""
    return maps.max(dim=1).indices


MASK_MODES = ("soft", "above mean", "otsu", "threshold", "exclusive")


def apply_mask_mode(maps: torch.Tensor, mode: str, threshold: float = 0.5,
                    winner: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, H, W] soft maps -> masks. 'soft': unchanged. 'above mean' (the paper's binary mask),
    'otsu', 'threshold': 0/1 per concept map. 'exclusive': each pixel to its arg-max concept, so the
    masks partition the image (they sum to exactly 1 per pixel). `winner`: winners(maps), when
    already computed. The masks are written a chunk of concepts at a time into one new tensor."""
    if mode == "soft":
        return maps
    if mode not in MASK_MODES:
        raise ConceptInputError(f"mask_mode: expected one of {MASK_MODES}, received {mode!r}.")
    b, c = maps.shape[:2]
    chunks = concept_chunks(c, b * maps.shape[2] * maps.shape[3])
    out = torch.empty(maps.shape, dtype=maps.dtype, device=maps.device)
    if mode == "exclusive":
        winner = (winners(maps) if winner is None else winner)[:, None]
        for first, end in chunks:
            concepts = torch.arange(first, end, device=maps.device)[None, :, None, None]
            torch.eq(winner, concepts, out=out[:, first:end])
        return out
    flat = maps.flatten(2)
    if mode == "above mean":
        cut = flat.mean(dim=2)
    elif mode == "otsu":
        cut = otsu_thresholds(flat)
    else:  # threshold
        cut = torch.full(flat.shape[:2], float(threshold), dtype=maps.dtype, device=maps.device)
    for first, end in chunks:
        torch.gt(maps[:, first:end], cut[:, first:end, None, None], out=out[:, first:end])
    return out


def otsu_thresholds(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each row of values [..., P] (256-bin histogram between its min and max).
    Rows are histogrammed one at a time (temporaries of one row, not of all of them)."""
    rows = values.reshape(-1, values.shape[-1])
    hist = torch.zeros(rows.shape[0], bins, device=rows.device)
    low = torch.empty(rows.shape[0], 1, device=rows.device)
    high = torch.empty_like(low)
    for r in range(rows.shape[0]):
        row = rows[r].float()
        row_low, row_high = torch.aminmax(row)
        low[r], high[r] = row_low, row_high
        scaled = (row - row_low) / (row_high - row_low).clamp(min=1e-12)
        index = scaled.mul_(bins).long().clamp_(max=bins - 1)
        hist[r] = torch.bincount(index, minlength=bins)[:bins].float()
    centers = (torch.arange(bins, device=rows.device, dtype=torch.float32) + 0.5) / bins
    weight_low = hist.cumsum(1)
    weight_high = weight_low[:, -1:] - weight_low
    mass_low = (hist * centers).cumsum(1)
    mean_low = mass_low / weight_low.clamp(min=1)
    mean_high = (mass_low[:, -1:] - mass_low) / weight_high.clamp(min=1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = between.argmax(dim=1, keepdim=True)
    cut = (best.float() + 1) / bins  # values in bins 0..best are "low"
    return (low + cut * (high - low)).reshape(values.shape[:-1])


def select_concepts(names: tuple[str, ...], wanted: str) -> list[int]:
    """Indices of the comma-separated names in `wanted` (case-insensitive); '' -> the first concept."""
    wanted_names = [w.strip() for w in wanted.split(",") if w.strip()]
    if not wanted_names:
        return [0]
    lookup = {name.lower(): i for i, name in enumerate(names)}
    missing = [w for w in wanted_names if w.lower() not in lookup]
    if missing:
        raise ConceptInputError(
            f"concept: {missing} is not among this model's concepts {list(names)}. Type one of "
            "those names, or add it to the concepts of the Concept Attention node.")
    return [lookup[w.lower()] for w in wanted_names]
