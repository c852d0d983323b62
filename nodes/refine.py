"""Image-guided refinement of concept maps: the picture decides where a map's edge goes.

Concept maps have one value per 16x16-pixel token; upsampled bilinearly their borders are ramps
about a token wide that ignore the picture. Two training-free refinements use the picture:

- `guided`: He, Sun and Tang's guided filter (ECCV 2010) solved on the token grid and applied at
  full resolution, as in He and Sun's fast guided filter (2015) with the token as the coarse
  cell. A token's concept shares and its mean colour are averages over the same pixels, so in a
  window of tokens the shares are (nearly) a linear function of the colour; that function,
  applied to each pixel's own colour, puts the edges where the picture's are, and recovers parts
  narrower than a token. The token means get the same 3x3 blur as the maps when it is on.
- `pamr`: the guided result, then pixel-adaptive mask refinement (Araslanov and Roth, CVPR
  2020): repeated averaging of each pixel's maps over neighbours at several distances, weighted
  by colour similarity, which cleans what the linear fit leaves (texture, mixed windows).

Inputs: token-grid maps [B, C, h, w] (per-token concept shares that sum to 1) and the picture
[B or 1, H, W, 3] (a ComfyUI IMAGE, 0..1) with H, W the pixels the grid covers (the grid may
overhang by less than a token: Flux pads). Output: [B, C, H, W], renormalised so the concepts
sum to 1 per pixel with every value in 0..1. Pure torch, no ComfyUI.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .capture import ConceptInputError
from .masks import gaussian_blur_3x3

REFINE_MODES = ("none", "guided", "pamr")
TOKEN_PIXELS = 16  # Flux: 2x2 latent patches x 8 pixels per latent
GUIDED_RADIUS = 2  # tokens: a 5x5-token window
GUIDED_EPS = 1e-4  # squared colour units (0..1 RGB)
PAMR_ITERATIONS = 10
PAMR_DILATIONS = (1, 2, 4, 8, 12, 24)  # Araslanov and Roth's
# Concepts refined together at full resolution: bounds the working memory to a few
# [CHUNK, H, W] tensors (64 concepts at 1024x1024 would otherwise need GBs of temporaries).
CHUNK = 8


def refine_maps(grid: torch.Tensor, guide: torch.Tensor, mode: str, *, blur: bool = False,
                token_pixels: int = TOKEN_PIXELS, radius: int | None = None, eps: float | None = None,
                iterations: int | None = None) -> torch.Tensor:
    """Token-grid maps [B, C, h, w] -> refined maps [B, C, H, W] at the picture's size.

    guide: the picture, [B or 1, H, W, 3]. blur: the paper's 3x3 blur on the grid first (the
    token colours get the same). radius: the guided filter's window radius in tokens (default 2);
    eps: its regularisation (default 1e-4; larger: smoother, follows only strong edges);
    iterations: PAMR's rounds (default 10; 0 gives the guided result).
    """
    if mode not in REFINE_MODES:
        raise ConceptInputError(f"refine: expected one of {REFINE_MODES}, received {mode!r}.")
    if eps is not None and not float(eps) > 0.0:  # 0 (or NaN) leaves a flat picture's 3x3 system singular
        raise ConceptInputError(f"refine_eps: must be a positive number (the node's minimum is 1e-05), "
                                f"received {eps!r}.")
    if not bool(torch.isfinite(guide).all()):
        raise ConceptInputError("image: the picture contains NaN or infinite values (a broken upstream node); "
                                "connect a valid picture or set refine to 'none'.")
    b, c, h, w = grid.shape
    guide = _guide_channels(guide, b, h, w, token_pixels)
    grid = grid.float()
    if mode == "none":
        grid = gaussian_blur_3x3(grid) if blur else grid
        pixels = F.interpolate(grid, scale_factor=token_pixels, mode="bilinear", align_corners=False)
        return pixels[..., :guide.shape[-2], :guide.shape[-1]].clamp(0.0, 1.0)
    padded = _pad_to(guide, h * token_pixels, w * token_pixels)
    token_colours = F.avg_pool2d(padded, token_pixels)  # [B, 3, h, w]
    if blur:  # one call for both: on a loaded CPU every small op costs a thread-pool round trip
        grid, token_colours = gaussian_blur_3x3(torch.cat([grid, token_colours], 1)).split([c, 3], 1)
    refined = renormalise(coarse_guided_filter(
        grid, token_colours, guide, GUIDED_RADIUS if radius is None else max(0, int(radius)),
        GUIDED_EPS if eps is None else float(eps), token_pixels))
    if mode == "pamr":
        refined = renormalise(pamr(refined, guide, PAMR_ITERATIONS if iterations is None else int(iterations)))
    return refined


def _guide_channels(guide: torch.Tensor, batch: int, rows: int, columns: int, token_pixels: int) -> torch.Tensor:
    """IMAGE [B or 1, H, W, >=3] -> [B, 3, H, W] float32, checked against the token grid it refines
    (rows x columns tokens cover H x W pixels, the last token possibly overhanging)."""
    if guide.ndim != 4 or guide.shape[-1] < 3:
        raise ConceptInputError(f"image: expected an IMAGE [B, H, W, 3], received {list(guide.shape)}.")
    height, width = guide.shape[1:3]
    if not ((rows - 1) * token_pixels < height <= rows * token_pixels
            and (columns - 1) * token_pixels < width <= columns * token_pixels):
        raise ConceptInputError(
            f"image: the picture is {width}x{height} pixels but the maps' {columns}x{rows} tokens cover "
            f"{columns * token_pixels}x{rows * token_pixels}; connect the picture these maps belong to "
            "(VAE Decode of the sampled latent, or the encoded photo).")
    if guide.shape[0] not in (1, batch):
        raise ConceptInputError(f"image: {guide.shape[0]} images for a latent batch of {batch}; connect "
                                "the decoded images of the same batch, or one image.")
    return guide[..., :3].movedim(-1, 1).float().expand(batch, -1, -1, -1)


def _pad_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Edge pixels repeated at the bottom/right up to height x width (Flux pads its grid there)."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x


def renormalise(maps: torch.Tensor) -> torch.Tensor:
    """Clamp to 0..1 (in place) and divide by the per-pixel sum over concepts, so the shares sum
    to 1 again. A pixel whose values all clamp to 0 (not seen with real maps) gets an even share."""
    maps = maps.clamp_(0.0, 1.0)
    total = maps.sum(dim=1, keepdim=True)
    empty = total <= 1e-6
    if empty.any():
        maps.masked_fill_(empty, 1.0)
        total = torch.where(empty, torch.full_like(total, float(maps.shape[1])), total)
    return maps.div_(total)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window, the window cut at the borders (He's normalisation N);
    two 1-D passes."""
    if radius < 1:
        return x
    k = 2 * radius + 1
    x = F.avg_pool2d(x, (1, k), stride=1, padding=(0, radius), count_include_pad=False)
    return F.avg_pool2d(x, (k, 1), stride=1, padding=(radius, 0), count_include_pad=False)


