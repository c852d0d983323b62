"""The node schemas: validate the inputs, call the layers below, shape the outputs."""
from __future__ import annotations

import logging
import os
import uuid

import folder_paths
import torch
from comfy_api.latest import io
from PIL import Image

from . import api
from .capture import VARIANTS, ConceptInputError, parse_concepts
from .families import SUPPORTED, family_of
from .frames import as_frames, pixel_frames
from .masks import MASK_MODES, select_concepts
from .outputs import saliency_outputs
from .masks import grid_to_pixels
from .render import block_grid, palette
from .text_encoding import encode_concepts, encode_prompt_and_pooled
from .ui_payload import map_payload

log = logging.getLogger(__name__)

CATEGORY = "conditioning/concept attention"


def canonical_concepts(text: str) -> str:
    """The concepts text with one concept per line and no stray whitespace; text that does not
    parse is left as it is, so the node reports the problem."""
    try:
        return "\n".join(parse_concepts(text))
    except ConceptInputError:
        return text


class ConceptAttention(io.ComfyNode):
    NODE_ID = "ConceptAttentionFlux"

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name="Concept Attention",
            category=CATEGORY,
            description="Records a saliency map per concept while any sampler runs this model "
                        "(ConceptAttention, Helbling et al. 2025). The generated image is unchanged.",
            inputs=[
                io.Model.Input("model", tooltip=f"A joint-attention model: {SUPPORTED}."),
                io.Clip.Input("clip", tooltip="The CLIP you already loaded for this model (Flux.1: clip_l + "
                                              "t5xxl, concepts go through its T5-XXL side; Flux.2: Mistral 3 "
                                              "or Qwen3; Chroma: T5-XXL; SD3/SD3.5: the triple CLIP, concepts "
                                              "read from its CLIP-L/G part)."),
                io.String.Input("concepts", multiline=True, default="subject\nbackground",
                                tooltip="One concept per line (or comma-separated), e.g. 'dragon, sky, "
                                        "background'. Maps compete per pixel, so give at least two; "
                                        "'background' is a good second concept."),
                io.String.Input("blocks", default="auto",
                                tooltip="Joint (double) blocks whose maps are averaged: 'auto' (the model "
                                        "family's default: Flux's last 4, the paper's; SD3's last fifth), "
                                        "'last 4', 'all', a range '15-18' or indices '0,2,5' (an error names "
                                        "the model's range)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="First part of the sampling steps whose maps are averaged."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Steps from this fraction on are not averaged."),
                io.Combo.Input("map_variant", options=list(VARIANTS), default=VARIANTS[0],
                               tooltip="'output space': the paper's method (sharpest). 'cross attention': "
                                       "query-query maps, the paper's baseline, for comparison."),
                io.Boolean.Input("normalize_concepts", default=True,
                                 tooltip="The paper's segmentation setting: each feature of the concept "
                                         "vectors is normalised across concepts before the dot product, so "
                                         "no concept dominates by scale alone."),
            ],
            outputs=[io.Model.Output(tooltip="The model, recording concept maps when sampled. Connect it "
                                             "to the sampler and to Concept Saliency.")],
        )

    @classmethod
    def execute(cls, model, clip, concepts, blocks, start_percent, end_percent, map_variant,
                normalize_concepts=True) -> io.NodeOutput:
        names = parse_concepts(concepts)
        if len(names) < 2:
            raise ConceptInputError(
                f"concepts: only {names} was given. Maps are a softmax over concepts, so one concept "
                "covers everything; add a second one such as 'background'.")
        if clip is None:
            raise ConceptInputError("clip: no CLIP is connected; connect the CLIP loaded for this model (Flux.1: DualCLIPLoader; SD3: TripleCLIPLoader or the checkpoint).")
        family = family_of(model)
        text_keys, first_row, whole_output = family.concept_text(clip)
        embeddings = encode_concepts(clip, names, text_keys, family.text_encoders, first_row, whole_output)
        empty_prompt, empty_pooled = encode_prompt_and_pooled(clip, "")
        patched = api.patch_model(
            model, embeddings, names, blocks=blocks, start_percent=start_percent, end_percent=end_percent,
            variant=map_variant, normalize_concepts=normalize_concepts, empty_prompt=empty_prompt,
            empty_pooled=empty_pooled)
        return io.NodeOutput(patched)


