"""Krea 2 (ComfyUI's `krea2.SingleStreamDiT`): text and image tokens are one sequence through 28
single-stream blocks with shared weights (GQA, per-head QK-norm, a sigmoid gate on the attention
output, SwiGLU MLP, AdaLN-single modulation).

No replace patch reaches the blocks; each sets `block_index` (block_type "single") and the image's
place (`img_slice`) in transformer_options, so the concept stream does a block's work inside that
block's attention call. The text side of a block is the block itself with the modulation the text
tokens get: `mod` of the timestep's vector (the regular one where edit references take a zero
timestep). The attention gate is computed from each token's own input, so the concepts gate their
attention output with theirs. Scores use the attention outputs before the gate and `wo`, as for
every family (before the output projection).

Concepts enter as the prompt does: the 12 tapped Qwen3-VL layers of each concept through the text
fusion transformer (its layer-wise blocks per token, its refiner blocks over the concepts, which
attend to each other only), then `txtmlp`. Text positions are all zero: RoPE is the identity on
concepts. Text first, then the image, then reference images (edits).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from ..concept_stream import undo_rope
from .base import Family


@dataclass
class Krea2Call:
    tvec: torch.Tensor  # [b, 1, 6 * features]: the text tokens' modulation input
    grid: tuple[int, int]
    rope: object  # the model's pe_embedder


class _Projected:
    def __init__(self, q, k, v, gate):
        self.q, self.k, self.v, self.gate = q, k, v, gate


class Krea2TextSide:
    updates = True

    def __init__(self, block, tvec):
        self.block = block
        self.pre_scale, self.pre_shift, self.pre_gate, self.post_scale, self.post_shift, self.post_gate = block.mod(tvec)

    def project(self, concepts):
        block, attn = self.block, self.block.attn
        x = (1 + self.pre_scale) * block.prenorm(concepts) + self.pre_shift
        q = rearrange(attn.wq(x), "B L (H D) -> B H L D", H=attn.heads)
        k = rearrange(attn.wk(x), "B L (H D) -> B H L D", H=attn.kvheads)
        v = rearrange(attn.wv(x), "B L (H D) -> B H L D", H=attn.kvheads)
        q, k = attn.qknorm(q, k)
        repeat = attn.heads // attn.kvheads
        return _Projected(q, k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1), attn.gate(x))

    def update(self, concepts, concept_out, projected):
        block, attn = self.block, self.block.attn
        concepts = concepts + self.pre_gate * attn.wo(concept_out * torch.sigmoid(projected.gate))
        return concepts + self.post_gate * block.mlp((1 + self.post_scale) * block.postnorm(concepts) + self.post_shift)


class Krea2(Family):
    name = "Krea 2"
    description = "Krea 2"
    text_encoders = "CLIPLoader with type 'krea2' (qwen3vl_4b)"
    text_keys = ("qwen3vl_4b",)
    block_patch = None
    block_kind = "single-stream block"
    latent_dims = 5  # [B, 16, 1, h, w]: one frame

    @classmethod
    def matches(cls, diffusion) -> bool:
        try:
            import comfy.ldm.krea2.model as krea2
        except ImportError:  # ComfyUI before Krea 2
            return False
        return isinstance(diffusion, krea2.SingleStreamDiT)

    def blocks(self, diffusion):
        return diffusion.blocks

    def attention_block(self, transformer_options, call):
        if transformer_options.get("block_type") != "single":
            return None
        return transformer_options.get("block_index")

    def default_blocks(self, depth: int) -> str:
        """The blocks of the last quarter of the stack (28 -> last 7), by analogy with Flux's last 4
        of 19 double blocks. Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth / 4))}"

    def text_dim(self, diffusion) -> int:
        return int(diffusion.txtlayers * diffusion.txtdim)

    def project_concepts(self, diffusion, embeddings, call_vector=None):
        layers = diffusion._unpack_context(embeddings)  # [1, C, 12, txtdim]
        return diffusion.txtmlp(diffusion.txtfusion(layers, mask=None, transformer_options={}))

    def call_vector(self, diffusion, call, rows):
        from comfy.ldm.flux.layers import timestep_embedding
        t = diffusion.tmlp(timestep_embedding(call.timestep[rows], diffusion.tdim).unsqueeze(1).to(call.dtype))
        return Krea2Call(diffusion.tproj(t), self.token_grid(diffusion, call.x), diffusion.pe_embedder)

    def text_side(self, block, args, call_vector, rows):
        return Krea2TextSide(block, call_vector.tvec)

    def image_span(self, args, tokens):
        start = args["transformer_options"]["img_slice"][0]
        return slice(start, start + tokens)

    def image_queries(self, q, args, image, rows):
        """The image queries before RoPE: ComfyUI's image positions (0, row, column) undone."""
        rows_count, columns = args["call"].grid
        ids = torch.zeros(rows_count, columns, 3, device=q.device)
        ids[..., 1] = torch.arange(rows_count, device=q.device, dtype=torch.float32)[:, None]
        ids[..., 2] = torch.arange(columns, device=q.device, dtype=torch.float32)[None, :]
        return undo_rope(q[:, :, image][rows], args["call"].rope(ids.reshape(1, -1, 3)))

    def patch_size(self, diffusion) -> int:
        return int(diffusion.patch)

    def concept_text(self, clip):
        """The encoder drops the template's system part (ComfyUI's Krea2TEModel), as Qwen-Image's."""
        return self.text_keys, None, True
