"""CogVideoX 1.0 (2B, 5B, I2V) (ComfyUI's cogvideo.CogVideoXTransformer3DModel, ComfyUI 0.29); 1.5,
whose tokens each span two latent frames, is refused with the reason.

Expert blocks: text and video tokens share q/k/v, QK-norm, output projection and feed-forward, with
separate adaptive-norm halves (each block's `norm1` / `norm2` give the video's and the text's shift,
scale and gate from the timestep embedding). The concepts take the text halves, as the authors do:
    x = LN(c) (1 + enc_scale) + enc_shift;  q, k, v = q/k/v(x), q/k LayerNorm-ed per head
    Oc = attention over [concept keys; video keys];  c += enc_gate attn_out(Oc)
    c += enc_gate_ff ff_out(gelu(ff_proj(LN(c) (1 + enc_scale2) + enc_shift2)))
RoPE is on video tokens only (the 5B model), so it never touches concepts; positional
embeddings (2B) are added to the video tokens only. Concepts enter as the prompt does (the patch
embedding's `text_proj`). The blocks are reached by neither a replace patch nor a block index: each
block makes exactly one attention call (its joint one), so the n-th attention call of a model call
is block n. Text first, then the video (tokens frame-major): maps [B, C, T, h, w].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Family


@dataclass
class CogCall:
    temb: torch.Tensor  # [b, time_embed_dim]: the timestep embedding (+ ofs) both halves are modulated from
    grid: tuple[int, int, int]
    rope: tuple | None  # (cos, sin) [N, D] of the video tokens, where the model uses RoPE


class _Projected:
    def __init__(self, q, k, v):
        self.q, self.k, self.v = q, k, v


def _text_half(norm, temb):
    """The text half (shift, scale, gate) [b, 1, d] of a CogVideoXLayerNormZero."""
    mods = norm.linear(norm.silu(temb)).chunk(6, dim=1)
    return tuple(m[:, None, :] for m in mods[3:])


class CogTextSide:
    updates = True

    def __init__(self, block, temb):
        self.block = block
        self.shift, self.scale, self.gate = _text_half(block.norm1, temb)
        self.shift2, self.scale2, self.gate2 = _text_half(block.norm2, temb)

    def project(self, concepts):
        block = self.block
        x = block.norm1.norm(concepts) * (1 + self.scale) + self.shift
        b, c, _ = x.shape
        heads = lambda t: t.view(b, c, block.num_heads, block.head_dim)  # noqa: E731
        q = block.norm_q(heads(block.q(x))).transpose(1, 2)
        k = block.norm_k(heads(block.k(x))).transpose(1, 2)
        return _Projected(q, k, heads(block.v(x)).transpose(1, 2))

    def update(self, concepts, concept_out, projected):
        block = self.block
        concepts = concepts + self.gate * block.attn_out(concept_out)
        x = block.norm2.norm(concepts) * (1 + self.scale2) + self.shift2
        return concepts + self.gate2 * block.ff_out(F.gelu(block.ff_proj(x), approximate="tanh"))


def _unrotate(x, cos, sin):
    """The inverse of ComfyUI's CogVideoX RoPE (interleaved pairs): x [b, H, N, D], cos/sin [N, D]."""
    real, imag = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    rotated = torch.stack([-imag, real], dim=-1).flatten(3)
    return x.float() * cos.to(x.device) - rotated * sin.to(x.device)


class CogVideoX(Family):
    name = "CogVideoX"
    description = "CogVideoX 1.0 (2B, 5B, I2V)"
    text_encoders = "CLIPLoader with type 'cogvideox' (t5xxl)"
    text_keys = ("t5xxl",)
    block_patch = None
    block_kind = "block"
    latent_dims = 5
    temporal_scale = 4  # its causal VAE: 1 + 4(T - 1) frames

    @classmethod
    def matches(cls, diffusion) -> bool:
        try:
            import comfy.ldm.cogvideo.model as cogvideo
        except ImportError:  # ComfyUI before CogVideoX
            return False
        return isinstance(diffusion, cogvideo.CogVideoXTransformer3DModel)

    def refusal(self, diffusion) -> str:
        if diffusion.patch_size_t is not None:
            return ("this is CogVideoX 1.5, whose tokens each span two latent frames; Concept Attention serves "
                    "CogVideoX 1.0 (2B, 5B, I2V) and not 1.5 yet.")
        return ""

    def blocks(self, diffusion):
        return diffusion.blocks

    def attention_block(self, transformer_options, call):
        return call  # one attention call per block, in order

    def default_blocks(self, depth: int) -> str:
        """The last fifth of the blocks (2B's 30 -> last 6, 5B's 42 -> last 9), by analogy with Flux's
        last 4 of 19 double blocks; the authors' code averages all layers. Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth * 4 / 19))}"

    def text_dim(self, diffusion) -> int:
        return int(diffusion.patch_embed.text_proj.in_features)

    def project_concepts(self, diffusion, embeddings, call_vector=None):
        proj = diffusion.patch_embed.text_proj
        return proj(embeddings.to(proj.weight.dtype)).to(embeddings.dtype)

    def patch_size(self, diffusion) -> int:
        return int(diffusion.patch_size)

    def token_grid(self, diffusion, x):
        pt, p = diffusion.patch_size_t or 1, diffusion.patch_size
        frames, height, width = x.shape[2:]
        return (-(-frames // pt), -(-height // p), -(-width // p))

    def call_vector(self, diffusion, call, rows):
        from comfy.ldm.cogvideo.model import get_timestep_embedding
        dtype = call.dtype
        emb = get_timestep_embedding(call.timestep[rows], diffusion.time_proj_dim, diffusion.time_proj_flip,
                                     diffusion.time_proj_shift).to(dtype)
        temb = diffusion.time_embedding_linear_2(diffusion.time_embedding_act(diffusion.time_embedding_linear_1(emb)))
        ofs = call.conds.get("ofs")
        if diffusion.ofs_embedding_linear_1 is not None and ofs is not None:
            ofs_emb = get_timestep_embedding(ofs.to(call.x.device)[rows], diffusion.ofs_proj_dim, diffusion.time_proj_flip,
                                             diffusion.time_proj_shift).to(dtype)
            temb = temb + diffusion.ofs_embedding_linear_2(diffusion.ofs_embedding_act(diffusion.ofs_embedding_linear_1(ofs_emb)))
        grid = self.token_grid(diffusion, call.x)
        rope = diffusion._get_rotary_emb(grid[1], grid[2], grid[0], call.x.device) \
            if diffusion.use_rotary_positional_embeddings else None
        return CogCall(temb, grid, rope)

    def text_side(self, block, args, call_vector, rows):
        return CogTextSide(block, call_vector.temb)

    def image_span(self, args, tokens):
        """The video's tokens are the last ones (the text, padded to 226 tokens, before them)."""
        return slice(args["length"] - tokens, args["length"])

    def image_queries(self, q, args, image, rows):
        q = q[:, :, image][rows]
        rope = args["call"].rope
        return q.float() if rope is None else _unrotate(q, *rope)

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """ofs 2.0 where the model reads it (as ComfyUI's default), zeros for the channels an
        I2V / inpainting model concatenates (no conditioning image)."""
        conditioning = {}
        if diffusion.ofs_embedding_linear_1 is not None:
            conditioning["ofs"] = torch.full((rows,), 2.0, device=device)
        extra = diffusion.in_channels - x.shape[1]
        if extra > 0:
            conditioning["c_concat"] = torch.zeros(x.shape[0], extra, *x.shape[2:], device=device)
        return conditioning
