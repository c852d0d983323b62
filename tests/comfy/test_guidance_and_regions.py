"""Maps come from the regular, full-frame, positive pass of each step, whatever else the graph
runs: regional (area) prompts, guidance nodes that add model calls, guiders that order their
prompts differently. The image never changes and sampling never fails because of the maps."""
from __future__ import annotations

import pytest
import torch

from reference import reference_maps
from test_flux_inside_comfy import NAMES, _rel_error, embeddings, model  # noqa: F401 (fixtures)
from tiny_flux import record_diffusion_calls

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def comfy_modules():
    import comfy.patcher_extension
    import comfy.samplers

    from concept_attention_pack.nodes import api, patching
    return comfy.samplers, comfy.patcher_extension, api, patching


def _conds(seed):
    from tiny_flux import random_conditioning
    return random_conditioning(1, seed=seed)


def _guided_sample(samplers, guider, steps=3, batch=1, shape=(8, 12)):
    """Sample with any guider, as SamplerCustomAdvanced does."""
    latent = torch.zeros(batch, 16, *shape)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    sigmas = samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", steps)
    return guider.sample(noise, latent, samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=0)


def _cfg_guider(samplers, model, positive, negative, cfg):
    guider = samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return guider


def _regional(kind):
    """The main prompt combined with a regional one: an area (ConditioningSetArea) or a mask with
    set_cond_area = mask bounds (ConditioningSetMask); both run the model on a crop."""
    import nodes
    region = _conds(7)
    if kind == "area":
        region = nodes.ConditioningSetArea().append(region, 48, 32, 16, 8, 1.0)[0]
    else:
        mask = torch.zeros(1, 64, 96)
        mask[:, 8:40, 24:80] = 1.0
        region = nodes.ConditioningSetMask().append(region, mask, "mask bounds", 1.0)[0]
    return nodes.ConditioningCombine().combine(_conds(1), region)[0]


@pytest.mark.parametrize("kind", ["area", "mask bounds"])
@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_regional_prompts_sample_unchanged_and_maps_come_from_full_frame_passes(
        comfy_modules, model, embeddings, kind, cfg):
    samplers, patcher_extension, api, _ = comfy_modules
    positive, negative = _regional(kind), _conds(2)
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    calls = record_diffusion_calls(patched)
    plain = _guided_sample(samplers, _cfg_guider(samplers, model, positive, negative, cfg))
    with_maps = _guided_sample(samplers, _cfg_guider(samplers, patched, positive, negative, cfg))
    assert torch.equal(plain, with_maps)
    assert any(call["x"].shape[-2:] != (8, 12) for call in calls), "no model call ran on a crop"
    full_frame = [call for call in calls if call["x"].shape[-2:] == (8, 12)]
    maps = api.concept_maps(patched, with_maps, source="sampling")
    expected = reference_maps(model, full_frame, embeddings, [0, 1, 2])
    assert _rel_error(maps.maps.flatten(2), expected) < 1e-4


@pytest.mark.parametrize("kind", ["area", "mask bounds"])
def test_regional_entry_leaves_the_first_step_maps_as_without_it(comfy_modules, model, embeddings, kind):
    """One step: the full-frame positive pass sees the same input with and without the regional entry."""
    samplers, _, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    with_region = _guided_sample(samplers, _cfg_guider(samplers, patched, _regional(kind), _conds(2), 3.5), steps=1)
    without = _guided_sample(samplers, _cfg_guider(samplers, patched, _conds(1), _conds(2), 3.5), steps=1)
    torch.testing.assert_close(api.concept_maps(patched, with_region, source="sampling").maps,
                               api.concept_maps(patched, without, source="sampling").maps, rtol=0, atol=1e-4)  # batch composition: float rounding only


def _skip_layer_guidance(model):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
    return SkipLayerGuidanceDiT.execute(model, scale=3.0, start_percent=0.0, end_percent=1.0, double_layers="1",
                                        single_layers="0").result[0]


def _skip_layer_guidance_simple(model):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiTSimple
    return SkipLayerGuidanceDiTSimple.execute(model, start_percent=0.0, end_percent=1.0, double_layers="1",
                                              single_layers="0").result[0]


@pytest.mark.parametrize("guidance", [_skip_layer_guidance, _skip_layer_guidance_simple],
                         ids=["SkipLayerGuidanceDiT", "SkipLayerGuidanceDiTSimple"])
