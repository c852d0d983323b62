"""The pure torch layers, without ComfyUI: concept stream math, accumulation, parsing, masks."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from concept_attention_pack.nodes import capture, concept_stream, masks


def test_split_concept_attention_equals_full_attention_rows():
    """Joint softmax over [concept keys; image keys] without concatenating = the authors' full
    (C+N) attention restricted to the concept rows."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 16, generator=g) for _ in range(3))
    img_q, img_k, img_v = (torch.randn(2, 3, 50, 16, generator=g) for _ in range(3))
    concept = concept_stream.ConceptQKV(q, k, v, None, None)
    ours = concept_stream.concept_attention(concept, img_k, img_v)
    full = F.scaled_dot_product_attention(torch.cat([q, img_q], 2), torch.cat([k, img_k], 2), torch.cat([v, img_v], 2))
    expected = full[:, :, :4].transpose(1, 2).flatten(2)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_concept_attention_is_stable_for_large_logits():
    q = torch.full((1, 1, 2, 4), 100.0)
    k = torch.full((1, 1, 2, 4), 100.0)
    v = torch.randn(1, 1, 2, 4)
    concept = concept_stream.ConceptQKV(q, k, v, None, None)
    out = concept_stream.concept_attention(concept, torch.full((1, 1, 3, 4), 100.0), torch.randn(1, 1, 3, 4))
    assert torch.isfinite(out).all()


def _toy_block(d=8, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = lambda i, o: torch.nn.Linear(i, o).requires_grad_(False)  # noqa: E731
    torch.manual_seed(seed)
    mod = lin(d, 6 * d)

    def txt_mod(vec):
        chunks = mod(F.silu(vec))[:, None].chunk(6, dim=-1)
        return SimpleNamespace(shift=chunks[0], scale=chunks[1], gate=chunks[2]), \
            SimpleNamespace(shift=chunks[3], scale=chunks[4], gate=chunks[5])

    norm_q, norm_k = torch.randn(d // heads, generator=g), torch.randn(d // heads, generator=g)
    rms = lambda x, s: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * s  # noqa: E731
    attn = SimpleNamespace(qkv=lin(d, 3 * d), proj=lin(d, d),
                           norm=lambda q, k, v: (rms(q, norm_q), rms(k, norm_k)))
    ln = lambda x: F.layer_norm(x, (d,), eps=1e-6)  # noqa: E731
    mlp = torch.nn.Sequential(lin(d, 4 * d), torch.nn.GELU(approximate="tanh"), lin(4 * d, d))
    return SimpleNamespace(num_heads=heads, txt_mod=txt_mod, txt_norm1=ln, txt_norm2=ln, txt_attn=attn, txt_mlp=mlp)


def test_concept_update_follows_the_spec_equations():
    block = _toy_block()
    g = torch.Generator().manual_seed(1)
    c, vec = torch.randn(1, 3, 8, generator=g), torch.randn(1, 8, generator=g)
    img_k, img_v = torch.randn(1, 2, 5, 4, generator=g), torch.randn(1, 2, 5, 4, generator=g)
    concept = concept_stream.concept_qkv(block, c, block.txt_mod(vec))
    out = concept_stream.concept_attention(concept, img_k, img_v)
    got = concept_stream.concept_update(block, c, out, concept)
    # the spec, written out
    m1, m2 = block.txt_mod(vec)
    x = block.txt_attn.qkv((1 + m1.scale) * F.layer_norm(c, (8,), eps=1e-6) + m1.shift)
    q, k, v = (t.reshape(1, 3, 2, 4).transpose(1, 2) for t in x.chunk(3, dim=-1))
    q, k = block.txt_attn.norm(q, k, v)
    logits = torch.cat([q @ k.transpose(-1, -2), q @ img_k.transpose(-1, -2)], -1) / math.sqrt(4)
    oc = (logits.softmax(-1) @ torch.cat([v, img_v], 2)).transpose(1, 2).flatten(2)
    c1 = c + m1.gate * block.txt_attn.proj(oc)
    c2 = c1 + m2.gate * block.txt_mlp((1 + m2.scale) * F.layer_norm(c1, (8,), eps=1e-6) + m2.shift)
    torch.testing.assert_close(out, oc, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, c2, rtol=1e-5, atol=1e-6)


def test_scores_shapes_and_cross_attention_sums_heads():
    g = torch.Generator().manual_seed(2)
    qc, qx = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 7, 5, generator=g)
    s = concept_stream.cross_attention_scores(qc, qx)
    assert s.shape == (2, 4, 7) and s.dtype == torch.float32
    torch.testing.assert_close(s[1, 2, 6], sum(qc[1, h, 2] @ qx[1, h, 6] for h in range(3)))
    o = concept_stream.output_space_scores(torch.randn(2, 4, 15), torch.randn(2, 7, 15))
    assert o.shape == (2, 4, 7)


def test_undo_rope_inverts_a_pairwise_rotation():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 6, 8, generator=g)
    angle = torch.randn(1, 1, 6, 4, generator=g)
    cos, sin = angle.cos(), angle.sin()
    pe = torch.stack([cos, -sin, sin, cos], dim=-1).reshape(1, 1, 6, 4, 2, 2)
    pairs = x.reshape(1, 2, 6, 4, 1, 2)
    rotated = (pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]).reshape(x.shape)
    torch.testing.assert_close(concept_stream.undo_rope(rotated, pe), x, rtol=1e-5, atol=1e-6)