def saliency_inputs() -> list:
    """The inputs Concept Saliency and Concept Mask share (the maps of a latent and how they become masks)."""
    return [
        io.Model.Input("model", tooltip="The MODEL output of Concept Attention."),
        io.Latent.Input("latent", tooltip="The sampler's output LATENT, or any latent of this model "
                                          "(VAE Encode of an image) to compute maps for."),
        io.String.Input("concept", default="",
                        tooltip="Concept name(s) for the 'mask' output; several comma-separated "
                                "names give their union. Empty: the first concept."),
        io.Boolean.Input("invert", default=False,
                         tooltip="'mask' becomes everything except the named concept(s), e.g. name "
                                 "the subject to get the background."),
        io.Combo.Input("mask_mode", options=list(MASK_MODES), default="exclusive",
                       tooltip="exclusive: each pixel goes to its strongest concept (masks partition "
                               "the image). soft: the raw 0..1 maps (for Differential Diffusion). "
                               "above mean: the paper's binary mask. otsu: automatic binary "
                               "threshold. threshold: binary at the value below."),
        io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="Cut-off for mask_mode 'threshold' (maps are per-pixel shares of the "
                               "concepts, so 1/C is an even share)."),
        io.Combo.Input("source", options=list(api.SOURCES), default="auto",
                       tooltip="auto: maps captured while sampling this latent if there are, else "
                               "computed from the latent. sampling: captured only (error if none). "
                               "latent: always computed from the latent (noise, one forward pass)."),
        io.Float.Input("noise_level", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="When computing from a latent: the position in the model's noise "
                               "schedule (0.5 = the paper's: sigma 0.5 for Flux.1 schnell, about 0.76 "
                               "for Flux.1 dev, 0.88 for Flux.2). Lower keeps more detail, higher is smoother."),
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                     tooltip="Noise seed when computing from a latent."),
        io.Int.Input("seed_count", default=1, min=1, max=16,
                     tooltip="Noises averaged when computing from a latent (the paper uses 5): "
                             "cleaner maps, one batched pass that costs that many images."),
        io.Boolean.Input("blur", default=True,
                         tooltip="The paper's 3x3 Gaussian blur (sigma 1) on the 16-pixel token grid "
                                 "before upscaling: smoother masks, fewer isolated tokens."),
        io.Conditioning.Input("conditioning", optional=True,
                              tooltip="Optional prompt when computing from a latent; default is the "
                                      "empty prompt."),
        io.Image.Input("image", optional=True,
                       tooltip="Optional picture (VAE Decode output or the loaded photo) under the "
                               "'overlay' heatmaps, and the guide for 'refine'."),
        io.Combo.Input("refine", options=list(api.REFINE_CHOICES), default="auto", optional=True,
                       tooltip="Masks that follow the picture's edges (uses 'image'). auto: guided when "
                               "an image is connected, else none. none: bilinear from the 16-pixel "
                               "token grid (soft borders a token wide). guided: edges snap to the "
                               "picture's, parts thinner than a token come back; fast. pamr: guided, "
                               "then pixel-adaptive refinement: cleaner in texture, several times slower."),
        io.Int.Input("refine_radius", default=2, min=0, max=8, optional=True,
                     tooltip="Window of the refinement, in 16-pixel tokens (2: 5x5 tokens). Larger: "
                             "the masks follow the picture over a wider area (fixes maps that are "
                             "further off, but a concept can leak across faint edges); smaller: closer "
                             "to the raw maps."),
        io.Float.Input("refine_eps", default=0.0001, min=0.00001, max=0.1, step=0.00001, optional=True,
                       tooltip="How faint a colour edge the refinement follows (the guided filter's "
                               "regularisation, squared 0..1 colour units). Smaller: fainter edges and "
                               "finer parts, but texture inside an object can split its mask; larger: "
                               "only strong edges, smoother masks."),
        io.Int.Input("picture", default=0, min=0, max=16, optional=True,
                     tooltip="Whose maps: 0 the generated image (or the connected latent); 1, 2, ... the "
                             "reference images of an edit (Kontext, Flux.2, Qwen-Image-Edit), captured "
                             "while sampling, at each reference's own size. Connect that picture to "
                             "'image' for its overlays and refinement."),
    ]