@pytest.mark.parametrize("patch_first", [True, False], ids=["patch-then-guidance", "guidance-then-patch"])
def test_skip_layer_guidance_passes_do_not_enter_the_maps(comfy_modules, model, embeddings, guidance, patch_first):
    """Skip-layer guidance adds a pass with a block skipped (a positive one for SkipLayerGuidanceDiT).
    At one step the regular positive pass has the same input with and without it: the maps must
    be the same, and every step's maps equal the reference of the regular passes."""
    samplers, patcher_extension, api, _ = comfy_modules
    if patch_first:
        guided = guidance(api.patch_model(model, embeddings, NAMES, blocks="all"))
    else:
        guided = api.patch_model(guidance(model), embeddings, NAMES, blocks="all")
    plain = api.patch_model(model, embeddings, NAMES, blocks="all")
    positive, negative = _conds(1), _conds(2)
    one_step = [api.concept_maps(m, _guided_sample(samplers, _cfg_guider(samplers, m, positive, negative, 3.5),
                                                   steps=1), source="sampling").maps for m in (guided, plain)]
    torch.testing.assert_close(one_step[0], one_step[1], rtol=0, atol=1e-4)  # batch composition: float rounding only

    calls = record_diffusion_calls(guided)
    samples = _guided_sample(samplers, _cfg_guider(samplers, guided, positive, negative, 3.5), steps=3)
    assert torch.equal(samples, _guided_sample(samplers, _cfg_guider(samplers, guidance(model), positive, negative,
                                                                    3.5), steps=3))
    regular = calls[0::2] if len(calls) == 6 else calls  # SLG: a second call per step after the regular one
    assert len(calls) == 6, f"expected two model calls per step, got {len(calls)}"
    expected = reference_maps(model, regular, embeddings, [0, 1, 2])
    assert _rel_error(api.concept_maps(guided, samples, source="sampling").maps.flatten(2), expected) < 1e-4


def test_dual_cfg_guider_maps_come_from_its_positive_prompt(comfy_modules, model, embeddings):
    """DualCFGGuider batches [negative, middle, positive]: its positive is chunk 2, not chunk 0."""
    samplers, _, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    dual = _dual(patched)
    maps = api.concept_maps(patched, _guided_sample(samplers, dual, steps=1), source="sampling").maps
    single = _guided_sample(samplers, _cfg_guider(samplers, patched, _conds(1), _conds(2), 3.5), steps=1)
    torch.testing.assert_close(maps, api.concept_maps(patched, single, source="sampling").maps, rtol=0, atol=1e-4)  # batch composition: float rounding only
    assert torch.equal(_guided_sample(samplers, dual, steps=2), _guided_sample(samplers, _dual(model), steps=2))


def _dual(model):
    from comfy_extras.nodes_custom_sampler import Guider_DualCFG
    dual = Guider_DualCFG(model)
    dual.set_conds(_conds(1), _conds(3), _conds(2))
    dual.set_cfg(3.5, 2.0)
    return dual


def test_perp_neg_guider_maps_come_from_its_positive_prompt(comfy_modules, model, embeddings):
    from comfy_extras.nodes_perpneg import Guider_PerpNeg
    samplers, _, api, _ = comfy_modules
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    guider = Guider_PerpNeg(patched)
    guider.set_conds(_conds(1), _conds(2), _conds(4))
    guider.set_cfg(3.5, 1.0)
    maps = api.concept_maps(patched, _guided_sample(samplers, guider, steps=1), source="sampling").maps
    single = _guided_sample(samplers, _cfg_guider(samplers, patched, _conds(1), _conds(2), 3.5), steps=1)
    torch.testing.assert_close(maps, api.concept_maps(patched, single, source="sampling").maps, rtol=0, atol=1e-4)  # batch composition: float rounding only


def test_a_failing_concept_stream_never_fails_sampling(comfy_modules, model, embeddings, monkeypatch, caplog):
    """If the maps cannot be taken (here: the concept update raises), sampling goes on with the same
    image, the log says so once, and asking for the captured maps names the reason."""
    samplers, _, api, patching = comfy_modules
    # concepts of their own: an identical patch sampled this latent in another test (and would find its maps)
    patched = api.patch_model(model, embeddings.flip(0), NAMES, blocks="all")
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of memory (injected)")

    from concept_attention_pack.nodes.families import flux1
    monkeypatch.setattr(flux1, "concept_update", broken)
    positive, negative = _conds(1), _conds(2)
    with caplog.at_level("WARNING"):
        samples = _guided_sample(samplers, _cfg_guider(samplers, patched, positive, negative, 3.5))
    assert torch.equal(samples, _guided_sample(samplers, _cfg_guider(samplers, model, positive, negative, 3.5)))
    assert len(calls) == 1  # the stream stopped for the rest of the run after the first failure
    warnings = [r for r in caplog.records if "no concept maps for this sampling run" in r.getMessage()]
    assert len(warnings) == 1 and "out of memory (injected)" in warnings[0].getMessage()
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match="took no maps: RuntimeError: out of memory"):
        api.concept_maps(patched, samples, source="sampling")
