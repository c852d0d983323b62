"""The maps as the node UI receives them: a compact payload in Concept Saliency's `ui` output
(pure torch, no ComfyUI). The browser ranks the concepts under the pointer from these numbers,
not from the coloured picture.

Per image, the soft maps the masks are made of (after blur and refine), averaged over square
cells of whole pixels so that the grid has at most MAX_CELLS cells (a 1024 px picture: 8 px
cells, 128 x 128; a small one: its pixels), each share quantised to 8 bits (or 16) and
base64-encoded, concept-major, 16-bit values little-endian. js/maps.js decodes it.

A video's frames are images too (video-major: video b, frame f at b * frames + f; `frames` per
video, 1 for pictures). So that a long video's payload stays small, all grids together have at
most MAX_TOTAL_CELLS cells: 121 frames of 8 concepts get coarser cells than one picture."""
from __future__ import annotations

import base64
import math

import torch
import torch.nn.functional as F

MAX_CONCEPTS = 64  # above this the payload carries names and colours but no maps
MAX_CELLS = 128 * 128  # cells per image and concept
MAX_TOTAL_CELLS = 1 << 21  # cells of all images and concepts together (8 bits: 2 MiB, 2.7 MiB as base64)
MIN_CELLS = 16 * 16  # the total budget never makes a grid coarser than this (unless the picture is smaller)
BITS = (8, 16)


def color_hex(rgb) -> str:
    """(r, g, b) 0..1 -> '#rrggbb'."""
    return "#" + "".join(f"{round(float(v) * 255):02x}" for v in rgb)


def cell_size(height: int, width: int, max_cells: int = MAX_CELLS) -> int:
    """The smallest cell side in pixels for which the grid of a height x width picture has at most
    max_cells cells."""
    cell = max(1, math.floor(math.sqrt(height * width / max_cells)))
    while math.ceil(height / cell) * math.ceil(width / cell) > max_cells:
        cell += 1
    return cell


def shrink_maps(maps: torch.Tensor, cell: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, ceil(H / cell), ceil(W / cell)]: each cell's mean (the cells at the
    bottom and right edges average the pixels they have), so the shares still sum to 1."""
    if cell == 1:
        return maps.float()
    return F.avg_pool2d(maps.float(), cell, ceil_mode=True)


def encode_grid(grid: torch.Tensor, bits: int = 8) -> str:
    """[C, h, w] values 0..1 -> base64 of the values quantised to `bits` (8 or 16), row-major."""
    if bits not in BITS:
        raise ValueError(f"bits: expected one of {BITS}, received {bits!r}.")
    top = (1 << bits) - 1
    levels = grid.detach().float().cpu().clamp(0.0, 1.0).mul(top).round()
    raw = levels.numpy().astype("<u2" if bits == 16 else "u1").tobytes()
    return base64.b64encode(raw).decode("ascii")


def decode_grid(text: str, shape, bits: int = 8) -> torch.Tensor:
    """The inverse of encode_grid: [C, h, w] float 0..1 (for scripts and tests)."""
    import numpy as np
    raw = base64.b64decode(text)
    values = np.frombuffer(raw, dtype="<u2" if bits == 16 else "u1").astype(np.float32)
    return torch.from_numpy(values.reshape(tuple(shape)) / ((1 << bits) - 1))


def cells_per_map(images: int, concepts: int, max_cells: int = MAX_CELLS,
                  max_total: int = MAX_TOTAL_CELLS) -> int:
    """The cell budget of one image's map of one concept: max_cells, less when images x concepts
    maps of that many cells would pass max_total (never below MIN_CELLS)."""
    return max(min(MIN_CELLS, max_cells), min(max_cells, max_total // max(1, images * concepts)))


def map_payload(maps: torch.Tensor, names, colors, *, source: str, detail: str, bits: int = 8,
                max_cells: int = MAX_CELLS, max_total: int = MAX_TOTAL_CELLS, frames: int = 1) -> dict:
    """The UI payload for soft maps [B, C, H, W] at image size (the shares the masks are made of).

    colors: [C, 3] the segmentation's colours. The grid [h, w] covers `covers` = (h, w) x `cell`
    pixels; image pixel (y, x) lies in cell (y // cell, x // cell). frames: a video's frames per
    video (B = videos x frames, video-major), 1 for pictures."""
    b, c, height, width = maps.shape
    if frames < 1 or b % frames:
        raise ValueError(f"frames: {b} images are not whole videos of {frames} frames.")
    cell = cell_size(height, width, cells_per_map(b, c, max_cells, max_total))
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    payload = {"names": [str(n) for n in names], "colors": [color_hex(rgb) for rgb in colors[:c]],
               "source": source, "detail": detail, "batch": b, "frames": frames, "videos": b // frames,
               "size": [height, width], "cell": cell,
               "covers": [rows * cell, cols * cell], "bits": bits, "shape": None, "maps": []}
    if c > MAX_CONCEPTS:
        payload["omitted"] = f"{c} concepts: the pointer ranking covers up to {MAX_CONCEPTS}"
        return payload
    small = shrink_maps(maps, cell)
    payload["shape"] = [c, rows, cols]
    payload["maps"] = [encode_grid(small[i], bits) for i in range(b)]
    return payload
