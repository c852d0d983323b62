"""The pack on the single-stream families inside real ComfyUI 0.29, on tiny random models built from
ComfyUI's own classes: Z-Image (padding to 32 tokens, z_image modulation), Lumina 2 (grouped-query
attention, SiLU adaLN) and Krea 2 (gated GQA attention, text fusion). The float32 references
(tests/support/reference_single_stream.py) reproduce ComfyUI's layers; the maps equal them while sampling
and on the encode path; the sampled latent is bit-identical with and without the patch.
On 0.3.64 (no Krea 2, a NextDiT without block_index) the Lumina 2 model is refused with the reason."""
from __future__ import annotations

import pytest
import torch

from reference import maps_over_calls, mean_softmax_maps
from reference_single_stream import ReferenceKrea2, ReferenceNextDiT
from tiny_single_stream import (
    KREA2_TEXT, VERSION_SKIP_REASON, Z_IMAGE_TEXT, capture_layers, random_conditioning, record_model_calls,
    single_stream_supported,
)

pytestmark = pytest.mark.comfy
needs_029 = pytest.mark.skipif(not single_stream_supported(), reason=VERSION_SKIP_REASON)

NAMES = ["dragon", "sky", "background"]
SHAPE = (7, 10)  # odd height: padded to 8 -> 4 x 5 tokens (Z-Image: + 12 padding tokens)
TOLERANCE = 1e-4
FAMILIES = ["z_image", "lumina2", "krea2"]


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


class Case:
    """One family's tiny model, its reference, its text width and latent layout."""

    def __init__(self, family):
        from tiny_single_stream import build_krea2, build_z_image
        self.family = family
        self.model = build_krea2(seed=0) if family == "krea2" else build_z_image(seed=0, variant=family)
        diffusion = self.model.model.diffusion_model
        self.reference = (ReferenceKrea2 if family == "krea2" else ReferenceNextDiT)(diffusion)
        self.blocks = diffusion.blocks if family == "krea2" else diffusion.layers
        self.width = KREA2_TEXT if family == "krea2" else Z_IMAGE_TEXT
        self.embeddings = torch.randn(len(NAMES), self.width, generator=torch.Generator().manual_seed(5))

    def latent(self, batch, shape=SHAPE, seed=None):
        size = (batch, 16, 1, *shape) if self.family == "krea2" else (batch, 16, *shape)
        if seed is None:
            return torch.zeros(size)
        return torch.randn(size, generator=torch.Generator().manual_seed(seed))

    def conditioning(self, seed):
        return random_conditioning(self.width, seed=seed)


@pytest.fixture(scope="module", params=FAMILIES)
def case(request):
    if not single_stream_supported():
        pytest.skip(VERSION_SKIP_REASON)
    return Case(request.param)


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


def _sample(case, model, batch=2, cfg=4.0, sampler="euler", steps=3, seed=0):
    import comfy.sample
    latent = case.latent(batch)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", case.conditioning(1), case.conditioning(2),
                               latent, disable_pbar=True)


def test_reference_reproduces_every_layer_of_comfyui(case):
    patched = case.model.clone()
    calls = record_model_calls(patched)
    with capture_layers(patched, case.blocks) as (outputs, attention):
        _sample(case, patched, batch=1, cfg=1.0, steps=1)
    call = calls[0]
    out = case.reference.run(call["x"], call["t"], call["context"])
    assert [o["block"] for o in outputs] == [0, 1, 2]
    for record, expected, attn in zip(outputs, out["out"], out["attn"]):
        assert record["out"].shape == expected.shape
        assert _rel_error(record["out"], expected) < TOLERANCE
        assert _rel_error(attention[record["block"]][0], attn) < TOLERANCE


def _reference_maps(case, calls, blocks, variant="output space", window=(0.0, 1.0), normalize=True):
    def scores_of(call, rows):
        return case.reference.run(call["x"][rows], call["t"][rows], call["context"][rows], case.embeddings, blocks,
                                  variant, normalize)["scores"]
    return maps_over_calls(calls, scores_of, window)


