"""The pack on CogVideoX 1.0 inside real ComfyUI 0.29, on tiny random models built from ComfyUI's own
classes (the 5B layout with RoPE on video tokens, the 2B one with sin/cos positions; 1.5 refused): the float32
reference (tests/support/reference_cogvideox.py) reproduces ComfyUI's blocks; the maps, [B, C, T, h, w], equal
it while sampling and on the encode path (a v-prediction DDPM model: noised as ComfyUI samples it);
the sampled video is bit-identical with and without the patch."""
from __future__ import annotations

import pytest
import torch

from reference import maps_over_calls, mean_softmax_maps
from reference_cogvideox import ReferenceCogVideoX
from tiny_cogvideox import (
    TEXT_DIM, VERSION_SKIP_REASON, cogvideox_supported, random_cogvideox_conditioning, record_model_calls,
)

pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]
FRAMES, SHAPE = 3, (4, 6)
TOLERANCE = 1e-4


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


@pytest.fixture(scope="module", params=["5b", "2b"])
def model(request):
    if not cogvideox_supported():
        pytest.skip(VERSION_SKIP_REASON)
    from tiny_cogvideox import build_cogvideox
    return build_cogvideox(seed=0, variant=request.param)


@pytest.fixture(scope="module")
def embeddings():
    return torch.randn(len(NAMES), TEXT_DIM, generator=torch.Generator().manual_seed(5))


def _sample(model, batch=2, cfg=4.0, sampler="euler", steps=3, seed=0):
    import comfy.sample
    latent = torch.zeros(batch, 16, FRAMES, *SHAPE)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", random_cogvideox_conditioning(seed=1),
                               random_cogvideox_conditioning(seed=2), latent, disable_pbar=True)


def test_reference_reproduces_every_block_of_comfyui(model):
    patched = model.clone()
    calls = record_model_calls(patched)
    blocks = model.model.diffusion_model.blocks
    outputs, attention = [], []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs.append([t.detach().clone() for t in o]))
             for block in blocks]

    def override(func, *args, **kwargs):
        out = func(*args, **kwargs)
        attention.append(out.detach().clone())
        return out

    patched.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    try:
        _sample(patched, batch=1, cfg=1.0, steps=1)
    finally:
        for hook in hooks:
            hook.remove()
    call = calls[0]
    out = ReferenceCogVideoX(model.model.diffusion_model).run(call["x"], call["t"], call["context"])
    assert len(outputs) == 3 and len(attention) == 3
    for (video, text), attn, ref_video, ref_text, ref_attn in zip(outputs, attention, out["video"], out["text"],
                                                                  out["attn"]):
        assert _rel_error(video, ref_video) < TOLERANCE
        assert _rel_error(text, ref_text) < TOLERANCE
        assert _rel_error(attn, ref_attn) < TOLERANCE


@pytest.mark.parametrize("map_variant,blocks,block_ids,window,normalize", [
    ("output space", "auto", [2], (0.0, 1.0), True),
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
])
def test_sampling_maps_equal_the_reference_per_latent_frame(api, model, embeddings, map_variant, blocks, block_ids,
                                                            window, normalize):
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=map_variant, start_percent=window[0],
                              end_percent=window[1], normalize_concepts=normalize)
    calls = record_model_calls(patched)
    maps = api.concept_maps(patched, _sample(patched, steps=4), source="sampling")
    assert maps.maps.shape == (2, 3, FRAMES, 2, 3) and maps.temporal_scale == 4
    reference = ReferenceCogVideoX(model.model.diffusion_model)

    def scores_of(call, rows):
        return reference.run(call["x"][rows], call["t"][rows], call["context"][rows], embeddings, block_ids,
                             map_variant, normalize)["scores"]

    assert _rel_error(maps.maps.flatten(2), maps_over_calls(calls, scores_of, window)) < TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_sampled_video_is_bit_identical_with_and_without_patch(api, model, embeddings, sampler, cfg):
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    plain = _sample(model, cfg=cfg, sampler=sampler)
    with_maps = _sample(patched, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (2, 3, FRAMES, 2, 3)


def test_encode_path_equals_the_reference_noised_as_comfyui_samples(api, model, embeddings):
    """CogVideoX is a v-prediction DDPM model: the encode path noises the latent as ComfyUI's sampling
    does at that sigma (noise_scaling, then the model's input scaling), not with the flow formula.
    Plain equations (no concept normalisation): with 4 rows in one pass ComfyUI's attention kernel
    rounds the image outputs differently from one row (6e-6 of the maps' scale), and normalisation,
    dividing by the concepts' near-equal features, turns that into 1.2e-4 at one pixel here; it is
    tested while sampling."""
    latent = torch.randn(2, 16, FRAMES, *SHAPE, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, *latent.shape, generator=torch.Generator().manual_seed(4))
    patched = api.patch_model(model, embeddings, NAMES, blocks="0-1", normalize_concepts=False)
    prompt = random_cogvideox_conditioning(seed=6)
    base = model.model
    sigma = float(base.model_sampling.sigma(torch.tensor(500.0)))
    maps = api.concept_maps(patched, latent, source="latent", sigma=sigma, noise=noise, conditioning=prompt)
    reference = ReferenceCogVideoX(base.diffusion_model)
    x0 = base.process_latent_in(latent)
    s = torch.tensor([sigma])
    per_image = []
    for image in range(2):
        scores = []
        for seed in range(2):
            x_t = base.model_sampling.noise_scaling(s, noise[seed, image:image + 1], x0[image:image + 1])
            x_in = base.model_sampling.calculate_input(s, x_t)
            out = reference.run(x_in, base.model_sampling.timestep(s).float(), prompt[0][0], embeddings, [0, 1],
                                normalize_concepts=False, last=1)
            scores += list(out["scores"].values())
        per_image.append(mean_softmax_maps(scores))
    assert _rel_error(maps.maps.flatten(2), torch.cat(per_image)) < TOLERANCE


def test_cogvideox_15_is_refused_with_the_reason(api, embeddings):
    """CogVideoX 1.5's tokens span two latent frames (patch_size_t 2): refused, naming what is served."""
    if not cogvideox_supported():
        pytest.skip(VERSION_SKIP_REASON)
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from tiny_cogvideox import cogvideox_config

    from concept_attention_pack.nodes.families import UnsupportedModelError
    config = {**cogvideox_config(), "patch_size_t": 2, "in_channels": 16}
    model = comfy.supported_models.CogVideoX_T2V(config).get_model({})
    patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(UnsupportedModelError, match="this is CogVideoX 1.5.*not 1.5 yet"):
        api.patch_model(patcher, embeddings, NAMES)