def test_accumulator_takes_softmax_over_concepts_before_the_mean():
    acc = capture.SaliencyAccumulator(images=2, concepts=3, tokens=4, device="cpu")
    s1, s2 = torch.randn(2, 3, 4), torch.randn(1, 3, 4)
    acc.add(torch.tensor([0, 1]), s1)
    acc.add(torch.tensor([1]), s2)
    mean, count = acc.mean()
    assert count.tolist() == [1.0, 2.0]
    torch.testing.assert_close(mean[0], s1[0].softmax(0))
    torch.testing.assert_close(mean[1], (s1[1].softmax(0) + s2[0].softmax(0)) / 2)


@pytest.mark.parametrize("spec,expected", [
    ("last 4", (15, 16, 17, 18)), ("all", tuple(range(19))), ("15-18", (15, 16, 17, 18)),
    ("0, 2,5", (0, 2, 5)), ("-1", (18,)), ("-4--1", (15, 16, 17, 18)), ("LAST 2, 0", (0, 17, 18)),
])
def test_parse_blocks(spec, expected):
    assert capture.parse_blocks(spec, 19) == expected


@pytest.mark.parametrize("spec,message", [("19", "double blocks 0-18"), ("x", "could not read"), ("", "selects no")])
def test_parse_blocks_errors_name_the_input(spec, message):
    with pytest.raises(capture.ConceptInputError, match=f"blocks: .*{message}"):
        capture.parse_blocks(spec, 19)


def test_parse_concepts_lines_commas_blanks_and_duplicates():
    assert capture.parse_concepts("dragon, sky\n\n  background \n,") == ["dragon", "sky", "background"]
    assert capture.parse_concepts("forêt, 龍") == ["forêt", "龍"]
    with pytest.raises(capture.ConceptInputError, match="concepts: no concept"):
        capture.parse_concepts(" \n , ")
    with pytest.raises(capture.ConceptInputError, match=r"\['Sky'\] appear more than once"):
        capture.parse_concepts("sky, dragon, Sky")


def test_step_window_selects_fraction_of_steps():
    config = capture.ConceptConfig(("a",), torch.zeros(1, 4), (0,), start_percent=0.5, end_percent=1.0)
    assert [config.step_selected(i, 4) for i in range(4)] == [False, False, True, True]
    assert not config.all_steps


def _store(names=("a", "b"), captured=None, embeddings=None):
    config = capture.ConceptConfig(tuple(names), torch.zeros(len(names), 4) if embeddings is None else embeddings, (0,))
    captured = captured or capture.CapturedMaps(budget_bytes=2**20)
    return capture.ConceptStore(config, capture.patch_fingerprint(config, "model"), captured)


def test_store_finds_maps_within_tolerance_and_is_shared_by_copies():
    import copy
    store = _store()
    latent = torch.randn(1, 16, 4, 4)
    maps = capture.ConceptMaps(("a", "b"), torch.rand(1, 2, 2, 2), (4, 4), "sampling", "captured")
    store.record(latent, maps)
    assert store.find(latent.to(torch.bfloat16).float()) is None  # rounded to bf16: another latent
    assert store.find(latent + 3.0 * torch.rand_like(latent)) is None
    found = store.find(latent + 1e-6 * torch.randn_like(latent))  # SamplerCustomAdvanced's denoised_output
    assert found is not None and torch.equal(found.maps, maps.maps) and found.detail == "captured"
    assert copy.deepcopy({"s": store})["s"] is store


