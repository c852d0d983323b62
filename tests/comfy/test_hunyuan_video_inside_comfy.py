"""The pack on HunyuanVideo (1.0 and 1.5) inside real ComfyUI 0.29, on tiny random models built from
ComfyUI's own classes: the float32 reference (tests/support/reference_hunyuan.py) reproduces ComfyUI's double
blocks; the maps, [B, C, T, h, w] on the latent frames, equal it while sampling and on the encode
path; the sampled video is bit-identical with and without the patch; per-frame masks follow the VAE's
frames (latent frame 0 -> frame 0, latent frame k -> frames 4k-3 .. 4k)."""
from __future__ import annotations

import pytest
import torch

from reference import maps_over_calls, mean_softmax_maps
from reference_hunyuan import ReferenceHunyuanVideo
from tiny_hunyuan import LATENT_CHANNELS, TEXT_DIM, capture_blocks, random_hunyuan_conditioning, record_model_calls

pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]
FRAMES, SHAPE = 3, (4, 6)  # 3 latent frames (9 video frames) of 2 x 3 tokens
TOLERANCE = 1e-4


def _rel_error(actual, expected):
    return ((actual.float() - expected.float()).abs().max() / expected.float().abs().max()).item()


@pytest.fixture(scope="module")
def api():
    from concept_attention_pack.nodes import api
    return api


HUNYUAN_15_SKIP = "ComfyUI 0.3.64 has no HunyuanVideo 1.5 class; tested on 0.29"


@pytest.fixture(scope="module", params=["1.0", "1.5"])
def variant(request):
    import comfy.supported_models
    if request.param == "1.5" and not hasattr(comfy.supported_models, "HunyuanVideo15"):
        pytest.skip(HUNYUAN_15_SKIP)
    return request.param


@pytest.fixture(scope="module")
def model(variant):
    from tiny_hunyuan import build_hunyuan
    return build_hunyuan(seed=0, variant=variant)


@pytest.fixture(scope="module")
def embeddings():
    return torch.randn(len(NAMES), TEXT_DIM, generator=torch.Generator().manual_seed(5))


def _latent(variant, batch, seed=None, frames=FRAMES, shape=SHAPE):
    size = (batch, LATENT_CHANNELS[variant], frames, *shape)
    return torch.zeros(size) if seed is None else torch.randn(size, generator=torch.Generator().manual_seed(seed))


def _sample(variant, model, batch=2, cfg=4.0, sampler="euler", steps=3, seed=0):
    import comfy.sample
    latent = _latent(variant, batch)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", random_hunyuan_conditioning(variant, seed=1),
                               random_hunyuan_conditioning(variant, seed=2), latent, disable_pbar=True)


def _model_input(call, rows):
    """x as the diffusion model gets it: the latent with the concatenated channels (1.5)."""
    x = call["x"][rows]
    concat = call["c_concat"]
    return x if concat is None else torch.cat([x, concat[rows]], dim=1)


def _run(reference, call, rows, **kwargs):
    guidance = call["kwargs"].get("guidance")
    return reference.run_call(_model_input(call, rows), call["t"][rows], call["context"][rows],
                              None if call["y"] is None else call["y"][rows],
                              None if guidance is None else guidance[rows], **kwargs)


def test_reference_reproduces_every_double_block_of_comfyui(model):
    patched = model.clone()
    blocks = capture_blocks(patched, "double_blocks")
    calls = record_model_calls(patched)
    _sample(_variant_of(model), patched, batch=1, cfg=1.0, steps=1)
    out = _run(ReferenceHunyuanVideo(model.model.diffusion_model), calls[0], slice(0, 1))
    assert len(blocks) == 3
    video_first = getattr(model.model.diffusion_model.double_blocks[0], "flipped_img_txt", False)  # 0.3.64
    for record, img, txt, attn in zip(blocks, out["img"], out["txt"], out["img_attn"]):
        assert _rel_error(record["img"], img) < TOLERANCE
        assert _rel_error(record["txt"], txt) < TOLERANCE
        text, video = record["txt"].shape[1], record["img"].shape[1]
        joint = record["attn"][0]
        assert _rel_error(joint[:, :video] if video_first else joint[:, text:], attn) < TOLERANCE


def _variant_of(model):
    return "1.5" if getattr(model.model.diffusion_model, "cond_type_embedding", None) is not None else "1.0"


