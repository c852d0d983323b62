"""Run the workflow inside this Python process on a local ComfyUI: its folder paths, its node
loader, its executor. Models stay loaded between images (the executor's cache keeps the loaders'
outputs while their inputs do not change)."""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
import uuid

from . import images, workflow
from .tasks import (EngineError, ItemError, Prepared, Settings, describe_refusal, execution_error, failed,
                    finished, prepare, unreadable)

log = logging.getLogger(__name__)

PACK_ROOT = pathlib.Path(os.path.abspath(__file__)).parent.parent  # not resolved: the custom_nodes link counts
SUBFOLDER = "concept_masks_cli"


def is_comfyui(path: pathlib.Path) -> bool:
    return (path / "comfy" / "model_patcher.py").is_file() and (path / "execution.py").is_file()


def find_comfyui(explicit: pathlib.Path | None = None) -> pathlib.Path:
    """--comfyui, else COMFYUI_PATH, else the ComfyUI whose custom_nodes folder holds this pack."""
    if explicit is not None:
        candidates = [("--comfyui", pathlib.Path(explicit))]
    elif os.environ.get("COMFYUI_PATH"):
        candidates = [("COMFYUI_PATH", pathlib.Path(os.environ["COMFYUI_PATH"]))]
    else:
        candidates = [("the folder above custom_nodes", PACK_ROOT.parent.parent),
                      ("the folder above custom_nodes", PACK_ROOT.resolve().parent.parent)]
    for origin, path in candidates:
        if is_comfyui(path):
            return path.resolve()
    origin, path = candidates[0]
    raise EngineError(
        f"no ComfyUI found ({origin}: {path} is not a ComfyUI folder). Install the pack in "
        "ComfyUI/custom_nodes, set COMFYUI_PATH (or --comfyui) to your ComfyUI folder, or give "
        "--server URL of a running ComfyUI.")


class _NoServer:
    """What ComfyUI's executor needs of its PromptServer when there is none: nobody listens."""
    client_id = None
    last_node_id = None
    last_prompt_id = None

    def send_sync(self, event, data, sid=None):
        pass

    def queue_updated(self):
        pass


