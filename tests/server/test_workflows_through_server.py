"""API-format workflows executed by a running ComfyUI through /prompt: the patch node, real
samplers (KSampler, KSamplerAdvanced, SamplerCustomAdvanced), Concept Saliency and real mask
and image nodes downstream."""
from __future__ import annotations

import io as _io
import urllib.parse

import numpy as np
import pytest


pytestmark = pytest.mark.comfy


def _image_sizes(server, entry, node):
    from PIL import Image
    sizes = []
    for image in entry["outputs"][node]["images"]:
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        with Image.open(_io.BytesIO(server.get_bytes(f"/view?{query}"))) as picture:
            sizes.append(picture.size)
    return sizes


def _graph(sampler_nodes, latent_ref, concepts="dragon\nsky\nbackground", batch=2, width=96, height=64):
    graph = {
        "model": {"class_type": "TinyFluxLoader", "inputs": {"seed": 0, "schnell": False}},
        "clip": {"class_type": "TinyFluxClipLoader", "inputs": {"seed": 0}},
        "patch": {"class_type": "ConceptAttentionFlux", "inputs": {
            "model": ["model", 0], "clip": ["clip", 0], "concepts": concepts, "blocks": "last 4",
            "start_percent": 0.0, "end_percent": 1.0, "map_variant": "output space",
            "normalize_concepts": True}},
        "positive": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a dragon in the sky"}},
        "negative": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": ""}},
        "empty": {"class_type": "EmptySD3LatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "saliency": {"class_type": "ConceptSaliency", "inputs": {
            "model": ["patch", 0], "latent": latent_ref, "concept": "dragon", "source": "sampling",
            "noise_level": 0.5, "seed": 0, "seed_count": 1, "blur": True,
            "invert": False, "mask_mode": "exclusive", "threshold": 0.5}},
        "grow": {"class_type": "GrowMask", "inputs": {"mask": ["saliency", 2], "expand": 2, "tapered_corners": True}},
        "mask_image": {"class_type": "MaskToImage", "inputs": {"mask": ["grow", 0]}},
        "preview_mask": {"class_type": "PreviewImage", "inputs": {"images": ["mask_image", 0]}},
        "preview_heatmaps": {"class_type": "PreviewImage", "inputs": {"images": ["saliency", 1]}},
    }
    graph.update(sampler_nodes)
    return graph


KSAMPLER = {"sampler": {"class_type": "KSampler", "inputs": {
    "model": ["patch", 0], "seed": 1, "steps": 3, "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple",
    "positive": ["positive", 0], "negative": ["negative", 0], "latent_image": ["empty", 0], "denoise": 1.0}}}
KSAMPLER_ADVANCED = {"sampler": {"class_type": "KSamplerAdvanced", "inputs": {
    "model": ["patch", 0], "add_noise": "enable", "noise_seed": 1, "steps": 4, "cfg": 1.0,
    "sampler_name": "heun", "scheduler": "simple", "positive": ["positive", 0], "negative": ["negative", 0],
    "latent_image": ["empty", 0], "start_at_step": 0, "end_at_step": 3, "return_with_leftover_noise": "disable"}}}
CUSTOM_ADVANCED = {
    "noise": {"class_type": "RandomNoise", "inputs": {"noise_seed": 1}},
    "guider": {"class_type": "CFGGuider", "inputs": {"model": ["patch", 0], "positive": ["positive", 0],
                                                      "negative": ["negative", 0], "cfg": 2.0}},
    "sampler_select": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
    "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["patch", 0], "scheduler": "simple",
                                                           "steps": 3, "denoise": 1.0}},
    "sampler": {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler_select", 0],
        "sigmas": ["sigmas", 0], "latent_image": ["empty", 0]}},
}


@pytest.mark.parametrize("sampler_nodes", [KSAMPLER, KSAMPLER_ADVANCED, CUSTOM_ADVANCED],
                         ids=["KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced"])