class ConceptSaliency(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ConceptSaliency",
            display_name="Concept Saliency",
            category=CATEGORY,
            # an output node: it shows its maps on the node (js/), so it runs, and a cached run
            # sends its preview again, even when nothing is connected to its outputs
            is_output_node=True,
            description="Concept maps as masks and heatmaps, for a latent the patched model sampled "
                        "(maps captured during sampling) or any other latent, e.g. VAE Encode of a photo "
                        "(maps computed from the latent with one forward pass).",
            inputs=saliency_inputs(),
            outputs=[
                io.Mask.Output("masks", display_name="masks", tooltip="Every concept's mask, [B*C, H, W] image-major: image 0's "
                                                "concepts in order, then image 1's (after mask_mode)."),
                io.Image.Output("heatmaps", display_name="heatmaps", tooltip="The soft maps coloured (plasma), one min/max per image."),
                io.Mask.Output("mask", display_name="mask", tooltip="The chosen concept(s) per image, [B, H, W] (after mask_mode "
                                               "and invert)."),
                io.Image.Output("overlay", display_name="overlay", tooltip="Each concept's heatmap over the picture, with its name."),
                io.Image.Output("segmentation", display_name="segmentation", tooltip="One colour per concept (strongest per pixel), with a "
                                                        "legend; [B, H, W, 3]."),
            ],
        )

    @classmethod
    def execute(cls, model, latent, concept, source, noise_level, seed, seed_count, blur=True,
                invert=False, mask_mode="exclusive", threshold=0.5, conditioning=None,
                image=None, refine="auto", refine_radius=2, refine_eps=1e-4, picture=0) -> io.NodeOutput:
        captured = api.concept_maps(model, latent, source=source, noise_level=noise_level,
                                    seeds=range(seed, seed + seed_count), conditioning=conditioning, picture=picture)
        maps = as_frames(captured)  # a video: one image per pixel frame
        api.check_saliency_memory(maps)
        log.info("Concept Saliency: maps %s", maps.detail)
        chosen = select_concepts(maps.names, concept)
        soft = api.concept_masks(maps, blur=blur, refine=refine, image=image, radius=refine_radius,
                                 eps=refine_eps)  # [B, C, H, W]
        outputs = saliency_outputs(soft, maps.names, chosen, mask_mode, threshold, invert, image)
        return io.NodeOutput(*outputs, ui=saliency_ui(maps, soft, overlays=outputs[3], segmentation=outputs[4],
                                                      frames=video_frames(captured)))


class ConceptMask(io.ComfyNode):
    """Only the chosen concepts' mask, built a few frames at a time: for long videos, where Concept
    Saliency's per-concept outputs would take gigabytes."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ConceptMask",
            display_name="Concept Mask",
            category=CATEGORY,
            description="The chosen concept(s)' mask alone, the same as Concept Saliency's 'mask' output, made a few "
                        "pictures or video frames at a time so that only the mask itself takes memory (a video: one "
                        "mask per frame, [B*F, H, W], for per-frame mask inputs).",
            inputs=saliency_inputs(),
            outputs=[io.Mask.Output("mask", display_name="mask", tooltip="The chosen concept(s) per image or video "
                                                                          "frame, [B, H, W] (a video: [B*F, H, W]).")],
        )

    @classmethod
    def execute(cls, model, latent, concept, source, noise_level, seed, seed_count, blur=True,
                invert=False, mask_mode="exclusive", threshold=0.5, conditioning=None,
                image=None, refine="auto", refine_radius=2, refine_eps=1e-4, picture=0) -> io.NodeOutput:
        maps = api.concept_maps(model, latent, source=source, noise_level=noise_level,
                                seeds=range(seed, seed + seed_count), conditioning=conditioning, picture=picture)
        log.info("Concept Mask: maps %s", maps.detail)
        refine = ("none" if image is None else "guided") if refine == "auto" else refine
        mask = api.concept_mask(maps, select_concepts(maps.names, concept), mask_mode, threshold, invert, blur,
                                refine=refine, image=image, radius=refine_radius, eps=refine_eps)
        return io.NodeOutput(mask)


class ConceptBlockMaps(io.ComfyNode):
    """Which blocks localise best on this model: the maps of each scored block alone, as a grid."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ConceptBlockMaps",
            display_name="Concept Block Maps",
            category=CATEGORY,
            description="The maps of each block selected on Concept Attention, one row per block and one "
                        "column per concept, on one colour scale per picture: to see which blocks localise "
                        "your concepts best on this model, then type those blocks into Concept Attention.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Concept Attention (with the blocks to compare, "
                                                "e.g. 'all')."),
                io.Latent.Input("latent", tooltip="The sampler's output LATENT, or any latent of this model."),
                io.Combo.Input("source", options=list(api.SOURCES), default="auto",
                               tooltip="As on Concept Saliency: maps captured while sampling, or computed from "
                                       "the latent."),
                io.Float.Input("noise_level", default=0.5, min=0.0, max=1.0, step=0.01,
                               tooltip="When computing from a latent: the position in the noise schedule."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Noise seed when computing from a latent."),
                io.Int.Input("tile_size", default=256, min=32, max=1024, step=32,
                             tooltip="Longest side of each panel in pixels."),
                io.Conditioning.Input("conditioning", optional=True,
                                      tooltip="Optional prompt when computing from a latent."),
            ],
            outputs=[io.Image.Output("grid", display_name="grid",
                                     tooltip="[B, blocks x tile, concepts x tile, 3]: one row per block.")],
        )

    @classmethod
    def execute(cls, model, latent, source, noise_level, seed, tile_size, conditioning=None) -> io.NodeOutput:
        maps = as_frames(api.concept_maps(model, latent, source=source, noise_level=noise_level, seeds=(seed,),
                                          conditioning=conditioning))
        if maps.block_maps is None:
            raise ConceptInputError("latent: these maps were captured without per-block maps; run the "
                                    "sampler again or set source to 'latent'.")
        b, k, c = maps.block_maps.shape[:3]
        pixels = grid_to_pixels(maps.block_maps.flatten(1, 2), maps.latent_size, maps.latent_scale, maps.patch_size)
        grid = block_grid(pixels.reshape(b, k, c, *pixels.shape[-2:]), maps.names, maps.blocks, tile_size)
        return io.NodeOutput(grid)


