"""A video's concept maps as the frames its VAE decodes. Pure torch.

Video families give maps on the latent's own frames, [B, C, T, h, w]. ComfyUI's video VAEs
(HunyuanVideo, CogVideoX, Wan) are causal with a temporal compression r: latent frame 0 decodes to
pixel frame 0 alone and latent frame k >= 1 to pixel frames r(k-1)+1 .. rk, so T latent frames give
1 + r(T-1) pixel frames. Each pixel frame takes the map of the latent frame that encodes it
(repeated, not interpolated: the model saw those r frames as one token grid, and an interpolated map
would invent motion between two latent frames that the model never placed there). The frames then
form an image batch, video-major (video b, frame f at b*F + f), so masks, refinement with the
decoded frames, previews and ComfyUI's per-frame mask nodes all work on them as on pictures.
"""
from __future__ import annotations

import dataclasses

import torch

from .capture import ConceptMaps


def pixel_frame_sources(latent_frames: int, temporal_scale: int) -> list[int]:
    """For each pixel frame the VAE decodes, the latent frame that encodes it."""
    return [0] + [k for k in range(1, latent_frames) for _ in range(temporal_scale)]


def pixel_frames(latent_frames: int, temporal_scale: int) -> int:
    return 1 + temporal_scale * (latent_frames - 1)


def as_frames(maps: ConceptMaps) -> ConceptMaps:
    """Video maps [B, C, T, h, w] -> the pixel frames' maps [B*F, C, h, w] (block maps and reference
    maps likewise); image maps unchanged."""
    if maps.maps.ndim != 5:
        return maps
    b, c, t, h, w = maps.maps.shape
    index = torch.tensor(pixel_frame_sources(t, maps.temporal_scale))
    frames = len(index)
    per_frame = maps.maps.index_select(2, index).transpose(1, 2).reshape(b * frames, c, h, w)
    block_maps = None
    if maps.block_maps is not None:
        k = maps.block_maps.shape[1]
        block_maps = (maps.block_maps.index_select(3, index).permute(0, 3, 1, 2, 4, 5)
                      .reshape(b * frames, k, c, h, w))
    detail = f"{maps.detail}; {t} latent frames -> {frames} video frames"
    return dataclasses.replace(maps, maps=per_frame, block_maps=block_maps, detail=detail,
                               references=tuple(as_frames(r) for r in maps.references))
