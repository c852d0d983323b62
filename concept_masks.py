"""Concept masks for whole folders, from the command line (ConceptAttention node pack).

    python custom_nodes/<this pack's folder>/concept_masks.py mask photos/ --concepts "person, background" --out masks/
    python custom_nodes/<this pack's folder>/concept_masks.py mask photos/ --concepts ... --server http://gpu1:8188 --server http://gpu2:8188
    python custom_nodes/<this pack's folder>/concept_masks.py --help

Run it with the Python that runs ComfyUI. It works from any folder name: the pack is loaded as a
package here, and this folder is taken off sys.path first because the pack's `nodes` package
would hide ComfyUI's `nodes` module.
"""
import importlib.util
import os
import pathlib
import sys

PACK_ROOT = pathlib.Path(os.path.abspath(__file__)).parent  # not resolved: a symlink in custom_nodes counts
PACKAGE = "concept_attention_pack"


def _load_pack_package():
    here = {PACK_ROOT.resolve()}
    sys.path[:] = [p for p in sys.path if pathlib.Path(p or os.getcwd()).resolve() not in here]
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, PACK_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(PACK_ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return importlib.import_module(PACKAGE + ".cli.main")


if __name__ == "__main__":
    sys.exit(_load_pack_package().main())
