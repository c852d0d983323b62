"""Pictures in and out: the working copy sent to ComfyUI and the soft maps that come back."""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps

TOKEN = 16  # Flux's pixels per token (x8 VAE, 2x2 patches; Flux.2: x16, 1x1): working sizes are multiples


class ImageReadError(ValueError):
    """An input file that is not a picture Pillow can read."""


def open_rgb(path) -> Image.Image:
    """The picture as ComfyUI's LoadImage sees it: EXIF orientation applied, RGB."""
    try:
        with Image.open(path) as picture:
            picture = ImageOps.exif_transpose(picture)
            picture.load()
            return picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"cannot read {path} as an image ({error})") from None


def working_size(width: int, height: int, max_megapixels: float) -> tuple[int, int]:
    """The size the model sees: at most `max_megapixels` (never enlarged), sides a multiple of 16."""
    scale = min(1.0, math.sqrt(max_megapixels * 1e6 / (width * height))) if max_megapixels > 0 else 1.0
    return (max(TOKEN, round(width * scale / TOKEN) * TOKEN), max(TOKEN, round(height * scale / TOKEN) * TOKEN))


def working_png(picture: Image.Image, max_megapixels: float) -> bytes:
    """PNG bytes of the picture at its working size (lossless, so both paths see the same pixels)."""
    size = working_size(*picture.size, max_megapixels)
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def decode_maps(pngs: list[bytes], size: tuple[int, int]) -> np.ndarray:
    """Soft maps [C, H, W] float32 0..1 at `size` (width, height) from one 8-bit PNG per concept
    (MaskToImage output: grey in every channel). Maps at another (working) size are resized
    bilinearly, which undoes the working-size resize of the picture."""
    planes = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as picture:
            plane = np.asarray(picture.convert("RGB"))[..., 0].astype(np.float32) / 255.0
        planes.append(plane)
    maps = np.stack(planes)
    if maps.shape[1:] != (size[1], size[0]):
        import torch
        import torch.nn.functional as F
        maps = F.interpolate(torch.from_numpy(maps)[None], size=(size[1], size[0]), mode="bilinear",
                             align_corners=False)[0].clamp(0, 1).numpy()
    return maps
