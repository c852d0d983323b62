"""ConceptAttention on a tiny random Flux.1 inside real ComfyUI: maps against the independent
float32 reference, the sampled latent unchanged, the oracle, lifecycle and errors."""
from __future__ import annotations

import pytest
import torch

from reference import reference_maps
from tiny_flux import record_diffusion_calls

pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]


def _rel_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def comfy_modules():
    import comfy.patcher_extension
    import comfy.sample

    from concept_attention_pack.nodes import api, patching
    return comfy.sample, comfy.patcher_extension, api, patching


@pytest.fixture(scope="module")
def model():
    from tiny_flux import build_flux
    return build_flux(seed=0, depth=3, single=2)


@pytest.fixture(scope="module")
def embeddings():
    return torch.randn(len(NAMES), 64, generator=torch.Generator().manual_seed(5))


def _sample(sample_mod, model, batch=2, cfg=3.5, sampler="euler", steps=3, seed=0, shape=(8, 12), **kwargs):
    from tiny_flux import random_conditioning
    latent = torch.zeros(batch, 16, *shape)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    positive = random_conditioning(1, seed=1)
    negative = random_conditioning(1, seed=2)
    return sample_mod.sample(model, noise, steps, cfg, sampler, "simple", positive, negative, latent,
                             disable_pbar=True, **kwargs)


