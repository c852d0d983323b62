"""Robustness inside real ComfyUI: odd concepts, model variety, weight dtypes, batches and masks,
re-patching, interrupts."""
from __future__ import annotations

import pytest
import torch

from reference import reference_maps
from test_flux_inside_comfy import (  # noqa: F401 (comfy_modules, embeddings: fixtures)
    NAMES, _rel_error, _sample, _with_diff_patch, comfy_modules, embeddings)
from tiny_flux import record_diffusion_calls

pytestmark = pytest.mark.comfy


@pytest.mark.parametrize("dtype,manual_cast", [
    (torch.bfloat16, torch.float32),  # bf16-stored weights, float32 compute
    (torch.float8_e4m3fn, torch.float32),  # fp8-stored weights, ComfyUI's manual cast
])
def test_maps_of_reduced_precision_weights_match_float32(comfy_modules, embeddings, dtype, manual_cast):
    """Maps are float32 whatever the stored dtype; with float32 compute they equal the float32
    reference of the same (rounded) weights on the same inputs within 1e-4."""
    sample_mod, patcher_extension, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=3, dtype=dtype, manual_cast=manual_cast)
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    calls = record_diffusion_calls(patched)
    maps = api.concept_maps(patched, _sample(sample_mod, patched, batch=1), source="sampling").maps
    assert maps.dtype == torch.float32
    assert _rel_error(maps.flatten(2), reference_maps(model, calls, embeddings, [0, 1, 2])) < 1e-4


def test_fp16_compute_maps_follow_float32_where_the_maps_are_decisive(comfy_modules, embeddings):
    """fp16 compute (the image stream too) reproduces float32 only to fp16's precision, and how close
    depends on the CPU's fp16 kernels (accumulation order and width): the largest map error was 0.5%
    of the scale here and 2.7% on another x86 CPU, always at a pixel where two concepts nearly tie,
    where the sharp softmax over concepts turns small score errors into large map differences. What
    holds on any CPU: the mean error stays at fp16 level (0.12% here; bound 1%) and every pixel
    where the float32 maps' winner leads by more than 0.1 has the same winner (an error of 0.05 at
    one pixel, twice the largest seen anywhere, would be needed to swap it)."""
    sample_mod, patcher_extension, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=3, dtype=torch.float16)
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    calls = record_diffusion_calls(patched)
    maps = api.concept_maps(patched, _sample(sample_mod, patched, batch=1), source="sampling").maps.flatten(2)
    assert maps.dtype == torch.float32
    expected = reference_maps(model, calls, embeddings, [0, 1, 2])
    error = (maps - expected).abs()
    assert error.mean() / expected.abs().max() < 1e-2
    top2 = expected.topk(2, dim=1).values
    decisive = (top2[:, 0] - top2[:, 1]) > 0.1
    assert decisive.float().mean() > 0.5  # the check covers most of the picture
    assert torch.equal(maps.argmax(1)[decisive], expected.argmax(1)[decisive])


@pytest.mark.parametrize("normalize,tolerance", [(False, 6e-2), (True, 2e-1)])
def test_bfloat16_compute_encode_maps_stay_close_to_float32(comfy_modules, embeddings, normalize, tolerance):
    """bf16 activations: the image stream itself is bf16, so maps can only be as exact as it is.
    Scores are taken in float32 (a bf16 dot product was 5x worse); measured 4.0% of the scale with
    the plain equations, 13.2% with concept normalisation (it divides small bf16 differences)."""
    _, _, api, _ = comfy_modules
    from reference import ReferenceFlux, mean_softmax_maps
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=3, dtype=torch.bfloat16)
    generator = torch.Generator().manual_seed(1)
    latent, prompt = torch.randn(1, 16, 8, 12, generator=generator), torch.randn(1, 8, 64, generator=generator)
    noise = torch.randn(1, 1, 16, 8, 12, generator=torch.Generator().manual_seed(3))
    patched = api.patch_model(model, embeddings, NAMES, blocks="all", empty_prompt=prompt,
                              normalize_concepts=normalize)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.5, noise=noise).maps
    x_t = 0.5 * noise[0] + 0.5 * model.model.process_latent_in(latent)
    scores = ReferenceFlux(model.model.diffusion_model).concept_scores(
        x_t, torch.tensor([0.5]), prompt, torch.zeros(1, 32), torch.zeros(1), embeddings, [0, 1, 2],
        normalize_concepts=normalize)
    error = _rel_error(maps.flatten(2), mean_softmax_maps(list(scores.values())))
    print(f"bf16 encode path, normalize={normalize}: {error:.4f} of the map scale")
    assert error < tolerance


