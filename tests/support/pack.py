"""The pack imported as the package `concept_attention_pack` (its folder's name has a dash, and
ComfyUI imports it by path): for the tests (conftest.py) and the benchmarks, one loader. Import
this module with tests/support on sys.path."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

PACK = "concept_attention_pack"
ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_pack(path: pathlib.Path | str = ROOT):
    """The package, loaded from `path` (this checkout by default, or another checkout of the pack)
    once per process."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    path = pathlib.Path(path)
    spec = importlib.util.spec_from_file_location(PACK, path / "__init__.py", submodule_search_locations=[str(path)])
    module = sys.modules[PACK] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