def test_store_matches_each_image_so_slices_and_rebatched_runs_find_their_maps():
    store = _store()
    runs = [torch.randn(2, 16, 4, 4) for _ in range(3)]
    run_maps = [torch.rand(2, 2, 2, 2) for _ in range(3)]
    for latent, maps in zip(runs, run_maps):
        store.record(latent, capture.ConceptMaps(("a", "b"), maps, (4, 4), "sampling"))
    mixed = torch.stack([runs[2][1], runs[0][0]])  # LatentFromBatch / RebatchLatents across runs
    assert torch.equal(store.find(mixed).maps, torch.stack([run_maps[2][1], run_maps[0][0]]))
    assert store.find(torch.stack([runs[1][0], torch.randn(16, 4, 4)])) is None  # one image unknown


def test_identical_patch_finds_maps_another_patch_does_not():
    captured = capture.CapturedMaps(budget_bytes=2**20)
    first, again = _store(captured=captured), _store(captured=captured)
    other = _store(names=("a", "c"), captured=captured)
    latent = torch.randn(1, 16, 4, 4)
    first.record(latent, capture.ConceptMaps(("a", "b"), torch.rand(1, 2, 2, 2), (4, 4), "sampling"))
    assert again.find(latent) is not None and len(again) == 1  # re-created after a cache eviction
    assert other.find(latent) is None and len(other) == 0


def test_store_is_bounded_by_memory_not_by_count():
    per_image = (16 * 4 * 4 + 2 * 2 * 2) * 4
    captured = capture.CapturedMaps(budget_bytes=30 * per_image)
    store = _store(captured=captured)
    latents = [torch.randn(1, 16, 4, 4) for _ in range(40)]
    for latent in latents:
        store.record(latent, capture.ConceptMaps(("a", "b"), torch.rand(1, 2, 2, 2), (4, 4), "sampling"))
    assert len(store) == 30 and captured.nbytes <= 30 * per_image
    assert store.find(latents[9]) is None and all(store.find(latent) is not None for latent in latents[10:])


@pytest.mark.parametrize("latent_size,token", [((9, 13), (2, 3)), ((93, 125), (46, 62)), ((93, 125), (10, 40))])
def test_grid_to_pixels_crops_padding_instead_of_stretching(latent_size, token):
    """A latent of 9x13 (72x104 px) or 93x125 (a 1000x744 image) is padded by Flux to a token grid
    one token larger: each token must stay over its own 16x16 pixels, the padding cropped away."""
    grid_size = ((latent_size[0] + 1) // 2, (latent_size[1] + 1) // 2)
    grid = torch.zeros(1, 1, *grid_size)
    grid[0, 0, token[0], token[1]] = 1.0  # covers rows 16r..16r+15, cols 16c..16c+15
    pixels = masks.grid_to_pixels(grid, latent_size)
    assert pixels.shape == (1, 1, latent_size[0] * 8, latent_size[1] * 8)
    above_half = (pixels[0, 0] >= 0.5).nonzero()
    rows, cols = above_half[:, 0], above_half[:, 1]
    height, width = pixels.shape[-2:]
    assert rows.min() == 16 * token[0] and rows.max() == min(16 * token[0] + 15, height - 1)
    assert cols.min() == 16 * token[1] and cols.max() == min(16 * token[1] + 15, width - 1)


def test_colorize_uses_one_range_per_image_and_plasma_ends():
    maps = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])[None]  # concept 0 low, concept 1 high
    image = masks.colorize(maps)
    assert image.shape == (2, 4, 4, 3)
    torch.testing.assert_close(image[0, 0, 0], masks.PLASMA[0])
    torch.testing.assert_close(image[1, 0, 0], masks.PLASMA[-1])


def test_select_concepts_by_name():
    names = ("Dragon", "sky", "background")
    assert masks.select_concepts(names, "") == [0]
    assert masks.select_concepts(names, "dragon, SKY") == [0, 1]
    with pytest.raises(capture.ConceptInputError, match=r"concept: \['tree'\] is not among"):
        masks.select_concepts(names, "tree")


