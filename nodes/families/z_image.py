"""Z-Image (Turbo, Base) and the other Lumina 2 models ComfyUI runs on its NextDiT: Lumina Image 2.0,
NetaYume, NewBie. Single-stream: caption and image tokens are one sequence through `layers` whose
weights they share.

No replace patch reaches the layers; each sets `block_index` (with block_type "double") in
transformer_options, so the concept stream does a layer's work inside that layer's attention call.
The text side of a layer is the layer itself (its norms, qkv, QK-norm, out, feed-forward) with the
modulation the caption tokens get (`adaLN_modulation` of the layer's adaln input: the timestep
embedding of 1 - t, with NewBie's pooled CLIP vector). Concepts enter as the caption does: through
`cap_embedder` and the text-only `context_refiner`, where they attend to each other only (each a
one-token caption, all at its position); caption and image padding tokens are never attended.

Positions: ComfyUI gives caption token j position (j + 1, 0, 0); a concept takes (1, 0, 0), the
position of a one-token caption. The image tokens are the last ones of the sequence (then padding to
a multiple of `pad_tokens_multiple` on Z-Image). Z-Image Omni edits (reference latents, a zero
timestep for the references' tokens) are not served yet: their sampling runs report no maps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..concept_stream import apply_rope, undo_rope
from .base import Family, UnsupportedModelError, rows_of


def _clamp_fp16(x):
    if x.dtype == torch.float16:  # as the model clamps its attention and MLP outputs
        return torch.nan_to_num(x, nan=0.0, posinf=65504, neginf=-65504)
    return x


def caption_rope(diffusion, tokens: int, device) -> torch.Tensor:
    """The rotation [1, 1, tokens, D/2, 2, 2] of `tokens` concepts, each at a one-token caption's
    position (1, 0, 0)."""
    ids = torch.zeros(1, tokens, 3, device=device)
    ids[..., 0] = 1.0
    return diffusion.rope_embedder(ids)


@dataclass
class NextDiTCall:
    """Per model call: the caption tokens' adaln input and what locates the image in the sequence."""

    adaln: torch.Tensor  # [b, adaln width]
    grid: tuple[int, int]  # image tokens (rows, columns)
    pad_multiple: int | None  # image (and caption) tokens padded to a multiple of this
    rope: object  # the model's rope_embedder
    concept_pe: torch.Tensor  # [1, 1, 1, D/2, 2, 2]: a one-token caption's position


class _Projected:
    def __init__(self, q, k, v, q_before_rope):
        self.q, self.k, self.v, self.q_before_rope = q, k, v, q_before_rope


