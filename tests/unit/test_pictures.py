"""The picture outputs of Concept Saliency: fonts for any script, 64 distinct colours, a legend that
fits, and the five outputs' semantics. Pure (Pillow + torch, no ComfyUI).

Where a test needs to know whether this machine has a font for some characters, it asks
fontconfig (`fc-list :charset=...`), which reads the fonts' character maps itself: an oracle
independent of the pack's own glyph check. Without fontconfig those tests skip."""
from __future__ import annotations

import itertools
import shutil
import subprocess

import pytest
import torch
from PIL import Image, ImageDraw

from concept_attention_pack.nodes import fonts, masks, outputs, render

FC_LIST = shutil.which("fc-list")
SAMPLES = {"e acute": "é", "sharp s": "ß", "cyrillic": "Д", "cjk": "森", "arabic": "ع"}


def fontconfig_faces(text: str) -> set[tuple[str, int]]:
    """(file, index) of every font that fontconfig says has all the characters of `text`."""
    query = ":charset=" + " ".join(f"{ord(ch):x}" for ch in sorted(set(text)))
    lines = subprocess.run([FC_LIST, "-f", "%{file}\t%{index}\n", query], capture_output=True, text=True).stdout
    return {(path, int(index)) for path, index in (line.split("\t") for line in lines.splitlines() if line)}


def need_font_for(text: str) -> None:
    if FC_LIST is None:
        pytest.skip("fontconfig (fc-list) is not installed: cannot tell which fonts this machine has")
    if not fontconfig_faces(text):
        pytest.skip(f"no font on this machine has {text!r} (Debian: apt-get install fonts-noto-cjk fonts-dejavu-core)")


def ink(font, text: str) -> tuple:
    mask = font.getmask(text)
    return mask.size, bytes(mask)


# ---------------------------------------------------------------- fonts

@pytest.mark.parametrize("ch", SAMPLES.values(), ids=SAMPLES.keys())
def test_glyph_check_agrees_with_fontconfig(ch):
    if FC_LIST is None:
        pytest.skip("fontconfig (fc-list) is not installed")
    covering = fontconfig_faces(ch)
    faces = fonts.candidates()
    assert faces, "no candidate font found on this machine"
    for face in faces:
        assert fonts.has_glyph(face, ch) == (face in covering), face


@pytest.mark.parametrize("text", ["forêt", "Straße", "лес", "森林", "غابة"],
                         ids=["e circumflex", "sharp s", "cyrillic", "cjk", "arabic"])
def test_label_font_draws_real_glyphs_not_the_notdef_box(text):
    need_font_for(text)
    font = fonts.label_font(text, 32)
    notdef = ink(font, fonts.UNASSIGNED)
    for ch in text:
        drawn = ink(font, ch)
        assert any(drawn[1]), f"{ch!r} draws nothing in {font.path}"
        assert drawn != notdef, f"{ch!r} is drawn as the .notdef box of {getattr(font, 'path', 'the default font')}"
    face = (font.path, font.index) if isinstance(getattr(font, "path", None), str) else None
    assert face in fontconfig_faces(text), f"fontconfig says {face} lacks some of {text!r}"


# names that differ only in characters Pillow's own font lacks: drawn as boxes they look the same
LOOKALIKE = {"latin": ("forêt", "forët"), "cyrillic": ("лес", "дом"), "cjk": ("森林", "山川"),
             "arabic": ("غابة", "شجرة")}


@pytest.mark.parametrize("pair", LOOKALIKE.values(), ids=LOOKALIKE.keys())
def test_overlay_and_legend_draw_non_latin_names_as_distinct_glyphs(pair):
    need_font_for("".join(pair))
    soft = torch.zeros(1, 2, 96, 256)
    soft[:, 0, :, :128] = 1.0
    soft[:, 1] = 1.0 - soft[:, 0]
    pictures = []
    for name in pair:
        over = render.overlay(soft, (name, "sky"))
        seg = render.segmentation(soft, (name, "sky"))
        pictures.append((over[0, :40], seg[0, :40]))
    (over_a, seg_a), (over_b, seg_b) = pictures
    assert not torch.equal(over_a, over_b), "the overlay labels look the same: boxes instead of glyphs"
    assert not torch.equal(seg_a, seg_b), "the legend entries look the same: boxes instead of glyphs"


def test_font_lookups_are_cached_not_repeated_per_call(monkeypatch):
    soft = torch.rand(1, 3, 64, 96).softmax(dim=1)
    names = ("forêt", "森林", "sky")
    render.overlay(soft, names)
    render.segmentation(soft, names)

    def forbidden(*args, **kwargs):
        raise AssertionError("font lookup repeated: the disk or fontconfig was asked again")
    monkeypatch.setattr(fonts.subprocess, "run", forbidden)
    monkeypatch.setattr(fonts.os.path, "isfile", forbidden)
    render.overlay(soft, names)
    render.segmentation(soft, names)