def test_normalize_over_concepts_shifts_to_zero_and_sums_to_one():
    x = torch.tensor([[[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]]])  # [B=1, C=3, d=2]
    out = concept_stream.normalize_over_concepts(x, dim=-2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 2 / 3, 1 / 3]))
    torch.testing.assert_close(out[0, :, 1], torch.zeros(3))  # all equal: left at zero, no NaN


def test_gaussian_blur_is_the_normalised_3x3_sigma_1_kernel_and_keeps_concept_sums():
    grid = torch.zeros(1, 2, 5, 5)
    grid[0, 0, 2, 2] = 1.0
    grid[0, 1] = 1.0 - grid[0, 0]
    blurred = masks.gaussian_blur_3x3(grid)
    g = math.exp(-0.5)
    total = (1 + 2 * g) ** 2
    assert blurred[0, 0, 2, 2].item() == pytest.approx(1 / total)
    assert blurred[0, 0, 1, 2].item() == pytest.approx(g / total)
    assert blurred[0, 0, 1, 1].item() == pytest.approx(g * g / total)
    torch.testing.assert_close(blurred.sum(1), torch.ones(1, 5, 5))


def _soft_maps(seed=0, b=2, c=3, h=24, w=32):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)).softmax(dim=1)


@pytest.mark.parametrize("mode", ["above mean", "otsu", "threshold"])
def test_binary_modes_give_only_zeros_and_ones(mode):
    out = masks.apply_mask_mode(_soft_maps(), mode, threshold=0.34)
    assert set(out.unique().tolist()) <= {0.0, 1.0} and out.shape == (2, 3, 24, 32)


def test_above_mean_is_the_papers_rule():
    soft = _soft_maps(1)
    out = masks.apply_mask_mode(soft, "above mean")
    assert torch.equal(out[1, 2], (soft[1, 2] > soft[1, 2].mean()).float())


def test_exclusive_masks_partition_the_image():
    out = masks.apply_mask_mode(_soft_maps(2), "exclusive")
    assert torch.equal(out.sum(dim=1), torch.ones(2, 24, 32))
    assert set(out.unique().tolist()) == {0.0, 1.0}


def test_otsu_separates_two_clusters():
    values = torch.cat([torch.full((100,), 0.2), torch.full((50,), 0.8)]) + torch.linspace(0, 0.01, 150)
    cut = masks.otsu_thresholds(values[None])
    assert values[:100].max() < cut.item() < values[100:].min()


def test_unknown_mask_mode_names_the_input():
    with pytest.raises(capture.ConceptInputError, match="mask_mode: expected one of"):
        masks.apply_mask_mode(_soft_maps(), "fuzzy")


def test_overlay_and_segmentation_images_are_labelled():
    from concept_attention_pack.nodes import render
    soft = _soft_maps(3, h=96, w=128)
    over = render.overlay(soft, ("dragon", "sky", "background"), torch.zeros(1, 96, 128, 3))
    plain = render.overlay(soft, ("dragon", "sky", "background"))
    seg = render.segmentation(soft, ("dragon", "sky", "background"))
    assert over.shape == (6, 96, 128, 3) and seg.shape == (2, 96, 128, 3)
    assert 0 <= over.min() and over.max() <= 1
    # the label box (black with white text) is drawn in the top-left corner, not elsewhere
    corner, elsewhere = over[0, :12, :40], over[0, 60:, 60:]
    assert (corner.sum(-1) < 0.05).any() and (corner.min(-1).values > 0.95).any()
    assert not (elsewhere.sum(-1) < 0.05).any()
    # pixels away from the legend carry the arg-max concept's palette colour
    expected = render.PALETTE[soft[1].argmax(0)[80, 100]]
    torch.testing.assert_close(seg[1, 80, 100], expected, atol=1 / 255, rtol=0)


def test_overlay_refuses_an_image_batch_that_does_not_match():
    from concept_attention_pack.nodes import render
    with pytest.raises(capture.ConceptInputError, match="image: 3 images for a latent batch of 2"):
        render.overlay(_soft_maps(), ("a", "b", "c"), torch.zeros(3, 24, 32, 3))
