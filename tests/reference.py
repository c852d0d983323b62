"""An independent float32 implementation of Flux.1's double-stream blocks and of ConceptAttention,
written from the equations (../shared/design/concept-attention.md) on raw weights, with no pack
or ComfyUI code. The concept stream here is the authors' formulation: a full (C+N) x (C+N)
attention over [concepts; image] whose image rows are discarded."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def linear(weights, name, x):
    return F.linear(x, weights[f"{name}.weight"], weights.get(f"{name}.bias"))


def mlp_embed(weights, name, x):
    return linear(weights, f"{name}.out_layer", F.silu(linear(weights, f"{name}.in_layer", x)))


def timestep_embedding(t, dim=256, max_period=10000, time_factor=1000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = (time_factor * t.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def layer_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def rms_norm(weights, name, x):
    scale = weights.get(f"{name}.scale", weights.get(f"{name}.weight"))
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * scale


def modulation(weights, name, vec):
    out = linear(weights, f"{name}.lin", F.silu(vec))[:, None, :]
    return out.chunk(6, dim=-1)  # shift1, scale1, gate1, shift2, scale2, gate2


def rotation_angles(ids, axes_dim, theta):
    """ids [B, L, A] -> angles [B, L, D/2] (one angle per feature pair)."""
    angles = []
    for axis, dim in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles.append(ids[..., axis:axis + 1].double() * omega)
    return torch.cat(angles, dim=-1).float()


def rotate(x, angles):
    """x [B, H, L, D]: rotate consecutive feature pairs (x0, x1) by the angle of their pair."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).flatten(-2)


def heads(x, num_heads):
    b, l, _ = x.shape
    return x.reshape(b, l, num_heads, -1).transpose(1, 2)


def qkv(weights, prefix, x, num_heads):
    q, k, v = linear(weights, f"{prefix}.qkv", x).chunk(3, dim=-1)
    q, k, v = heads(q, num_heads), heads(k, num_heads), heads(v, num_heads)
    return rms_norm(weights, f"{prefix}.norm.query_norm", q), rms_norm(weights, f"{prefix}.norm.key_norm", k), v


def attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    out = weights @ v
    return out.transpose(1, 2).flatten(2)


def stream_update(weights, prefix, x, attn_out, mods):
    shift1, scale1, gate1, shift2, scale2, gate2 = mods
    x = x + gate1 * linear(weights, f"{prefix}_attn.proj", attn_out)
    hidden = F.gelu(linear(weights, f"{prefix}_mlp.0", (1 + scale2) * layer_norm(x) + shift2), approximate="tanh")
    return x + gate2 * linear(weights, f"{prefix}_mlp.2", hidden)