def test_label_without_any_font_falls_back_to_pillows_font():
    font = fonts.label_font("\U000E01EF", 20)  # a variation selector: no font draws it, it needs none
    assert font is not None
    assert fonts.face_for("\u0378") is None  # unassigned: no font has it -> Pillow's default font


# ---------------------------------------------------------------- colours

def test_palette_gives_64_distinct_colours():
    """Every pair at least 20 CIE76 Delta E apart: about 9x the just-noticeable difference (2.3), the
    difference between clearly different hues, not shades (the old palette repeated after 16
    colours and had two blues 2.8 apart)."""
    colors = render.palette(64)
    assert colors.shape == (64, 3) and 0 <= colors.min() and colors.max() <= 1
    lab = render.srgb_to_lab(colors)
    distance = torch.cdist(lab, lab) + torch.eye(64) * 1e9
    assert distance.min() > 20.0, f"closest pair {divmod(int(distance.argmin()), 64)}: {distance.min():.1f}"
    torch.testing.assert_close(colors[:8], torch.tensor([  # Okabe-Ito (grey for black) first, unchanged
        (0.90, 0.62, 0.00), (0.34, 0.71, 0.91), (0.00, 0.62, 0.45), (0.94, 0.89, 0.26), (0.00, 0.45, 0.70),
        (0.84, 0.37, 0.00), (0.80, 0.47, 0.65), (0.60, 0.60, 0.60)]))


def test_palette_table_is_the_glasbey_extension_it_documents():
    torch.testing.assert_close(render.distinct_colors(render.OKABE_ITO, 64), render.PALETTE, atol=6e-4, rtol=0)


def test_segmentation_gives_each_of_64_concepts_its_own_colour():
    c, h, w = 64, 1024, 1024
    soft = torch.zeros(1, c, h, w)
    for k in range(c):
        soft[0, k, :, 16 * k:16 * k + 16] = 1.0  # concept k wins a 16-pixel stripe
    names = [f"c{k}" for k in range(c)]
    seg = render.segmentation(soft, names)
    assert render.legend_layout(names, h, w).box[3] < h - 1
    bottom = seg[0, h - 1, 8::16]  # one pixel per stripe, below the legend
    assert len({tuple((v * 255).round().tolist()) for v in bottom}) == c


# ---------------------------------------------------------------- legend

NAMES_64 = [f"{word} {k}" if k >= 16 else word for k, word in zip(range(64), itertools.cycle(
    ["dragon", "sky", "forêt", "лес", "森林", "background", "castle", "water", "tree", "person", "mountain",
     "grass", "cloud", "road", "building", "a red sports car"]))]


def _inside(box, width, height):
    return 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height


def _overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_legend_of_64_concepts_on_1024_draws_every_name_readably():
    legend = render.legend_layout(NAMES_64, 1024, 1024)
    assert legend.hidden == 0 and [e.index for e in legend.entries] == list(range(64))
    assert [e.text for e in legend.entries] == NAMES_64  # none shortened, none left out
    assert legend.size >= 12  # px: about 9 pt on a 96 dpi screen, the usual smallest UI text
    assert _inside(legend.box, 1024, 1024)
    x0, y0, x1, y1 = legend.box
    assert (x1 - x0) * (y1 - y0) <= render.LEGEND_COVER * 1024 * 1024
    for entry in legend.entries:
        assert _inside(entry.box, 1024, 1024)
        assert x0 <= entry.box[0] and y0 <= entry.box[1] and entry.box[2] <= x1 and entry.box[3] <= y1
        drawn = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(entry.origin, entry.text, font=entry.font)
        assert entry.box[0] <= drawn[0] and entry.box[1] <= drawn[1]  # the ink Pillow draws is in the box
        assert drawn[2] <= entry.box[2] and drawn[3] <= entry.box[3]
    for a, b in itertools.combinations(legend.entries, 2):
        assert not _overlap(a.box, b.box), (a.text, b.text)


def test_legend_shortens_a_long_name_with_an_ellipsis_inside_the_image():
    long_name = "a majestic ancient castle on a misty hill at sunrise with towers and flags " * 3
    legend = render.legend_layout(["sky", long_name], 512, 512)
    entry = legend.entries[1]
    assert entry.text.endswith(fonts.ELLIPSIS) and long_name.startswith(entry.text[:-1])
    assert len(entry.text) < len(long_name)
    assert entry.font.getlength(long_name) > 512  # it would not have fitted
    drawn = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(entry.origin, entry.text, font=entry.font)
    assert drawn[2] <= legend.box[2] <= 512  # the ellipsis is inside the legend, the legend inside the image


def test_tiny_image_legend_says_how_many_names_are_left_out():
    legend = render.legend_layout(NAMES_64, 64, 64)
    assert legend.hidden > 0 and legend.entries[-1].text in (f"+{legend.hidden} more", f"+{legend.hidden}")
    assert len(legend.entries) - 1 + legend.hidden == 64
    assert legend.box is None or _inside(legend.box, 64, 64)