MAX_PREVIEW_OVERLAYS = 64  # more overlay panels than this are not saved for the node's preview
SEGMENTATION_PREVIEW_SIDE = 1024  # px, longest side of the preview's segmentation (PNG: exact colours)
VIDEO_SEGMENTATION_PREVIEW_SIDE = 512  # px, the same for each frame of a video (one PNG per frame)
OVERLAY_PREVIEW_SIDE = 512  # px, longest side of each overlay preview (JPEG: B*C of them, cheap to write)


def save_previews(images: torch.Tensor, *, max_side: int, jpeg: bool) -> list[dict]:
    """Images [N, H, W, 3] written to ComfyUI's temp folder for the node's preview, scaled down to
    at most max_side pixels (as PreviewImage's results: filename, subfolder, type). Full-size
    pictures stay on the node's IMAGE outputs; the preview only has to fill the node, and writing
    B*C full-size PNGs would cost several times the outputs themselves."""
    count, height, width, _ = images.shape
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        images = torch.nn.functional.interpolate(images.movedim(-1, 1), size=size, mode="area").movedim(1, -1)
    pixels = images.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        "ConceptSaliency_preview_" + uuid.uuid4().hex[:8], folder_paths.get_temp_directory(),
        pixels.shape[2], pixels.shape[1])
    saved = []
    for index, array in enumerate(pixels):
        file = f"{name}_{counter + index:05}_.{'jpg' if jpeg else 'png'}"
        options = {"quality": 90} if jpeg else {"compress_level": 1}
        Image.fromarray(array).save(os.path.join(folder, file), **options)
        saved.append({"filename": file, "subfolder": subfolder, "type": "temp"})
    return saved


def video_frames(maps) -> int:
    """Frames per video of maps before nodes/frames.py as_frames (1 for pictures)."""
    return pixel_frames(maps.maps.shape[2], maps.temporal_scale) if maps.maps.ndim == 5 else 1


def saliency_ui(maps, soft, overlays, segmentation, frames: int = 1) -> dict:
    """Concept Saliency's `ui` output: the source text, and for the node's preview (js/) the
    segmentation and overlays saved as temp images with the compact soft maps, names and
    colours (nodes/ui_payload.py). frames: a video's frames per video (the B*F images are
    video-major): the node shows a frame slider; each frame's segmentation is saved smaller."""
    payload = map_payload(soft, maps.names, palette(soft.shape[1]), source=maps.source, detail=f"maps {maps.detail}",
                          frames=frames)
    side = SEGMENTATION_PREVIEW_SIDE if frames == 1 else VIDEO_SEGMENTATION_PREVIEW_SIDE
    payload["segmentation"] = save_previews(segmentation, max_side=side, jpeg=False)
    payload["overlays"] = (save_previews(overlays, max_side=OVERLAY_PREVIEW_SIDE, jpeg=True)
                           if overlays.shape[0] <= MAX_PREVIEW_OVERLAYS else [])
    return {"text": [f"maps {maps.detail}"], "concept_saliency": [payload]}
