"""The pack on Qwen-Image inside real ComfyUI, both versions, on tiny random models built from
ComfyUI's own classes: the float32 reference (tests/support/reference_qwen.py) reproduces ComfyUI's blocks;
the maps equal it while sampling and on the encode path (concepts at RoPE position txt_start); the
sampled latent is bit-identical with and without the patch, also with reference latents (edit)."""
from __future__ import annotations

import pytest
import torch

from reference_qwen import ReferenceQwenImage, reference_qwen_maps
from tiny_qwen import TEXT_DIM, capture_blocks, random_qwen_conditioning, record_model_calls

pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]
SHAPE = (7, 10)  # odd height: padded to 8 -> 4 x 5 tokens
TOLERANCE = 1e-4


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


@pytest.fixture(scope="module")
def model():
    from tiny_qwen import build_qwen_image
    return build_qwen_image(seed=0, layers=3)


@pytest.fixture(scope="module")
def embeddings():
    return torch.randn(len(NAMES), TEXT_DIM, generator=torch.Generator().manual_seed(5))


def _sample(model, batch=2, cfg=4.0, sampler="euler", steps=3, seed=0, shape=SHAPE, references=None):
    import comfy.sample
    latent = torch.zeros(batch, 16, 1, *shape)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    positive = random_qwen_conditioning(seed=1, reference_latents=references)
    negative = random_qwen_conditioning(seed=2, reference_latents=references)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", positive, negative, latent,
                               disable_pbar=True)


def test_reference_reproduces_every_block_of_comfyui(model):
    patched = model.clone()
    blocks = capture_blocks(patched)
    calls = record_model_calls(patched)
    _sample(patched, batch=1, cfg=1.0, steps=1)
    call = calls[0]
    out = ReferenceQwenImage(model.model.diffusion_model).run(call["x"], call["t"], call["context"])
    assert len(blocks) == 3
    for record, img, txt, attn in zip(blocks, out["img"], out["txt"], out["attn"]):
        assert _rel_error(record["img"], img) < TOLERANCE
        assert _rel_error(record["txt"], txt) < TOLERANCE
        assert _rel_error(record["attn"][0], attn) < TOLERANCE


@pytest.mark.parametrize("map_variant,blocks,block_ids,window,normalize", [
    ("output space", "auto", [2], (0.0, 1.0), True),
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
])
def test_sampling_maps_equal_the_qwen_reference(api, model, embeddings, map_variant, blocks, block_ids, window,
                                                normalize):
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=map_variant, start_percent=window[0],
                              end_percent=window[1], normalize_concepts=normalize)
    calls = record_model_calls(patched)
    samples = _sample(patched, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.maps.shape == (2, 3, 4, 5) and maps.latent_scale == 8 and maps.patch_size == 2
    expected = reference_qwen_maps(model, calls, embeddings, block_ids, map_variant, window, normalize)
    assert _rel_error(maps.maps.flatten(2), expected) < TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
@pytest.mark.parametrize("with_references", [False, True])
def test_sampled_latent_is_bit_identical_with_and_without_patch(api, model, embeddings, sampler, cfg,
                                                                with_references):
    references = [torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(9))] if with_references else None
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    plain = _sample(model, cfg=cfg, sampler=sampler, references=references)
    with_maps = _sample(patched, cfg=cfg, sampler=sampler, references=references)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (2, 3, 4, 5)


def test_maps_with_reference_latents_cover_the_generated_image(api, model, embeddings):
    """Edit models append the references' tokens after the generated image's: the maps are the
    generated image's, equal to the reference computation over the whole joint sequence."""
    references = [torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(9))]
    patched = api.patch_model(model, embeddings, NAMES, blocks="1-2")
    calls = record_model_calls(patched)
    samples = _sample(patched, batch=1, cfg=1.0, steps=2, references=references)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.maps.shape == (1, 3, 4, 5)
    assert calls[0]["kwargs"].get("ref_latents") is not None