def _inverse_3x3(m: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Inverse of symmetric 3x3 matrices given as nested lists of per-cell tensors (adjugate over
    determinant: a few elementwise ops instead of a batched linalg.inv of tiny matrices)."""
    a, b, c, d, e, f = m[0][0], m[0][1], m[0][2], m[1][1], m[1][2], m[2][2]
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    inv_det = 1.0 / (a * i00 + b * i01 + c * i02)
    i00, i01, i02, i11, i12, i22 = (t * inv_det for t in (i00, i01, i02, i11, i12, i22))
    return [[i00, i01, i02], [i01, i11, i12], [i02, i12, i22]]


def coarse_guided_filter(maps_low: torch.Tensor, guide_low: torch.Tensor, guide: torch.Tensor,
                         radius: int, eps: float, scale: int) -> torch.Tensor:
    """Guided filter solved on a coarse grid, applied at full resolution (He and Sun 2015).

    maps_low [B, C, h, w] and guide_low [B, 3, h, w] are the maps and the picture on a grid of
    `scale` x `scale`-pixel cells; radius is in cells. In each window the maps are fitted as a
    linear function of the colour (a . I + b, ridge `eps`); the window-averaged a and b are
    upsampled bilinearly and applied to the full-resolution picture guide [B, 3, H, W]
    (H <= h * scale, the rest cropped), so the output's edges are the picture's.
    """
    b, c = maps_low.shape[:2]
    h, w = guide.shape[-2:]
    g, p = guide_low.float(), maps_low.float()
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    # every window mean in one box filter: E[I] (3), E[I_i I_j] (6), E[p] (c), E[I_i p] (3c)
    means = _box(torch.cat([g, torch.stack([g[:, i] * g[:, j] for i, j in pairs], 1), p]
                           + [g[:, i:i + 1] * p for i in range(3)], 1), radius)
    mean_i, corr, mean_p = means[:, :3], means[:, 3:9], means[:, 9:9 + c]
    cov = {pair: corr[:, n] - mean_i[:, pair[0]] * mean_i[:, pair[1]] for n, pair in enumerate(pairs)}
    sigma = [[cov[(min(i, j), max(i, j))] + (eps if i == j else 0.0) for j in range(3)] for i in range(3)]
    inverse = [[t[:, None] for t in row] for row in _inverse_3x3(sigma)]  # [B, 1, h', w'] each
    cov_ip = [means[:, 9 + c * (i + 1):9 + c * (i + 2)] - mean_i[:, i:i + 1] * mean_p for i in range(3)]
    a = [sum(inverse[i][j] * cov_ip[j] for j in range(3)) for i in range(3)]  # 3 x [B, c, h', w']
    offset = mean_p - sum(a[i] * mean_i[:, i:i + 1] for i in range(3))
    coeffs = _box(torch.cat(a + [offset], 1), radius)  # [B, 4c, h', w']: a_0, a_1, a_2, b

    out = torch.empty(b, c, h, w, dtype=torch.float32, device=maps_low.device)
    for start in range(0, c, CHUNK):
        k = min(CHUNK, c - start)
        part = coeffs.unflatten(1, (4, c))[:, :, start:start + k].flatten(1, 2)  # [B, 4k, h', w']
        if scale > 1:
            part = F.interpolate(part, scale_factor=scale, mode="bilinear", align_corners=False)
        part = part[..., :h, :w]
        result = out[:, start:start + k]
        torch.addcmul(part[:, 3 * k:], part[:, :k], guide[:, :1], out=result)
        for i in (1, 2):
            result.addcmul_(part[:, i * k:(i + 1) * k], guide[:, i:i + 1])
    return out


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _shift(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """x padded by `pad` (edge-replicated) -> the view whose pixel (y, x) is x[y + dy, x + dx]."""
    h, w = x.shape[-2] - 2 * pad, x.shape[-1] - 2 * pad
    return x[..., pad + dy:pad + dy + h, pad + dx:pad + dx + w]


def pamr(soft: torch.Tensor, guide: torch.Tensor, iterations: int = PAMR_ITERATIONS,
         dilations: tuple[int, ...] = PAMR_DILATIONS) -> torch.Tensor:
    """Pixel-adaptive mask refinement of soft [B, C, H, W] with the picture guide [B, 3, H, W].

    Affinities (Araslanov and Roth 2020): for each pixel and each of its 8 neighbours at every
    dilation, -|I(x) - I(neighbour)| / (0.1 * local std of I), averaged over colour channels,
    softmax over all neighbours. Each iteration replaces a pixel's maps by the affinity-weighted
    mean of its neighbours' maps.
    """
    b, c, h, w = soft.shape
    pad = max(dilations)
    offsets = [(dy * d, dx * d) for d in dilations for dy, dx in _NEIGHBOURS]
    out = torch.empty_like(soft, dtype=torch.float32)
    for i in range(b):
        image = F.pad(guide[i:i + 1], (pad,) * 4, mode="replicate")[0]  # [3, H+2p, W+2p]
        center = _shift(image, 0, 0, pad)
        # local standard deviation of the picture over all neighbours (and the pixel itself)
        total = center.clone()
        total_sq = center.square()
        for dy, dx in offsets:
            neighbour = _shift(image, dy, dx, pad)
            total += neighbour
            total_sq += neighbour.square()
        count = len(offsets) + 1
        std = (total_sq / count - (total / count).square()).clamp(min=0).sqrt()  # [3, H, W]
        scale = 1.0 / (1e-8 + 0.1 * std)
        logits = torch.empty(len(offsets), h, w, device=soft.device)
        for n, (dy, dx) in enumerate(offsets):
            logits[n] = -((center - _shift(image, dy, dx, pad)).abs() * scale).mean(0)
        del image, center, total, total_sq
        affinity = logits.sub_(logits.amax(0)).exp_()  # softmax over the neighbours, in place
        affinity.div_(affinity.sum(0))  # [K, H, W]
        for start in range(0, c, CHUNK):
            maps = soft[i, start:start + CHUNK].float()
            for _ in range(iterations):
                padded = F.pad(maps[None], (pad,) * 4, mode="replicate")[0]
                maps = torch.zeros_like(maps)
                for n, (dy, dx) in enumerate(offsets):
                    maps.addcmul_(affinity[n], _shift(padded, dy, dx, pad))
            out[i, start:start + maps.shape[0]] = maps
    return out
