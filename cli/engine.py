"""The engine of the command-line tool: concept maps for many images, in-process or on servers.

    results = run_tasks([MaskTask("cat", Path("cat.jpg"), ["cat", "background"])], Settings())
    for result in results:          # as they finish, each task exactly once
        result.soft                 # float32 [C, H, W] at the image's size, or None with result.error

Both paths run the same API-format workflow (cli.workflow) through ComfyUI's own executor, so the
masks agree: in-process on the ComfyUI that holds the pack (cli.inprocess), or through the HTTP API
of any number of ComfyUI servers (cli.servers). The types they share (Settings, MaskTask,
MaskResult, EngineError) live in cli.tasks and are named here too.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Iterable, Iterator

from . import workflow
from .inprocess import run_in_process
from .servers import run_on_servers
from .tasks import (DEFAULT_CLIP_L, DEFAULT_T5, DEFAULT_UNET, DEFAULT_VAE, EngineError, ItemError,  # noqa: F401
                    MaskResult, MaskTask, Prepared, Settings, check_concepts, failed, finished, prepare)


def template_for(settings: Settings) -> dict:
    if settings.workflow is not None:
        return workflow.load_template(pathlib.Path(settings.workflow))
    return workflow.default_workflow(settings)


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
        return run_on_servers(tasks, settings, template, list(servers), say)
    return run_in_process(tasks, settings, template, comfyui, say)
