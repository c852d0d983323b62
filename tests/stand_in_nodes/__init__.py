"""Test-only ComfyUI nodes: tiny stand-ins for the Flux UNET, DualCLIP and VAE loaders, so that
workflows run headless with no model files. Loaded by the test server beside the pack."""
import pathlib
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tiny_flux import build_flux, tiny_clip  # noqa: E402


class TinyFluxLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0}), "schnell": ("BOOLEAN", {"default": False})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, seed, schnell):
        return (build_flux(seed=seed, schnell=schnell),)


class TinyFluxClipLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("CLIP",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self, seed):
        return (tiny_clip(seed),)


class TinyVAE:
    """8x downscale to 16 channels by a fixed mixing of 8x8 means; decode undoes it approximately."""

    downscale_ratio = 8

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mix = torch.randn(16, 3, generator=g)

    def spacial_compression_encode(self):
        return 8

    def spacial_compression_decode(self):
        return 8

    def encode(self, pixels):
        pooled = F.avg_pool2d(pixels[..., :3].movedim(-1, 1), 8)
        return torch.einsum("oc,bchw->bohw", self.mix, pooled)

    def decode(self, latent):
        rgb = torch.einsum("oc,bohw->bchw", torch.linalg.pinv(self.mix).T, latent)
        return F.interpolate(rgb, scale_factor=8, mode="nearest").movedim(1, -1).clamp(0, 1)


class TinyVAELoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("VAE",)
    FUNCTION = "load"
    CATEGORY = "testing"

    def load(self):
        return (TinyVAE(),)


NODE_CLASS_MAPPINGS = {"TinyFluxLoader": TinyFluxLoader, "TinyFluxClipLoader": TinyFluxClipLoader,
                       "TinyVAELoader": TinyVAELoader}