@pytest.mark.parametrize("variant,blocks,block_ids,window,normalize", [
    ("output space", "auto", [2], (0.0, 1.0), True),
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
])
def test_sampling_maps_equal_the_reference(api, case, variant, blocks, block_ids, window, normalize):
    patched = api.patch_model(case.model, case.embeddings, NAMES, blocks=blocks, variant=variant,
                              start_percent=window[0], end_percent=window[1], normalize_concepts=normalize)
    calls = record_model_calls(patched)
    samples = _sample(case, patched, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.maps.shape == (2, 3, 4, 5) and maps.latent_scale == 8 and maps.patch_size == 2
    expected = _reference_maps(case, calls, block_ids, variant, window, normalize)
    assert _rel_error(maps.maps.flatten(2), expected) < TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_sampled_latent_is_bit_identical_with_and_without_patch(api, case, sampler, cfg):
    patched = api.patch_model(case.model, case.embeddings, NAMES, blocks="all")
    plain = _sample(case, case.model, cfg=cfg, sampler=sampler)
    with_maps = _sample(case, patched, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (2, 3, 4, 5)


def test_encode_path_equals_the_reference(api, case):
    latent = case.latent(2, seed=3)
    noise = torch.randn(2, *latent.shape, generator=torch.Generator().manual_seed(4))
    patched = api.patch_model(case.model, case.embeddings, NAMES, blocks="0-1")
    prompt = case.conditioning(6)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.6, noise=noise, conditioning=prompt)
    x0 = case.model.model.process_latent_in(latent)
    per_image = []
    for image in range(2):
        scores = []
        for seed in range(2):
            x_t = 0.6 * noise[seed, image:image + 1] + 0.4 * x0[image:image + 1]
            out = case.reference.run(x_t, torch.tensor([0.6]), prompt[0][0], case.embeddings, [0, 1],
                                     normalize_concepts=True, last=1)
            scores += list(out["scores"].values())
        per_image.append(mean_softmax_maps(scores))
    assert _rel_error(maps.maps.flatten(2), torch.cat(per_image)) < TOLERANCE


@pytest.mark.parametrize("shape", [(5, 5), (9, 4)])
def test_odd_latent_sizes(api, case, shape):
    """Odd sizes are padded to whole patches (and Z-Image's tokens to 32): the maps cover the padded
    token grid, equal to the reference."""
    latent = case.latent(1, shape=shape, seed=3)
    noise = torch.randn(1, *latent.shape, generator=torch.Generator().manual_seed(4))
    patched = api.patch_model(case.model, case.embeddings, NAMES, blocks="1")
    prompt = case.conditioning(6)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.5, noise=noise, conditioning=prompt)
    grid = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    assert maps.maps.shape == (1, 3, *grid)
    x_t = 0.5 * noise[0] + 0.5 * case.model.model.process_latent_in(latent)
    out = case.reference.run(x_t, torch.tensor([0.5]), prompt[0][0], case.embeddings, [1], normalize_concepts=True,
                             last=1)
    assert _rel_error(maps.maps.flatten(2), mean_softmax_maps(list(out["scores"].values()))) < TOLERANCE


@needs_029
def test_z_image_concepts_sit_at_a_one_token_captions_position():
    """The maps depend on the concepts' RoPE position: at (1, 0, 0), a one-token caption's, the
    reference equals the pack; at (0, 0, 0) it gives other maps."""
    from concept_attention_pack.nodes import api
    case = Case("z_image")
    patched = api.patch_model(case.model, case.embeddings, NAMES, blocks="all", normalize_concepts=False)
    calls = record_model_calls(patched)
    samples = _sample(case, patched, batch=1, cfg=1.0, steps=1)
    maps = api.concept_maps(patched, samples, source="sampling").maps.flatten(2)
    call = calls[0]
    run = lambda: case.reference.run(call["x"], call["t"], call["context"], case.embeddings, [0, 1, 2])["scores"]  # noqa: E731
    assert _rel_error(maps, mean_softmax_maps(list(run().values()))) < TOLERANCE
    import reference_single_stream
    original = reference_single_stream.rotation_angles

    def concepts_at_zero(ids, axes, theta):
        if ids.shape[0] == 1 and bool((ids[..., 0] == 1).all()) and bool((ids[..., 1:] == 0).all()):
            ids = torch.zeros_like(ids)
        return original(ids, axes, theta)

    reference_single_stream.rotation_angles = concepts_at_zero
    try:
        moved = mean_softmax_maps(list(run().values()))
    finally:
        reference_single_stream.rotation_angles = original
    assert _rel_error(maps, moved) > 1e-3


def test_errors_name_the_input(api, case):
    from concept_attention_pack.nodes.capture import ConceptInputError
    name = "Krea 2" if case.family == "krea2" else "Z-Image"
    with pytest.raises(ConceptInputError, match=rf"concept embeddings: expected shape \[3, {case.width}\].*For {name}"):
        api.patch_model(case.model, torch.zeros(3, case.width + 8), NAMES)
    with pytest.raises(ConceptInputError, match=r"blocks: '5' names block 5, but this model has .*s 0-2"):
        api.patch_model(case.model, case.embeddings, NAMES, blocks="5")
    patched = api.patch_model(case.model, case.embeddings, NAMES)
    wrong = torch.zeros(1, 16, 8, 8) if case.family == "krea2" else torch.zeros(1, 16, 1, 8, 8)
    with pytest.raises(ConceptInputError, match=rf"latent: this model works on .* latents, received "
                                                rf"{list(wrong.shape)}.*this is a {name} model".replace("[", r"\[").replace("]", r"\]")):
        api.concept_maps(patched, wrong, source="latent", conditioning=case.conditioning(0))
    with pytest.raises(ConceptInputError, match=rf"conditioning: .* this {name} model takes \[1, L, {case.width}\]"):
        api.concept_maps(patched, case.latent(1, seed=0), source="latent",
                         conditioning=random_conditioning(case.width + 4, seed=0))


