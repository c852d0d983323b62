"""The pack on Flux.2 dev, Flux.2 Klein and Chroma inside real ComfyUI 0.29 (tiny random models):
maps equal the independent float32 reference of each family's equations (tests/support/reference.py, raw
weights, no pack code), the sampled latent is bit-identical with and without the patch, the
encode path, the text encoders, and the same Python API as for Flux.1."""
from __future__ import annotations

import pytest
import torch

from conftest import COMFYUI

from reference import reference_maps
from tiny_flux import family_test_marks, record_diffusion_calls

pytestmark = family_test_marks(COMFYUI is not None)

NAMES = ["dragon", "sky", "background"]
FAMILIES = ["dev", "klein", "chroma"]
SHAPES = {"dev": (6, 10), "klein": (5, 9), "chroma": (7, 10)}  # non-square; odd sizes where the family pads


def _rel_error(actual, expected):
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


@pytest.fixture(scope="module")
def models():
    from tiny_flux2 import build_flux2
    from tiny_chroma import build_chroma
    return {"dev": build_flux2(seed=0, depth=3), "klein": build_flux2(seed=0, klein=True, depth=3),
            "chroma": build_chroma(seed=0, depth=3)}


def _text_dim(family):
    from tiny_flux2 import FLUX2_TEXT_DIM
    from tiny_chroma import CHROMA_TEXT_DIM
    return CHROMA_TEXT_DIM if family == "chroma" else FLUX2_TEXT_DIM


def _embeddings(family):
    return torch.randn(len(NAMES), _text_dim(family), generator=torch.Generator().manual_seed(5))


def _conditioning(family, seed):
    from tiny_flux2 import random_flux2_conditioning
    from tiny_chroma import random_chroma_conditioning
    if family == "chroma":
        return random_chroma_conditioning(tokens=6, seed=seed)
    return random_flux2_conditioning(tokens=6, seed=seed, guidance=3.5 if family == "dev" else None)


def _channels(family):
    return 16 if family == "chroma" else 128