def test_encode_path_equals_the_qwen_reference(api, model, embeddings):
    latent = torch.randn(2, 16, 1, *SHAPE, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(2, *latent.shape, generator=torch.Generator().manual_seed(4))
    patched = api.patch_model(model, embeddings, NAMES, blocks="0-1")
    prompt = random_qwen_conditioning(seed=6)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.6, noise=noise, conditioning=prompt)
    ref = ReferenceQwenImage(model.model.diffusion_model)
    x0 = model.model.process_latent_in(latent)
    per_image = []
    for image in range(2):
        scores = []
        for seed in range(2):
            x_t = 0.6 * noise[seed, image:image + 1] + 0.4 * x0[image:image + 1]
            out = ref.run(x_t, torch.tensor([0.6]), prompt[0][0], embeddings, [0, 1], normalize_concepts=True, last=1)
            scores += [s.softmax(1) for s in out["scores"].values()]
        per_image.append(torch.stack(scores).mean(0))
    assert _rel_error(maps.maps.flatten(2), torch.cat(per_image)) < TOLERANCE


def test_concept_position_is_txt_start_not_zero(api, model, embeddings):
    """The maps depend on the concepts' RoPE position: with position 0 (the Flux convention) the
    reference gives other maps than the pack, with txt_start the same."""
    patched = api.patch_model(model, embeddings, NAMES, blocks="all", normalize_concepts=False)
    calls = record_model_calls(patched)
    samples = _sample(patched, batch=1, cfg=1.0, steps=1)
    maps = api.concept_maps(patched, samples, source="sampling").maps.flatten(2)
    call = calls[0]
    ref = ReferenceQwenImage(model.model.diffusion_model)
    run = lambda: ref.run(call["x"], call["t"], call["context"], embeddings, [0, 1, 2])["scores"]  # noqa: E731
    from reference import mean_softmax_maps
    assert _rel_error(maps, mean_softmax_maps(list(run().values()))) < TOLERANCE
    import reference_qwen
    original = reference_qwen.rotation_angles

    def at_zero(ids, axes, theta):
        if ids.shape[1] == len(NAMES) and bool((ids == ids[0, 0, 0]).all()):  # the concepts' ids
            ids = torch.zeros_like(ids)
        return original(ids, axes, theta)

    reference_qwen.rotation_angles = at_zero
    try:
        moved = mean_softmax_maps(list(run().values()))
    finally:
        reference_qwen.rotation_angles = original
    assert _rel_error(maps, moved) > 1e-3


def test_errors_name_the_input(api, model, embeddings):
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match=r"concept embeddings: expected shape \[3, 48\].*For Qwen-Image"):
        api.patch_model(model, torch.zeros(3, 64), NAMES)
    patched = api.patch_model(model, embeddings, NAMES)
    with pytest.raises(ConceptInputError, match=r"latent: this model works on \[B, 16, t, h, w\] latents, received "
                                                r"\[1, 16, 8, 8\].*Qwen-Image"):
        api.concept_maps(patched, torch.zeros(1, 16, 8, 8), source="latent", conditioning=random_qwen_conditioning())


# -- the Qwen-Image text encoder: a concept's own tokens inside the template --------------------------

IM_START, IM_END = 151644, 151645


@pytest.fixture(scope="module")
def clip():
    from tiny_qwen import tiny_qwen_clip
    return tiny_qwen_clip(0)


@pytest.mark.parametrize("text", ["dog", "skyscraper window"])
def test_concepts_are_the_mean_of_their_own_rows_inside_the_template(clip, text):
    """Ground truth without the pack: ComfyUI's encoder output starts after the template's
    '<|im_start|>user\\n'; the concept's tokens run from there to the next <|im_end|>."""
    from concept_attention_pack.nodes.families import QwenImage
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    tokens = clip.tokenize(text)
    ids = [int(t[0]) for t in tokens["qwen25_7b"][0]]
    starts = [i for i, token in enumerate(ids) if token == IM_START]
    first = starts[1] + 3  # after "<|im_start|>", "user", "\n"
    end = ids.index(IM_END, first)
    assert clip.tokenizer.qwen25_7b.tokenizer.decode(ids[first:end]) == text
    out = clip.encode_from_tokens(tokens)[0]
    assert out.shape[0] == len(ids) - first  # the encoder drops the template's system part
    keys, first_row, whole = QwenImage().concept_text(clip)
    (got,) = encode_concepts(clip, [text], keys, "", first_row, whole)
    torch.testing.assert_close(got, out[: end - first].float().mean(0))