class InProcessComfy:
    def __init__(self, comfyui: pathlib.Path, settings: Settings, say):
        self.comfyui, self.say = comfyui, say
        self.temp = pathlib.Path(tempfile.mkdtemp(prefix="concept_masks_"))
        started = time.perf_counter()
        self._import_comfyui(settings)
        import execution
        import nodes
        self.nodes, self.execution = nodes, execution
        asyncio.run(nodes.load_custom_node(str(PACK_ROOT), module_parent="custom_nodes"))
        if workflow.ATTENTION not in nodes.NODE_CLASS_MAPPINGS:
            raise EngineError(f"ComfyUI at {comfyui} did not load the pack from {PACK_ROOT} "
                              "(see the log above for the import error).")
        parameters = inspect.signature(execution.PromptExecutor).parameters
        cache = ({"cache_args": {"lru": 0, "ram": 0, "ram_inactive": 0}} if "cache_args" in parameters
                 else {"cache_size": None})
        self.executor = execution.PromptExecutor(_NoServer(), cache_type=execution.CacheType.CLASSIC, **cache)
        say(f"ComfyUI {self._version()} loaded in-process from {comfyui} ({time.perf_counter() - started:.1f} s)")

    def _import_comfyui(self, settings: Settings) -> None:
        if str(self.comfyui) not in sys.path:
            sys.path.insert(0, str(self.comfyui))
        if "nodes" in sys.modules and not hasattr(sys.modules["nodes"], "NODE_CLASS_MAPPINGS"):
            raise EngineError("a module named 'nodes' that is not ComfyUI's is already imported; run "
                              "the tool as 'python concept_masks.py', not from inside the pack's folder.")
        import comfy.cli_args
        args = comfy.cli_args.args
        if settings.base_directory is not None:
            args.base_directory = str(pathlib.Path(settings.base_directory).resolve())
        if settings.cpu:
            args.cpu = True
        else:
            import torch
            if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
                args.cpu = True  # ComfyUI's own choice would fail without a device; say it plainly
        import folder_paths
        extra = self.comfyui / "extra_model_paths.yaml"
        if extra.is_file():
            import utils.extra_config
            utils.extra_config.load_extra_path_config(str(extra))
        folder_paths.set_temp_directory(str(self.temp))
        import comfy.model_management  # noqa: F401  (reads args.cpu at import)

    def _version(self) -> str:
        version_file = self.comfyui / "comfyui_version.py"
        return version_file.read_text().split("=")[-1].strip().strip('"') if version_file.is_file() else "?"

    def ensure_nodes(self, graph: dict) -> None:
        """Load ComfyUI's extra built-in nodes and then its custom node packs only when the workflow
        names a node that is not loaded yet (the default workflow needs none of them)."""
        needed = {n["class_type"] for n in graph.values()} | set(workflow.TOOL_NODES)

        def missing():
            return sorted(needed - set(self.nodes.NODE_CLASS_MAPPINGS))
        if missing():
            asyncio.run(self.nodes.init_builtin_extra_nodes())
        if missing():
            self._load_custom_node_packs()
        if missing():
            raise EngineError(f"the workflow uses nodes this ComfyUI does not have: {missing()}. "
                              "Install their node packs in ComfyUI's custom_nodes.")

    def _load_custom_node_packs(self) -> None:
        import folder_paths
        comfy_dir = str(self.comfyui / "comfy")
        if comfy_dir not in sys.path:
            sys.path.insert(0, comfy_dir)  # as ComfyUI's own init_external_custom_nodes does
        base_names = set(self.nodes.NODE_CLASS_MAPPINGS)
        for folder in folder_paths.get_folder_paths("custom_nodes"):
            if not os.path.isdir(folder):
                continue
            for name in sorted(os.listdir(os.path.realpath(folder))):
                path = os.path.join(folder, name)
                if name == "__pycache__" or name.endswith(".disabled") or (
                        os.path.isfile(path) and not name.endswith(".py")):
                    continue
                if os.path.realpath(path) == os.path.realpath(PACK_ROOT):
                    continue  # already loaded
                asyncio.run(self.nodes.load_custom_node(path, base_names, module_parent="custom_nodes"))

    def validate(self, prompt: dict) -> list[str]:
        valid, error, outputs, node_errors = asyncio.run(
            self.execution.validate_prompt(str(uuid.uuid4()), prompt, None))
        if not valid:
            raise EngineError("ComfyUI refused the workflow: " + describe_refusal(error, node_errors, prompt))
        return outputs

    def run(self, prepared: Prepared, template: dict, settings: Settings) -> list[bytes]:
        name = f"{uuid.uuid4().hex}.png"
        (self.temp / SUBFOLDER).mkdir(exist_ok=True)
        picture = self.temp / SUBFOLDER / name
        picture.write_bytes(prepared.png)
        try:
            prompt = workflow.build_prompt(template, f"{SUBFOLDER}/{name} [temp]", prepared.task.concepts,
                                           prepared.task.caption, settings)
            outputs = self.validate(prompt)
            self.executor.execute(prompt, str(uuid.uuid4()), {}, outputs)
            if not self.executor.success:
                raise ItemError(execution_error(self.executor.status_messages))
            files = self.executor.history_result["outputs"][workflow.MASKS_OUT]["images"]
            paths = [self.temp / f.get("subfolder", "") / f["filename"] for f in files]
            try:
                return [path.read_bytes() for path in paths]
            finally:
                for path in paths:
                    path.unlink(missing_ok=True)
        finally:
            picture.unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)


def run_in_process(tasks, settings, template, comfyui, say):
    """ComfyUI is loaded at the first picture that can be read: a run left with unreadable files
    only (a rerun) reports them without the minutes a load can take."""
    where = find_comfyui(comfyui)
    comfy = None
    try:
        for task in tasks:
            started = time.perf_counter()
            try:
                prepared = prepare(task, settings)
            except images.ImageReadError as error:
                yield unreadable(task, "in-process", started, error)
                continue
            if comfy is None:
                comfy = InProcessComfy(where, settings, say)
                comfy.ensure_nodes(template)
                started = time.perf_counter()  # the picture's time, not the load's
            try:
                pngs = comfy.run(prepared, template, settings)
            except ItemError as error:
                yield failed(task, "in-process", started, str(error), prepared.size)
                continue
            yield finished(prepared, pngs, "in-process", started)
    finally:
        if comfy is not None:
            comfy.close()