def test_mask_from_sampler_reaches_a_real_mask_node(server, sampler_nodes):
    entry = server.run(_graph(sampler_nodes, ["sampler", 0]))
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)] * 2  # [B, H, W] mask, B = 2
    assert _image_sizes(server, entry, "preview_heatmaps") == [(96, 64)] * 6  # B * C heatmaps


def test_requeue_with_new_seed_gives_fresh_maps_and_unchanged_graph_is_cached(server):
    from PIL import Image

    def mask_pixels(entry):
        image = entry["outputs"]["preview_heatmaps"]["images"][0]
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return np.asarray(Image.open(_io.BytesIO(server.get_bytes(f"/view?{query}"))))

    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    first = mask_pixels(server.run(graph))
    graph["sampler"]["inputs"]["seed"] = 2
    reseeded = server.run(graph)
    assert not np.array_equal(first, mask_pixels(reseeded))
    from comfy_server import cached_nodes
    assert {"model", "clip", "patch"} <= cached_nodes(reseeded) and not {"sampler", "saliency"} & cached_nodes(reseeded)
    assert cached_nodes(server.run(graph)) == set(graph)  # unchanged graph: the server executed nothing


def test_unknown_concept_name_is_a_clear_error(server):
    from comfy_server import WorkflowError
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["saliency"]["inputs"]["concept"] = "unicorn"
    with pytest.raises(WorkflowError, match=r"concept: \['unicorn'\] is not among"):
        server.run(graph)


def test_concept_the_text_encoder_cannot_read_is_a_clear_error_before_sampling(server):
    from comfy_server import WorkflowError
    graph = _graph(KSAMPLER, ["sampler", 0], concepts="dragon\n龍\nbackground", batch=1)
    with pytest.raises(WorkflowError, match=r"'龍' cannot be read by this model's text encoder \(T5-XXL\)") as error:
        server.run(graph)
    assert "English" in str(error.value)


