"""Qwen-Image and its Edit / 2512 / Layered variants (ComfyUI's QwenImageTransformer2DModel).

Dual-stream blocks (`transformer_blocks`) reached by the "double_block" replace patch; the text side
is each block's txt_* modules and the attention's add_q/k/v projections with norm_added_q/k and
to_add_out, modulated by the block's `txt_mod` of the timestep embedding the prompt gets (the
regular half where edit models append a zero-timestep half for their references). Concepts enter
through the model's own txt_norm and txt_in. Text tokens come first in the joint sequence, then the
generated image, then reference images (edit models).

Positions: ComfyUI gives prompt token j the RoPE position txt_start + j on all three axes. A concept
is a one-token prompt of its own, so it takes position txt_start: the rotation of the prompt's first
token, read from the block's own `pe` (so it follows ComfyUI's layout in both versions).
"""
from __future__ import annotations

import torch

from ..concept_stream import apply_rope, undo_rope
from .base import Family, rows_of


def _pe_rows(pe: torch.Tensor, span: slice, length: int) -> torch.Tensor:
    """Rotations [B|1, 1, n, D/2, 2, 2] of the joint-sequence positions `span` (of `length`).
    ComfyUI 0.29 hands the block pe as [B, 1, L, D/2, 2, 2] (heads axis first), 0.3.64 as
    [B, L, 1, D/2, 2, 2]."""
    if pe.shape[2] == length:
        return pe[:, :, span]
    return pe[:, span].transpose(1, 2)


class _Projected:
    def __init__(self, q, k, v, gate, mod_mlp, q_before_rope):
        self.q, self.k, self.v, self.gate, self.mod_mlp = q, k, v, gate, mod_mlp
        self.q_before_rope = q_before_rope  # for the cross-attention variant (queries before RoPE)


class QwenTextSide:
    """The text half of one QwenImageTransformerBlock, with the prompt's text modulation."""

    updates = True

    def __init__(self, block, temb, concept_pe):
        self.block = block
        self.mod_attn, self.mod_mlp = block.txt_mod(temb).chunk(2, dim=-1)
        self.concept_pe = concept_pe  # [B|1, 1, 1, D/2, 2, 2]: position txt_start

    def project(self, concepts):
        block, attn = self.block, self.block.attn
        modulated, gate = block._modulate(block.txt_norm1(concepts), self.mod_attn)
        b, c, _ = concepts.shape
        heads = lambda t: t.view(b, c, attn.heads, -1).transpose(1, 2)  # noqa: E731
        q = attn.norm_added_q(heads(attn.add_q_proj(modulated)))
        k = attn.norm_added_k(heads(attn.add_k_proj(modulated)))
        v = heads(attn.add_v_proj(modulated))
        return _Projected(apply_rope(q, self.concept_pe), apply_rope(k, self.concept_pe), v, gate, self.mod_mlp, q)

    def update(self, concepts, concept_out, projected):
        block = self.block
        concepts = concepts + projected.gate * block.attn.to_add_out(concept_out)
        modulated, gate = block._modulate(block.txt_norm2(concepts), projected.mod_mlp)
        return torch.addcmul(concepts, gate, block.txt_mlp(modulated))


class QwenImage(Family):
    name = "Qwen-Image"
    description = "Qwen-Image (2512, Edit, Edit 2509/2511, Layered, fine-tunes)"
    text_encoders = "CLIPLoader with type 'qwen_image' (qwen_2.5_vl_7b)"
    text_keys = ("qwen25_7b",)
    latent_dims = 5  # [B, 16, 1, h, w]: one frame

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.qwen_image.model as qwen
        return isinstance(diffusion, qwen.QwenImageTransformer2DModel)

    def blocks(self, diffusion):
        return diffusion.transformer_blocks

    def default_blocks(self, depth: int) -> str:
        """The analogue of Flux's last 4 of 19 dual-stream blocks: the last fifth (60 -> last 13).
        Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth * 4 / 19))}"

    def text_dim(self, diffusion) -> int:
        return int(diffusion.txt_in.in_features)

    def text_side(self, block, args, call_vector, rows):
        temb = args["vec"]
        if temb.shape[0] == 2 * args["img"].shape[0]:  # edit models' zero timestep for the references
            temb = temb.chunk(2, dim=0)[0]
        length = args["txt"].shape[1] + args["img"].shape[1]
        concept_pe = rows_of(_pe_rows(args["pe"], slice(0, 1), length), rows)  # the prompt's first token: txt_start
        return QwenTextSide(block, rows_of(temb, rows), concept_pe)

    def image_queries(self, q, args, image, rows):
        length = args["txt"].shape[1] + args["img"].shape[1]
        return undo_rope(q[:, :, image][rows], rows_of(_pe_rows(args["pe"], image, length), rows))

    def concept_text(self, clip):
        """The encoder drops the template's system part (ComfyUI's QwenImageTEModel): its output is
        the last rows of the token sequence."""
        return self.text_keys, None, True
