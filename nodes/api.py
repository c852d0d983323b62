"""Python API for scripts and tests: the same machinery as the nodes, without the node UI.

    from nodes.api import patch_model, concept_maps, concept_masks
    patched = patch_model(model, embeddings, ["dragon", "sky", "background"])
    samples = comfy.sample.sample(patched, ...)              # any sampler
    maps = concept_maps(patched, samples)                     # ConceptMaps, token grid
    masks = concept_masks(maps)                               # [B, C, H, W] at image size
"""
from __future__ import annotations

import dataclasses

import torch

from . import patching
from .capture import VARIANTS, ConceptConfig, ConceptInputError, ConceptMaps, parse_blocks
from .frames import as_frames
from .masks import apply_mask_mode, gaussian_blur_3x3, grid_to_pixels, winners
from .refine import REFINE_MODES, refine_maps
from .render import match_image

SOURCES = ("auto", "sampling", "latent")
REFINE_CHOICES = ("auto",) + REFINE_MODES  # auto: guided when a picture is given, none without


def patch_model(model, concept_embeddings: torch.Tensor, names, *, blocks: str = "auto",
                start_percent: float = 0.0, end_percent: float = 1.0, variant: str = "output space",
                normalize_concepts: bool = True, empty_prompt: torch.Tensor | None = None,
                empty_pooled: torch.Tensor | None = None):
    """Return a clone of the ModelPatcher `model` that records concept maps while it samples.

    concept_embeddings: [C, text_dim], one row per concept (already encoded, e.g. with
    text_encoding.encode_concepts or any custom text encoder); names: the C concept names.
    blocks: which joint (double) blocks' scores are averaged: 'auto' (the family's default: Flux's
    last 4 double blocks, SD3's last fifth of its joint blocks), 'last 4', 'all', '15-18', '0,2'.
    start_percent/end_percent: the window of sampling steps whose maps are averaged.
    variant: 'output space' (the paper's method) or 'cross attention' (its baseline).
    normalize_concepts (the node's default, on): the authors' segmentation setting: before each dot
    product, every feature of the concept vectors is shifted to start at 0 and divided by its sum
    over the concepts. Off gives the paper's plain equations.
    empty_prompt: [1, L, text_dim], the prompt the encode path uses when none is given, and
    empty_pooled its pooled vector [1, width] (the families that read one: SD3).
    """
    names = tuple(names)
    if variant not in VARIANTS:
        raise ConceptInputError(f"map_variant: expected one of {VARIANTS}, received {variant!r}.")
    if not 0.0 <= start_percent < end_percent <= 1.0:
        raise ConceptInputError(
            f"start_percent/end_percent: need 0 <= start < end <= 1, received {start_percent} and "
            f"{end_percent}.")
    if len(set(n.lower() for n in names)) != len(names) or not names:
        raise ConceptInputError(f"concepts: need distinct, non-empty names, received {list(names)}.")
    family = patching.family_of(model)  # a clear error for a model the pack cannot handle
    depth = len(family.blocks(patching.diffusion_model(model)))
    if blocks.strip().lower() == "auto":
        blocks = family.default_blocks(depth)
    config = ConceptConfig(
        names=names,
        embeddings=torch.as_tensor(concept_embeddings).detach().float().cpu(),
        blocks=parse_blocks(blocks, depth, family.block_kind),
        start_percent=float(start_percent),
        end_percent=float(end_percent),
        variant=variant,
        normalize_concepts=bool(normalize_concepts),
        empty_prompt=None if empty_prompt is None else empty_prompt.detach().float().cpu(),
        empty_pooled=None if empty_pooled is None else empty_pooled.detach().float().cpu(),
    )
    return patching.patch(model, config)


