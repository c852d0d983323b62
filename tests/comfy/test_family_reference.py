"""The Flux.2 (dev, Klein) and Chroma test models and references, checked against real ComfyUI
0.29: the tiny models sample; the independent float32 references (tests/support/reference.py) reproduce
every double block of the real model (image and prompt streams, the joint attention's image rows,
the text-side modulation) within 1e-5; and an oracle checks the references' concept streams.

The oracle: concepts are the prompt tokens themselves, so they get the prompt's modulation and
weights; the only differences between the concept stream and the prompt stream are that concepts
attend to concept keys instead of prompt keys (the same vectors here) and sit at position 0. For
Chroma (prompt positions are 0) the model's own prompt stream is therefore the concept stream,
block after block. Flux.2 gives prompt tokens positions 0..L-1 on axis 3; a `post_input` patch
(a ComfyUI extension point) sets them to 0 in the real model, whose prompt stream must then equal
the concept stream, and without that patch it must not (RoPE on the prompt matters). The same
call checks both score variants' inputs: the concept and image queries before RoPE (captured
with an attn1_patch) and the joint attention's rows (captured with an attention override)."""
from __future__ import annotations

import pytest
import torch

from conftest import COMFYUI

from tiny_flux import family_test_marks

pytestmark = family_test_marks(COMFYUI is not None)

TOLERANCE = 1e-5
FAMILIES = ["klein", "dev", "chroma"]


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


def _build(family, **kwargs):
    from tiny_flux2 import build_flux2
    from tiny_chroma import build_chroma
    if family == "chroma":
        return build_chroma(seed=0, **kwargs)
    return build_flux2(seed=0, klein=family.startswith("klein"), txt_norm=family.endswith("txt_norm"), **kwargs)


def _latent(family, shape, batch=1, seed=0):
    channels = 16 if family == "chroma" else 128
    return torch.randn(batch, channels, *shape, generator=torch.Generator().manual_seed(seed))


def _conditioning(family, seed, tokens=6):
    from tiny_flux2 import random_flux2_conditioning
    from tiny_chroma import random_chroma_conditioning
    if family == "chroma":
        return random_chroma_conditioning(tokens=tokens, seed=seed)
    return random_flux2_conditioning(tokens=tokens, seed=seed, guidance=4.0 if family == "dev" else None)


def _sample(model, family, positive, negative=None, cfg=1.0, steps=2, shape=(6, 10), seed=0):
    import comfy.sample
    latent = torch.zeros(1, 16 if family == "chroma" else 128, *shape)
    noise = _latent(family, shape, seed=seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative or [], latent,
                               disable_pbar=True)