class NextDiTTextSide:
    """One JointTransformerBlock of the joint layers, with the caption tokens' modulation."""

    updates = True

    def __init__(self, block, adaln, concept_pe):
        self.block, self.concept_pe = block, concept_pe
        mods = block.adaLN_modulation(adaln).chunk(4, dim=1)
        self.scale_msa, self.gate_msa, self.scale_mlp, self.gate_mlp = (m.unsqueeze(1) for m in mods)

    def project(self, concepts):
        block, attn = self.block, self.block.attention
        x = block.attention_norm1(concepts) * (1 + self.scale_msa)
        b, c, _ = x.shape
        heads, kv_heads, dim = attn.n_local_heads, attn.n_local_kv_heads, attn.head_dim
        q, k, v = torch.split(attn.qkv(x), [heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
        q = attn.q_norm(q.view(b, c, heads, dim)).transpose(1, 2)
        k = attn.k_norm(k.view(b, c, kv_heads, dim)).transpose(1, 2)
        v = v.reshape(b, c, kv_heads, dim).transpose(1, 2)
        repeat = heads // kv_heads  # grouped-query attention: kv head j serves heads j*repeat ...
        k = apply_rope(k, self.concept_pe).repeat_interleave(repeat, dim=1)
        return _Projected(apply_rope(q, self.concept_pe), k, v.repeat_interleave(repeat, dim=1), q)

    def update(self, concepts, concept_out, projected):
        block = self.block
        attended = _clamp_fp16(block.attention.out(concept_out))
        concepts = concepts + self.gate_msa.tanh() * block.attention_norm2(attended)
        mlp = _clamp_fp16(block.feed_forward(block.ffn_norm1(concepts) * (1 + self.scale_mlp)))
        return concepts + self.gate_mlp.tanh() * block.ffn_norm2(mlp)


class ZImage(Family):
    name = "Z-Image"
    description = "Z-Image (Turbo, Base) and Lumina 2 models (Lumina Image 2.0, NetaYume, NewBie)"
    text_encoders = ("CLIPLoader with type 'lumina2' and the model's own text encoder (Z-Image: qwen_3_4b; "
                     "Lumina 2 / NetaYume: gemma_2_2b)")
    text_keys = ("qwen3_4b", "gemma2_2b", "gemma3_4b")
    block_patch = None
    block_kind = "layer"

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.lumina.model as lumina
        return isinstance(diffusion, lumina.NextDiT)

    def refusal(self, diffusion) -> str:
        if type(diffusion).__name__ == "NextDiTPixelSpace":
            return ("this is Z-Image's pixel-space variant (NextDiTPixelSpace), which Concept Attention does not "
                    "support yet; use a latent-space Z-Image or Lumina 2 model.")
        if not hasattr(diffusion, "embed_cap"):
            return ("this ComfyUI's Lumina 2 model (NextDiT) does not mark its layers (no block_index), which the "
                    "concept stream needs to find them; Z-Image and Lumina 2 need ComfyUI 0.29 or later.")
        return ""

    def blocks(self, diffusion):
        return diffusion.layers

    def attention_block(self, transformer_options, call):
        if transformer_options.get("block_type") != "double":
            return None
        return transformer_options.get("block_index")

    def default_blocks(self, depth: int) -> str:
        """The layers of the last quarter of the stack (Z-Image 30 -> last 8, Lumina 2 26 -> last 6),
        by analogy with Flux's last 4 of 19 double blocks. Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth / 4))}"

    def text_dim(self, diffusion) -> int:
        return int(diffusion.cap_embedder[1].in_features)

    def project_concepts(self, diffusion, embeddings, call_vector=None):
        """The caption's own path: cap_embedder, then the context refiner with the concepts as one
        sequence (attending to each other only), each at a one-token caption's position."""
        tokens = diffusion.cap_embedder(embeddings)
        freqs = caption_rope(diffusion, tokens.shape[1], tokens.device).movedim(1, 2)  # the layout the refiner takes
        for layer in diffusion.context_refiner:
            tokens = layer(tokens, None, freqs)
        return tokens

    def call_vector(self, diffusion, call, rows):
        if call.conds.get("ref_latents"):
            raise UnsupportedModelError("Z-Image Omni edits (reference images) are not supported yet: this run "
                                        "has no concept maps; sample without reference latents for maps.")
        t = diffusion.t_embedder((1.0 - call.timestep[rows]) * diffusion.time_scale, dtype=call.dtype)
        if diffusion.clip_text_pooled_proj is not None:  # NewBie: time and the prompt's pooled CLIP vector
            pooled = call.conds.get("clip_text_pooled")
            if pooled is None:
                pooled = torch.zeros(t.shape[0], diffusion.clip_text_dim, device=t.device, dtype=t.dtype)
            else:
                pooled = diffusion.clip_text_pooled_proj(rows_of(pooled.to(t.device, t.dtype), rows))
            t = diffusion.time_text_embed(torch.cat((t, pooled.expand(t.shape[0], -1)), dim=-1))
        return NextDiTCall(t, self.token_grid(diffusion, call.x), diffusion.pad_tokens_multiple, diffusion.rope_embedder,
                           caption_rope(diffusion, 1, t.device))

    def text_side(self, block, args, call_vector, rows):
        return NextDiTTextSide(block, call_vector.adaln, call_vector.concept_pe)

    def image_span(self, args, tokens):
        """The image's tokens are the last ones, before its padding."""
        pad = (-tokens) % args["call"].pad_multiple if args["call"].pad_multiple else 0
        start = args["length"] - tokens - pad
        return slice(start, start + tokens)

    def image_queries(self, q, args, image, rows):
        """The image queries before RoPE: ComfyUI's image positions (caption length + 1, row, column),
        with the rope_options a node may set, undone."""
        import comfy.ldm.lumina.model as lumina
        rows_count, columns = args["call"].grid
        ids = lumina.pos_ids_x(image.start + 1, rows_count, columns, 1, q.device, args["transformer_options"])
        return undo_rope(q[:, :, image][rows], args["call"].rope(ids))

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        conditioning = {"num_tokens": int(context.shape[1])}
        if diffusion.clip_text_pooled_proj is not None and pooled is not None:
            conditioning["clip_text_pooled"] = pooled.to(device).reshape(1, -1).expand(rows, -1)
        return conditioning
