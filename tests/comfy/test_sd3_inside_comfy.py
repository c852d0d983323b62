"""The pack on SD3 / SD3.5 (ComfyUI's MMDiT) inside real ComfyUI, both versions, on tiny random models
built from ComfyUI's own classes: the float32 reference (tests/support/reference_sd3.py) reproduces ComfyUI's
joint blocks; the maps equal it while sampling and on the encode path; the sampled latent is
bit-identical with and without the patch; the concepts are read from the CLIP-L/G part of the SD3
text encoder; bad inputs are refused with the input named."""
from __future__ import annotations

import pytest
import torch

from reference_sd3 import ReferenceSD3, reference_sd3_maps
from tiny_sd3 import CLIP_TOKENS, POOLED_DIM, TEXT_DIM, capture_joint_blocks, record_model_calls

pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]
VARIANTS = ["sd3", "sd35_large", "sd35_medium"]
SHAPE = (7, 10)  # an odd latent height: MMDiT pads it to the patch size (4 x 5 tokens)
TOLERANCE = 1e-4


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


@pytest.fixture(scope="module")
def models():
    from tiny_sd3 import build_sd3
    return {variant: build_sd3(seed=0, variant=variant, depth=3) for variant in VARIANTS}


@pytest.fixture(scope="module")
def embeddings():
    values = torch.zeros(len(NAMES), TEXT_DIM)  # as the CLIP-L/G part gives them: zero past its width
    values[:, :POOLED_DIM] = torch.randn(len(NAMES), POOLED_DIM, generator=torch.Generator().manual_seed(5))
    return values


def _sample(model, batch=2, cfg=4.5, sampler="euler", steps=3, seed=0, shape=SHAPE):
    import comfy.sample
    from tiny_sd3 import random_sd3_conditioning
    latent = torch.zeros(batch, 16, *shape)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", random_sd3_conditioning(seed=1),
                               random_sd3_conditioning(seed=2), latent, disable_pbar=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_reproduces_every_joint_block_of_comfyui(models, variant):
    """The reference, fed the inputs ComfyUI's MMDiT got, gives each joint block's image and context
    outputs and its joint attention output (the pre_only last block: no context output)."""
    model = models[variant].clone()
    blocks = capture_joint_blocks(model)
    calls = record_model_calls(model)
    _sample(model, batch=1, cfg=1.0, steps=1)
    call = calls[0]
    out = ReferenceSD3(model.model.diffusion_model).run(call["x"], call["t"], call["context"], call["y"])
    assert len(blocks) == 3 and blocks[-1]["txt"] is None and out["txt"][-1] is None
    for record, img, txt, attn in zip(blocks, out["img"], out["txt"], out["attn"]):
        assert _rel_error(record["img"], img) < TOLERANCE
        assert _rel_error(record["attn"][0], attn) < TOLERANCE
        if txt is not None:
            assert _rel_error(record["txt"], txt) < TOLERANCE
        assert len(record["attn"]) == (2 if variant == "sd35_medium" and record["block"] < 2 else 1)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("map_variant,blocks,block_ids,window,normalize", [
    ("output space", "auto", [2], (0.0, 1.0), True),  # default for 3 blocks: the last (pre_only) one
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
    ("output space", "0-1", [0, 1], (0.0, 1.0), True),
])
def test_sampling_maps_equal_the_sd3_reference(api, models, embeddings, variant, map_variant, blocks, block_ids,
                                               window, normalize):
    model = models[variant]
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=map_variant, start_percent=window[0],
                              end_percent=window[1], normalize_concepts=normalize)
    calls = record_model_calls(patched)
    samples = _sample(patched, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.maps.shape == (2, 3, 4, 5) and maps.latent_scale == 8 and maps.patch_size == 2
    expected = reference_sd3_maps(model, calls, embeddings, block_ids, map_variant, window, normalize)
    assert _rel_error(maps.maps.flatten(2), expected) < TOLERANCE


@pytest.mark.parametrize("variant", ["sd3", "sd35_medium"])
@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 4.5])
def test_sampled_latent_is_bit_identical_with_and_without_patch(api, models, embeddings, variant, sampler, cfg):
    model = models[variant]
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    plain = _sample(model, batch=2, cfg=cfg, sampler=sampler)
    with_maps = _sample(patched, batch=2, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape[0] == 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_encode_path_equals_the_sd3_reference(api, models, embeddings, variant):
    """Two images, two explicit noises, an odd latent, a given prompt with its pooled vector: one
    forward at sigma 0.6 (x_t = 0.6 noise + 0.4 x0, x0 in model space), stopped after the last
    scored block; maps = softmax per (noise, block), averaged."""
    from tiny_sd3 import random_sd3_conditioning
    model = models[variant]
    patched = api.patch_model(model, embeddings, NAMES, blocks="0-1")
    latent = torch.randn(2, 16, *SHAPE, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, *latent.shape, generator=torch.Generator().manual_seed(4))
    conditioning = random_sd3_conditioning(seed=6)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.6, noise=noise, conditioning=conditioning)
    ref = ReferenceSD3(model.model.diffusion_model)
    x0 = model.model.process_latent_in(latent)
    context, pooled = conditioning[0][0], conditioning[0][1]["pooled_output"]
    per_image = []
    for image in range(2):
        scores = []
        for seed in range(2):
            x_t = 0.6 * noise[seed, image:image + 1] + 0.4 * x0[image:image + 1]
            out = ref.run(x_t, torch.tensor([600.0]), context, pooled, embeddings, [0, 1], normalize_concepts=True, last=1)
            scores += [s.softmax(1) for s in out["scores"].values()]
        per_image.append(torch.stack(scores).mean(0))
    assert _rel_error(maps.maps.flatten(2), torch.cat(per_image)) < TOLERANCE


