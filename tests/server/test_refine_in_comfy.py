"""Refined masks inside real ComfyUI: Concept Saliency's `refine` option and the API's, then the
masks through a running server into ComfyUI's mask, inpainting and compositing nodes."""
from __future__ import annotations

import io as _io
import urllib.parse

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.comfy

NAMES = ["dragon", "sky", "background"]
MASK_MODES = ["exclusive", "soft", "above mean", "otsu", "threshold"]


# ----------------------------------------------------------------------------- in process

@pytest.fixture(scope="module")
def sampled():
    """A tiny Flux patched with three concepts, a batch of 2 sampled at an odd size (a 9x13
    latent: 72x104 pixels, the token grid overhangs) and the decoded pictures."""
    import comfy.sample
    from stand_in_nodes import TinyVAE
    from test_flux_inside_comfy import _sample
    from tiny_flux import build_flux

    from concept_attention_pack.nodes import api
    embeddings = torch.randn(len(NAMES), 64, generator=torch.Generator().manual_seed(5))
    patched = api.patch_model(build_flux(seed=0, depth=3, single=2), embeddings, NAMES, blocks="all")
    samples = _sample(comfy.sample, patched, batch=2, shape=(9, 13))
    return patched, samples, TinyVAE().decode(samples)


def _saliency(patched, samples, **inputs):
    from concept_attention_pack.nodes.concept_nodes import ConceptSaliency
    defaults = dict(concept="sky", source="sampling", noise_level=0.5, seed=0, seed_count=1, blur=True)
    return ConceptSaliency.execute(patched, {"samples": samples}, **{**defaults, **inputs}).result


@pytest.mark.parametrize("refine", ["guided", "pamr"])
def test_saliency_node_refined_masks_keep_the_mask_conventions(sampled, refine):
    patched, samples, picture = sampled
    assert picture.shape == (2, 72, 104, 3)
    for mode in MASK_MODES:
        masks, heatmaps, mask, overlay, segmentation = _saliency(
            patched, samples, mask_mode=mode, threshold=0.4, image=picture, refine=refine)
        assert masks.shape == (6, 72, 104) and mask.shape == (2, 72, 104), mode
        assert heatmaps.shape == overlay.shape == (6, 72, 104, 3) and segmentation.shape == (2, 72, 104, 3)
        assert masks.min() >= 0 and masks.max() <= 1, mode
        per_image = masks.unflatten(0, (2, 3))
        if mode == "soft":
            torch.testing.assert_close(per_image.sum(1), torch.ones(2, 72, 104), rtol=0, atol=1e-5)
        else:
            assert set(masks.unique().tolist()) <= {0.0, 1.0}, mode
        if mode == "exclusive":
            assert torch.equal(per_image.sum(1), torch.ones(2, 72, 104))
    soft_refined = _saliency(patched, samples, mask_mode="soft", image=picture, refine=refine)[0]
    soft_plain = _saliency(patched, samples, mask_mode="soft", image=picture, refine="none")[0]
    assert (soft_refined - soft_plain).abs().max() > 0.05  # the option reaches the masks


def test_saliency_node_auto_refines_only_when_a_picture_is_connected(sampled):
    patched, samples, picture = sampled
    auto = _saliency(patched, samples, mask_mode="soft", image=picture, refine="auto")[0]
    assert torch.equal(auto, _saliency(patched, samples, mask_mode="soft", image=picture, refine="guided")[0])
    without = _saliency(patched, samples, mask_mode="soft", refine="auto")[0]
    assert torch.equal(without, _saliency(patched, samples, mask_mode="soft", refine="none")[0])


@pytest.mark.parametrize("refine", ["guided", "pamr"])
def test_refine_without_a_picture_names_the_image_input(sampled, refine):
    from concept_attention_pack.nodes.capture import ConceptInputError
    patched, samples, _ = sampled
    with pytest.raises(ConceptInputError, match=f"image: refine '{refine}' makes the masks follow"):
        _saliency(patched, samples, refine=refine)


