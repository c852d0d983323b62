"""What every part of the tool shares: the settings, a task and its result, the errors, and the
steps both run paths take around the workflow (read the picture, decode the maps, word
ComfyUI's refusals). cli.engine, cli.inprocess and cli.servers import this module and nothing of
each other's, so the engine can pick a path without an import circle."""
from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass, field

import numpy as np

from . import images

# The files of the shipped workflows (workflows/photo_mask_new_background.json): Flux.1 schnell,
# the paper's model for the encode path.
DEFAULT_UNET = "flux1-schnell.safetensors"
DEFAULT_T5 = "t5xxl_fp16.safetensors"
DEFAULT_CLIP_L = "clip_l.safetensors"
DEFAULT_VAE = "ae.safetensors"


@dataclass
class Settings:
    """The Concept Attention / Concept Saliency options the tool exposes, with the nodes' defaults
    (refine 'guided' is what the node's 'auto' does: the tool always connects the picture)."""
    blocks: str = "last 4"
    noise_level: float = 0.5
    seed: int = 0
    seed_count: int = 1
    blur: bool = True
    refine: str = "guided"
    refine_radius: int = 2
    refine_eps: float = 1e-4
    normalize_concepts: bool = True
    map_variant: str = "output space"
    mask_mode: str = "exclusive"   # applied by the client (cli.masks); the workflow always returns soft maps
    threshold: float = 0.5
    unet: str = DEFAULT_UNET
    weight_dtype: str = "default"
    t5: str = DEFAULT_T5
    clip_l: str = DEFAULT_CLIP_L
    vae: str = DEFAULT_VAE
    workflow: pathlib.Path | None = None   # an API-format template replacing the default loaders
    max_megapixels: float = 1.0            # larger pictures are scaled down for the model, maps scaled back
    in_flight: int = 2                     # prompts queued per server at a time
    timeout: float = 900.0                 # seconds one item may take on a server before it counts as gone
    base_directory: pathlib.Path | None = None  # in-process: ComfyUI's --base-directory
    cpu: bool = False                      # in-process: ComfyUI's --cpu

    def seeds(self) -> list[int]:
        return [(self.seed + k) % 2**64 for k in range(self.seed_count)]

    def map_settings(self) -> dict:
        """What changes the maps (the manifest records it; resume redoes items done otherwise)."""
        keys = ("blocks", "noise_level", "seed", "seed_count", "blur", "refine", "refine_radius", "refine_eps",
                "normalize_concepts", "map_variant", "unet", "weight_dtype", "t5", "clip_l", "vae",
                "max_megapixels")
        values = {k: getattr(self, k) for k in keys}
        values["workflow"] = str(self.workflow) if self.workflow else None
        return values


@dataclass
class MaskTask:
    key: str                 # unique id of the item (the manifest key)
    image: pathlib.Path
    concepts: list[str]
    caption: str = ""        # prompt for the encode pass ("" = the empty prompt)


@dataclass
class MaskResult:
    key: str
    soft: np.ndarray | None  # float32 [C, H, W] at the image's size, task.concepts order, 8-bit steps
    source: str              # "in-process" or the server's URL
    seconds: float
    error: str | None = None
    size: tuple[int, int] | None = None  # the image's (width, height)
    task: MaskTask | None = field(default=None, repr=False)
    unreadable: bool = False  # the input file is not a picture: no rerun can mask it


class EngineError(RuntimeError):
    """Nothing can run: no ComfyUI, no server reachable, a workflow the tool cannot use."""


class ItemError(RuntimeError):
    """ComfyUI ran this item and reported an error (the message is ComfyUI's): the item failed,
    the others can still run."""


@dataclass
class Prepared:
    """A task ready to send: the working-size PNG and the image's own size."""
    task: MaskTask
    png: bytes
    size: tuple[int, int]


def prepare(task: MaskTask, settings: Settings) -> Prepared:
    """Read the picture (raises images.ImageReadError with the reason) and make its working copy."""
    picture = images.open_rgb(task.image)
    return Prepared(task, images.working_png(picture, settings.max_megapixels), picture.size)


def check_concepts(concepts: list[str]) -> None:
    if len(concepts) < 2:
        raise ValueError(f"concepts: need at least two (maps are a softmax over them), received {concepts}; "
                         "add 'background'.")
    if len({c.strip().lower() for c in concepts}) != len(concepts) or not all(c.strip() for c in concepts):
        raise ValueError(f"concepts: need distinct, non-empty names, received {concepts}.")
    if any("," in c or "\n" in c for c in concepts):
        raise ValueError(f"concepts: a name cannot contain a comma or a line break (the node splits on them), "
                         f"received {concepts}.")


def finished(prepared: Prepared, pngs: list[bytes], source: str, started: float) -> MaskResult:
    task = prepared.task
    if len(pngs) != len(task.concepts):
        return failed(task, source, started, f"the workflow returned {len(pngs)} maps for "
                                             f"{len(task.concepts)} concepts", prepared.size)
    soft = images.decode_maps(pngs, prepared.size)
    return MaskResult(task.key, soft, source, time.perf_counter() - started, None, prepared.size, task)


def failed(task: MaskTask, source: str, started: float, error: str, size=None) -> MaskResult:
    return MaskResult(task.key, None, source, time.perf_counter() - started, error, size, task)


def unreadable(task: MaskTask, source: str, started: float, error: images.ImageReadError) -> MaskResult:
    """The input file cannot be read as a picture: failed before anything ran."""
    result = failed(task, source, started, str(error))
    result.unreadable = True
    return result


def execution_error(messages) -> str:
    """The first execution_error of a prompt's status messages, as 'node type: message'."""
    for event, data in messages or []:
        if event == "execution_error":
            return f"{data.get('node_type')}: {str(data.get('exception_message', '')).strip()}"
    return "ComfyUI reported an error without a message"


def describe_refusal(error, node_errors, prompt) -> str:
    """ComfyUI's validation errors in one paragraph, with a hint for missing model files."""
    parts = [] if not error else [str(error.get("message", error)) + (f" ({error['details']})" if error.get("details") else "")]
    for node_id, info in (node_errors or {}).items():
        for e in info.get("errors", []):
            parts.append(f"{info.get('class_type', prompt.get(node_id, {}).get('class_type'))}: "
                         f"{e.get('message')} {e.get('details', '')}".strip())
    text = "; ".join(parts)
    if "not in" in text and ("_name" in text):
        text += (". A model file is missing: put it in ComfyUI's models folder (diffusion_models, "
                 "text_encoders, vae) or name yours with --unet/--t5/--clip-l/--vae.")
    return text