def test_encode_path_without_a_prompt_uses_the_empty_prompt_and_its_pooled_vector(api, models):
    """Patched through the node with the SD3 CLIP: the encode path's default prompt is the empty
    prompt with its pooled vector (SD3's c needs one), equal to passing that CONDITIONING."""
    from tiny_sd3 import tiny_sd3_clip

    from concept_attention_pack.nodes.concept_nodes import ConceptAttention
    clip = tiny_sd3_clip(0)
    model = models["sd35_large"]
    patched = ConceptAttention.execute(model, clip, "\n".join(NAMES), "auto", 0.0, 1.0, "output space", True).args[0]
    latent = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, *latent.shape, generator=torch.Generator().manual_seed(4))
    empty, pooled = clip.encode_from_tokens(clip.tokenize(""), return_pooled=True)
    default = api.concept_maps(patched, latent, source="latent", noise=noise)
    given = api.concept_maps(patched, latent, source="latent", noise=noise,
                             conditioning=[[empty, {"pooled_output": pooled}]])
    torch.testing.assert_close(default.maps, given.maps, rtol=0, atol=1e-6)
    other = api.concept_maps(patched, latent, source="latent", noise=noise,
                             conditioning=[[empty, {"pooled_output": pooled + 1.0}]])
    assert (other.maps - default.maps).abs().max() > 1e-4  # the pooled vector reaches the pass


def test_a_prompt_without_pooled_vector_is_refused_on_the_encode_path(api, models, embeddings):
    from concept_attention_pack.nodes.capture import ConceptInputError
    patched = api.patch_model(models["sd3"], embeddings, NAMES)
    with pytest.raises(ConceptInputError, match="conditioning: SD3 needs the prompt's pooled CLIP vector"):
        api.concept_maps(patched, torch.zeros(1, 16, 8, 8), source="latent", conditioning=torch.zeros(1, 77, TEXT_DIM))


def test_default_blocks_are_the_last_fifth_of_the_joint_blocks(api, models, embeddings):
    from concept_attention_pack.nodes.families import SD3
    family = SD3()
    assert family.default_blocks(38) == "last 8"  # SD3.5 Large
    assert family.default_blocks(24) == "last 5"  # SD3 Medium, SD3.5 Medium
    patched = api.patch_model(models["sd3"], embeddings, NAMES)  # blocks="auto"
    from concept_attention_pack.nodes.patching import concept_store
    assert concept_store(patched).config.blocks == (2,)