@pytest.mark.parametrize("refine", ["guided", "pamr"])
def test_api_refined_edge_lands_within_2_pixels_of_the_true_edge(refine):
    """concept_masks(maps, refine=..., image=...) on token-perfect maps of a disc and a bar thinner
    than half a token: bilinear misses by more than 2 pixels, the refined edge does not."""
    from test_refine import _disc_and_bar, _edge_distances

    from concept_attention_pack.nodes import api
    from concept_attention_pack.nodes.capture import ConceptMaps
    picture, truth, grid = _disc_and_bar()
    maps = ConceptMaps(("background", "red"), grid, (16, 16), "latent")
    bilinear = api.concept_masks(maps, blur=True)[0].argmax(0) == 1
    refined = api.concept_masks(maps, blur=True, refine=refine, image=picture)[0].argmax(0) == 1
    assert max(_edge_distances(bilinear, truth)) > 2
    assert max(_edge_distances(refined, truth)) <= 2


# ----------------------------------------------------------------------------- through a server

def _preview_pixels(server, entry, node):
    from PIL import Image
    arrays = []
    for image in entry["outputs"][node]["images"]:
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        with Image.open(_io.BytesIO(server.get_bytes(f"/view?{query}"))) as picture:
            arrays.append(np.asarray(picture.convert("L")))
    return np.stack(arrays)


@pytest.mark.parametrize("refine", ["guided", "pamr"])
def test_refined_masks_work_in_comfyui_mask_and_inpainting_nodes(server, refine):
    """Batch 2: Concept Saliency (refined with the decoded pictures) into SetLatentNoiseMask,
    DifferentialDiffusion, InpaintModelConditioning, VAEEncodeForInpaint, ImageCompositeMasked,
    GrowMask, FeatherMask and MaskComposite; every concept's exclusive mask comes back as a
    picture: only 0 and 255, exactly one concept per pixel, and not the unrefined masks."""
    from test_workflows_through_server import _consumer_graph, _image_sizes
    graph = _consumer_graph(batch=2)
    graph["saliency"]["inputs"].update(refine=refine, image=["decoded", 0])
    graph["all_masks"] = {"class_type": "MaskToImage", "inputs": {"mask": ["saliency", 0]}}
    graph["all_masks_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["all_masks", 0]}}
    entry = server.run(graph)
    for preview in ("differential_preview", "inpaint_model_preview", "encode_inpaint_preview",
                    "composite_preview", "mask_preview"):
        assert _image_sizes(server, entry, preview) == [(96, 64)] * 2, preview
    refined = _preview_pixels(server, entry, "all_masks_preview")  # [B*C, 64, 96]
    assert refined.shape == (6, 64, 96) and set(np.unique(refined)) <= {0, 255}
    assert (refined.reshape(2, 3, 64, 96).astype(int).sum(1) == 255).all()
    graph["saliency"]["inputs"]["refine"] = "none"
    plain = _preview_pixels(server, server.run(graph), "all_masks_preview")
    assert (plain != refined).any()


def test_photo_path_refined_at_an_odd_size_composites(server):
    """LoadImage (1000x744, not a multiple of 16) -> VAE Encode -> Concept Saliency refined with the
    photo -> ImageCompositeMasked: full-size results, a binary mask."""
    from PIL import Image
    rng = np.random.default_rng(0)
    blocks = rng.random((6, 8, 3))  # large flat colour regions with straight and stepped edges
    photo = np.kron(blocks, np.ones((124, 125, 1)))
    Image.fromarray((photo * 255).astype(np.uint8)).save(server.base / "input" / "regions.png")
    from test_workflows_through_server import photo_to_composite_graph
    graph = photo_to_composite_graph("regions.png", refine="guided")
    graph.update({
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["saliency", 2]}},
        "mask_preview": {"class_type": "PreviewImage", "inputs": {"images": ["mask_image", 0]}},
    })
    entry = server.run(graph)
    assert _preview_pixels(server, entry, "preview").shape == (1, 744, 1000)
    mask = _preview_pixels(server, entry, "mask_preview")
    assert mask.shape == (1, 744, 1000) and set(np.unique(mask)) <= {0, 255}


def test_refine_without_an_image_is_a_clear_error_through_the_server(server):
    from comfy_server import WorkflowError
    from test_workflows_through_server import KSAMPLER, _graph
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["saliency"]["inputs"]["refine"] = "pamr"
    with pytest.raises(WorkflowError, match="image: refine 'pamr' makes the masks follow the picture's edges"):
        server.run(graph)
