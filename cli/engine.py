"""The engine of the command-line tool: concept maps for many images, in-process or on servers.

    results = run_tasks([MaskTask("cat", Path("cat.jpg"), ["cat", "background"])], Settings())
    for result in results:          # as they finish, each task exactly once
        result.soft                 # float32 [C, H, W] at the image's size, or None with result.error

Both paths run the same API-format workflow (cli.workflow) through ComfyUI's own executor, so the
masks agree: in-process on the ComfyUI that holds the pack (cli.inprocess), or through the HTTP API
of any number of ComfyUI servers (cli.servers).
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from . import images, workflow

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


class EngineError(RuntimeError):
    """Nothing can run: no ComfyUI, no server reachable, a workflow the tool cannot use."""


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


def template_for(settings: Settings) -> dict:
    if settings.workflow is not None:
        return workflow.load_template(pathlib.Path(settings.workflow))
    return workflow.default_workflow(settings)


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


def run_tasks(tasks: Iterable[MaskTask], settings: Settings, servers: list[str] | None = None,
              comfyui: pathlib.Path | None = None,
              progress: Callable[[str], None] | None = None) -> Iterator[MaskResult]:
    """Soft concept maps for each task, yielded as they finish, each task exactly once (failures
    as results with `error`). servers None or empty: in-process on the ComfyUI at `comfyui`
    (default: COMFYUI_PATH, or the ComfyUI whose custom_nodes holds this pack); otherwise the
    tasks are spread over the servers' HTTP APIs. progress(message) hears about events
    (ComfyUI starting, a server failing). Raises EngineError when nothing can run."""
    settings = dataclasses.replace(settings)
    template = template_for(settings)
    say = progress or (lambda message: None)
    if servers:
        from .servers import run_on_servers
        return run_on_servers(tasks, settings, template, list(servers), say)
    from .inprocess import run_in_process
    return run_in_process(tasks, settings, template, comfyui, say)
