"""SD3 Medium, SD3.5 Large / Large Turbo / Medium: ComfyUI's MMDiT (`mmdit.OpenAISignatureMMDITWrapper`).

Joint blocks (`joint_blocks`) reached by the "double_block" replace patch; each has a context (text)
half and an x (image) half. The concepts go through the context half with the one vector c = time +
pooled projection that both streams share (as the authors do), via the block's own
`pre_attention` / `post_attention`. The last block's context half is `pre_only`: it gives concept
queries/keys/values (so scores are taken there) but no update. No RoPE (absolute positions are added
to the image tokens at the input); the context tokens come first in the joint sequence (registers,
where a model has them, are part of the context). SD3.5 Medium's image-only second attention
(MMDiT-X) never sees the concepts: the first attention call of a block is the joint one.
"""
from __future__ import annotations

import math

from .base import Family, rows_of

CLIP_TOKENS = 77  # rows of the CLIP-L/G part at the start of the text encoder output


class _Projected:
    def __init__(self, q, k, v, intermediates):
        self.q, self.k, self.v, self.intermediates = q, k, v, intermediates


class ContextSide:
    """The context half (DismantledBlock) of one joint block, modulated by the shared vector c."""

    def __init__(self, context_block, c):
        self.block, self.c = context_block, c
        self.updates = not context_block.pre_only

    def project(self, concepts):
        (q, k, v), intermediates = self.block.pre_attention(concepts, self.c)
        heads = self.block.attn.num_heads  # q, k come [B, C, H*D]; v [B, C, H, D] (left unflattened)
        q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        return _Projected(q, k, v, intermediates)

    def update(self, concepts, concept_out, projected):
        # intermediates start with the block's input (the concepts, unchanged) then the gates/MLP modulation
        return self.block.post_attention(concept_out, *projected.intermediates)


class SD3(Family):
    name = "SD3"
    description = "SD3 Medium, SD3.5 Large, SD3.5 Large Turbo and SD3.5 Medium"
    text_encoders = ("the SD3 text encoders: TripleCLIPLoader (clip_l, clip_g, t5xxl) or the checkpoint's CLIP; "
                     "the concepts are read from the CLIP-L/G part")
    text_keys = ("l", "g", "t5xxl")
    block_kind = "joint block"

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
        return isinstance(diffusion, mmdit.MMDiT) and hasattr(diffusion, "joint_blocks")

    def blocks(self, diffusion):
        return diffusion.joint_blocks

    def default_blocks(self, depth: int) -> str:
        """The analogue of Flux's last 4 of 19 double blocks: the last fifth of the joint blocks
        (SD3.5 Large 38 -> last 8, SD3 / SD3.5 Medium 24 -> last 5). Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth * 4 / 19))}"

    def text_dim(self, diffusion) -> int:
        embedder = diffusion.context_embedder
        return int(getattr(embedder, "in_features", diffusion.hidden_size))  # Identity: no projection

    def project_concepts(self, diffusion, embeddings, call_vector=None):
        if diffusion.context_processor is not None:  # a text-only stage: concepts attend to concepts only
            embeddings = diffusion.context_processor(embeddings)
        return diffusion.context_embedder(embeddings)

    def text_side(self, block, args, call_vector, rows):
        return ContextSide(block.context_block, rows_of(args["vec"], rows))

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """The prompt's pooled CLIP-L/G vector (the given prompt's, else the empty prompt's): SD3's
        c = time + pooled projection modulates both streams, and the concepts take the same c."""
        if diffusion.y_embedder is None:
            return {}
        if pooled is None:
            from ..capture import ConceptInputError
            raise ConceptInputError(
                "conditioning: SD3 needs the prompt's pooled CLIP vector for the encode path, and none was "
                "given. Connect a CONDITIONING from CLIP Text Encode (it carries the pooled vector), or patch "
                "the model with its CLIP so the empty prompt's is kept.")
        return {"y": pooled.to(device).reshape(1, -1).expand(rows, -1)}

    def concept_text(self, clip):
        """The concept's own tokens in the CLIP-L/G part (the first 77 rows), as the authors take
        their concept tokens from CLIP; it is there with or without T5. A CLIP with T5 alone: the T5
        part (then the whole output)."""
        encoder = getattr(clip, "cond_stage_model", None)
        if getattr(encoder, "clip_l", None) is None and getattr(encoder, "clip_g", None) is None \
                and getattr(encoder, "t5xxl", None) is not None:
            return ("t5xxl",), 0, True
        return ("l", "g"), 0, False
