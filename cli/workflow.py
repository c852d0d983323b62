"""The one API-format workflow both paths run (in-process and on servers), so their masks agree:

    LoadImage -> VAEEncode -> Concept Saliency (source latent, mask_mode soft) -> MaskToImage -> PreviewImage
    loaders   -> Concept Attention (Flux) ----^

The soft maps travel as 8-bit PNGs (one per concept, in the concepts' order); mask modes are applied
by the client, so one run serves every mode. A user's own API-format workflow (`--workflow`: other
loaders, a GGUF model, LoRAs) is accepted as a template: it must hold one LoadImage, one Concept
Attention (Flux) and one Concept Saliency; only what Concept Saliency needs is kept."""
from __future__ import annotations

import copy
import json
import pathlib

ATTENTION = "ConceptAttentionFlux"
SALIENCY = "ConceptSaliency"
LOAD_IMAGE = "LoadImage"
MASKS_OUT = "concept_masks_out"  # the node ids the tool adds
MASKS_IMAGE = "concept_masks_image"
PROMPT = "concept_masks_prompt"


class WorkflowError(ValueError):
    """A workflow (template) the tool cannot use; the message says what to change."""


def default_workflow(settings) -> dict:
    """The pack's encode-path graph with the standard Flux.1 loaders (the shipped workflows' files)."""
    return {
        "unet": {"class_type": "UNETLoader",
                 "inputs": {"unet_name": settings.unet, "weight_dtype": settings.weight_dtype}},
        "clip": {"class_type": "DualCLIPLoader",
                 "inputs": {"clip_name1": settings.t5, "clip_name2": settings.clip_l, "type": "flux"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": settings.vae}},
        "attention": {"class_type": ATTENTION,
                      "inputs": {"model": ["unet", 0], "clip": ["clip", 0], "concepts": "subject\nbackground"}},
        "image": {"class_type": LOAD_IMAGE, "inputs": {"image": "example.png"}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": ["vae", 0]}},
        "saliency": {"class_type": SALIENCY, "inputs": {"model": ["attention", 0], "latent": ["encode", 0]}},
    }


def load_template(path: pathlib.Path) -> dict:
    """An API-format workflow file ("Export (API)" in ComfyUI), checked for the three nodes."""
    try:
        graph = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise WorkflowError(f"--workflow {path}: cannot read it as JSON ({error}).") from None
    if isinstance(graph, dict) and "prompt" in graph and isinstance(graph["prompt"], dict):
        graph = graph["prompt"]
    if not isinstance(graph, dict) or not all(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        raise WorkflowError(f"--workflow {path}: not an API-format workflow (use ComfyUI's 'Export (API)'; "
                            "the UI format with 'nodes' and 'links' is not accepted).")
    for class_type in (LOAD_IMAGE, ATTENTION, SALIENCY):
        _only(graph, class_type, path)
    return graph


def _only(graph: dict, class_type: str, where) -> str:
    ids = [node_id for node_id, node in graph.items() if node["class_type"] == class_type]
    if len(ids) != 1:
        raise WorkflowError(f"workflow {where}: needs exactly one {class_type} node, found {len(ids)}.")
    return ids[0]


def _ancestors(graph: dict, node_id: str) -> set[str]:
    seen, todo = set(), [node_id]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for value in graph[current]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] in graph:
                todo.append(value[0])
    return seen


def build_prompt(template: dict, image_name: str, concepts: list[str], caption: str, settings) -> dict:
    """The workflow for one image: the template's Concept Saliency and what it needs, filled in with
    the image, concepts and settings, and the tool's output nodes (the soft maps as PNGs)."""
    graph = copy.deepcopy(template)
    saliency_id = _only(graph, SALIENCY, "template")
    attention_id = _only(graph, ATTENTION, "template")
    image_id = _only(graph, LOAD_IMAGE, "template")
    graph[image_id]["inputs"]["image"] = image_name
    graph[attention_id]["inputs"].update(
        concepts="\n".join(concepts), blocks=settings.blocks, start_percent=0.0, end_percent=1.0,
        map_variant=settings.map_variant, normalize_concepts=settings.normalize_concepts)
    saliency = graph[saliency_id]["inputs"]
    saliency.update(concept="", invert=False, mask_mode="soft", threshold=settings.threshold, source="latent",
                    noise_level=settings.noise_level, seed=settings.seed, seed_count=settings.seed_count,
                    blur=settings.blur, refine=settings.refine, refine_radius=settings.refine_radius,
                    refine_eps=settings.refine_eps)
    saliency["image"] = [image_id, 0]  # the picture refine follows (unused with refine 'none')
    saliency.pop("conditioning", None)
    if caption:
        clip = graph[attention_id]["inputs"]["clip"]
        graph[PROMPT] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": caption}}
        saliency["conditioning"] = [PROMPT, 0]
    kept = _ancestors(graph, saliency_id)
    graph = {node_id: node for node_id, node in graph.items() if node_id in kept}
    graph[MASKS_IMAGE] = {"class_type": "MaskToImage", "inputs": {"mask": [saliency_id, 0]}}
    graph[MASKS_OUT] = {"class_type": "PreviewImage", "inputs": {"images": [MASKS_IMAGE, 0]}}
    return graph
