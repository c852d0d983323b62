"""Pictures for people: heatmap overlays with each concept's name, and a colour-coded
segmentation with a legend. IMAGE tensors [B, H, W, 3] float 0..1; text drawn with Pillow."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .capture import ConceptInputError
from .masks import colorize

# distinct, colour-blind-friendly (Okabe-Ito, then Tableau) colours for segmentation labels
PALETTE = torch.tensor([
    (0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26), (0.00, 0.45, 0.70),
    (0.84, 0.37, 0.00), (0.80, 0.47, 0.65), (0.60, 0.60, 0.60), (0.55, 0.34, 0.29), (0.74, 0.74, 0.13),
    (0.09, 0.75, 0.81), (0.17, 0.63, 0.17), (0.84, 0.15, 0.16), (0.58, 0.40, 0.74), (1.00, 0.50, 0.05),
    (0.12, 0.47, 0.71),
])


def match_image(image: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """The picture under the overlay, at the masks' size; one image is used for every batch item."""
    if image.shape[0] not in (1, batch):
        raise ConceptInputError(f"image: {image.shape[0]} images for a latent batch of {batch}; connect "
                                "the decoded images of the same batch, or one image.")
    image = image[..., :3].movedim(-1, 1).float()
    if image.shape[-2:] != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    return image.movedim(1, -1).expand(batch, -1, -1, -1)


def overlay(maps: torch.Tensor, names, image: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, H, W] soft maps -> IMAGE [B*C, H, W, 3]: each concept's heatmap (over the picture when
    one is given), with the concept's name written on its panel."""
    b, c, h, w = maps.shape
    heat = colorize(maps)
    if image is not None:
        picture = match_image(image, b, h, w).repeat_interleave(c, dim=0).to(heat)
        heat = 0.45 * picture + 0.55 * heat
    labels = [[names[k]] for _ in range(b) for k in range(c)]
    return _draw_labels(heat, labels, [[None]] * (b * c))


def segmentation(maps: torch.Tensor, names) -> torch.Tensor:
    """[B, C, H, W] -> IMAGE [B, H, W, 3]: each pixel in the colour of its arg-max concept, with a legend."""
    b, c, h, w = maps.shape
    colors = PALETTE[torch.arange(c) % len(PALETTE)].to(maps.device)
    picture = colors[maps.argmax(dim=1)]
    legend = [list(names)] * b
    swatches = [[colors[k].tolist() for k in range(c)]] * b
    return _draw_labels(picture, legend, swatches)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _draw_labels(images: torch.Tensor, labels, swatches) -> torch.Tensor:
    """Write text lines (with an optional colour swatch each) in the top-left corner of each image."""
    out = []
    h = images.shape[1]
    size = max(10, h // 24)
    font = _font(size)
    for image, lines, colors in zip(images, labels, swatches):
        canvas = Image.fromarray((image.clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        y = size // 2
        for line, color in zip(lines, colors):
            x = size // 2
            box = draw.textbbox((x + (size + 4 if color else 0), y), line, font=font)
            draw.rectangle((x - 3, y - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
            if color:
                draw.rectangle((x, y, x + size, y + size), fill=tuple(int(v * 255) for v in color))
            draw.text((x + (size + 4 if color else 0), y), line, fill=(255, 255, 255), font=font)
            y = box[3] + size // 2
        out.append(torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0))
    return torch.stack(out).to(images.device)