@pytest.mark.parametrize("map_variant,blocks,block_ids,window,normalize", [
    ("output space", "auto", [2], (0.0, 1.0), True),
    ("output space", "0,2", [0, 2], (0.3, 1.0), False),
    ("cross attention", "all", [0, 1, 2], (0.0, 0.7), True),
])
def test_sampling_maps_equal_the_reference_per_latent_frame(api, model, embeddings, map_variant, blocks, block_ids,
                                                            window, normalize):
    variant = _variant_of(model)
    patched = api.patch_model(model, embeddings, NAMES, blocks=blocks, variant=map_variant, start_percent=window[0],
                              end_percent=window[1], normalize_concepts=normalize)
    calls = record_model_calls(patched)
    samples = _sample(variant, patched, steps=4)
    maps = api.concept_maps(patched, samples, source="sampling")
    assert maps.maps.shape == (2, 3, FRAMES, 2, 3) and maps.temporal_scale == 4
    reference = ReferenceHunyuanVideo(model.model.diffusion_model)

    def scores_of(call, rows):
        return _run(reference, call, rows, concept_embeddings=embeddings, blocks=block_ids, variant=map_variant,
                    normalize_concepts=normalize)["scores"]

    expected = maps_over_calls(calls, scores_of, window)
    assert _rel_error(maps.maps.flatten(2), expected) < TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_sampled_video_is_bit_identical_with_and_without_patch(api, model, embeddings, sampler, cfg):
    variant = _variant_of(model)
    patched = api.patch_model(model, embeddings, NAMES, blocks="all")
    plain = _sample(variant, model, cfg=cfg, sampler=sampler)
    with_maps = _sample(variant, patched, cfg=cfg, sampler=sampler)
    assert torch.equal(plain, with_maps)
    assert api.concept_maps(patched, with_maps, source="sampling").maps.shape == (2, 3, FRAMES, 2, 3)


def test_encode_path_equals_the_reference(api, model, embeddings):
    variant = _variant_of(model)
    latent = _latent(variant, 2, seed=3)
    noise = torch.randn(2, *latent.shape, generator=torch.Generator().manual_seed(4))
    patched = api.patch_model(model, embeddings, NAMES, blocks="0-1")
    prompt = random_hunyuan_conditioning(variant, seed=6)
    maps = api.concept_maps(patched, latent, source="latent", sigma=0.6, noise=noise, conditioning=prompt)
    diffusion = model.model.diffusion_model
    reference = ReferenceHunyuanVideo(diffusion)
    x0 = model.model.process_latent_in(latent)
    pooled = prompt[0][1]["pooled_output"]
    per_image = []
    for image in range(2):
        scores = []
        for seed in range(2):
            x_t = 0.6 * noise[seed, image:image + 1] + 0.4 * x0[image:image + 1]
            extra = diffusion.in_channels - x_t.shape[1]
            x_in = torch.cat([x_t, torch.zeros(1, extra, *x_t.shape[2:])], 1) if extra else x_t
            out = reference.run_call(x_in, torch.tensor([600.0]), prompt[0][0], pooled,
                                     torch.zeros(1) if diffusion.params.guidance_embed else None,
                                     concept_embeddings=embeddings, blocks=[0, 1], normalize_concepts=True,
                                     last_block=1)
            scores += list(out["scores"].values())
        per_image.append(mean_softmax_maps(scores))
    assert maps.maps.shape == (2, 3, FRAMES, 2, 3)
    assert _rel_error(maps.maps.flatten(2), torch.cat(per_image)) < TOLERANCE


def test_masks_are_per_video_frame_as_the_vae_decodes_them(api, model, embeddings):
    """9 video frames per 3 latent frames: frame 0 is latent frame 0's map, frames 1-4 latent frame
    1's, 5-8 latent frame 2's; the batch is video-major, [B*F, C, H, W]."""
    variant = _variant_of(model)
    patched = api.patch_model(model, embeddings, NAMES)
    maps = api.concept_maps(patched, _sample(variant, patched), source="sampling")
    masks = api.concept_masks(maps, blur=False)
    scale = maps.latent_scale
    assert masks.shape == (2 * 9, 3, SHAPE[0] * scale, SHAPE[1] * scale)
    from concept_attention_pack.nodes.masks import grid_to_pixels
    for video in range(2):
        for frame, latent_frame in enumerate([0, 1, 1, 1, 1, 2, 2, 2, 2]):
            expected = grid_to_pixels(maps.maps[video:video + 1, :, latent_frame], maps.latent_size, scale,
                                      maps.patch_size)
            assert torch.equal(masks[video * 9 + frame:video * 9 + frame + 1], expected)


def test_a_video_latent_into_an_image_patch_and_the_reverse_are_refused(api, model, embeddings):
    from tiny_flux import build_flux

    from concept_attention_pack.nodes.capture import ConceptInputError
    variant = _variant_of(model)
    channels = LATENT_CHANNELS[variant]
    video = api.patch_model(model, embeddings, NAMES)
    with pytest.raises(ConceptInputError, match=rf"latent: this model works on \[B, {channels}, t, h, w\] latents, "
                                                rf"received \[1, {channels}, 8, 8\].*HunyuanVideo"):
        api.concept_maps(video, torch.zeros(1, channels, 8, 8), source="latent",
                         conditioning=random_hunyuan_conditioning(variant))
    flux = api.patch_model(build_flux(seed=0, depth=2, single=1), torch.zeros(3, 64), NAMES)
    with pytest.raises(ConceptInputError, match=r"latent: this model works on \[B, 16, h, w\] latents, received "
                                                r"\[1, 16, 3, 4, 6\].*this is a Flux.1 model"):
        api.concept_maps(flux, torch.zeros(1, 16, 3, 4, 6), source="latent", conditioning=torch.zeros(1, 4, 64))