def test_wrong_width_and_block_range_are_refused_naming_the_input(api, models):
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match=r"concept embeddings: expected shape \[3, 4096\].*received \[3, 64\]"
                                                r".*For SD3 encode concepts with the SD3 text encoders"):
        api.patch_model(models["sd3"], torch.zeros(3, 64), NAMES)  # e.g. Flux.1 tiny T5 concepts
    with pytest.raises(ConceptInputError, match="blocks: '5' names block 5, but this model has joint blocks 0-2"):
        api.patch_model(models["sd3"], torch.zeros(3, TEXT_DIM), NAMES, blocks="5")


def test_a_video_latent_is_refused_naming_the_shape(api, models, embeddings):
    from concept_attention_pack.nodes.capture import ConceptInputError
    patched = api.patch_model(models["sd3"], embeddings, NAMES)
    with pytest.raises(ConceptInputError, match=r"latent: this model works on \[B, 16, h, w\] latents, received "
                                                r"\[1, 16, 3, 8, 8\].*this is a SD3 model"):
        api.concept_maps(patched, torch.zeros(1, 16, 3, 8, 8), source="latent")


def test_sampling_goes_on_when_the_maps_cannot_be_taken(api, models, embeddings, monkeypatch):
    """A failure inside the SD3 text side (here: injected) never fails sampling; the image is the same."""
    from concept_attention_pack.nodes.families import sd3
    model = models["sd3"]
    patched = api.patch_model(model, embeddings.flip(0), NAMES, blocks="all")

    def broken(self, concepts, concept_out, projected):
        raise RuntimeError("injected")

    monkeypatch.setattr(sd3.ContextSide, "update", broken)
    assert torch.equal(_sample(patched, batch=1), _sample(model, batch=1))
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match="took no maps: RuntimeError: injected"):
        api.concept_maps(patched, _sample(patched, batch=1), source="sampling")


# -- the SD3 text encoder: which rows make a concept's embedding ------------------------------------

@pytest.fixture(scope="module")
def clips():
    from tiny_sd3 import tiny_sd3_clip
    return {"clip": tiny_sd3_clip(0), "clip+t5": tiny_sd3_clip(0, t5=True), "t5": tiny_sd3_clip(0, clip_l=False,
                                                                                             clip_g=False, t5=True)}


def _own_clip_positions(clip, text):
    """Rows of the CLIP-L part that are `text`'s own tokens: after the start token, before the end."""
    ids = [int(t[0]) for chunk in clip.tokenize(text)["l"] for t in chunk]
    return list(range(1, ids.index(49407)))


def _encode(clip, names):
    from concept_attention_pack.nodes.families import SD3
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    keys, first_row, whole = SD3().concept_text(clip)
    return encode_concepts(clip, names, keys, "", first_row, whole)


@pytest.mark.parametrize("encoders", ["clip", "clip+t5"])
def test_concepts_are_the_mean_of_their_own_clip_rows_with_or_without_t5(clips, encoders):
    clip = clips[encoders]
    names = ["dog", "skyscraper window"]
    got = _encode(clip, names)
    for row, name in zip(got, names):
        full = clip.encode_from_tokens(clip.tokenize(name))[0]
        assert full.shape[0] == CLIP_TOKENS + (0 if encoders == "clip" else len(clip.tokenize(name)["t5xxl"][0]))
        positions = _own_clip_positions(clip, name)
        assert (len(positions) == 1) == (name == "dog")  # several CLIP BPE pieces for the phrase
        torch.testing.assert_close(row, full[positions].float().mean(0))
    if encoders == "clip+t5":  # the same CLIP weights: the T5 part does not enter the concept
        torch.testing.assert_close(got, _encode(clips["clip"], names))


def test_a_t5_only_sd3_clip_reads_the_concepts_from_t5(clips):
    clip = clips["t5"]
    got = _encode(clip, ["dog"])
    full = clip.encode_from_tokens(clip.tokenize("dog"))[0]
    ids = [int(t[0]) for t in clip.tokenize("dog")["t5xxl"][0]]
    own = [i for i, token in enumerate(ids) if token not in (0, 1)]  # not pad, not </s>
    torch.testing.assert_close(got[0], full[own].float().mean(0))