@pytest.fixture(scope="module")
def models():
    return {family: _build(family) for family in FAMILIES + ["klein_txt_norm"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_samples_a_non_square_latent_and_the_prompt_matters(models, family):
    model = models[family]
    shape = (7, 10) if family == "chroma" else (6, 10)  # odd height: Chroma pads to 2x2 patches
    first = _sample(model, family, _conditioning(family, 1), shape=shape, steps=3)
    other_prompt = _sample(model, family, _conditioning(family, 2), shape=shape, steps=3)
    with_cfg = _sample(model, family, _conditioning(family, 1), _conditioning(family, 2), cfg=2.0, shape=shape, steps=3)
    assert first.shape == (1, 16 if family == "chroma" else 128, *shape)
    assert torch.isfinite(first).all() and torch.isfinite(with_cfg).all()
    assert _rel_error(other_prompt, first) > 1e-3
    assert _rel_error(with_cfg, first) > 1e-3


def test_dev_guidance_changes_the_sample_and_klein_ignores_it(models):
    from tiny_flux2 import random_flux2_conditioning
    dev = [_sample(models["dev"], "dev", random_flux2_conditioning(seed=1, guidance=g)) for g in (1.0, 4.0)]
    klein = [_sample(models["klein"], "klein", random_flux2_conditioning(seed=1, guidance=g)) for g in (1.0, 4.0)]
    assert _rel_error(dev[0], dev[1]) > 1e-4
    assert torch.equal(klein[0], klein[1])


def _inputs(call, family):
    return call["x"], call["t"], call["context"], call["guidance"]


@pytest.mark.parametrize("family", FAMILIES + ["klein_txt_norm"])
def test_reference_reproduces_every_double_block_while_sampling(models, family):
    from reference import reference_for
    from tiny_flux import capture_double_blocks, record_diffusion_calls
    model = models[family].clone()
    calls = record_diffusion_calls(model)
    blocks = capture_double_blocks(model)
    base = "chroma" if family == "chroma" else "klein" if family.startswith("klein") else "dev"
    _sample(model, base, _conditioning(base, 1), _conditioning(base, 2), cfg=2.0,
            shape=(7, 10) if family == "chroma" else (5, 9))
    ref = reference_for(models[family])
    depth = ref.depth
    assert len(calls) == 2 and len(blocks) == 2 * depth  # 2 steps, cond and uncond batched
    for c, call in enumerate(calls):
        out = ref.run(*_inputs(call, family))
        n_txt = call["context"].shape[1]
        for i in range(depth):
            got = blocks[c * depth + i]
            assert got["block"] == i
            assert _rel_error(out["img"][i], got["img"]) < TOLERANCE
            assert _rel_error(out["txt"][i], got["txt"]) < TOLERANCE
            assert _rel_error(out["img_attn"][i], got["attn"][:, n_txt:]) < TOLERANCE
            (_, txt_mods) = got["vec"]  # (image side, text side): what the prompt, so the concepts, get
            for mine, theirs in zip(out["txt_mods"][i], txt_mods):
                for k, name in enumerate(["shift", "scale", "gate"]):
                    assert _rel_error(mine[k], getattr(theirs, name)) < TOLERANCE


def _call_diffusion_model(model, family, x, t, context, guidance, **kwargs):
    diffusion = model.model.diffusion_model
    options = model.model_options["transformer_options"]
    with torch.no_grad():
        if family == "chroma":
            return diffusion(x, t, context, guidance, transformer_options=options, **kwargs)
        return diffusion(x, t, context, None, guidance, transformer_options=options, **kwargs)


def test_chroma_reference_applies_a_joint_attention_mask_like_the_model(models):
    """Chroma's blocks take an attention_mask on the joint (prompt + image) sequence (ComfyUI
    0.29 builds none from the T5 tokens; StyleModelApply's attn_bias gives such an additive
    mask). The reference applies it to prompt and image rows; concepts never see it."""
    from reference import reference_for
    from tiny_flux import capture_double_blocks
    model = models["chroma"].clone()
    blocks = capture_double_blocks(model)
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 6, 8, generator=generator)
    context = torch.randn(2, 5, 64, generator=generator)
    t, guidance = torch.tensor([0.7, 0.4]), torch.zeros(2)
    n = 5 + 3 * 4
    mask = torch.zeros(2, n, n, dtype=torch.float16)
    mask[0, :, 3:5] = float("-inf")  # image and prompt rows never see prompt tokens 3, 4 (padding-like)
    mask[1, :, 1] = -2.0
    _call_diffusion_model(model, "chroma", x, t, context, guidance, attention_mask=mask)
    ref = reference_for(models["chroma"])
    out = ref.run(x, t, context, guidance, attn_mask=mask)
    unmasked = ref.run(x, t, context, guidance)
    for i in range(ref.depth):
        assert blocks[i]["attn_mask"] is not None
        assert _rel_error(out["img"][i], blocks[i]["img"]) < TOLERANCE
        assert _rel_error(out["txt"][i], blocks[i]["txt"]) < TOLERANCE
    assert _rel_error(unmasked["img"][-1], blocks[-1]["img"]) > 1e-3


@pytest.mark.parametrize("family", FAMILIES + ["klein_txt_norm"])
def test_concept_stream_is_the_prompt_stream_when_concepts_are_the_prompt_at_position_zero(models, family):
    from reference import reference_for
    from tiny_flux import capture_double_blocks
    from tiny_flux2 import FLUX2_TEXT_DIM
    from tiny_chroma import CHROMA_TEXT_DIM
    chroma = family == "chroma"
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16 if chroma else 128, 6, 8 if chroma else 5, generator=generator)
    context = torch.randn(1, 7, CHROMA_TEXT_DIM if chroma else FLUX2_TEXT_DIM, generator=generator)
    t = torch.tensor([0.6])
    guidance = torch.tensor([0.0 if chroma else 3.5])
    ref = reference_for(models[family])
    # the model's image stream below sees the prompt at position 0: so does the reference's
    at_origin = torch.zeros(1, 7, len(ref.axes_dim))
    concepts = ref.run(x, t, context, guidance, concept_embeddings=context[0], prompt_ids=at_origin)["concepts"]

    def zero_prompt_positions(args):
        return {**args, "txt_ids": torch.zeros_like(args["txt_ids"])}

    queries = []

    def keep_queries(q, k, v, pe=None, attn_mask=None, extra_options=None):
        if extra_options.get("block_type") == "double":  # q after QK-norm, before RoPE: [prompt; image]
            queries.append(q.clone())
        return {}

    at_zero = models[family].clone()
    if not chroma:
        at_zero.set_model_patch(zero_prompt_positions, "post_input")
    at_zero.set_model_patch(keep_queries, "attn1_patch")
    blocks = capture_double_blocks(at_zero)
    _call_diffusion_model(at_zero, family, x, t, context, guidance)
    run = ref.run(x, t, context, guidance, concept_embeddings=context[0], prompt_ids=at_origin,
                  blocks=list(range(ref.depth)), variant="cross attention")
    output_space = ref.run(x, t, context, guidance, context[0], list(range(ref.depth)), prompt_ids=at_origin)["scores"]
    for i in range(ref.depth):
        assert _rel_error(concepts[i], blocks[i]["txt"]) < TOLERANCE
        # the cross-attention variant's inputs: concept queries and image queries before RoPE
        assert _rel_error(run["concept_q"][i], queries[i][:, :, :7]) < TOLERANCE
        assert _rel_error(run["img_q"][i], queries[i][:, :, 7:]) < TOLERANCE
        expected = torch.einsum("bhcd,bhnd->bcn", queries[i][:, :, :7], queries[i][:, :, 7:])
        assert _rel_error(run["scores"][i], expected) < TOLERANCE
        # output space: the concepts' attention output (here the prompt rows) . the image rows
        joint = blocks[i]["attn"]
        assert _rel_error(output_space[i], joint[:, :7] @ joint[:, 7:].transpose(1, 2)) < TOLERANCE
    if not chroma:  # control: with the prompt's own positions, the streams differ from the first block
        moved = models[family].clone()
        moved_blocks = capture_double_blocks(moved)
        _call_diffusion_model(moved, family, x, t, context, guidance)
        own = ref.run(x, t, context, guidance, concept_embeddings=context[0])["concepts"]
        assert _rel_error(own[0], moved_blocks[0]["txt"]) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant", ["output space", "cross attention"])