def test_batch_of_three_with_cfg_gives_a_map_per_image(comfy_modules, embeddings):
    sample_mod, patcher_extension, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=2)
    patched = api.patch_model(model, embeddings, NAMES)
    calls = record_diffusion_calls(patched)
    samples = _sample(sample_mod, patched, batch=3, cfg=4.0)
    maps = api.concept_maps(patched, samples, source="sampling").maps
    assert maps.shape[0] == 3 and not torch.equal(maps[0], maps[2])
    assert _rel_error(maps.flatten(2), reference_maps(model, calls, embeddings, [0, 1])) < 1e-4


def test_latent_with_noise_mask_samples_unchanged_and_captures(comfy_modules, embeddings):
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=2)
    patched = api.patch_model(model, embeddings, NAMES)
    mask = torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1.0
    plain = _sample(sample_mod, model, batch=1, noise_mask=mask)
    with_maps = _sample(sample_mod, patched, batch=1, noise_mask=mask)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (1, 3, 4, 6)


def test_flux_kontext_reference_latents_work_and_do_not_change_the_image(comfy_modules, embeddings):
    """Kontext appends reference-image tokens after the image tokens: maps cover the image only."""
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux, random_conditioning
    model = build_flux(seed=0, depth=2)
    patched = api.patch_model(model, embeddings, NAMES)
    latent = torch.zeros(1, 16, 8, 12)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    positive = random_conditioning(1, seed=1)
    positive[0][1]["reference_latents"] = [torch.randn(1, 16, 6, 10, generator=torch.Generator().manual_seed(2))]
    run = lambda m: sample_mod.sample(m, noise, 2, 1.0, "euler", "simple", positive, positive, latent,  # noqa: E731
                                      disable_pbar=True)
    plain, with_maps = run(model), run(patched)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (1, 3, 4, 6)


def test_flux_fill_with_96_input_channels_works(comfy_modules, embeddings):
    import comfy.supported_models
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux, random_conditioning
    model = build_flux(seed=0, depth=2, in_channels=96, model_class=comfy.supported_models.FluxInpaint)
    patched = api.patch_model(model, embeddings, NAMES)
    latent = torch.zeros(1, 16, 8, 12)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    positive = random_conditioning(1, seed=1)
    positive[0][1].update(concat_latent_image=torch.randn(1, 16, 8, 12), concat_mask=torch.ones(1, 1, 64, 96))
    run = lambda m: sample_mod.sample(m, noise, 2, 1.0, "euler", "simple", positive, positive, latent,  # noqa: E731
                                      disable_pbar=True)
    plain, with_maps = run(model), run(patched)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (1, 3, 4, 6)


def test_sixty_four_concepts(comfy_modules):
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=2)
    names = [f"concept {i}" for i in range(64)]
    patched = api.patch_model(model, torch.randn(64, 64), names)
    maps = api.concept_maps(patched, _sample(sample_mod, patched, batch=1), source="sampling")
    assert maps.maps.shape == (1, 64, 4, 6)
    torch.testing.assert_close(maps.maps.sum(1), torch.ones(1, 4, 6))


def test_second_patch_replaces_the_first(comfy_modules, embeddings):
    sample_mod, _, api, patching = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=3)
    first = api.patch_model(model, embeddings, NAMES, blocks="all")
    second = api.patch_model(first, embeddings[:2], ["left", "right"], blocks="0")
    hooks = second.model_options["transformer_options"]["patches_replace"]["dit"]
    assert all(hook.previous is None for hook in hooks.values())  # not chained onto the first patch
    recorded_by_first = len(patching.concept_store(first))
    samples = _sample(sample_mod, second, batch=1)
    assert torch.equal(samples, _sample(sample_mod, model, batch=1))
    maps = api.concept_maps(second, samples, source="sampling")
    assert maps.names == ("left", "right") and len(patching.concept_store(first)) == recorded_by_first