def test_sd3_clip_concepts_drive_a_tiny_sd3_through_the_node(clips, models):
    """ConceptAttention with the SD3 CLIP: the concepts reach the model (blocks 'auto'), maps come out."""
    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention
    patched = ConceptAttention.execute(models["sd35_medium"], clips["clip"], "dog\nsky", "auto", 0.0, 1.0,
                                       "output space", True).args[0]
    samples = _sample(patched, batch=1, steps=2)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.names == ("dog", "sky") and maps.maps.shape == (1, 2, 4, 5)
    torch.testing.assert_close(maps.maps.sum(1), torch.ones(1, 4, 5))


# -- per-block maps: which blocks localise best ------------------------------------------------------

def test_each_blocks_own_maps_equal_the_reference_for_that_block_alone(api, models, embeddings):
    model = models["sd35_large"]
    patched = api.patch_model(model, embeddings, NAMES, blocks="0,2")
    calls = record_model_calls(patched)
    samples = _sample(patched, steps=3)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.blocks == (0, 2) and maps.block_maps.shape == (2, 2, 3, 4, 5)
    torch.testing.assert_close(maps.block_maps.mean(1), maps.maps, rtol=0, atol=1e-6)
    for k, block in enumerate(maps.blocks):
        expected = reference_sd3_maps(model, calls, embeddings, [block])
        assert _rel_error(maps.block_maps[:, k].flatten(2), expected) < TOLERANCE
    from tiny_sd3 import random_sd3_conditioning
    latent_maps = api.concept_maps(patched, samples, source="latent", conditioning=random_sd3_conditioning(seed=6))
    # the encode path keeps them too
    assert latent_maps.block_maps.shape == (2, 2, 3, 4, 5)


def test_block_maps_node_lays_out_one_row_per_block_and_one_column_per_concept(api, models, embeddings):
    from concept_attention_pack.nodes.concept_nodes import ConceptBlockMaps
    patched = api.patch_model(models["sd3"], embeddings, NAMES, blocks="all")
    samples = _sample(patched, batch=1, steps=2, shape=(8, 12))
    (grid,) = ConceptBlockMaps.execute(patched, {"samples": samples}, "sampling", 0.5, 0, 64).args
    assert grid.shape == (1, 3 * 43, 3 * 64, 3)  # 64 x 96 px pictures: 43 x 64 panels (longest side 64)
    assert 0.0 <= grid.min() and grid.max() <= 1.0
    panels = grid.reshape(3, 43, 3, 64, 3)
    assert not torch.equal(panels[0, 20:, 0], panels[2, 20:, 0])  # blocks differ (below the labels)


def test_a_prompt_of_another_family_is_refused_on_the_encode_path_with_both_widths(api, models, embeddings):
    from concept_attention_pack.nodes.capture import ConceptInputError
    patched = api.patch_model(models["sd3"], embeddings, NAMES)
    flux_prompt = [[torch.zeros(1, 8, 64), {"pooled_output": torch.zeros(1, POOLED_DIM)}]]
    with pytest.raises(ConceptInputError, match=r"conditioning: this prompt is \[1, 8, 64\] \(64 features per token\); "
                                                r"this SD3 model takes \[1, L, 4096\]"):
        api.concept_maps(patched, torch.zeros(1, 16, 8, 8), source="latent", conditioning=flux_prompt)


def test_a_nan_latent_is_refused_naming_the_input(api, models, embeddings):
    from concept_attention_pack.nodes.capture import ConceptInputError
    patched = api.patch_model(models["sd3"], embeddings, NAMES)
    latent = torch.zeros(1, 16, 8, 8)
    latent[0, 3, 2, 2] = float("nan")
    for source in ("auto", "sampling", "latent"):
        with pytest.raises(ConceptInputError, match="latent: it contains NaN or infinite values"):
            api.concept_maps(patched, latent, source=source)
