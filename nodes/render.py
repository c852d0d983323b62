"""Pictures for people: heatmap overlays with each concept's name, and a colour-coded
segmentation with a legend. IMAGE tensors [B, H, W, 3] float 0..1; text drawn with Pillow.

Outputs are written in place, concept by concept; text is drawn only on small crops (the label
box, the legend box), converted to 8 bits and back, never on whole images."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .capture import ConceptInputError
from .fonts import label_font, shorten
from .masks import colorize, concept_chunks, winners

# 64 distinct colours for segmentation labels. The first 8 are Okabe-Ito's colour-blind-friendly
# set (grey for black); the other 56 are a Glasbey-style extension, distinct_colors(OKABE_ITO, 64):
# each next colour is the sRGB colour (grid of 32 levels, CIELAB lightness 25-90) farthest in
# CIELAB from all colours before it. Smallest distance between any two: 23.7 (CIE76 Delta E).
PALETTE = torch.tensor([
    (0.900, 0.620, 0.000), (0.340, 0.710, 0.910), (0.000, 0.620, 0.450), (0.940, 0.890, 0.260),
    (0.000, 0.450, 0.700), (0.840, 0.370, 0.000), (0.800, 0.470, 0.650), (0.600, 0.600, 0.600),
    (0.000, 0.000, 1.000), (0.000, 1.000, 0.000), (1.000, 0.065, 0.903), (0.290, 0.129, 0.613),
    (1.000, 0.000, 0.355), (0.355, 0.355, 0.000), (0.290, 0.645, 0.000), (0.452, 0.129, 0.097),
    (0.000, 1.000, 0.613), (0.806, 0.903, 0.645), (1.000, 0.677, 0.516), (0.839, 0.516, 1.000),
    (0.032, 0.290, 0.258), (0.000, 0.968, 0.968), (0.839, 0.032, 0.548), (0.000, 0.484, 1.000),
    (0.323, 0.194, 0.323), (1.000, 0.000, 0.000), (0.645, 0.258, 1.000), (0.677, 0.968, 0.097),
    (0.968, 0.839, 1.000), (0.452, 0.000, 0.387), (0.000, 0.387, 0.032), (0.645, 0.613, 0.935),
    (0.935, 0.419, 0.452), (0.677, 0.000, 0.065), (0.742, 0.645, 0.290), (0.290, 0.226, 0.129),
    (0.645, 0.968, 0.484), (0.645, 0.387, 0.161), (0.613, 0.032, 0.290), (0.000, 0.226, 0.548),
    (0.710, 0.903, 0.871), (0.645, 0.000, 0.645), (0.000, 0.581, 0.613), (0.484, 0.581, 0.387),
    (0.000, 0.290, 0.935), (0.484, 0.968, 0.742), (0.968, 0.839, 0.774), (0.645, 0.419, 0.387),
    (0.161, 0.871, 0.258), (0.516, 0.323, 0.677), (0.581, 0.645, 0.000), (0.516, 0.452, 0.613),
    (0.000, 0.710, 0.355), (1.000, 0.484, 0.839), (0.032, 0.258, 0.387), (1.000, 0.645, 0.677),
    (1.000, 0.387, 0.290), (0.516, 0.742, 0.387), (0.161, 0.290, 0.097), (0.258, 0.000, 0.806),
    (0.194, 0.613, 1.000), (0.968, 0.677, 0.968), (1.000, 0.387, 0.613), (0.355, 0.355, 0.387),
])
OKABE_ITO = PALETTE[:8]

OVERLAY_PICTURE = 0.45  # share of the picture under an overlay's heatmap
LEGEND_MIN_SIZE = 11  # px: smallest legend text; below it names are left out ("+N more")
LEGEND_COVER = 0.25  # the legend shrinks its text (down to LEGEND_MIN_SIZE) to cover at most this share
LEGEND_BACKING = 0.6  # opacity of the legend's black backing
LEGEND_NAME_EM = 12  # longer names (wider than 12 x the text size) are shortened with an ellipsis


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """[..., 3] sRGB 0..1 -> CIELAB (D65)."""
    rgb = rgb.double()
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    to_xyz = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                           [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
    xyz = linear @ to_xyz.T / torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
    f = torch.where(xyz > (6 / 29) ** 3, xyz.clamp(min=0).pow(1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def distinct_colors(seed: torch.Tensor, n: int, levels: int = 32, lightness=(25.0, 90.0)) -> torch.Tensor:
    """`seed` [S, 3] followed by n - S greedily chosen colours, each the farthest (in CIELAB) from all
    before it among the sRGB colours of a `levels`^3 grid within the `lightness` range (Glasbey)."""
    grid = torch.linspace(0, 1, levels, dtype=torch.float64)
    candidates = torch.cartesian_prod(grid, grid, grid)
    lab = srgb_to_lab(candidates)
    keep = (lab[:, 0] >= lightness[0]) & (lab[:, 0] <= lightness[1])
    candidates, lab = candidates[keep], lab[keep]
    chosen = [c for c in seed.double()]
    distance = torch.cdist(lab, srgb_to_lab(torch.stack(chosen))).amin(dim=1)
    while len(chosen) < n:
        best = int(distance.argmax())
        chosen.append(candidates[best])
        distance = torch.minimum(distance, (lab - lab[best]).norm(dim=1))
    return torch.stack(chosen[:n]).float()


@functools.lru_cache(maxsize=4)
def palette(n: int) -> torch.Tensor:
    """[n, 3] distinct colours: PALETTE's first n, extended the same way beyond 64."""
    return PALETTE[:n] if n <= len(PALETTE) else distinct_colors(PALETTE, n)


