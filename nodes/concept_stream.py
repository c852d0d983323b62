"""The concept stream through one Flux-style double-stream block, and its saliency scores.

Pure torch, no ComfyUI import. Duck-typed on the block's text-side submodules (``txt_norm1``, ``txt_attn.qkv``, ``txt_attn.norm``, ``txt_attn.proj``, ``txt_norm2``,
``txt_mlp``): they are called, never read by weight name, so the host's weight casting,
quantised ops and offloading still apply.

Shapes: B batch rows, C concepts, N image tokens, H heads, D head dim, d = H * D.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange


@dataclass
class ConceptQKV:
    """Concept queries/keys/values of one block (after QK-norm; RoPE is the identity on
    concepts, whose position ids are all zero) and the block's text-side modulations."""

    q: torch.Tensor  # [B, H, C, D]
    k: torch.Tensor  # [B, H, C, D]
    v: torch.Tensor  # [B, H, C, D]
    mod_attn: Any  # shift, scale, gate of the attention half
    mod_mlp: Any  # shift, scale, gate of the MLP half


def concept_qkv(block, concepts: torch.Tensor, modulation) -> ConceptQKV:
    """concepts [B, C, d] and the concepts' text-side modulation of this block (attention half, MLP
    half: shift/scale/gate each [B, 1, d]) -> the concept q/k/v of this block."""
    mod_attn, mod_mlp = modulation
    modulated = torch.addcmul(mod_attn.shift, block.txt_norm1(concepts), 1 + mod_attn.scale)
    qkv = block.txt_attn.qkv(modulated)
    q, k, v = rearrange(qkv, "B C (K H D) -> K B H C D", K=3, H=block.num_heads)
    q, k = block.txt_attn.norm(q, k, v)
    return ConceptQKV(q, k, v, mod_attn, mod_mlp)


def concept_attention(concept: ConceptQKV, img_k: torch.Tensor, img_v: torch.Tensor) -> torch.Tensor:
    """Concept queries attend to concept keys and image keys, never to prompt keys.

    Only the C concept query rows are computed, and the image keys/values are used in place
    (no concatenation copy): the softmax is taken jointly over the two key blocks.
    img_k, img_v: [B, H, N, D] (img_k with the image RoPE applied). Returns [B, C, d].
    """
    q = concept.q
    scale = q.shape[-1] ** -0.5
    logits_concepts = torch.matmul(q, concept.k.transpose(-1, -2)).float() * scale  # B H C C
    logits_image = torch.matmul(q, img_k.transpose(-1, -2)).float() * scale  # B H C N
    peak = torch.maximum(logits_concepts.amax(-1, keepdim=True), logits_image.amax(-1, keepdim=True))
    weights_concepts = (logits_concepts - peak).exp_()
    weights_image = (logits_image - peak).exp_()
    total = weights_concepts.sum(-1, keepdim=True) + weights_image.sum(-1, keepdim=True)
    weights_concepts = (weights_concepts / total).to(q.dtype)
    weights_image = (weights_image / total).to(q.dtype)
    out = torch.matmul(weights_concepts, concept.v) + torch.matmul(weights_image, img_v)
    return rearrange(out, "B H C D -> B C (H D)")


def concept_update(block, concepts: torch.Tensor, concept_out: torch.Tensor, concept: ConceptQKV) -> torch.Tensor:
    """The residual updates of the concept stream with the block's text-side proj and MLP."""
    concepts = concepts + block.txt_attn.proj(concept_out) * concept.mod_attn.gate
    mlp_in = torch.addcmul(concept.mod_mlp.shift, block.txt_norm2(concepts), 1 + concept.mod_mlp.scale)
    concepts = concepts + block.txt_mlp(mlp_in) * concept.mod_mlp.gate
    if concepts.dtype == torch.float16:  # as the prompt stream does
        concepts = torch.nan_to_num(concepts, nan=0.0, posinf=65504, neginf=-65504)
    return concepts


def output_space_scores(concept_out: torch.Tensor, img_out: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """S = Oc . Ox^T over all d features, no scaling: [B, C, d] x [B, N, d] -> [B, C, N] float32.

    The dot product runs in float32 even for bf16/fp16 models: scores are in the hundreds and the
    softmax over concepts is sharp, so a bf16 rounding of S alone flips maps (5x larger error in
    tests). The image outputs are converted `chunk` tokens at a time to bound the extra memory."""
    concepts = concept_out.float().transpose(1, 2)  # [B, d, C]
    if img_out.dtype == torch.float32:
        return torch.matmul(img_out, concepts).transpose(1, 2)
    parts = [torch.matmul(img_out[:, i:i + chunk].float(), concepts) for i in range(0, img_out.shape[1], chunk)]
    return torch.cat(parts, dim=1).transpose(1, 2)


def normalize_over_concepts(x: torch.Tensor, dim: int = -2) -> torch.Tensor:
    """The authors' "concept normalisation": per feature, shift the concepts' values to start at 0
    and divide by their sum over the concept axis `dim` (a zero sum is left as is)."""
    shifted = x - x.amin(dim=dim, keepdim=True)
    total = shifted.sum(dim=dim, keepdim=True)
    return shifted / torch.where(total == 0, torch.ones_like(total), total)


def cross_attention_scores(concept_q: torch.Tensor, img_q: torch.Tensor) -> torch.Tensor:
    """Sum over heads of qc . qx^T (both after QK-norm, before RoPE): -> [B, C, N] float32."""
    return torch.einsum("bhcd,bhnd->bcn", concept_q.float(), img_q.float())


def apply_rope(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """x [B, H, L, D] rotated by pe [B|1, 1, 1|L, D/2, 2, 2], as ComfyUI's RoPE does (in x's dtype):
    the concepts' own position where it is not zero (Qwen-Image, Z-Image)."""
    pairs = x.to(pe.dtype).reshape(*x.shape[:-1], -1, 1, 2)
    out = pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]
    return out.reshape(x.shape).type_as(x)


def undo_rope(x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
    """Inverse of Flux's RoPE: x [B, H, N, D] rotated by pe [B|1, 1, N, D/2, 2, 2].

    Each pair of features was multiplied by a 2x2 rotation; its transpose undoes it.
    Computed in float32.
    """
    pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
    inverse = pe.float().transpose(-1, -2)
    out = inverse[..., 0] * pairs[..., 0] + inverse[..., 1] * pairs[..., 1]
    return out.reshape(x.shape)
