"""Chroma: Flux's double blocks with per-block modulations from its approximator; the concepts take
the text side of each block's, as the prompt does. No pooled vector; the prompt's padding mask never
concerns the concepts (they attend to concept and image keys only)."""
from __future__ import annotations

import torch

from .flux1 import FluxBlocks


class Chroma(FluxBlocks):
    name = "Chroma"
    description = "Chroma"
    text_encoders = "CLIPLoader with type 'chroma' (t5xxl)"
    text_keys = ("t5xxl",)

    @classmethod
    def matches(cls, diffusion) -> bool:
        try:
            import comfy.ldm.chroma.model
        except ImportError:
            return False
        return type(diffusion) is comfy.ldm.chroma.model.Chroma

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """Guidance 0 (the approximator's input; Chroma has no pooled vector)."""
        return {"guidance": torch.zeros(rows, device=device)}