def match_image(image: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """The picture under the overlay, at the masks' size; one image is used for every batch item."""
    if image.shape[0] not in (1, batch):
        raise ConceptInputError(f"image: {image.shape[0]} images for a latent batch of {batch}; connect "
                                "the decoded images of the same batch, or one image.")
    image = image[..., :3].movedim(-1, 1).float()
    if image.shape[-2:] != (height, width):
        image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
    return image.movedim(1, -1).expand(batch, -1, -1, -1)


def overlay(maps: torch.Tensor, names, image: torch.Tensor | None = None,
            heat: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, H, W] soft maps -> IMAGE [B*C, H, W, 3]: each concept's heatmap (over the picture when
    one is given), with the concept's name written on its panel. `heat`: colorize(maps), when
    already computed."""
    b, c, h, w = maps.shape
    heat = colorize(maps) if heat is None else heat
    out = torch.empty_like(heat)
    if image is None:
        out.copy_(heat)
    else:
        picture = match_image(image, b, h, w)
        for i in range(b):
            under = picture[i].to(heat.device)
            for first, end in concept_chunks(c, h * w):
                rows = slice(i * c + first, i * c + end)
                # picture + (1 - p) * (heat - picture) = p * picture + (1 - p) * heat, in one pass
                torch.lerp(under, heat[rows], 1.0 - OVERLAY_PICTURE, out=out[rows])
    size = max(10, h // 24)
    for k in range(c):
        patch = _label_patch(str(names[k]), size, w - size).to(out.device)
        y, x = size // 2 - 3, size // 2 - 3
        ph, pw = min(patch.shape[0], h - y), min(patch.shape[1], w - x)
        for i in range(b):
            out[i * c + k, y:y + ph, x:x + pw] = patch[:ph, :pw]
    return out


def _label_patch(name: str, size: int, max_width: int) -> torch.Tensor:
    """[h, w, 3] the name in white on a black box (3 px around the text), shortened to max_width."""
    font = label_font(name, size)
    text = shorten(name, font, max(size, max_width - 6))
    box = font.getbbox(text)
    left, top = min(0, box[0]), min(0, box[1])  # ink left of or above the origin stays in the box
    canvas = Image.new("RGB", (max(1, box[2] - left + 6), max(1, box[3] - top + 6)))
    ImageDraw.Draw(canvas).text((3 - left, 3 - top), text, fill=(255, 255, 255), font=font)
    return torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0)


def segmentation(maps: torch.Tensor, names, winner: torch.Tensor | None = None) -> torch.Tensor:
    """[B, C, H, W] -> IMAGE [B, H, W, 3]: each pixel in the colour of its arg-max concept, with a
    legend of the concepts present in that image. `winner`: masks.winners(maps), when computed."""
    b, c, h, w = maps.shape
    winner = winners(maps) if winner is None else winner
    colors = palette(c).to(maps.device)
    out = torch.index_select(colors, 0, winner.reshape(-1)).view(b, h, w, 3)
    for i in range(b):
        present = torch.bincount(winner[i].reshape(-1), minlength=c).nonzero().flatten().tolist()
        legend = legend_layout([str(names[k]) for k in present], h, w)
        draw_legend(out[i], legend, [colors[k].tolist() for k in present])
    return out


@dataclass(frozen=True)
class LegendEntry:
    """One line of the legend: `index` into the names given (-1: the '+N more' line), the `text`
    drawn (shortened with an ellipsis when too long), its `font`, the `swatch` rectangle, the text's
    `origin` (top-left, Pillow's default anchor) and the `box` that holds swatch and ink."""
    index: int
    text: str
    font: object
    swatch: tuple[int, int, int, int] | None
    origin: tuple[int, int]
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Legend:
    size: int  # text size, px
    box: tuple[int, int, int, int] | None  # the backing, (x0, y0, x1, y1) with x1, y1 exclusive
    entries: tuple[LegendEntry, ...]
    hidden: int = 0  # names left out (listed as "+N more")


def legend_layout(names, height: int, width: int, *, max_cover: float = LEGEND_COVER,
                  min_size: int = LEGEND_MIN_SIZE) -> Legend:
    """Where each name of the legend goes: columns of colour swatch + name in the top-left corner,
    inside the image, in a block shaped like the image. The text size is the largest (from about
    1/40 of the image's shorter side down to `min_size`) at which the legend covers at most
    `max_cover` of the image; if none does, `min_size`. Names wider than LEGEND_NAME_EM em are
    shortened with an ellipsis. When not even `min_size` fits, the last names become '+N more'."""
    names = list(names)
    if not names:
        return Legend(0, None, ())
    margin = max(2, min(height, width) // 100)
    top = max(min_size, min(48, round(min(height, width) / 40)))
    smallest = None
    for size in range(top, min_size - 1, -1):
        legend = _grid(names, size, height, width, margin)
        if legend is None:
            continue
        smallest = legend
        if _cover(legend, height, width) <= max_cover:
            return legend
    if smallest is not None:
        return smallest
    best, low, high = None, 0, len(names) - 1  # the most first names that fit with "+N more"
    while low <= high:
        shown = (low + high) // 2
        legend = _grid(names[:shown], min_size, height, width, margin, hidden=len(names) - shown)
        if legend is None:
            high = shown - 1
        else:
            best, low = legend, shown + 1
    return best if best is not None else Legend(min_size, None, (), hidden=len(names))


def _cover(legend: Legend, height: int, width: int) -> float:
    x0, y0, x1, y1 = legend.box
    return (x1 - x0) * (y1 - y0) / (height * width)


def _metrics(font) -> tuple[int, int]:
    try:
        return font.getmetrics()
    except AttributeError:  # Pillow's bitmap font
        box = font.getbbox("Ag")
        return box[3], 0


def _grid(names, size: int, height: int, width: int, margin: int, hidden: int = 0) -> Legend | None:
    """The legend at text size `size`, in the arrangement of columns that fits the image and is
    shaped most like it; None when no arrangement fits."""
    pad = max(2, round(size * 0.3))  # around the block, between swatch and text
    column_gap = size
    swatch = size
    available_w, available_h = width - 2 * margin, height - 2 * margin
    max_text = min(LEGEND_NAME_EM * size, available_w - 2 * pad - swatch - pad)
    if max_text < size:
        return None
    lines = []  # (index, text, font, ink box relative to the origin, has swatch)
    for index, name in enumerate(names):
        font = label_font(name, size)
        text = shorten(name, font, max_text)
        if not text:
            return None
        lines.append((index, text, font, font.getbbox(text), True))
    if hidden:
        font = label_font(f"+{hidden} more", size)
        text = next((t for t in (f"+{hidden} more", f"+{hidden}") if font.getlength(t) <= max_text), None)
        if text is None:
            return None
        lines.append((-1, text, font, font.getbbox(text), False))
    # rows share one pitch; the text's line box (ascent + descent) is centred on the swatch
    half_line = [sum(_metrics(font)) / 2 for _, _, font, _, _ in lines]
    above = max([swatch / 2] + [h - box[1] for h, (_, _, _, box, _) in zip(half_line, lines)])
    below = max([swatch / 2] + [box[3] - h for h, (_, _, _, box, _) in zip(half_line, lines)])
    above, below = int(np.ceil(above)), int(np.ceil(below))
    row_gap = max(1, size // 5)
    pitch = above + below + row_gap
    widths = [swatch + pad + max(0, box[2]) if has_swatch else max(0, box[2])
              for _, _, _, box, has_swatch in lines]
    n = len(lines)
    best = None
    for columns in range(1, n + 1):
        rows = -(-n // columns)
        if -(-n // rows) != columns:
            continue  # the same arrangement as fewer columns
        column_widths = [max(widths[j * rows:(j + 1) * rows]) for j in range(columns)]
        block_w = 2 * pad + sum(column_widths) + (columns - 1) * column_gap
        block_h = 2 * pad + rows * pitch - row_gap
        if block_w > available_w or block_h > available_h:
            continue
        shape = max(block_w / width, block_h / height)
        if best is None or shape < best[0]:
            best = (shape, rows, column_widths, block_w, block_h)
    if best is None:
        return None
    _, rows, column_widths, block_w, block_h = best
    x0 = y0 = margin
    entries = []
    for j, (index, text, font, box, has_swatch) in enumerate(lines):
        column, row = divmod(j, rows)
        left = x0 + pad + sum(column_widths[:column]) + column * column_gap
        top = y0 + pad + row * pitch
        centre = top + above
        square = (left, centre - swatch // 2, left + swatch, centre - swatch // 2 + swatch) if has_swatch else None
        origin = (left + swatch + pad if has_swatch else left, int(round(centre - half_line[j])))
        ink = (origin[0] + box[0], origin[1] + box[1], origin[0] + box[2], origin[1] + box[3])
        parts = [ink] + ([square] if square else [])
        extent = (min(p[0] for p in parts), min(p[1] for p in parts),
                  max(p[2] for p in parts), max(p[3] for p in parts))
        entries.append(LegendEntry(index, text, font, square, origin, extent))
    return Legend(size, (x0, y0, x0 + block_w, y0 + block_h), tuple(entries), hidden)


def draw_legend(image: torch.Tensor, legend: Legend, colors) -> None:
    """Draw `legend` on one IMAGE [H, W, 3] in place: a semi-transparent black backing, then each
    entry's swatch (in colors[entry.index], light outline) and white name. Only the legend's box is
    converted to 8 bits and back."""
    if legend.box is None:
        return
    x0, y0, x1, y1 = legend.box
    region = image[y0:y1, x0:x1]
    region.mul_(1.0 - LEGEND_BACKING)
    canvas = Image.fromarray(region.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy())
    draw = ImageDraw.Draw(canvas)
    for entry in legend.entries:
        if entry.swatch is not None:
            sx0, sy0, sx1, sy1 = entry.swatch
            fill = tuple(int(round(v * 255)) for v in colors[entry.index])
            draw.rectangle((sx0 - x0, sy0 - y0, sx1 - x0 - 1, sy1 - y0 - 1), fill=fill, outline=(230, 230, 230))
        draw.text((entry.origin[0] - x0, entry.origin[1] - y0), entry.text, fill=(255, 255, 255), font=entry.font)
    region.copy_(torch.from_numpy(np.asarray(canvas).astype(np.float32) / 255.0))


def block_grid(block_maps: torch.Tensor, names, blocks, max_tile: int = 256) -> torch.Tensor:
    """Each scored block's maps side by side: [B, K, C, H, W] soft maps at picture size -> IMAGE
    [B, K * h, C * w, 3], one row per block and one column per concept, each panel labelled
    "block i: name", coloured with one min/max per picture (so blocks compare on one scale).
    Panels are scaled down to at most max_tile pixels on their longest side."""
    b, k, c, height, width = block_maps.shape
    scale = min(1.0, max_tile / max(height, width))
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    maps = block_maps.reshape(b, k * c, height, width)
    if (h, w) != (height, width):
        maps = F.interpolate(maps, size=(h, w), mode="area")
    labels = [f"block {i}: {name}" for i in blocks for name in names]
    panels = overlay(maps, labels)  # [b * k * c, h, w, 3]
    return panels.reshape(b, k, c, h, w, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, k * h, c * w, 3)
