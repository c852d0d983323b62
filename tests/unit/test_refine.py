"""Image-guided refinement (nodes/refine.py), pure torch: conventions, edge accuracy, the guided
filter against kornia's, renormalisation and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from concept_attention_pack.nodes import capture, masks, refine

RED, BLUE = torch.tensor([0.8, 0.3, 0.2]), torch.tensor([0.2, 0.4, 0.7])


def _disc_and_bar(size=128, supersample=4, noise=0.03):
    """A red disc (radius 19 px, centred off the token grid) and a red bar 6 px wide (less than
    half a token) on blue, anti-aliased, with noise. Returns (picture [1, H, W, 3], true labels
    [H, W], token-perfect maps [1, 2, h, w]: each token's share of blue and red)."""
    axis = (torch.arange(size * supersample) + 0.5) / supersample
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    fine = (((y - 61.3) ** 2 + (x - 57.7) ** 2 < 19.0 ** 2)
            | (((x - 96.2).abs() < 3) & (y > 20) & (y < 108))).float()
    cover = F.avg_pool2d(fine[None, None], supersample)[0, 0]
    picture = cover[..., None] * RED + (1 - cover[..., None]) * BLUE
    picture = picture + noise * torch.randn(picture.shape, generator=torch.Generator().manual_seed(0))
    grid = F.avg_pool2d(torch.stack([1 - cover, cover])[None], 16)
    return picture.clamp(0, 1)[None], (cover > 0.5).long(), grid


def _boundary(mask):
    """Pixels of a boolean mask with a 4-neighbour outside it (the image border does not count)."""
    padded = F.pad(mask.float()[None, None], (1, 1, 1, 1), mode="replicate")
    eroded = -F.max_pool2d(-padded, 3, stride=1)[0, 0]
    return mask & (eroded < 0.5)


def _edge_distances(predicted, truth):
    """(farthest predicted edge pixel from the true edge, farthest true edge pixel from the predicted
    edge), in pixels."""
    guessed, true = _boundary(predicted).nonzero().float(), _boundary(truth).nonzero().float()
    if not len(guessed):
        return float("inf"), float("inf")
    distances = torch.cdist(guessed, true)
    return distances.min(1).values.max().item(), distances.min(0).values.max().item()


def _random_grid(b=2, c=3, h=5, w=7, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)).mul(4).softmax(dim=1)


def _random_picture(b=2, height=72, width=104, seed=1):
    coarse = torch.rand(b, 3, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(coarse, size=(height, width), mode="nearest").movedim(1, -1)


@pytest.mark.parametrize("blur", [False, True], ids=["no blur", "blur"])
def test_refined_edge_lands_within_2_pixels_of_the_true_edge_where_bilinear_does_not(blur):
    picture, truth, grid = _disc_and_bar()
    grid_for_bilinear = masks.gaussian_blur_3x3(grid) if blur else grid
    bilinear = masks.grid_to_pixels(grid_for_bilinear, (16, 16))[0].argmax(0) == 1
    assert max(_edge_distances(bilinear, truth)) > 2  # bilinear rounds the disc and loses the bar
    for mode in ("guided", "pamr"):
        refined = refine.refine_maps(grid, picture, mode, blur=blur)[0].argmax(0) == 1
        assert max(_edge_distances(refined, truth)) <= 2, mode


@pytest.mark.parametrize("mode", ["guided", "pamr"])
def test_refined_maps_keep_shape_range_and_unit_sums_at_an_odd_size(mode):
    """Batch 2, a 9x13 latent (72x104 pixels: the 5x7-token grid overhangs by half a token)."""
    grid, picture = _random_grid(), _random_picture()
    out = refine.refine_maps(grid, picture, mode, blur=True)
    assert out.shape == (2, 3, 72, 104) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 72, 104), rtol=0, atol=1e-5)


def test_an_odd_size_is_refined_as_its_padded_picture_cropped_never_stretched():
    """72x104 pixels under a 5x7-token grid (80x112): the guided fit is the one of the picture
    padded with its edge pixels (as Flux pads), cropped back, so every token stays over its own
    pixels. (PAMR then works on the cropped picture's own pixels.)"""
    grid, picture = _random_grid(), _random_picture()
    padded = F.pad(picture.movedim(-1, 1), (0, 8, 0, 8), mode="replicate").movedim(1, -1)
    expected = refine.refine_maps(grid, padded, "guided")[..., :72, :104]
    torch.testing.assert_close(refine.refine_maps(grid, picture, "guided"), expected, rtol=1e-5, atol=1e-5)