def test_latent_of_another_size_is_recomputed_never_mismatched(comfy_modules, embeddings):
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=2)
    patched = api.patch_model(model, embeddings, NAMES, empty_prompt=torch.zeros(1, 4, 64))
    _sample(sample_mod, patched, batch=1)
    other = torch.randn(2, 16, 10, 6)
    maps = api.concept_maps(patched, other)  # auto: not captured, so computed for this latent
    assert maps.source == "latent" and maps.maps.shape == (2, 3, 5, 3) and maps.latent_size == (10, 6)


def test_comfyui_interrupt_leaves_nothing_patched_or_held(comfy_modules, embeddings):
    import comfy.model_management
    sample_mod, _, api, patching = comfy_modules
    from tiny_flux import build_flux
    model = build_flux(seed=0, depth=2)
    patched = api.patch_model(model, embeddings, NAMES)
    recorded = len(patching.concept_store(patched))

    def interrupt(step, *args):
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)
        comfy.model_management.throw_exception_if_processing_interrupted()

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _sample(sample_mod, patched, batch=1, callback=interrupt)
    comfy.model_management.interrupt_current_processing(False)
    assert patching.CAPTURE_KEY not in patched.model_options["transformer_options"]
    assert len(patching.concept_store(patched)) == recorded
    assert api.concept_maps(patched, _sample(sample_mod, patched, batch=1), source="sampling") is not None


def test_node_errors_name_the_input(comfy_modules):
    from concept_attention_pack.nodes.capture import ConceptInputError
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention
    from tiny_flux import build_flux, tiny_clip
    model, clip = build_flux(seed=0, depth=2), tiny_clip()
    args = dict(blocks="last 4", start_percent=0.0, end_percent=1.0, map_variant="output space")
    with pytest.raises(ConceptInputError, match="concepts: no concept was given"):
        ConceptAttention.execute(model, clip, " ,\n ", **args)
    with pytest.raises(ConceptInputError, match="concepts: only \\['dragon'\\] was given"):
        ConceptAttention.execute(model, clip, "dragon", **args)
    with pytest.raises(ConceptInputError, match="appear more than once"):
        ConceptAttention.execute(model, clip, "sky, Sky", **args)
    with pytest.raises(ConceptInputError, match="start_percent/end_percent"):
        ConceptAttention.execute(model, clip, "a, b", **{**args, "start_percent": 0.8, "end_percent": 0.2})


