"""The maps as the node UI receives them: a compact payload in Concept Saliency's `ui` output
(pure torch, no ComfyUI). The browser ranks the concepts under the pointer from these numbers,
not from the coloured picture.

Per image, the token-grid maps [C, h, w] (at most MAX_GRID cells a side: larger grids are
averaged down), each share quantised to 8 bits (or 16) and base64-encoded, concept-major, 16-bit
values little-endian. js/payload.js decodes it."""
from __future__ import annotations

import base64

import torch
import torch.nn.functional as F

MAX_CONCEPTS = 64  # above this the payload carries names and colours but no maps
MAX_GRID = 64  # cells a side; a 1024 px Flux.1 image has 64 x 64 tokens
BITS = (8, 16)


def color_hex(rgb) -> str:
    """(r, g, b) 0..1 -> '#rrggbb'."""
    return "#" + "".join(f"{round(float(v) * 255):02x}" for v in rgb)


def shrink_grid(maps: torch.Tensor, max_side: int = MAX_GRID) -> torch.Tensor:
    """[B, C, h, w] -> at most max_side cells a side, by averaging (the shares still sum to 1)."""
    h, w = maps.shape[-2:]
    if max(h, w) <= max_side:
        return maps
    scale = max_side / max(h, w)
    return F.adaptive_avg_pool2d(maps.float(), (max(1, round(h * scale)), max(1, round(w * scale))))


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


def map_payload(grid: torch.Tensor, names, colors, *, source: str, detail: str, covers, size,
                bits: int = 8) -> dict:
    """The UI payload for maps on the token grid.

    grid: [B, C, h, w] soft shares (as the masks use them: blurred when the node blurs);
    colors: [C, 3] the segmentation's colours; covers: (height, width) in image pixels that the
    grid spans (the padded size: h and w tokens times the pixels per token); size: the image's
    (height, width). A pixel (y, x) of the image lies in cell (y * h' // covers[0], x * w' // covers[1])
    of the sent grid [h', w']."""
    b, c = grid.shape[:2]
    payload = {"names": [str(n) for n in names], "colors": [color_hex(rgb) for rgb in colors[:c]],
               "source": source, "detail": detail, "batch": b, "covers": [int(v) for v in covers],
               "size": [int(v) for v in size], "bits": bits, "shape": None, "maps": []}
    if c > MAX_CONCEPTS:
        payload["omitted"] = f"{c} concepts: the pointer ranking covers up to {MAX_CONCEPTS}"
        return payload
    small = shrink_grid(grid)
    payload["shape"] = list(small.shape[1:])
    payload["maps"] = [encode_grid(small[i], bits) for i in range(b)]
    return payload