def test_refinement_changes_the_maps_and_one_picture_serves_a_batch():
    grid, picture = _random_grid(), _random_picture(b=1)
    bilinear = refine.refine_maps(grid, picture, "none")
    guided = refine.refine_maps(grid, picture, "guided")
    assert (guided - bilinear).abs().max() > 0.1
    torch.testing.assert_close(guided, refine.refine_maps(grid, picture.expand(2, -1, -1, -1), "guided"))


@pytest.mark.parametrize("mode", ["guided", "pamr"])
def test_a_flat_picture_gives_finite_maps_that_sum_to_one(mode):
    """No colour variance anywhere: the fit falls back to the window mean of the maps (no NaN)."""
    out = refine.refine_maps(_random_grid(), torch.zeros(1, 72, 104, 3), mode, blur=True)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.sum(dim=1), torch.ones(2, 72, 104), rtol=0, atol=1e-5)


def test_none_is_the_bilinear_upsampling_of_grid_to_pixels():
    grid = _random_grid()
    torch.testing.assert_close(refine.refine_maps(grid, _random_picture(), "none", blur=True),
                               masks.grid_to_pixels(masks.gaussian_blur_3x3(grid), (9, 13)))


def test_token_scale_guided_filter_is_kornias_guided_blur_inside_the_picture():
    """At scale 1 (one cell per pixel) the filter is He's guided filter; kornia's guided_blur, a
    ComfyUI requirement, is the reference away from the borders (its windows reflect there, ours
    are cut)."""
    kornia = pytest.importorskip("kornia")
    g = torch.Generator().manual_seed(3)
    guide, maps = torch.rand(2, 3, 24, 28, generator=g), torch.rand(2, 4, 24, 28, generator=g)
    ours = refine.coarse_guided_filter(maps, guide, guide, radius=2, eps=1e-3, scale=1)
    theirs = kornia.filters.guided_blur(guide, maps, kernel_size=5, eps=1e-3)
    torch.testing.assert_close(ours[..., 4:-4, 4:-4], theirs[..., 4:-4, 4:-4], rtol=1e-4, atol=1e-5)


def test_renormalise_clamps_and_restores_unit_sums():
    maps = torch.tensor([[0.7, -0.1, 0.0], [0.5, 0.4, 0.0], [0.1, 0.9, -0.2]])[None, :, :, None]  # [1, C=3, 3, 1]
    out = refine.renormalise(maps.clone())
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.sum(dim=1), torch.ones(1, 3, 1))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.7, 0.5, 0.1]) / 1.3)
    torch.testing.assert_close(out[0, :, 2, 0], torch.full((3,), 1 / 3))  # nothing left: an even share


def test_refine_errors_name_the_input():
    grid = _random_grid()
    with pytest.raises(capture.ConceptInputError, match="refine: expected one of"):
        refine.refine_maps(grid, _random_picture(), "sharp")
    with pytest.raises(capture.ConceptInputError, match=r"image: the picture is 64x64 pixels but the maps' 7x5 tokens"):
        refine.refine_maps(grid, _random_picture(height=64, width=64), "guided")
    with pytest.raises(capture.ConceptInputError, match="image: 3 images for a latent batch of 2"):
        refine.refine_maps(grid, _random_picture(b=3), "guided")


def test_an_eps_that_cannot_be_solved_and_a_non_finite_picture_are_refused():
    """eps 0 on a flat picture left the guided filter's 3x3 system singular (NaN maps)."""
    grid = torch.full((1, 2, 3, 4), 0.5)
    flat = torch.full((1, 48, 64, 3), 0.3)
    with pytest.raises(capture.ConceptInputError, match="refine_eps: must be a positive number"):
        refine.refine_maps(grid, flat, "guided", eps=0.0)
    with pytest.raises(capture.ConceptInputError, match="refine_eps: must be a positive number"):
        refine.refine_maps(grid, flat, "guided", eps=float("nan"))
    broken = flat.clone()
    broken[0, 5, 5, 0] = float("nan")
    with pytest.raises(capture.ConceptInputError, match="image: the picture contains NaN or infinite values"):
        refine.refine_maps(grid, broken, "guided")
    assert torch.isfinite(refine.refine_maps(grid, flat, "guided", eps=1e-5)).all()


def test_non_finite_scores_end_the_runs_maps_with_the_reason():
    config = capture.ConceptConfig(names=("a", "b"), embeddings=torch.zeros(2, 4), blocks=(0,))
    run = capture.ConceptCapture(config)
    assert run.begin_forward(1, (2, 3), (4, 6), "cpu")
    scores = torch.randn(1, 2, 6)
    scores[0, 0, 2] = float("nan")
    run.add(torch.tensor([0]), scores, 0)
    assert run.result("sampling") is None
    assert "not finite" in run.failure