@pytest.mark.parametrize("variant,blocks,window,normalize", [
    ("output space", "1-2", (0.0, 1.0), False),
    ("output space", "0,2", (0.3, 1.0), False),
    ("cross attention", "last 2", (0.0, 1.0), False),
    ("output space", "all", (0.0, 0.6), True),
    ("cross attention", "1", (0.0, 1.0), True),
])
def test_sampling_maps_equal_float32_reference(comfy_modules, model, embeddings, variant, blocks, window, normalize):
    sample_mod, patcher_extension, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=variant,
                              start_percent=window[0], end_percent=window[1], normalize_concepts=normalize)
    calls = record_diffusion_calls(patched)
    samples = _sample(sample_mod, patched, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    block_ids = {"1-2": [1, 2], "0,2": [0, 2], "last 2": [1, 2], "all": [0, 1, 2], "1": [1]}[blocks]
    expected = reference_maps(model, calls, embeddings, block_ids, variant, window, normalize)
    assert maps.maps.shape == (2, 3, 4, 6)
    assert _rel_error(maps.maps.flatten(2), expected) < 1e-4


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_sampled_latent_is_bit_identical_with_and_without_patch(comfy_modules, model, embeddings, sampler, cfg):
    sample_mod, _, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    plain = _sample(sample_mod, model, batch=2, cfg=cfg, sampler=sampler)
    with_maps = _sample(sample_mod, patched, batch=2, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape[0] == 2


def test_concept_stream_reproduces_prompt_stream_when_concepts_are_the_prompt(comfy_modules, model):
    """Oracle: with the prompt tokens as concepts and a zero pooled vector, the concept stream
    (concept + image keys) is the prompt stream (prompt + image keys), block after block."""
    from comfy.ldm.flux.layers import timestep_embedding

    from concept_attention_pack.nodes.concept_stream import concept_attention, concept_qkv, concept_update
    diffusion = model.model.diffusion_model
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(1, 16, 8, 12, generator=generator)
    context = torch.randn(1, 7, 64, generator=generator)
    t = torch.tensor([0.6])
    img, img_ids = diffusion.process_img(x)
    img = diffusion.img_in(img)
    txt = diffusion.txt_in(context)
    vec = diffusion.time_in(timestep_embedding(t, 256)) + diffusion.guidance_in(timestep_embedding(torch.tensor([3.5]), 256))
    vec = vec + diffusion.vector_in(torch.zeros(1, diffusion.params.vec_in_dim))
    pe = diffusion.pe_embedder(torch.cat([torch.zeros(1, 7, 3), img_ids], dim=1))
    concepts = txt.clone()
    with torch.no_grad():
        for block in diffusion.double_blocks:
            seen = {}

            def keep(func, q, k, v, *args, **kwargs):
                seen.update(k=k[:, :, 7:].clone(), v=v[:, :, 7:].clone())
                return func(q, k, v, *args, **kwargs)

            concept = concept_qkv(block, concepts, block.txt_mod(vec))
            img, txt = block(img=img.clone(), txt=txt.clone(), vec=vec, pe=pe,
                             transformer_options={"optimized_attention_override": keep})
            concepts = concept_update(block, concepts, concept_attention(concept, seen["k"], seen["v"]), concept)
            assert _rel_error(concepts, txt) < 2e-6


def test_encode_path_equals_reference_and_skips_single_blocks(comfy_modules, model, embeddings):
    _, _, api, _ = comfy_modules
    from reference import ReferenceFlux, mean_softmax_maps
    from tiny_flux import TEXT_DIM
    single_calls = []

    def count_single(args, extra):
        single_calls.append(1)
        return extra["original_block"](args)

    counted = model.clone()
    counted.set_model_patch_replace(count_single, "dit", "single_block", 0)
    prompt = torch.randn(1, 5, TEXT_DIM, generator=torch.Generator().manual_seed(8))
    patched = api.patch_model(counted, embeddings, NAMES, blocks="1-2", empty_prompt=prompt, normalize_concepts=True)
    latent = torch.randn(2, 16, 9, 13, generator=torch.Generator().manual_seed(9))  # odd: padded by Flux
    noise = torch.randn(5, 2, 16, 9, 13, generator=torch.Generator().manual_seed(10))  # 5 seeds: 2 passes
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.5, noise=noise)
    assert single_calls == []
    assert maps.maps.shape == (2, 3, 5, 7) and maps.latent_size == (9, 13)

    ref = ReferenceFlux(model.model.diffusion_model)
    x0 = model.model.process_latent_in(latent)
    expected = []
    for image in range(2):
        scores = []
        for seed in range(5):
            x_t = 0.5 * noise[seed, image:image + 1] + 0.5 * x0[image:image + 1]
            s = ref.concept_scores(x_t, torch.tensor([0.5]), prompt, torch.zeros(1, 32), torch.zeros(1),
                                   embeddings, [1, 2], normalize_concepts=True)
            scores += list(s.values())
        expected.append(mean_softmax_maps(scores))
    assert _rel_error(maps.maps.flatten(2), torch.cat(expected)) < 1e-4


def test_default_noise_level_is_half_for_schnell_and_shifted_for_dev(comfy_modules):
    _, _, api, _ = comfy_modules
    from tiny_flux import build_flux
    assert api.default_noise_level(build_flux(schnell=True, depth=1, single=1)) == pytest.approx(0.5)
    assert api.default_noise_level(build_flux(depth=1, single=1)) == pytest.approx(0.7595, abs=1e-3)


def test_maps_follow_the_latent_and_reruns_give_fresh_maps(comfy_modules, model, embeddings):
    sample_mod, _, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES)
    first = _sample(sample_mod, patched, seed=1)
    second = _sample(sample_mod, patched, seed=2)
    maps_first = api.concept_maps(patched, first, source="sampling").maps
    maps_second = api.concept_maps(patched, second, source="sampling").maps
    assert not torch.equal(maps_first, maps_second)
    # the same latent after ComfyUI's intermediate dtype/device conversion still finds its maps
    assert torch.equal(api.concept_maps(patched, {"samples": first.clone()}, source="sampling").maps, maps_first)


def test_two_patched_models_keep_their_own_maps(comfy_modules, model, embeddings):
    sample_mod, _, api, _ = comfy_modules
    a = api.patch_model(model, embeddings, NAMES)
    b = api.patch_model(model, embeddings.flip(0), ["x", "y", "z"])
    latent_a = _sample(sample_mod, a, seed=3)
    latent_b = _sample(sample_mod, b, seed=3)
    assert torch.equal(latent_a, latent_b)  # same image: the patch never changes it
    assert api.concept_maps(a, latent_a, source="sampling").names == tuple(NAMES)
    assert api.concept_maps(b, latent_b, source="sampling").names == ("x", "y", "z")
    assert not torch.equal(api.concept_maps(a, latent_a, source="sampling").maps,
                           api.concept_maps(b, latent_b, source="sampling").maps)