def test_qwen_clip_concepts_drive_the_tiny_qwen_image_through_the_node(clip, model):
    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention
    patched = ConceptAttention.execute(model, clip, "dog\nsky", "auto", 0.0, 1.0, "output space", True).args[0]
    samples = _sample(patched, batch=1, steps=2)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.names == ("dog", "sky") and maps.maps.shape == (1, 2, 4, 5)
    encoded = api.concept_maps(patched, samples, source="latent")  # the empty prompt kept with the patch
    assert encoded.maps.shape == (1, 2, 4, 5)


# -- maps of the reference images of an edit -------------------------------------------------------

def test_reference_image_maps_equal_the_reference_at_the_references_own_size(api, model, embeddings):
    """Two references of other sizes (7 x 10 and 6 x 8 latents): each is scored like the generated
    image (softmax over concepts per reference, per step and block) and comes out at its own size;
    the generated image's maps are the same as without references in the reference computation."""
    from reference import mean_softmax_maps
    references = [torch.randn(1, 16, 1, 4, 6, generator=torch.Generator().manual_seed(9)),
                  torch.randn(1, 16, 1, 6, 8, generator=torch.Generator().manual_seed(10))]
    patched = api.patch_model(model, embeddings, NAMES, blocks="1-2")
    calls = record_model_calls(patched)
    samples = _sample(patched, batch=1, cfg=1.0, steps=2, references=references)
    generated = api.concept_maps(patched, samples, source="sampling")
    first = api.concept_maps(patched, samples, source="sampling", picture=1)
    second = api.concept_maps(patched, samples, source="sampling", picture=2)
    assert first.maps.shape == (1, 3, 2, 3) and first.latent_size == (4, 6)
    assert second.maps.shape == (1, 3, 3, 4) and second.latent_size == (6, 8)
    ref = ReferenceQwenImage(model.model.diffusion_model)
    expected = {0: [], 1: [], 2: []}
    for call in calls:
        out = ref.run(call["x"], call["t"], call["context"], embeddings, [1, 2], normalize_concepts=True, last=2,
                      references=call["kwargs"]["ref_latents"])
        for block in (1, 2):
            expected[0].append(out["scores"][block])
            for k, scores in enumerate(out["reference_scores"][block]):
                expected[k + 1].append(scores)
    for picture, maps in enumerate((generated, first, second)):
        assert _rel_error(maps.maps.flatten(2), mean_softmax_maps(expected[picture])) < TOLERANCE
    from concept_attention_pack.nodes.capture import ConceptInputError
    with pytest.raises(ConceptInputError, match="picture: reference image 3 does not exist for this latent "
                                                r"\(the sampler's conditioning had 2 reference images\)"):
        api.concept_maps(patched, samples, source="sampling", picture=3)


def test_a_qwen_latent_into_a_flux_patched_model_is_refused_naming_both(api):
    from tiny_flux import build_flux

    from concept_attention_pack.nodes.capture import ConceptInputError
    flux = api.patch_model(build_flux(seed=0, depth=2, single=1), torch.zeros(3, 64), NAMES)
    with pytest.raises(ConceptInputError, match=r"latent: this model works on \[B, 16, h, w\] latents, received "
                                                r"\[1, 16, 1, 8, 8\].*this is a Flux.1 model"):
        api.concept_maps(flux, torch.zeros(1, 16, 1, 8, 8), source="latent", conditioning=torch.zeros(1, 4, 64))