def photo_to_composite_graph(image: str, **saliency_inputs) -> dict:
    """LoadImage(image) -> VAE Encode -> Concept Saliency (from the latent, mask of everything but
    'sky', the photo under the overlay) -> ImageCompositeMasked -> PreviewImage 'preview', on the
    tiny stand-ins; saliency_inputs change Concept Saliency's inputs."""
    return {
        "model": {"class_type": "TinyFluxLoader", "inputs": {"seed": 0, "schnell": True}},
        "clip": {"class_type": "TinyFluxClipLoader", "inputs": {"seed": 0}},
        "vae": {"class_type": "TinyVAELoader", "inputs": {}},
        "patch": {"class_type": "ConceptAttentionFlux", "inputs": {
            "model": ["model", 0], "clip": ["clip", 0], "concepts": "cat, grass, sky", "blocks": "all",
            "start_percent": 0.0, "end_percent": 1.0, "map_variant": "output space",
            "normalize_concepts": True}},
        "image": {"class_type": "LoadImage", "inputs": {"image": image}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": ["vae", 0]}},
        "saliency": {"class_type": "ConceptSaliency", "inputs": {
            "model": ["patch", 0], "latent": ["encode", 0], "concept": "sky", "source": "auto",
            "noise_level": 0.5, "seed": 0, "seed_count": 2, "blur": True,
            "invert": True, "mask_mode": "otsu", "threshold": 0.5, "image": ["image", 0], **saliency_inputs}},
        "composite": {"class_type": "ImageCompositeMasked", "inputs": {
            "destination": ["image", 0], "source": ["saliency", 1], "x": 0, "y": 0, "resize_source": False,
            "mask": ["saliency", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["composite", 0]}},
    }


def test_encode_path_load_image_to_composite(server):
    """LoadImage -> VAE Encode -> Concept Saliency (computed from the latent) -> ImageCompositeMasked,
    on a 1000x744 image (not a multiple of 16: Flux pads, the masks are cropped back)."""
    from PIL import Image
    Image.fromarray((np.random.default_rng(0).random((744, 1000, 3)) * 255).astype(np.uint8)).save(
        server.base / "input" / "photo.png")
    graph = photo_to_composite_graph("photo.png")
    entry = server.run(graph)
    assert _image_sizes(server, entry, "preview") == [(1000, 744)]


def _consumer_graph(batch):
    """Concept Saliency's mask into every mask-consuming node an inpainting/compositing graph uses."""
    graph = _graph(KSAMPLER, ["sampler", 0], batch=batch)
    del graph["grow"], graph["mask_image"], graph["preview_mask"]
    graph["vae"] = {"class_type": "TinyVAELoader", "inputs": {}}
    graph["decoded"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}}
    mask = ["saliency", 2]

    def resample(name, model, positive, negative, latent, denoise=0.6):
        graph[f"{name}_sampler"] = {"class_type": "KSampler", "inputs": {
            "model": model, "seed": 3, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
            "positive": positive, "negative": negative, "latent_image": latent, "denoise": denoise}}
        graph[f"{name}_decode"] = {"class_type": "VAEDecode", "inputs": {"samples": [f"{name}_sampler", 0],
                                                                        "vae": ["vae", 0]}}
        graph[f"{name}_preview"] = {"class_type": "PreviewImage", "inputs": {"images": [f"{name}_decode", 0]}}

    graph["noise_mask"] = {"class_type": "SetLatentNoiseMask", "inputs": {"samples": ["sampler", 0], "mask": mask}}
    graph["diffdiff"] = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["patch", 0]}}
    resample("differential", ["diffdiff", 0], ["positive", 0], ["negative", 0], ["noise_mask", 0])
    graph["inpaint_cond"] = {"class_type": "InpaintModelConditioning", "inputs": {
        "positive": ["positive", 0], "negative": ["negative", 0], "vae": ["vae", 0], "pixels": ["decoded", 0],
        "mask": mask, "noise_mask": True}}
    resample("inpaint_model", ["patch", 0], ["inpaint_cond", 0], ["inpaint_cond", 1], ["inpaint_cond", 2])
    graph["encode_inpaint"] = {"class_type": "VAEEncodeForInpaint", "inputs": {
        "pixels": ["decoded", 0], "vae": ["vae", 0], "mask": mask, "grow_mask_by": 6}}
    resample("encode_inpaint", ["model", 0], ["positive", 0], ["negative", 0], ["encode_inpaint", 0], 1.0)
    graph["composite"] = {"class_type": "ImageCompositeMasked", "inputs": {
        "destination": ["decoded", 0], "source": ["saliency", 4], "x": 0, "y": 0, "resize_source": False,
        "mask": mask}}
    graph["composite_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["composite", 0]}}
    graph["grow"] = {"class_type": "GrowMask", "inputs": {"mask": mask, "expand": 3, "tapered_corners": True}}
    graph["feather"] = {"class_type": "FeatherMask", "inputs": {"mask": ["grow", 0], "left": 4, "top": 4,
                                                               "right": 4, "bottom": 4}}
    graph["mask_composite"] = {"class_type": "MaskComposite", "inputs": {
        "destination": ["feather", 0], "source": mask, "x": 0, "y": 0, "operation": "add"}}
    graph["mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": ["mask_composite", 0]}}
    graph["mask_preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["mask_image", 0]}}
    return graph


@pytest.mark.parametrize("batch", [1, 2])
def test_masks_work_in_comfyui_mask_and_inpainting_nodes(server, batch):
    entry = server.run(_consumer_graph(batch))
    for preview in ("differential_preview", "inpaint_model_preview", "encode_inpaint_preview",
                    "composite_preview", "mask_preview"):
        assert _image_sizes(server, entry, preview) == [(96, 64)] * batch, preview


UI_GENERATED_WITH = "0.29.0"  # the UI files are generated from this version's /object_info


def _unet_stand_in(inputs):
    name = inputs["unet_name"]
    if name.startswith("flux-2-klein"):
        return "TinyKleinLoader", {"seed": 0}
    if name.startswith("flux1-"):
        return "TinyFluxLoader", {"seed": 0, "schnell": "schnell" in name}
    if name.startswith(("qwen_image_fp8", "qwen_image_edit_2509")):
        return "TinyQwenImageLoader", {"seed": 0}
    if name.startswith("z_image_turbo"):
        return "TinyZImageLoader", {"seed": 0}
    if name.startswith("krea2_turbo"):
        return "TinyKrea2Loader", {"seed": 0}
    if name.startswith("hunyuanvideo1.5_"):
        return "TinyHunyuanVideo15Loader", {"seed": 0}
    raise ValueError(f"no stand-in for the diffusion model {name!r}")


CLIP_STAND_INS = {("qwen_3_4b.safetensors", "flux2"): "TinyKleinClipLoader",
                  ("qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image"): "TinyQwenImageClipLoader",
                  ("qwen_3_4b.safetensors", "lumina2"): "TinyZImageClipLoader",
                  ("qwen3vl_4b_fp8_scaled.safetensors", "krea2"): "TinyKrea2ClipLoader"}


DUAL_CLIP_STAND_INS = {"flux": "TinyFluxClipLoader", "hunyuan_video_15": "TinyHunyuanVideo15ClipLoader"}


def _clip_stand_in(inputs):
    stand_in = CLIP_STAND_INS.get((inputs["clip_name"], inputs["type"]))
    if stand_in is None:
        raise ValueError(f"no stand-in for CLIPLoader {inputs}")
    return stand_in, {"seed": 0}


def _vae_stand_in(inputs):
    stand_ins = {"ae.safetensors": "TinyVAELoader", "flux2-vae.safetensors": "TinyFlux2VAELoader",
                 "qwen_image_vae.safetensors": "TinyQwenImageVAELoader",
                 "hunyuanvideo15_vae_fp16.safetensors": "TinyHunyuanVideo15VAELoader"}
    return stand_ins[inputs["vae_name"]], {}


SD3_CHECKPOINTS = {"sd3.5_large": "sd35_large", "sd3.5_medium": "sd35_medium", "sd3_medium": "sd3"}


def _checkpoint_stand_in(inputs):
    name = inputs["ckpt_name"]
    for prefix, variant in SD3_CHECKPOINTS.items():
        if name.startswith(prefix):
            return "TinySD3CheckpointLoader", {"seed": 0, "variant": variant}
    raise ValueError(f"no stand-in for the checkpoint {name!r}")


# The real loaders -> tiny stand-ins (tests/support/stand_in_nodes) by file name: Flux.1 dev/schnell with
# t5xxl + clip_l and ae (8x, 16 channels); Flux.2 Klein with qwen_3_4b (type flux2) and flux2-vae
# (16x, 128 channels); an SD3 / SD3.5 checkpoint (its MODEL, CLIP and VAE: a tiny MMDiT of that
# variant, the SD3 triple CLIP, the 8x 16-channel VAE); Qwen-Image and Qwen-Image-Edit 2509 (one tiny
# Qwen-Image), qwen_2.5_vl_7b (type qwen_image: ComfyUI's Qwen-Image text encoder around a tiny Qwen2.5-VL
# with a tiny vision tower, so TextEncodeQwenImageEditPlus runs as it is) and qwen_image_vae (8x, 16
# channels, [B, 16, 1, h, w]). An unknown file name fails the test.
STAND_INS = {"UNETLoader": _unet_stand_in,
             "DualCLIPLoader": lambda inputs: (DUAL_CLIP_STAND_INS[inputs["type"]], {"seed": 0}),
             "CLIPLoader": _clip_stand_in,
             "VAELoader": _vae_stand_in,
             "CheckpointLoaderSimple": _checkpoint_stand_in}
SHIPPED = sorted((ROOT_WORKFLOWS := __import__("pathlib").Path(__file__).resolve().parents[2] / "workflows").glob("api/*.json"))
SMALL = (96, 64)  # the generated pictures' size in these runs


def _with_stand_ins(api: dict) -> dict:
    """The shipped workflow with the model loaders swapped for tiny stand-ins, small and few steps."""
    import copy
    api = copy.deepcopy(api)
    for node in api.values():
        if node["class_type"] in STAND_INS:
            node["class_type"], node["inputs"] = STAND_INS[node["class_type"]](node["inputs"])
        elif node["class_type"] in ("EmptySD3LatentImage", "EmptyFlux2LatentImage", "Flux2Scheduler", "EmptyLatentImage"):
            node["inputs"].update(width=SMALL[0], height=SMALL[1])
        elif node["class_type"] in ("EmptyHunyuanLatentVideo", "EmptyHunyuanVideo15Latent"):
            node["inputs"].update(width=SMALL[0], height=SMALL[1], length=9)  # 3 latent frames
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 2
        elif node["class_type"] == "ImageScaleToTotalPixels":
            node["inputs"]["megapixels"] = 0.02  # about 176x120 from the 104x72 test photo
    return api


def _skip_without_flux2(path):
    """Workflows for Flux.2, Z-Image or Krea 2 need ComfyUI 0.29's classes (layout flags)."""
    from workflow_layouts import missing_in_this_comfyui
    reason = missing_in_this_comfyui(path.stem)
    if reason:
        pytest.skip(reason)


def _save_example_photo(server):
    """The photo the photo workflows load (LoadImage 'example.png'): 104x72, random; and the clip the
    video workflows load (LoadVideo 'example.mp4'): 9 frames of 96x64 (3 latent frames), 8 fps."""
    import av
    from PIL import Image
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((72, 104, 3)) * 255).astype(np.uint8)).save(server.base / "input" / "example.png")
    clip = server.base / "input" / "example.mp4"
    if clip.exists():
        return
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = SMALL[0], SMALL[1], "yuv420p"
        for _ in range(9):
            frame = av.VideoFrame.from_ndarray((rng.random((SMALL[1], SMALL[0], 3)) * 255).astype(np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_workflow_runs_headless(server, path):
    import json

    _skip_without_flux2(path)
    _save_example_photo(server)
    api = json.loads(path.read_text())
    entry = server.run(_with_stand_ins(api))
    saved = [node for node, out in entry["outputs"].items() if out.get("images")]
    assert saved, "the workflow produced no images"
    save_nodes = [n for n, node in api.items() if node["class_type"] == "SaveImage"]
    if any(node["class_type"] in ("LoadImage", "LoadVideo") for node in api.values()):
        # the photo is scaled down for Flux; what is saved is at the photo's own size
        for node_id in save_nodes:
            assert _image_sizes(server, entry, node_id) == [(104, 72)], api[node_id]
    else:
        # generated from an empty latent: every saved picture is at the generated size
        for node_id in save_nodes:
            assert set(_image_sizes(server, entry, node_id)) == {SMALL}, api[node_id]


def _pastes(path) -> bool:
    """The workflow pastes a repainted part into its first picture at the same size, or repaints a
    photo where the mask is (SetLatentNoiseMask on the photo's VAE Encode) and pastes that part into
    the photo at the photo's size (resize_source)."""
    import json
    api = json.loads(path.read_text())
    repaints_photo = any(node["class_type"] == "SetLatentNoiseMask"
                         and api[node["inputs"]["samples"][0]]["class_type"] == "VAEEncode" for node in api.values())
    return any(node["class_type"] == "ImageCompositeMasked" and (not node["inputs"]["resize_source"] or repaints_photo)
               for node in api.values())


PASTING = [p for p in SHIPPED if _pastes(p)]


@pytest.mark.parametrize("path", PASTING, ids=[p.stem for p in PASTING])
def test_shipped_workflow_changes_only_the_masked_part(server, path):
    """The saved picture is the first picture where the feathered mask is 0 and the repainted one
    where it is 1, and the repaint changed the masked part. The tiny random models' maps are no
    subject, so the mask is made partial here: Concept Saliency thresholds by Otsu (not
    'exclusive', where one concept may win everywhere) without refinement (guided by the tiny VAE's
    8-pixel blocks or the random test photo, the mask would follow them into fragments that the
    feathering blurs nearly everywhere), and GrowMask/ImageBlur are small for the 96x64 picture.
    When the part is pasted at the photo's size (resize_source), the repainted picture and the mask
    are compared as that composite scales them: scaled by ImageCompositeMasked itself (no mask)
    onto the photo."""
    import json
    _skip_without_flux2(path)
    _save_example_photo(server)
    api = _with_stand_ins(json.loads(path.read_text()))
    (composite_id,) = [n for n, node in api.items() if node["class_type"] == "ImageCompositeMasked"]
    composite = dict(api[composite_id]["inputs"])
    for node in api.values():
        if node["class_type"] in ("ConceptSaliency", "ConceptMask"):
            node["inputs"].update(mask_mode="otsu", refine="none")
        elif node["class_type"] == "GrowMask":
            node["inputs"]["expand"] = 2
        elif node["class_type"] == "ImageBlur":
            node["inputs"].update(blur_radius=2, sigma=1.0)
    api["test_mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": composite["mask"]}}
    mask_image = ["test_mask_image", 0]
    if composite["resize_source"]:
        for name, image in (("source", composite["source"]), ("mask", mask_image)):
            api[f"test_{name}_resized"] = {"class_type": "ImageCompositeMasked", "inputs": {
                "destination": composite["destination"], "source": image, "x": 0, "y": 0, "resize_source": True}}
        composite["source"], mask_image = ["test_source_resized", 0], ["test_mask_resized", 0]
    api["test_composite"] = {"class_type": "PreviewImage", "inputs": {"images": [composite_id, 0]}}
    for name in ("destination", "source"):
        api[f"test_{name}"] = {"class_type": "PreviewImage", "inputs": {"images": composite[name]}}
    api["test_mask"] = {"class_type": "PreviewImage", "inputs": {"images": mask_image}}
    entry = server.run(api)

    def pixels(node):
        from PIL import Image
        image = entry["outputs"][node]["images"][0]
        query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
        return np.asarray(Image.open(_io.BytesIO(server.get_bytes(f"/view?{query}")))).astype(int)

    first, repainted, saved = pixels("test_destination"), pixels("test_source"), pixels("test_composite")
    mask = pixels("test_mask")[..., 0]
    kept, changed = mask == 0, mask == 255
    assert kept.mean() > 0.1 and changed.mean() > 0.1, f"mask not partial: {kept.mean():.2f} kept, {changed.mean():.2f} repainted"
    assert np.abs(saved - first)[kept].max() <= 1, "the picture changed outside the mask"
    assert np.abs(saved - repainted)[changed].max() <= 1, "the repainted part was not pasted"
    assert np.abs(repainted - first)[changed].mean() > 1, "the second pass did not change the masked part"


def test_shipped_ui_workflows_match_their_api_versions_and_are_listed(server):
    import json

    import ui_workflow
    object_info = server.get("/object_info")
    version = server.get("/system_stats")["system"].get("comfyui_version")
    for path in SHIPPED if version == UI_GENERATED_WITH else []:
        shipped_ui = json.loads((ROOT_WORKFLOWS / path.name).read_text())
        assert shipped_ui == ui_workflow.ui_for(path, object_info), (
            f"{path.name}: regenerate the UI workflow with `python tests/support/ui_workflow.py <server>`")
    templates = server.get("/workflow_templates")
    assert sorted(templates["comfyui-conceptattention"]) == sorted(p.stem for p in SHIPPED)


def test_twenty_queued_prompts_get_their_own_maps_and_memory_stays_flat(server):
    """Each prompt has its own concepts and selects its own first concept from maps captured while
    sampling (source 'sampling'): a map from another prompt's model would fail the name lookup."""
    import psutil
    process = psutil.Process(server.process.pid)

    def graph(i):
        g = _graph(KSAMPLER, ["sampler", 0], concepts=f"thing{i}, other{i}, background", batch=1)
        g["sampler"]["inputs"]["seed"] = i
        g["saliency"]["inputs"]["concept"] = f"thing{i}"
        return g

    for entry_id in [server.queue(graph(i)) for i in range(5)]:
        server.wait(entry_id)
    warm = process.memory_info().rss
    ids = [server.queue(graph(i)) for i in range(5, 25)]
    entries = [server.wait(prompt_id) for prompt_id in ids]
    assert all(_image_sizes(server, e, "preview_mask") == [(96, 64)] for e in entries)
    grown = (process.memory_info().rss - warm) / 2**20
    print(f"server RSS growth over 20 prompts: {grown:.1f} MiB")
    assert grown < 64, f"server memory grew {grown:.1f} MiB over 20 prompts"


def test_qwen_image_edit_reference_photo_gets_masks_at_the_references_size(server):
    """The shipped Qwen-Image-Edit workflow with its edit sampled on the patched model: Concept
    Saliency's picture 1 maps the photo TextEncodeQwenImageEditPlus gave as reference (scaled by it
    to about 1 megapixel, a multiple of 8), captured while the edit sampled."""
    import json
    import math
    _save_example_photo(server)
    api = json.loads((ROOT_WORKFLOWS / "api" / "qwen_image_edit_mask_photo.json").read_text())
    graph = _with_stand_ins(api)
    sampler = next(k for k, n in graph.items() if n["class_type"] == "KSampler")
    patch = next(k for k, n in graph.items() if n["class_type"] == "ConceptAttentionFlux")
    graph[sampler]["inputs"]["model"] = [patch, 0]
    saliency = next(k for k, n in graph.items() if n["class_type"] == "ConceptSaliency")
    scaled = graph[saliency]["inputs"]["image"]  # the scaled photo, also the edit's reference picture
    graph["ref_saliency"] = {"class_type": "ConceptSaliency", "inputs": {
        **graph[saliency]["inputs"], "latent": [sampler, 0], "source": "sampling", "picture": 1, "refine": "none"}}
    graph["ref_saliency"]["inputs"].pop("image")
    graph["ref_mask"] = {"class_type": "MaskToImage", "inputs": {"mask": ["ref_saliency", 2]}}
    graph["preview_ref_mask"] = {"class_type": "PreviewImage", "inputs": {"images": ["ref_mask", 0]}}
    graph["preview_scaled"] = {"class_type": "PreviewImage", "inputs": {"images": scaled}}
    entry = server.run(graph)
    [(width, height)] = _image_sizes(server, entry, "preview_scaled")
    scale = math.sqrt(1024 * 1024 / (width * height))
    expected = (round(width * scale / 8) * 8, round(height * scale / 8) * 8)
    assert _image_sizes(server, entry, "preview_ref_mask") == [expected]
    [text] = entry["outputs"]["ref_saliency"]["text"]
    assert text.startswith("maps captured while sampling") and text.endswith("of reference image 1")


@pytest.mark.parametrize("stem,masks,frames,video", [
    ("hunyuan_video15_generate_mask_recolour", "13", "18", "20"),  # generated: maps captured while sampling
    ("hunyuan_video15_clip_mask_background", "11", "16", "18"),  # a loaded clip: maps from its latent
])
def test_hunyuan_video_workflows_mask_and_change_every_frame(server, stem, masks, frames, video):
    """The HunyuanVideo 1.5 workflows on 9 frames (3 latent frames): Concept Mask gives 9 masks, one
    per frame, at the frames' size, and the 9 changed frames reach CreateVideo / SaveVideo."""
    import json
    path = ROOT_WORKFLOWS / "api" / f"{stem}.json"
    _skip_without_flux2(path)
    _save_example_photo(server)
    api = _with_stand_ins(json.loads(path.read_text()))
    api["test_masks"] = {"class_type": "PreviewImage", "inputs": {"images": [masks, 0]}}
    api["test_frames"] = {"class_type": "PreviewImage", "inputs": {"images": [frames, 0]}}
    entry = server.run(api)
    for node in ("test_masks", "test_frames"):
        assert _image_sizes(server, entry, node) == [SMALL] * 9, node
    assert entry["outputs"][video]["images"], "SaveVideo wrote no video"