def test_patching_leaves_the_incoming_model_untouched(comfy_modules, model, embeddings):
    _, _, api, patching = comfy_modules
    before_options = repr(model.model_options)
    before_wrappers = repr(model.wrappers)
    api.patch_model(model, embeddings, NAMES)
    assert repr(model.model_options) == before_options and repr(model.wrappers) == before_wrappers
    assert patching.concept_store(model) is None


def test_exception_inside_sampling_leaves_nothing_behind(comfy_modules, model, embeddings):
    sample_mod, patcher_extension, api, patching = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES)
    calls = []

    def fail_on_second_step(executor, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("injected")
        return executor(*args, **kwargs)

    failing = patched.clone()
    failing.add_wrapper_with_key(patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_fail", fail_on_second_step)
    recorded = len(patching.concept_store(failing))
    with pytest.raises(KeyboardInterrupt):
        _sample(sample_mod, failing)
    assert patching.CAPTURE_KEY not in failing.model_options["transformer_options"]
    assert len(patching.concept_store(failing)) == recorded  # nothing recorded from the broken run
    ok = _sample(sample_mod, patched)
    assert torch.equal(ok, _sample(sample_mod, model))
    assert api.concept_maps(patched, ok, source="sampling") is not None


def _with_diff_patch(model, key):
    """A clone carrying a LoRA-style weight patch (a plain difference) on `key`, and the difference."""
    delta = torch.randn(model.model.state_dict()[key].shape, generator=torch.Generator().manual_seed(4)) * 0.05
    patched = model.clone()
    patched.add_patches({key: ("diff", (delta,))}, 1.0)
    return patched, delta


def test_lora_style_weight_patches_are_used_by_the_concept_stream(comfy_modules, model, embeddings):
    sample_mod, patcher_extension, api, _ = comfy_modules
    key = "diffusion_model.double_blocks.1.txt_attn.qkv.weight"
    lora, delta = _with_diff_patch(model, key)
    patched = api.patch_model(lora, embeddings, NAMES, blocks="1-2")
    calls = record_diffusion_calls(patched)
    samples = _sample(sample_mod, patched, batch=1)
    maps = api.concept_maps(patched, samples, source="sampling").maps
    patched.unpatch_model()
    expected = reference_maps(model, calls, embeddings, [1, 2],
                               weight_deltas={key.removeprefix("diffusion_model."): delta})
    assert _rel_error(maps.flatten(2), expected) < 1e-4


def test_unsupported_model_error_names_supported_models(comfy_modules, embeddings):
    _, _, api, patching = comfy_modules
    import comfy.model_patcher

    class NotFlux(torch.nn.Module):
        pass

    wrapper = torch.nn.Module()
    wrapper.diffusion_model = NotFlux()
    patcher = comfy.model_patcher.ModelPatcher(wrapper, torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(patching.UnsupportedModelError, match="Flux.1 dev, Flux.1 schnell"):
        api.patch_model(patcher, embeddings, NAMES)


def test_bad_inputs_give_errors_naming_the_input(comfy_modules, model, embeddings):
    sample_mod, _, api, _ = comfy_modules
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match="blocks: .* double blocks 0-2"):
        api.patch_model(model, embeddings, NAMES, blocks="7")
    with pytest.raises(ConceptInputError, match=r"concept embeddings: expected shape \[3, 64\]"):
        api.patch_model(model, torch.zeros(3, 4096), NAMES)
    patched = api.patch_model(model, embeddings, NAMES)
    with pytest.raises(ConceptInputError, match="latent: no maps were captured"):
        api.concept_maps(patched, torch.zeros(1, 16, 8, 8), source="sampling")
    with pytest.raises(ConceptInputError, match="model: this MODEL carries no concepts"):
        api.concept_maps(model, torch.zeros(1, 16, 8, 8))