def test_legend_lists_only_the_concepts_present_in_that_image():
    soft = torch.zeros(2, 3, 64, 96)
    soft[0, 0, :, :48], soft[0, 2, :, 48:] = 1.0, 1.0  # image 0: no "sky"
    soft[1, 1] = 1.0  # image 1: only "sky"
    names = ("dragon", "sky", "tree")
    seg = render.segmentation(soft, names)
    colours = render.palette(3)
    for i, present in ((0, [0, 2]), (1, [1])):
        expected = colours[masks.winners(soft)[i]].clone()
        render.draw_legend(expected, render.legend_layout([names[k] for k in present], 64, 96),
                           [colours[k].tolist() for k in present])
        torch.testing.assert_close(seg[i], expected)


def test_overlay_label_is_shortened_to_its_panel():
    soft = torch.rand(1, 2, 96, 128).softmax(dim=1)
    over = render.overlay(soft, ("a very long concept name that cannot fit on this panel", "sky"))
    label_rows = over[0, :12]
    assert (label_rows[:, :40].sum(-1) < 0.05).any()  # the black label box is there
    assert not (label_rows[:, -4:].sum(-1) < 0.05).any()  # but ends before the panel's edge


# ---------------------------------------------------------------- the five outputs

def _soft(b=2, c=5, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    grid = (torch.randn(b, c, (h + 15) // 16, (w + 15) // 16, generator=g) * 3).softmax(dim=1)
    return masks.grid_to_pixels(masks.gaussian_blur_3x3(grid), (h // 8, w // 8))


def test_colorize_matches_the_interpolated_plasma_within_half_an_8_bit_step():
    soft = _soft()
    flat = soft.flatten(1)
    low, high = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
    position = ((soft - low) / (high - low)).clamp(0, 1) * (len(masks.PLASMA) - 1)
    index = position.floor().long().clamp(max=len(masks.PLASMA) - 2)
    frac = (position - index)[..., None]
    exact = (masks.PLASMA[index] * (1 - frac) + masks.PLASMA[index + 1] * frac).flatten(0, 1)
    assert (masks.colorize(soft) - exact).abs().max() < 0.5 / 255


def test_winners_are_the_first_arg_max_like_argmax_with_ties():
    soft = _soft(c=6)
    soft[:, 3] = soft[:, 1]  # exact ties: the first of them wins, as with argmax
    soft[0, :, :4, :4] = 0.25
    assert torch.equal(masks.winners(soft), soft.argmax(dim=1))


@pytest.mark.parametrize("mode", masks.MASK_MODES)
def test_saliency_outputs_keep_shapes_ranges_order_and_mask_modes(mode):
    soft = _soft()
    b, c, h, w = soft.shape
    soft[0, :, :6, :6] = 1.0 / c  # exact ties: exclusive masks still give each pixel to one concept
    picture = torch.rand(b, h, w, 3, generator=torch.Generator().manual_seed(1))
    names = ("dragon", "sky", "forêt", "森林", "background")
    all_masks, heatmaps, mask, over, seg = outputs.saliency_outputs(soft, names, [0, 2], mode, 0.3, False, picture)
    assert all_masks.shape == (b * c, h, w) and mask.shape == (b, h, w)
    assert heatmaps.shape == over.shape == (b * c, h, w, 3) and seg.shape == (b, h, w, 3)
    for image in (heatmaps, over, seg):
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    flat = soft.flatten(2)
    expected = {
        "soft": soft,
        "exclusive": torch.nn.functional.one_hot(soft.argmax(1), c).movedim(-1, 1).float(),
        "above mean": (soft > flat.mean(2)[..., None, None]).float(),
        "threshold": (soft > 0.3).float(),
        "otsu": (soft > masks.otsu_thresholds(flat)[..., None, None]).float(),
    }[mode]
    assert torch.equal(all_masks, expected.flatten(0, 1))  # image-major: image 0's concepts, then image 1's
    if mode == "exclusive":
        assert torch.equal(all_masks.view(b, c, h, w).sum(1), torch.ones(b, h, w))
    if mode != "soft":
        assert set(all_masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, expected[:, [0, 2]].amax(1))
    inverted = outputs.saliency_outputs(soft, names, [0, 2], mode, 0.3, True, picture)[2]
    assert torch.equal(inverted, 1.0 - mask)
    assert torch.equal(heatmaps, masks.colorize(soft))
    blend = render.OVERLAY_PICTURE * picture.repeat_interleave(c, 0) + (1 - render.OVERLAY_PICTURE) * heatmaps
    torch.testing.assert_close(over[:, 30:], blend[:, 30:])  # below the label
    torch.testing.assert_close(seg[:, 40:, 50:], render.palette(c)[soft.argmax(1)][:, 40:, 50:])