@pytest.mark.parametrize("mask_mode,invert,refine", [("exclusive", False, "none"), ("otsu", True, "none"),
                                                     ("soft", False, "guided")])
def test_concept_mask_equals_concept_saliencys_mask_a_few_frames_at_a_time(api, model, embeddings, monkeypatch,
                                                                           mask_mode, invert, refine):
    """Concept Mask (the mask alone, for long videos) gives Concept Saliency's 'mask', per video
    frame, also when it works one frame at a time (a tiny chunk budget), with the decoded frames
    as the refinement's guide."""
    from concept_attention_pack.nodes import concept_nodes
    variant = _variant_of(model)
    patched = api.patch_model(model, embeddings, NAMES)
    latent = {"samples": _sample(variant, patched)}
    frames = torch.rand(2 * 9, SHAPE[0] * 16, SHAPE[1] * 16, 3, generator=torch.Generator().manual_seed(2))
    scale = api.concept_maps(patched, latent).latent_scale
    frames = frames[:, :SHAPE[0] * scale, :SHAPE[1] * scale]
    image = frames if refine == "guided" else None
    inputs = dict(concept="sky, dragon", source="sampling", noise_level=0.5, seed=0, seed_count=1, blur=True,
                  invert=invert, mask_mode=mask_mode, threshold=0.5, image=image, refine=refine)
    expected = concept_nodes.ConceptSaliency.execute(patched, latent, **inputs).args[2]
    assert expected.shape == (2 * 9, SHAPE[0] * scale, SHAPE[1] * scale)
    whole = concept_nodes.ConceptMask.execute(patched, latent, **inputs).args[0]
    monkeypatch.setattr(api, "MASK_CHUNK_BYTES", 1)  # one frame at a time
    framewise = concept_nodes.ConceptMask.execute(patched, latent, **inputs).args[0]
    torch.testing.assert_close(whole, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(framewise, expected, rtol=0, atol=1e-6)


def test_hunyuan15_concepts_are_the_mean_of_their_own_rows_inside_the_video_template():
    """Ground truth without the pack: ComfyUI's HunyuanVideo 1.5 encoder output starts after the
    template's '<|im_start|>user\\n'; the concept's tokens run from there to the next <|im_end|>."""
    import comfy.supported_models
    if not hasattr(comfy.supported_models, "HunyuanVideo15"):
        pytest.skip(HUNYUAN_15_SKIP)
    from tiny_hunyuan import tiny_hunyuan15_clip

    from concept_attention_pack.nodes.families import HunyuanVideo
    from concept_attention_pack.nodes.text_encoding import encode_concepts
    clip = tiny_hunyuan15_clip(0)
    for text in ("dog", "skyscraper window"):
        tokens = clip.tokenize(text)
        ids = [int(t[0]) for t in tokens["qwen25_7b"][0]]
        first = [i for i, token in enumerate(ids) if token == 151644][1] + 3  # after "<|im_start|>user\n"
        end = ids.index(151645, first)
        assert clip.tokenizer.qwen25_7b.tokenizer.decode(ids[first:end]) == text
        out = clip.encode_from_tokens(tokens)[0]
        assert out.shape[0] == len(ids) - first  # the encoder drops the template's system part
        keys, first_row, whole = HunyuanVideo().concept_text(clip)
        (got,) = encode_concepts(clip, [text], keys, "", first_row, whole)
        torch.testing.assert_close(got, out[: end - first].float().mean(0))


def test_concept_saliency_refuses_outputs_that_would_not_fit_and_names_concept_mask(api):
    """121 frames at 1280x720 with 8 concepts would need 28 GB of Concept Saliency outputs:
    a clear error before anything is built, naming Concept Mask (which needs the mask alone)."""
    import dataclasses

    from concept_attention_pack.nodes.capture import ConceptInputError
    from concept_attention_pack.nodes.frames import as_frames
    long = api.ConceptMaps(tuple(f"c{i}" for i in range(8)), torch.full((1, 8, 31, 45, 80), 1 / 8), (90, 160),
                           "sampling", latent_scale=8, patch_size=2, temporal_scale=4)
    frames = as_frames(long)
    assert frames.maps.shape[0] == 121
    with pytest.raises(ConceptInputError, match=r"121 pictures \(video frames\) x 8 concepts would need 28\.2 GB.*"
                                                r"Use Concept Mask"):
        api.check_saliency_memory(frames, available=24 * 2**30)
    api.check_saliency_memory(dataclasses.replace(frames, maps=frames.maps[:2]), available=24 * 2**30)
    mask = api.concept_mask(long, [0])
    assert mask.shape == (121, 720, 1280)