def _sample(model, family, batch=2, cfg=3.0, sampler="euler", steps=3, seed=0):
    import comfy.sample
    latent = torch.zeros(batch, _channels(family), *SHAPES[family])
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", _conditioning(family, 1),
                               _conditioning(family, 2), latent, disable_pbar=True)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("variant,blocks,block_ids,window,normalize", [
    ("output space", "1-2", [1, 2], (0.0, 1.0), True),
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
])
def test_sampling_maps_equal_the_family_reference(api, models, family, variant, blocks, block_ids, window, normalize):
    model, embeddings = models[family], _embeddings(family)
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=variant, start_percent=window[0],
                              end_percent=window[1], normalize_concepts=normalize)
    calls = record_diffusion_calls(patched)
    samples = _sample(patched, family, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    grid = {"dev": (6, 10), "klein": (5, 9), "chroma": (4, 5)}[family]
    assert maps.maps.shape == (2, 3, *grid)
    expected = reference_maps(model, calls, embeddings, block_ids, variant, window, normalize)
    assert _rel_error(maps.maps.flatten(2), expected) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_sampled_latent_is_bit_identical_with_and_without_patch(api, models, family, sampler, cfg):
    model = models[family]
    patched = api.patch_model(model, _embeddings(family), NAMES, blocks="all")
    plain = _sample(model, family, batch=2, cfg=cfg, sampler=sampler)
    with_maps = _sample(patched, family, batch=2, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape[0] == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_encode_path_equals_the_family_reference(api, models, family):
    """Two images, three seeds, an odd latent: noised at sigma 0.5, guidance 0 where the model has a
    guidance input, the prompt prepared as the model prepares it (Flux.2: left-padded to 512)."""
    from reference import encode_path_inputs, mean_softmax_maps, reference_for
    model, embeddings = models[family], _embeddings(family)
    prompt = torch.randn(1, 5, _text_dim(family), generator=torch.Generator().manual_seed(8))
    patched = api.patch_model(model, embeddings, NAMES, blocks="1-2", empty_prompt=prompt)
    latent = torch.randn(2, _channels(family), *SHAPES[family], generator=torch.Generator().manual_seed(9))
    noise = torch.randn(3, *latent.shape, generator=torch.Generator().manual_seed(10))
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.5, noise=noise)
    assert maps.source == "latent" and maps.latent_size == SHAPES[family]

    ref = reference_for(model)
    context = model.model.extra_conds(cross_attn=prompt)["c_crossattn"].cond  # what ComfyUI feeds the model
    if family != "chroma":
        assert context.shape[1] == 512
    expected = []
    for image in range(2):
        scores = []
        for seed in range(3):
            inputs = encode_path_inputs(model, latent[image:image + 1], noise[seed, image:image + 1], 0.5)
            scores += list(ref.concept_scores(inputs["x"], inputs["t"], context, inputs["guidance"], embeddings,
                                              [1, 2], "output space", True).values())
        expected.append(mean_softmax_maps(scores))
    assert _rel_error(maps.maps.flatten(2), torch.cat(expected)) < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_masks_are_at_image_size(api, models, family):
    """Flux.2 latents are 16 pixels per latent pixel with 1x1 patches, Chroma's 8 with 2x2: the masks
    come out at the decoded image's size either way (odd sizes cropped back, never stretched)."""
    model = models[family]
    patched = api.patch_model(model, _embeddings(family), NAMES)
    maps = api.concept_maps(patched, _sample(patched, family, batch=1), source="sampling")
    scale = 8 if family == "chroma" else 16
    assert api.concept_masks(maps).shape == (1, 3, SHAPES[family][0] * scale, SHAPES[family][1] * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_concept_attention_node_encodes_concepts_with_the_family_text_encoder(models, family):
    """The nodes, with each family's tiny text encoder built from ComfyUI's own classes: the concept
    embeddings are the mean of the concept's own tokens (found as tests/tiny_flux.own_token_positions
    documents them), and Concept Saliency gives masks for the sampled latent."""
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention, ConceptSaliency
    from concept_attention_pack.nodes.patching import concept_store
    from tiny_flux import own_token_positions
    from tiny_flux2 import tiny_flux2_clip, tiny_klein_clip
    from tiny_chroma import tiny_chroma_clip
    clip = {"dev": tiny_flux2_clip, "klein": tiny_klein_clip, "chroma": tiny_chroma_clip}[family](seed=0)
    names = ["dog", "skyscraper window", "forêt"]
    patched = ConceptAttention.execute(models[family], clip, "\n".join(names), "last 4", 0.0, 1.0,
                                       "output space", True).result[0]
    embeddings = concept_store(patched).config.embeddings
    for row, name in zip(embeddings, names):
        encoded = clip.encode_from_tokens(clip.tokenize(name))[0]
        torch.testing.assert_close(row, encoded[own_token_positions(clip, name)].float().mean(0))
    samples = _sample(patched, family, batch=1)
    out = ConceptSaliency.execute(patched, {"samples": samples}, "dog", "auto", 0.5, 0, 1)
    masks, mask = out.result[0], out.result[2]
    scale = 8 if family == "chroma" else 16
    assert masks.shape == (3, SHAPES[family][0] * scale, SHAPES[family][1] * scale)
    assert mask.shape == (1, *masks.shape[1:]) and out.ui["text"][0].startswith("maps captured while sampling")


def test_a_model_the_pack_cannot_handle_is_refused_listing_the_families(api):
    """A UNet (SD1.5/SDXL layout) has no joint text-image attention: refused, naming every family."""
    import comfy.model_patcher
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    from concept_attention_pack.nodes.families import UnsupportedModelError
    holder = torch.nn.Module()
    holder.diffusion_model = UNetModel(image_size=32, in_channels=4, model_channels=32, out_channels=4, num_res_blocks=1,
                                       channel_mult=(1,), num_head_channels=16, transformer_depth=[1],
                                       transformer_depth_output=[1, 1], context_dim=32, use_linear_in_transformer=True,
                                       use_spatial_transformer=True, transformer_depth_middle=-2,
                                       operations=comfy.ops.disable_weight_init)
    patcher = comfy.model_patcher.ModelPatcher(holder, torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(UnsupportedModelError, match="UNetModel model; Concept Attention supports Flux.1 dev, .*Flux.2 dev "
                                                    "and Flux.2 Klein .*; Chroma; SD3 Medium, SD3.5 Large"):
        api.patch_model(patcher, torch.zeros(3, 64), NAMES)


@pytest.mark.parametrize("method", ["index", "index_timestep_zero"])
def test_flux2_reference_images_leave_the_image_unchanged_and_maps_cover_the_generated_image(api, models, method):
    """Multi-reference editing appends the reference images' tokens after the generated image's: the
    maps cover the generated image only."""
    import comfy.sample
    model = models["klein"]
    patched = api.patch_model(model, _embeddings("klein"), NAMES)
    positive = _conditioning("klein", 1)
    positive[0][1].update(reference_latents=[torch.randn(1, 128, 4, 6, generator=torch.Generator().manual_seed(3))],
                          reference_latents_method=method)
    latent = torch.zeros(1, 128, *SHAPES["klein"])
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    run = lambda m: comfy.sample.sample(m, noise, 2, 1.0, "euler", "simple", positive, positive, latent,  # noqa: E731
                                        disable_pbar=True)
    plain, with_maps = run(model), run(patched)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (1, 3, *SHAPES["klein"])


def test_concept_embeddings_reach_the_device_once_per_run(api, models, monkeypatch):
    """No host-to-device copy of the embeddings per model call (on CUDA each would synchronise): every
    call of a run gets the same device tensor."""
    from concept_attention_pack.nodes.capture import ConceptCapture
    handed_out = []
    original = ConceptCapture.embeddings_on

    def spy(self, device, dtype):
        handed_out.append(original(self, device, dtype))
        return handed_out[-1]

    monkeypatch.setattr(ConceptCapture, "embeddings_on", spy)
    patched = api.patch_model(models["dev"], _embeddings("dev"), NAMES)
    _sample(patched, "dev", batch=1, cfg=3.0, steps=3)
    assert len(handed_out) == 3 and all(t is handed_out[0] for t in handed_out)


def test_longcat_image_on_the_flux_class_is_refused_by_name(api):
    """LongCat-Image runs on ComfyUI's Flux class (no pooled vector, text positions on two axes): not
    served yet, and the refusal says so instead of calling it a Flux."""
    import comfy.ldm.flux.model as flux_model
    import comfy.supported_models

    from concept_attention_pack.nodes.families import UnsupportedModelError
    from tiny_flux import _known_fields, _patcher
    config = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=None, context_in_dim=64,
                  hidden_size=128, mlp_ratio=4.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[16, 24, 24],
                  theta=10000, patch_size=2, qkv_bias=True, guidance_embed=False, txt_ids_dims=[1, 2])
    model = _patcher(comfy.supported_models.LongCatImage(_known_fields(config, flux_model.FluxParams)), 0,
                     torch.float32, 0.1)
    with pytest.raises(UnsupportedModelError, match=r"Flux model \(LongCat-Image, which ComfyUI runs on the Flux "
                                                    r"class, is not supported yet\); Concept Attention supports"):
        api.patch_model(model, torch.zeros(3, 64), NAMES)


def test_klein_reference_image_maps_equal_the_reference_at_the_references_own_size(api, models):
    """Multi-reference editing (the 'index' method): each reference's tokens are scored like the
    generated image's and its maps come out at its own size; picture 0 stays the generated image."""
    import comfy.sample

    from reference import mean_softmax_maps, reference_for
    model, embeddings = models["klein"], _embeddings("klein")
    patched = api.patch_model(model, embeddings, NAMES, blocks="1-2")
    calls = record_diffusion_calls(patched)
    positive = _conditioning("klein", 1)
    references = [torch.randn(1, 128, 4, 6, generator=torch.Generator().manual_seed(3)),
                  torch.randn(1, 128, 3, 5, generator=torch.Generator().manual_seed(4))]
    positive[0][1].update(reference_latents=references, reference_latents_method="index")
    latent = torch.zeros(1, 128, *SHAPES["klein"])
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    samples = comfy.sample.sample(patched, noise, 2, 1.0, "euler", "simple", positive, positive, latent,
                                  disable_pbar=True)
    pictures = [api.concept_maps(patched, samples, source="sampling", picture=k) for k in range(3)]
    assert [p.maps.shape[-2:] for p in pictures] == [SHAPES["klein"], (4, 6), (3, 5)]
    assert pictures[1].latent_size == (4, 6) and pictures[1].latent_scale == 16
    ref, expected = reference_for(model), {0: [], 1: [], 2: []}
    for call in calls:
        out = ref.run(call["x"], call["t"], call["context"], call["guidance"], embeddings, [1, 2],
                      normalize_concepts=True, references=call["ref_latents"])
        for block in (1, 2):
            expected[0].append(out["scores"][block])
            for k, scores in enumerate(out["reference_scores"][block]):
                expected[k + 1].append(scores)
    assert len(calls) == 2 and len(calls[0]["ref_latents"]) == 2
    for k, maps in enumerate(pictures):
        assert _rel_error(maps.maps.flatten(2), mean_softmax_maps(expected[k])) < 1e-4
