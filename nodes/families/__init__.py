"""The model families the concept stream runs through, one short file each (base.py: what a
family answers). The generic layer (patching.py, api.py, text_encoding.py) reads them and never
branches on a family."""
from __future__ import annotations

from .base import Family, ModelCall, UnsupportedModelError, diffusion_model
from .chroma import Chroma
from .cogvideox import CogVideoX
from .flux1 import Flux1
from .flux2 import Flux2
from .hunyuan_video import HunyuanVideo
from .krea2 import Krea2
from .qwen_image import QwenImage
from .sd3 import SD3
from .z_image import ZImage

FAMILIES = (Flux1(), Flux2(), Chroma(), SD3(), QwenImage(), ZImage(), Krea2(), HunyuanVideo(), CogVideoX())
SUPPORTED = "; ".join(f.description for f in FAMILIES)

__all__ = ["FAMILIES", "SUPPORTED", "Family", "ModelCall", "UnsupportedModelError", "diffusion_model", "family_of"]


def _known_as(diffusion) -> str:
    """A name for models ComfyUI runs on a supported family's class that the pack does not serve."""
    try:
        import comfy.ldm.flux.model
    except ImportError:
        return ""
    if isinstance(diffusion, comfy.ldm.flux.model.Flux) and getattr(diffusion, "vector_in", None) is None:
        # Flux.1-shaped blocks without the pooled vector, text positions on their own axes
        return " (LongCat-Image, which ComfyUI runs on the Flux class, is not supported yet)"
    return ""


def family_of(model) -> Family:
    """The family of the diffusion model inside a ModelPatcher, or an error listing the supported ones."""
    diffusion = diffusion_model(model)
    for family in FAMILIES:
        if diffusion is not None and family.matches(diffusion):
            refusal = family.refusal(diffusion)
            if refusal:
                raise UnsupportedModelError(f"model: {refusal}")
            return family
    name = type(diffusion).__name__ if diffusion is not None else type(model).__name__
    raise UnsupportedModelError(
        f"model: this is a {name} model{_known_as(diffusion)}; Concept Attention supports {SUPPORTED} "
        "(transformers whose text "
        "and image tokens meet in joint attention blocks; UNets such as SD1.5/SDXL have none). Connect the "
        "MODEL from one of those (a checkpoint or UNET loader).")