def concept_maps(model, latent, *, source: str = "auto", noise_level: float = 0.5, sigma: float | None = None,
                 seeds=(0,), conditioning=None, noise: torch.Tensor | None = None, picture: int = 0) -> ConceptMaps:
    """Maps for `latent` (a LATENT dict or its samples tensor [B, 16, h, w]), as Concept Saliency
    gives them. `.detail` says in words where they came from.

    source 'sampling': the maps captured while this patched model (or an identical patch) sampled
    this latent (each image found within a small tolerance; a batch may mix images of several runs).
    source 'latent': computed now from the latent (the encode path): noised to `noise_level`, a
    position in the model's noise schedule as on the node (0.5: sigma 0.5 for schnell, about 0.76
    for dev), or to the exact `sigma` when given; one noise per seed (seeds wrap around at 2^64),
    or the explicit `noise` [S, B, 16, h, w]. conditioning: the prompt for that pass, a tensor
    [1, L, text_dim] or a CONDITIONING (which carries the pooled vector SD3 needs); None: the empty
    prompt kept with the patch.
    source 'auto': captured maps when there are, otherwise computed.
    picture: 0 the generated image (or the latent itself); k >= 1 reference image k of an edit
    (Kontext, Flux.2, Qwen-Image-Edit), its maps captured while sampling, at its own size.
    """
    if picture < 0:
        raise ConceptInputError(f"picture: expected 0 (the generated image) or a reference number, received {picture}.")
    maps = _concept_maps(model, latent, source, noise_level, sigma, seeds, conditioning, noise)
    if picture == 0:
        return maps
    if picture > len(maps.references):
        have = (f"the sampler's conditioning had {len(maps.references)} reference image"
                f"{'s' if len(maps.references) != 1 else ''}" if maps.source == "sampling"
                else "maps computed from a latent have no reference images")
        raise ConceptInputError(
            f"picture: reference image {picture} does not exist for this latent ({have}). Use 0 for the "
            "generated image, or 1..N for the references of an edit (ReferenceLatent, TextEncodeQwenImageEdit) "
            "with source 'sampling'; for a photo itself, VAE Encode it and use source 'latent'.")
    return maps.references[picture - 1]


def _concept_maps(model, latent, source, noise_level, sigma, seeds, conditioning, noise) -> ConceptMaps:
    if source not in SOURCES:
        raise ConceptInputError(f"source: expected one of {SOURCES}, received {source!r}.")
    samples = latent["samples"] if isinstance(latent, dict) else latent
    if getattr(samples, "is_nested", False):
        raise ConceptInputError("latent: nested (multi-part) latents are not supported.")
    if not bool(torch.isfinite(samples).all()):
        raise ConceptInputError(
            "latent: it contains NaN or infinite values (a broken upstream node, e.g. a LatentMultiply by NaN, "
            "or a sampler that diverged), so it has no meaningful maps. Check the nodes before Concept Saliency.")
    patching.family_of(model)
    store = patching.concept_store(model)
    if store is None:
        raise ConceptInputError(
            "model: this MODEL carries no concepts. Connect the MODEL output of a Concept Attention "
            "node (the same one the sampler used).")
    if source != "latent":
        maps = store.find(samples)
        if maps is not None:
            return maps
        if source == "sampling":
            why = f" The last sampling run took no maps: {store.last_failure}." if store.last_failure else ""
            raise ConceptInputError(
                "latent: no maps were captured for this latent." + why + " Connect the LATENT that a "
                "sampler produced with this patched MODEL, check that start/end percent select at least "
                "one step, or set source to 'latent' to compute maps from the latent itself.")
    check_latent(model, samples)
    if sigma is None:
        sigma = noise_sigma(model, noise_level)
    seeds = [int(seed) % 2**64 for seed in seeds]
    maps = patching.maps_from_latent(model, samples, float(sigma), seeds, conditioning, noise)
    if source == "auto":
        maps.detail += " (no maps captured while sampling matched this latent)"
    return maps


def check_latent(model, samples: torch.Tensor) -> None:
    """A clear error for a latent this model cannot take (another model family's VAE, a video)."""
    family = patching.family_of(model)
    channels = model.get_model_object("latent_format").latent_channels
    dims = ", ".join(["B", str(channels)] + ["t", "h", "w"][3 - (family.latent_dims - 2):])
    if samples.ndim != family.latent_dims or samples.shape[1] != channels:
        raise ConceptInputError(
            f"latent: this model works on [{dims}] latents, received {list(samples.shape)}. Encode the image "
            f"with this model's VAE (this is a {family.name} model) or connect the LATENT of a sampler that "
            "used this model.")


def noise_sigma(model, position: float) -> float:
    """The sigma at `position` (0 clean .. 1 pure noise) of the model's noise schedule, shift
    included: 0.5 -> 0.5 for schnell, about 0.76 for dev (the authors' step 2 of 4)."""
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(1.0 - float(position)))


def default_noise_level(model) -> float:
    """The sigma of the paper's setting (position 0.5 in the schedule)."""
    return noise_sigma(model, 0.5)


