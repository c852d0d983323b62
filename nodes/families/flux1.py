"""Flux.1 dev/schnell and models built on them (Krea, Kontext, Fill, fine-tunes): the paper's family.

Double blocks reached by the "double_block" replace patch; the text side is the block's txt_*
modules (concept_stream.concept_qkv / concept_update, duck-typed on them); the prompt's tokens come
first in the joint sequence, then the image, then Kontext reference tokens; RoPE is the identity on
the concepts (position 0), so the cross-attention variant undoes the image queries' rotation.
The concepts' modulation is the authors': time (+ guidance) + vector_in(0), the pooled CLIP vector
replaced by zeros (the prompt keeps the real one).
"""
from __future__ import annotations

import torch

from ..concept_stream import concept_qkv, concept_update, undo_rope
from .base import Family, rows_of


def _rows(modulation, rows):
    """A ModulationOut (shift/scale/gate [B, 1, d]) restricted to the concept stream's batch rows."""
    if modulation.shift.shape[0] == 1:
        return modulation
    return type(modulation)(modulation.shift[rows], modulation.scale[rows], modulation.gate[rows])


class FluxTextSide:
    """The txt_* half of a Flux-style double block, with the concepts' modulations."""

    updates = True

    def __init__(self, block, modulation):
        self.block, self.modulation = block, modulation

    def project(self, concepts):
        return concept_qkv(self.block, concepts, self.modulation)

    def update(self, concepts, concept_out, projected):
        return concept_update(self.block, concepts, concept_out, projected)


class FluxBlocks(Family):
    """What Flux.1, Flux.2 and Chroma share: the double-stream block layout and 2-D RoPE."""

    def text_side(self, block, args, call_vector, rows):
        _, (txt_mod1, txt_mod2) = args["vec"]  # (image, text) modulations given to the block
        return FluxTextSide(block, (_rows(txt_mod1, rows), _rows(txt_mod2, rows)))

    def image_queries(self, q, args, image, rows):
        return undo_rope(q[:, :, image][rows], rows_of(args["pe"][:, :, image], rows))


class Flux1(FluxBlocks):
    name = "Flux.1"
    description = "Flux.1 dev, Flux.1 schnell and models built on them (Krea, Kontext, Fill, fine-tunes, LoRAs)"
    text_encoders = "DualCLIPLoader with type 'flux' (clip_l + t5xxl)"
    text_keys = ("t5xxl",)

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.flux.model
        return (isinstance(diffusion, comfy.ldm.flux.model.Flux) and not getattr(diffusion.params, "global_modulation", False)
                and getattr(diffusion, "vector_in", None) is not None)

    def call_vector(self, diffusion, call, rows):
        from comfy.ldm.flux.layers import timestep_embedding
        dtype = call.dtype
        vec = diffusion.time_in(timestep_embedding(call.timestep[rows], 256).to(dtype))
        guidance = call.conds.get("guidance")
        if diffusion.params.guidance_embed and guidance is not None:
            guidance = guidance.to(call.x.device, dtype)  # as apply_model converts it for the model
            vec = vec + diffusion.guidance_in(timestep_embedding(guidance[rows], 256).to(dtype))
        pooled = torch.zeros(vec.shape[0], diffusion.params.vec_in_dim, device=vec.device, dtype=dtype)
        return vec + diffusion.vector_in(pooled)

    def text_side(self, block, args, call_vector, rows):
        return FluxTextSide(block, block.txt_mod(call_vector))

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """Pooled vector 0 and guidance 0 (the authors' setting)."""
        return {"y": torch.zeros(rows, diffusion.params.vec_in_dim, device=device),
                "guidance": torch.zeros(rows, device=device)}
