"""An independent float32 implementation of HunyuanVideo's double-stream blocks and of ConceptAttention
on them, on raw weights (no pack or ComfyUI code): the double-block arithmetic of reference.py's
_ReferenceDoubleStream (Flux's double blocks, which HunyuanVideo uses), with HunyuanVideo's inputs:

    vec = time_in(emb(t)) + vector_in(y) (1.0) + guidance_in(emb(1000 g)) (guidance-distilled)
    video: 3-D patches (c, pt, ph, pw) through img_in's Conv3d weights; positions (frame, row, col)
    prompt: the token refiner: c = t_embedder(emb(t)) + c_embedder(mean of the prompt's rows);
      x = input_embedder(prompt); 2 blocks: x += proj(attn(LN1 x)) a1; x += mlp(LN2 x) a2,
      (a1, a2) = adaLN(SiLU(c)); 1.5: + the text type embedding; positions 0
    concepts: each a one-token prompt through the refiner (its own c), modulated per block by the
      text side's txt_mod(vec), attending to concept keys and video keys."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from reference import _ReferenceDoubleStream, _six, heads, linear, masked_attention, mlp_embed, timestep_embedding


class ReferenceHunyuanVideo(_ReferenceDoubleStream):
    def __init__(self, diffusion_model, weight_deltas=None):
        super().__init__(diffusion_model, weight_deltas)
        p = diffusion_model.params
        self.patch = list(p.patch_size)
        self.guidance_embed = p.guidance_embed
        self.has_vector = p.vec_in_dim is not None
        self.refiner_heads = diffusion_model.txt_in.individual_token_refiner.blocks[0].heads
        self.type_embedding = self.w.get("cond_type_embedding.weight")
        self.y = None

    def run_call(self, x, t, context, y=None, guidance=None, **kwargs):
        """run() with HunyuanVideo's pooled vector y [B, 768] (1.0) as the model receives it."""
        self.y = None if y is None else y.float().cpu()
        return self.run(x, t, context, guidance, **kwargs)

    def patchify(self, x):
        b, ch, frames, height, width = x.shape
        pt, ph, pw = self.patch
        t, h, w = frames // pt, height // ph, width // pw
        tokens = (x[:, :, :t * pt, :h * ph, :w * pw].reshape(b, ch, t, pt, h, ph, w, pw)
                  .permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, t * h * w, ch * pt * ph * pw))
        ids = torch.zeros(t, h, w, 3)
        ids[..., 0] = torch.arange(t)[:, None, None].float()
        ids[..., 1] = torch.arange(h)[None, :, None].float()
        ids[..., 2] = torch.arange(w)[None, None, :].float()
        return tokens, ids.reshape(1, -1, 3).expand(b, -1, -1)

    def embed_image(self, tokens):
        weight = self.w["img_in.proj.weight"]
        return F.linear(tokens, weight.reshape(weight.shape[0], -1), self.w["img_in.proj.bias"])

    def conditioning(self, t, guidance, b):
        vec = mlp_embed(self.w, "time_in", timestep_embedding(t, time_factor=1.0))
        if self.has_vector:
            vec = vec + mlp_embed(self.w, "vector_in", self.y[:, :self.w["vector_in.in_layer.weight"].shape[1]])
        if self.guidance_embed and guidance is not None:
            vec = vec + mlp_embed(self.w, "guidance_in", timestep_embedding(guidance))
        return vec

    def double_modulations(self, vec, i):
        p = f"double_blocks.{i}"
        return (_six(linear(self.w, f"{p}.img_mod.lin", F.silu(vec))[:, None]),
                _six(linear(self.w, f"{p}.txt_mod.lin", F.silu(vec))[:, None]))

    def token_refiner(self, x, t):
        """The prompt rows x [B, L, text_dim] (no padding mask) -> [B, L, d]."""
        w = self.w
        c = mlp_embed(w, "txt_in.t_embedder", timestep_embedding(t, time_factor=1.0))
        c = c + mlp_embed(w, "txt_in.c_embedder", x.mean(dim=1))
        h = linear(w, "txt_in.input_embedder", x)
        d = h.shape[-1]
        for i in range(2):
            p = f"txt_in.individual_token_refiner.blocks.{i}"
            gate_attn, gate_mlp = linear(w, f"{p}.adaLN_modulation.1", F.silu(c)).chunk(2, dim=-1)
            normed = F.layer_norm(h, (d,), w[f"{p}.norm1.weight"], w[f"{p}.norm1.bias"], 1e-6)
            q, k, v = linear(w, f"{p}.self_attn.qkv", normed).chunk(3, dim=-1)
            attn = masked_attention(heads(q, self.refiner_heads), heads(k, self.refiner_heads),
                                    heads(v, self.refiner_heads))
            h = h + linear(w, f"{p}.self_attn.proj", attn) * gate_attn[:, None]
            normed = F.layer_norm(h, (d,), w[f"{p}.norm2.weight"], w[f"{p}.norm2.bias"], 1e-6)
            h = h + linear(w, f"{p}.mlp.2", F.silu(linear(w, f"{p}.mlp.0", normed))) * gate_mlp[:, None]
        if self.type_embedding is not None:
            h = h + self.type_embedding[0]
        return h

    def embed_text(self, context):
        return self.token_refiner(context, self.timestep)

    def embed_concepts(self, embeddings, conditioning, b):
        count = embeddings.shape[0]
        prompts = embeddings[:, None].repeat(b, 1, 1)  # one-token prompts, per batch row
        return self.token_refiner(prompts, self.timestep.repeat_interleave(count)).reshape(b, count, -1)
