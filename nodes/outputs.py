"""The five outputs of Concept Saliency, built from soft maps. Pure torch + Pillow (no ComfyUI), so
scripts and benchmarks (benchmarks/bench_pictures.py) run exactly what the node runs."""
from __future__ import annotations

import torch

from .masks import apply_mask_mode, colorize, winners
from .render import overlay, segmentation


def saliency_outputs(soft: torch.Tensor, names, chosen, mask_mode: str = "exclusive", threshold: float = 0.5,
                     invert: bool = False, image: torch.Tensor | None = None):
    """soft [B, C, H, W] maps 0..1 -> (masks MASK [B*C, H, W], heatmaps IMAGE [B*C, H, W, 3],
    mask MASK [B, H, W], overlay IMAGE [B*C, H, W, 3], segmentation IMAGE [B, H, W, 3]).

    masks: every concept's mask after `mask_mode`, image-major; mask: the union of the concepts at
    indices `chosen` (inverted with `invert`); heatmaps: the soft maps coloured; overlay: each
    heatmap over `image` (IMAGE, one or B pictures; optional) with the concept's name;
    segmentation: the arg-max concept's colour per pixel with a legend. Each pixel's arg-max is
    computed once, for the exclusive masks and the segmentation."""
    winner = winners(soft)
    masks = apply_mask_mode(soft, mask_mode, threshold, winner=winner)
    mask = masks[:, list(chosen)].amax(dim=1)
    if invert:
        mask = 1.0 - mask
    heatmaps = colorize(soft)
    return (masks.flatten(0, 1), heatmaps, mask, overlay(soft, names, image, heat=heatmaps),
            segmentation(soft, names, winner=winner))