def test_reference_scores_have_one_row_per_concept_and_image_token(models, family, variant):
    from reference import mean_softmax_maps, reference_for
    chroma = family == "chroma"
    ref = reference_for(models[family])
    generator = torch.Generator().manual_seed(6)
    x = _latent(family, (7, 10) if chroma else (5, 9), batch=2)
    context = torch.randn(2, 4, 64 if chroma else 96, generator=generator)
    concepts = torch.randn(3, 64 if chroma else 96, generator=generator)
    guidance = None if family == "klein" else torch.zeros(2)
    n = 4 * 5 if chroma else 5 * 9
    for normalize in (False, True):
        scores = ref.concept_scores(x, torch.tensor([0.5, 0.5]), context, guidance, concepts, [0, 1], variant,
                                    normalize)
        assert sorted(scores) == [0, 1]
        for s in scores.values():
            assert s.shape == (2, 3, n) and torch.isfinite(s).all()
        maps = mean_softmax_maps(list(scores.values()))
        torch.testing.assert_close(maps.sum(1), torch.ones(2, n))


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_path_inputs_reproduce_the_model_call(models, family):
    """x_t = t * noise + (1 - t) * x0 (x0 after process_latent_in), guidance 0 where the model has
    a guidance input (dev, Chroma), none for Klein; the reference fed these reproduces the model."""
    from reference import encode_path_inputs, pad_flux2_context, reference_for
    from tiny_flux import capture_double_blocks
    chroma = family == "chroma"
    model = models[family]
    latent = _latent(family, (6, 10), seed=7)
    noise = _latent(family, (6, 10), seed=8)
    inputs = encode_path_inputs(model, latent, noise, 0.75)
    x0 = model.model.process_latent_in(latent)
    torch.testing.assert_close(inputs["x"], 0.75 * noise + 0.25 * x0)
    assert (inputs["guidance"] is None) == (family == "klein")
    if inputs["guidance"] is not None:
        assert torch.equal(inputs["guidance"], torch.zeros(1))
    prompt = torch.randn(1, 3, 64 if chroma else 96, generator=torch.Generator().manual_seed(9))
    prompt = prompt if chroma else pad_flux2_context(prompt)  # as ComfyUI hands a Flux.2 prompt to the model
    patched = model.clone()
    blocks = capture_double_blocks(patched)
    _call_diffusion_model(patched, family, inputs["x"], inputs["t"], prompt, inputs["guidance"])
    out = reference_for(model).run(inputs["x"], inputs["t"], prompt, inputs["guidance"])
    assert _rel_error(out["img"][-1], blocks[-1]["img"]) < TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_rows_reach_the_model_as_documented(models, family):
    """dev: the encoder's rows arrive left-padded with zero rows to 512 (a concept row p is model
    row p + 512 - L); Klein: the encoder already gives 512 rows (pad tokens on the right), passed
    as they are; Chroma: the T5 rows as they are."""
    from tiny_flux import own_token_positions, record_diffusion_calls
    from tiny_flux2 import FLUX2_PROMPT_LENGTH, flux2_conditioning, tiny_flux2_clip, tiny_klein_clip
    from tiny_chroma import chroma_conditioning, tiny_chroma_clip
    clip = {"klein": tiny_klein_clip, "dev": tiny_flux2_clip, "chroma": tiny_chroma_clip}[family](0)
    rows = clip.encode_from_tokens(clip.tokenize("a red dog"))
    model = models[family].clone()
    calls = record_diffusion_calls(model)
    positive = chroma_conditioning(rows) if family == "chroma" else flux2_conditioning(rows)
    _sample(model, family, positive, steps=1)
    seen = calls[0]["context"]
    if family == "dev":
        shift = FLUX2_PROMPT_LENGTH - rows.shape[1]
        assert seen.shape[1] == FLUX2_PROMPT_LENGTH and torch.equal(seen[:, :shift], torch.zeros_like(seen[:, :shift]))
        assert torch.equal(seen[:, shift:], rows)
        positions = own_token_positions(clip, "a red dog")
        assert torch.equal(seen[0, [p + shift for p in positions]], rows[0, positions])
    else:
        assert torch.equal(seen, rows)
        if family == "klein":
            assert seen.shape[1] == FLUX2_PROMPT_LENGTH
