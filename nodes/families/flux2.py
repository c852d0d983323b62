"""Flux.2 dev and Klein: Flux's double blocks with one shared text-side modulation from the model
(no pooled vector), which the concepts take exactly as the prompt gets it in each block."""
from __future__ import annotations

import torch

from .flux1 import FluxBlocks


class Flux2(FluxBlocks):
    name = "Flux.2"
    description = "Flux.2 dev and Flux.2 Klein (4B, 9B)"
    text_encoders = "the Flux.2 text encoder (Mistral 3 Small for dev, Qwen3 4B/8B for Klein) in CLIPLoader with type 'flux2'"
    text_keys = ("mistral3_24b", "qwen3_4b", "qwen3_8b")

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.flux.model
        return isinstance(diffusion, comfy.ldm.flux.model.Flux) and bool(getattr(diffusion.params, "global_modulation", False))

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """Guidance 0 where the model has a guidance embedding (dev), nothing else (no pooled vector)."""
        return {"guidance": torch.zeros(rows, device=device)} if diffusion.params.guidance_embed else {}