class ReferenceFlux:
    def __init__(self, diffusion_model, weight_deltas=None):
        """weight_deltas: {name: delta} added to the weights (what a LoRA-style patch does)."""
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        for name, delta in (weight_deltas or {}).items():
            self.w[name] = self.w[name] + delta
        p = diffusion_model.params
        self.num_heads, self.axes_dim, self.theta = p.num_heads, list(p.axes_dim), p.theta
        self.guidance_embed, self.depth = p.guidance_embed, len(diffusion_model.double_blocks)

    def vector(self, t, guidance, pooled):
        vec = mlp_embed(self.w, "time_in", timestep_embedding(t))
        if self.guidance_embed and guidance is not None:
            vec = vec + mlp_embed(self.w, "guidance_in", timestep_embedding(guidance))
        return vec + mlp_embed(self.w, "vector_in", pooled)

    def concept_scores(self, x, t, context, pooled, guidance, concept_embeddings, blocks, variant="output space",
                       normalize_concepts=False):
        """One model call: x [B, 16, h, w] -> {block: scores [B, C, N]} for the scored blocks."""
        w, H = self.w, self.num_heads
        x, t, context, pooled = x.float().cpu(), t.float().cpu(), context.float().cpu(), pooled.float().cpu()
        guidance = None if guidance is None else guidance.float().cpu()
        b, ch, height, width = x.shape
        gh, gw = (height + 1) // 2, (width + 1) // 2
        x = F.pad(x, (0, gw * 2 - width, 0, gh * 2 - height), mode="circular")  # as ComfyUI pads Flux
        tokens = x.reshape(b, ch, gh, 2, gw, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, ch * 4)
        img = linear(w, "img_in", tokens)
        txt = linear(w, "txt_in", context)
        vec = self.vector(t, guidance, pooled)
        vec_c = self.vector(t, guidance, torch.zeros_like(pooled))
        concepts = linear(w, "txt_in", concept_embeddings.float().cpu()[None].expand(b, -1, -1))
        ids = torch.zeros(gh, gw, 3)
        ids[..., 1] = torch.arange(gh)[:, None].float()
        ids[..., 2] = torch.arange(gw)[None].float()
        img_angles = rotation_angles(ids.reshape(1, -1, 3).expand(b, -1, -1), self.axes_dim, self.theta)
        txt_angles = torch.zeros(b, txt.shape[1], img_angles.shape[-1])
        concept_angles = torch.zeros(b, concepts.shape[1], img_angles.shape[-1])
        n_txt, n_c = txt.shape[1], concepts.shape[1]
        scores = {}
        for i in range(max(blocks) + 1):
            p = f"double_blocks.{i}"
            img_mods = modulation(w, f"{p}.img_mod", vec)
            txt_mods = modulation(w, f"{p}.txt_mod", vec)
            c_mods = modulation(w, f"{p}.txt_mod", vec_c)
            iq, ik, iv = qkv(w, f"{p}.img_attn", (1 + img_mods[1]) * layer_norm(img) + img_mods[0], H)
            tq, tk, tv = qkv(w, f"{p}.txt_attn", (1 + txt_mods[1]) * layer_norm(txt) + txt_mods[0], H)
            cq, ck, cv = qkv(w, f"{p}.txt_attn", (1 + c_mods[1]) * layer_norm(concepts) + c_mods[0], H)
            # prompt + image: the normal joint attention
            q = rotate(torch.cat([tq, iq], 2), torch.cat([txt_angles, img_angles], 1))
            k = rotate(torch.cat([tk, ik], 2), torch.cat([txt_angles, img_angles], 1))
            joint = attention(q, k, torch.cat([tv, iv], 2))
            txt_out, img_out = joint[:, :n_txt], joint[:, n_txt:]
            # concepts + image, the authors' full attention; keep the concept rows
            cq_all = rotate(torch.cat([cq, iq], 2), torch.cat([concept_angles, img_angles], 1))
            ck_all = rotate(torch.cat([ck, ik], 2), torch.cat([concept_angles, img_angles], 1))
            concept_out = attention(cq_all, ck_all, torch.cat([cv, iv], 2))[:, :n_c]
            if i in blocks:
                if variant == "output space":
                    vectors = linear_normalization(concept_out, 1) if normalize_concepts else concept_out
                    scores[i] = vectors @ img_out.transpose(1, 2)
                else:
                    vectors = linear_normalization(cq, 2) if normalize_concepts else cq
                    scores[i] = torch.einsum("bhcd,bhnd->bcn", vectors, iq)
            img = stream_update(w, f"{p}.img", img, img_out, img_mods)
            txt = stream_update(w, f"{p}.txt", txt, txt_out, txt_mods)
            concepts = stream_update(w, f"{p}.txt", concepts, concept_out, c_mods)
        return scores


def linear_normalization(x, dim):
    """The authors' concept normalisation: per feature, (x - min over concepts) / sum over concepts."""
    shifted = x - x.min(dim=dim, keepdim=True).values
    total = shifted.sum(dim=dim, keepdim=True)
    return shifted / torch.where(total == 0, torch.ones_like(total), total)


def mean_softmax_maps(score_list):
    """Softmax over concepts per (step, block), then the mean: [B, C, N]."""
    return torch.stack([s.softmax(dim=1) for s in score_list]).mean(0)