def _other_diffusion_models():
    """Tiny real ComfyUI diffusion models the pack does not serve: an SD1.5-style UNet, and Wan (a
    video DiT whose text reaches the video by cross-attention, not joint attention)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.wan.model import WanModel
    ops = comfy.ops.disable_weight_init
    yield UNetModel(image_size=32, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1,
                    channel_mult=(1,), num_head_channels=16, transformer_depth=[1], transformer_depth_output=[1, 1],
                    context_dim=32, use_linear_in_transformer=True, use_spatial_transformer=True,
                    transformer_depth_middle=-2, operations=ops)
    yield WanModel(dim=64, ffn_dim=128, text_dim=32, num_heads=2, num_layers=1, operations=ops)


def test_non_flux_models_are_refused_naming_the_supported_ones(comfy_modules, embeddings):
    import comfy.model_patcher
    _, _, api, patching = comfy_modules
    for diffusion in _other_diffusion_models():
        holder = torch.nn.Module()
        holder.diffusion_model = diffusion
        patcher = comfy.model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
        with pytest.raises(patching.UnsupportedModelError,
                           match=f"model: this is a {type(diffusion).__name__} model; .*Flux.1 dev, Flux.1 schnell"):
            api.patch_model(patcher, embeddings, NAMES)


def test_low_vram_partial_loading_with_a_lora_patch_keeps_maps_exact(comfy_modules, embeddings, monkeypatch):
    """ComfyUI's low-VRAM path, forced on this CPU machine: every module stays on the offload device
    with weights cast on the fly and the LoRA-style patch applied per call (LowVramPatch). The
    concept stream calls the block submodules, so it sees exactly the patched weights."""
    import comfy.model_management as mm
    sample_mod, patcher_extension, api, _ = comfy_modules
    from tiny_flux import build_flux
    monkeypatch.setattr(mm, "is_device_cpu", lambda device: False)
    monkeypatch.setattr(mm, "vram_state", mm.VRAMState.NO_VRAM)
    model = build_flux(seed=0, depth=3)
    key = "diffusion_model.double_blocks.1.txt_mlp.0.weight"
    lora, delta = _with_diff_patch(model, key)
    patched = api.patch_model(lora, embeddings, NAMES, blocks="1-2")
    calls = record_diffusion_calls(patched)
    maps = api.concept_maps(patched, _sample(sample_mod, patched, batch=1), source="sampling").maps
    block = model.model.diffusion_model.double_blocks[1].txt_mlp[0]
    assert getattr(block, "comfy_cast_weights", False), "the low-VRAM path was not taken"
    mm.unload_all_models()
    expected = reference_maps(model, calls, embeddings, [1, 2],
                               weight_deltas={key.removeprefix("diffusion_model."): delta})
    assert _rel_error(maps.flatten(2), expected) < 1e-4


def test_maps_survive_re_creating_an_identical_patch(comfy_modules, embeddings):
    """ComfyUI's RAM-pressure cache can drop the patched MODEL (and even the loaded model) while it
    keeps the sampler's LATENT: the re-created patch must still find the captured maps."""
    import gc
    sample_mod, _, api, _ = comfy_modules
    from tiny_flux import build_flux
    patched = api.patch_model(build_flux(seed=0, depth=2), embeddings, NAMES)
    samples = _sample(sample_mod, patched, batch=2, seed=21)
    captured = api.concept_maps(patched, samples, source="sampling")
    del patched
    gc.collect()
    again = api.patch_model(build_flux(seed=0, depth=2), embeddings, NAMES)  # loader and patch re-executed
    found = api.concept_maps(again, samples, source="sampling")
    assert torch.equal(found.maps, captured.maps) and found.detail.startswith("captured while sampling")
    other_weights = api.patch_model(build_flux(seed=1, depth=2), embeddings, NAMES, empty_prompt=torch.zeros(1, 4, 64))
    assert api.concept_maps(other_weights, samples).source == "latent"  # another model: not its maps


def test_api_with_its_defaults_gives_the_same_masks_as_the_nodes_with_theirs(comfy_modules):
    """The README's API example and the nodes at their defaults give the same maps: noise_level is a
    position in the schedule in both (0.5: sigma ~0.76 for dev), concept normalisation and blur on."""
    _, _, api, _ = comfy_modules
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention, ConceptSaliency
    from concept_attention_pack.nodes.text_encoding import encode_concepts, encode_prompt
    from tiny_flux import build_flux, tiny_clip
    model, clip = build_flux(seed=2, depth=2), tiny_clip()
    latent = torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(4))
    node_model = ConceptAttention.execute(model, clip, "dragon\nsky\nbackground", "last 4", 0.0, 1.0,
                                          "output space", True).result[0]
    node_masks = ConceptSaliency.execute(node_model, {"samples": latent}, "", "latent", 0.5, 7, 2,
                                         mask_mode="soft").result[0]
    names = ["dragon", "sky", "background"]
    patched = api.patch_model(model, encode_concepts(clip, names), names, empty_prompt=encode_prompt(clip, ""))
    maps = api.concept_maps(patched, latent, source="latent", noise_level=0.5, seeds=range(7, 9))
    assert maps.detail.startswith("computed from the latent: 2 noise seeds at sigma 0.76")
    torch.testing.assert_close(api.concept_masks(maps).flatten(0, 1), node_masks)