def concept_masks(maps: ConceptMaps, blur: bool = True, *, refine: str = "none", image: torch.Tensor | None = None,
                  radius: int | None = None, eps: float | None = None, iterations: int | None = None) -> torch.Tensor:
    """[B, C, H, W] at image resolution (latent size x the VAE scale), values 0..1, the concepts
    summing to 1 per pixel; a video's maps give [B*F, C, H, W], each of its F pixel frames in turn
    (nodes/frames.py: 1 + 4(T-1) frames for T latent frames of HunyuanVideo). blur (the node's default, on): the paper's 3x3 Gaussian (sigma 1) on the
    token grid first.

    refine: 'none' (bilinear from the token grid), 'guided' (guided filter on the token grid,
    applied per pixel: the maps' edges follow the picture's), 'pamr' (guided, then pixel-adaptive
    refinement: slower, cleaner in texture), or 'auto' (guided when `image` is given, else none).
    image: the picture the maps belong to, an IMAGE [B or 1, H, W, 3] at the masks' size (another
    size is resized to it). radius (tokens), eps and iterations tune the refinement (see
    nodes.refine.refine_maps).
    """
    if refine not in REFINE_CHOICES:
        raise ConceptInputError(f"refine: expected one of {REFINE_CHOICES}, received {refine!r}.")
    maps = as_frames(maps)  # a video: its pixel frames, [B*F, C, h, w]
    if refine == "auto":
        refine = "none" if image is None else "guided"
    if refine != "none" and image is None:
        raise ConceptInputError(
            f"image: refine '{refine}' makes the masks follow the picture's edges, but no image is "
            "connected. Connect the picture (VAE Decode of the sampled latent, or the loaded photo) to "
            "'image', or set refine to 'none'.")
    if refine == "none":
        grid = gaussian_blur_3x3(maps.maps) if blur else maps.maps
        return grid_to_pixels(grid, maps.latent_size, maps.latent_scale, maps.patch_size)
    b = maps.maps.shape[0]
    height, width = maps.latent_size[0] * maps.latent_scale, maps.latent_size[1] * maps.latent_scale
    return refine_maps(maps.maps, match_image(image, b, height, width), refine, blur=blur,
                       token_pixels=maps.latent_scale * maps.patch_size, radius=radius, eps=eps, iterations=iterations)


MASK_CHUNK_BYTES = 256 * 2**20  # pixels of the soft maps held at once by concept_mask


def concept_mask(maps: ConceptMaps, chosen, mask_mode: str = "exclusive", threshold: float = 0.5,
                 invert: bool = False, blur: bool = True, *, refine: str = "none", image: torch.Tensor | None = None,
                 radius: int | None = None, eps: float | None = None) -> torch.Tensor:
    """The mask of the concepts at indices `chosen` (their union; inverted with `invert`), MASK
    [B, H, W] (a video: [B*F, H, W], one per frame), equal to Concept Saliency's `mask` output.
    Computed a few pictures (frames) at a time, so only MASK_CHUNK_BYTES of soft maps at pixel size
    exist at once however long the video: the result itself is the only full-size tensor."""
    maps = as_frames(maps)
    n, c = maps.maps.shape[:2]
    height, width = maps.latent_size[0] * maps.latent_scale, maps.latent_size[1] * maps.latent_scale
    per_picture = c * height * width * 4 * 3  # the soft maps, their masks and the arg-max, float32
    step = max(1, MASK_CHUNK_BYTES // per_picture)
    out = torch.empty(n, height, width)
    pictures = image is not None and image.shape[0] == n
    for start in range(0, n, step):
        part = dataclasses.replace(maps, maps=maps.maps[start:start + step], block_maps=None, references=())
        soft = concept_masks(part, blur, refine=refine, image=image[start:start + step] if pictures else image,
                             radius=radius, eps=eps)
        masks = apply_mask_mode(soft, mask_mode, threshold, winner=winners(soft) if mask_mode == "exclusive" else None)
        mask = masks[:, list(chosen)].amax(dim=1)
        out[start:start + step] = 1.0 - mask if invert else mask
    return out


OUTPUT_MEMORY_SHARE = 0.8  # of the memory available when Concept Saliency starts


def check_saliency_memory(maps: ConceptMaps, available: int | None = None) -> None:
    """A clear error, before anything is built, when Concept Saliency's outputs for these maps (a
    long video's frames) would not fit in memory: the soft maps and `masks` (C masks per picture),
    `heatmaps` and `overlay` (3C channels each), `mask` and `segmentation`, float32 at pixel size."""
    import psutil
    pictures, concepts = maps.maps.shape[0], maps.maps.shape[1]
    pixels = pictures * maps.latent_size[0] * maps.latent_scale * maps.latent_size[1] * maps.latent_scale
    needed = pixels * 4 * (8 * concepts + 4)
    available = psutil.virtual_memory().available if available is None else available
    if needed > OUTPUT_MEMORY_SHARE * available:
        raise ConceptInputError(
            f"latent: Concept Saliency's outputs for {pictures} pictures (video frames) x {len(maps.names)} concepts "
            f"would need {needed / 2**30:.1f} GB, and {available / 2**30:.1f} GB of memory is free. Use Concept Mask "
            "for the chosen concept's mask alone (one mask per frame, made a few frames at a time), or fewer "
            "concepts or frames.")