@needs_029
def test_z_image_reference_latents_give_no_maps_and_an_unchanged_image():
    """Z-Image Omni edits are not served: sampling with reference latents runs unchanged and the
    maps report why they are missing."""
    import comfy.sample

    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.capture import ConceptInputError
    case = Case("z_image")
    patched = api.patch_model(case.model, case.embeddings, NAMES)
    reference = [torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(9))]
    latent = case.latent(1)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    positive = random_conditioning(Z_IMAGE_TEXT, seed=1, reference_latents=reference)
    plain = comfy.sample.sample(case.model, noise, 2, 1.0, "euler", "simple", positive, positive, latent, disable_pbar=True)
    with_patch = comfy.sample.sample(patched, noise, 2, 1.0, "euler", "simple", positive, positive, latent,
                                     disable_pbar=True)
    assert torch.equal(plain, with_patch)
    with pytest.raises(ConceptInputError, match="Z-Image Omni edits"):
        api.concept_maps(patched, with_patch, source="sampling")


def test_lumina2_runs_on_0_29_and_is_refused_with_the_reason_on_0_3_64():
    from tiny_single_stream import build_z_image

    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.families import UnsupportedModelError
    model = build_z_image(variant="lumina2")
    if single_stream_supported():
        assert api.patch_model(model, torch.zeros(3, Z_IMAGE_TEXT), NAMES) is not model
        return
    with pytest.raises(UnsupportedModelError, match=r"does not mark its layers .*ComfyUI 0.29 or later"):
        api.patch_model(model, torch.zeros(3, Z_IMAGE_TEXT), NAMES)


# -- the text encoders: a concept's own tokens inside the family's template ------------------------

IM_START, IM_END = 151644, 151645


def _own_rows(clip, key, text, dropped_prefix):
    """Ground truth without the pack: the concept's tokens run from after the last
    '<|im_start|>user\\n' before them to the next <|im_end|>; the encoder output starts at the
    token sequence's start, or (Krea 2) at the concept's first token (the system part and
    '<|im_start|>user\\n' dropped)."""
    tokens = clip.tokenize(text)
    ids = [int(t[0]) for t in tokens[key][0]]
    user = [i for i, token in enumerate(ids) if token == IM_START][-2]  # the last is the assistant's
    first = user + 3
    end = ids.index(IM_END, first)
    assert clip.tokenizer.__dict__[key].tokenizer.decode(ids[first:end]) == text
    out = clip.encode_from_tokens(tokens)[0]
    offset = first if dropped_prefix else 0
    assert out.shape[0] == len(ids) - offset
    return out[first - offset:end - offset].float().mean(0)


@needs_029
@pytest.mark.parametrize("family", ["z_image", "krea2"])
@pytest.mark.parametrize("text", ["dog", "skyscraper window"])
def test_concepts_are_the_mean_of_their_own_rows_inside_the_template(family, text):
    from tiny_single_stream import tiny_krea2_clip, tiny_z_image_clip

    from concept_attention_pack.nodes.families import Krea2, ZImage
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    clip = tiny_krea2_clip(0) if family == "krea2" else tiny_z_image_clip(0)
    adapter = Krea2() if family == "krea2" else ZImage()
    key = adapter.text_keys[0]
    expected = _own_rows(clip, key, text, dropped_prefix=family == "krea2")
    keys, first_row, whole = adapter.concept_text(clip)
    (got,) = encode_concepts(clip, [text], keys, "", first_row, whole)
    torch.testing.assert_close(got, expected)


@needs_029
@pytest.mark.parametrize("family", ["z_image", "krea2"])
def test_the_families_clip_drives_the_tiny_model_through_the_node(family):
    """Concept Attention with the family's own CLIP: maps while sampling and on the encode path (the
    empty prompt kept with the patch)."""
    import comfy.sample
    from tiny_single_stream import CLIP_WIDTH, build_krea2, tiny_krea2_clip, tiny_z_image_clip

    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.concept_nodes import ConceptAttention
    if family == "krea2":
        model, clip = build_krea2(seed=1, txt_dim=CLIP_WIDTH, txt_layers=12), tiny_krea2_clip(0)
        latent = torch.zeros(1, 16, 1, *SHAPE)
    else:
        import comfy.supported_models
        from tiny_single_stream import _patcher, z_image_config
        model = _patcher(comfy.supported_models.ZImage(z_image_config(text=CLIP_WIDTH)), 1, 0.1, torch.float32)
        clip = tiny_z_image_clip(0)
        latent = torch.zeros(1, 16, *SHAPE)
    patched = ConceptAttention.execute(model, clip, "dog\nsky", "auto", 0.0, 1.0, "output space", True).args[0]
    prompt = clip.encode_from_tokens_scheduled(clip.tokenize("a dog under the sky"))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    samples = comfy.sample.sample(patched, noise, 2, 1.0, "euler", "simple", prompt, prompt, latent, disable_pbar=True)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.names == ("dog", "sky") and maps.maps.shape == (1, 2, 4, 5)
    assert api.concept_maps(patched, samples, source="latent").maps.shape == (1, 2, 4, 5)
