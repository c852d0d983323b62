"""An independent float32 implementation of CogVideoX's expert blocks and of ConceptAttention on them,
on raw weights (no pack or ComfyUI code), as ComfyUI 0.29 computes the model:

    temb = lin2(SiLU(lin1([cos, sin](t * freqs))))              (the model's integer-scale timestep)
    video: 2x2 patches per frame (c, ph, pw) through the Conv2d weights, tokens (frame, row, col);
      2B: + 3-D sin/cos positions (time: a third of the width, rows and columns the rest); 5B / 1.5:
      RoPE on video queries and keys (interleaved pairs; time d/4, rows and columns 3d/8 each, rows
      and columns spaced by the spatial interpolation scale 1.875)
    text: text_proj(prompt), first in the joint sequence
    per block, (shift, scale, gate) for video and (shift', scale', gate') for text from norm1(temb):
      x = [LN(text) (1 + scale') + shift' ; LN(video) (1 + scale) + shift];  q, k = LN_head(q(x), k(x))
      h += gate attn_out(attn(x));  then the same with norm2 and the GELU(tanh) feed-forward
    concepts: text_proj, the text halves; attend to [concept keys; video keys]."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import heads, linear_normalization, timestep_embedding


def _linear(w, name, x):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _ln(w, name, x, eps):
    return F.layer_norm(x, x.shape[-1:], w.get(f"{name}.weight"), w.get(f"{name}.bias"), eps)


def _sincos(dim, pos):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = pos.float().reshape(-1)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _rope_1d(dim, pos, theta=10000.0):
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(pos.float(), freqs)
    return angles.cos().repeat_interleave(2, -1), angles.sin().repeat_interleave(2, -1)


def _rotate(x, cos, sin):
    real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
    return x * cos + torch.stack([-imag, real], dim=-1).flatten(3) * sin


class ReferenceCogVideoX:
    def __init__(self, diffusion_model):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        self.depth = len(diffusion_model.blocks)
        self.heads, self.head_dim = diffusion_model.num_attention_heads, diffusion_model.attention_head_dim
        self.dim, self.patch = diffusion_model.dim, diffusion_model.patch_size
        self.rope = diffusion_model.use_rotary_positional_embeddings
        self.spatial_scale = diffusion_model.spatial_interpolation_scale

    def _positions(self, t, h, w):
        """2B's sin/cos positions [N, dim]: time a third of the width, then rows and columns."""
        spatial, temporal = 2 * (self.dim // 3), self.dim // 3
        grid_t, grid_h, grid_w = torch.meshgrid(torch.arange(t).float(), torch.arange(h).float() / self.spatial_scale,
                                                torch.arange(w).float() / self.spatial_scale, indexing="ij")
        pos_h = _sincos(spatial // 2, grid_h).reshape(t, h, w, -1)
        pos_w = _sincos(spatial // 2, grid_w).reshape(t, h, w, -1)
        pos_t = _sincos(temporal, torch.arange(t).float())[:, None, None].expand(-1, h, w, -1)
        return torch.cat([pos_t, pos_h, pos_w], dim=-1).reshape(t * h * w, -1)

    def _rope(self, t, h, w):
        d = self.head_dim
        parts = [_rope_1d(d // 4, torch.arange(t).float()),
                 _rope_1d(d // 8 * 3, torch.linspace(0, h - 1, h) * self.spatial_scale),
                 _rope_1d(d // 8 * 3, torch.linspace(0, w - 1, w) * self.spatial_scale)]
        grids = [(slice(None), None, None), (None, slice(None), None), (None, None, slice(None))]
        cos = torch.cat([c[g].expand(t, h, w, -1) for (c, _), g in zip(parts, grids)], -1).reshape(t * h * w, -1)
        sin = torch.cat([s[g].expand(t, h, w, -1) for (_, s), g in zip(parts, grids)], -1).reshape(t * h * w, -1)
        return cos, sin

    def _mods(self, p, temb):
        return [m[:, None] for m in _linear(self.w, f"{p}.linear", F.silu(temb)).chunk(6, dim=-1)]

    def _qkv(self, p, x):
        q = _ln(self.w, f"{p}.norm_q", heads(_linear(self.w, f"{p}.q", x), self.heads), 1e-6)
        k = _ln(self.w, f"{p}.norm_k", heads(_linear(self.w, f"{p}.k", x), self.heads), 1e-6)
        return q, k, heads(_linear(self.w, f"{p}.v", x), self.heads)

    def _ff(self, p, x):
        return _linear(self.w, f"{p}.ff_out", F.gelu(_linear(self.w, f"{p}.ff_proj", x), approximate="tanh"))

    def run(self, x, t, context, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, last=None):
        """x [B, 16, T, h, w] as the model receives it, t [B] its timestep, context [B, L, text_dim].
        Returns {"video", "text": per block, "attn": per block [B, L+N, H*D], "scores": {block: [B, C, N]}}."""
        w, p = self.w, self.patch
        x, context = x.float(), context.float()
        b, c, frames, height, width = x.shape
        x = F.pad(x, (0, (-width) % p, 0, (-height) % p, 0, 0), mode="circular")  # as ComfyUI pads to patches
        rows, cols = x.shape[3] // p, x.shape[4] // p
        patches = (x.permute(0, 2, 1, 3, 4).reshape(b, frames, c, rows, p, cols, p)
                   .permute(0, 1, 3, 5, 2, 4, 6).reshape(b, frames * rows * cols, c * p * p))
        weight = w["patch_embed.proj.weight"]
        video = F.linear(patches, weight.reshape(weight.shape[0], -1), w["patch_embed.proj.bias"])
        if not self.rope:
            video = video + self._positions(frames, rows, cols)
        rope = self._rope(frames, rows, cols) if self.rope else None
        text = _linear(w, "patch_embed.text_proj", context)
        temb = timestep_embedding(t.float(), self.dim, time_factor=1.0)
        temb = _linear(w, "time_embedding_linear_2", F.silu(_linear(w, "time_embedding_linear_1", temb)))
        concepts = None
        if concept_embeddings is not None:
            concepts = _linear(w, "patch_embed.text_proj", concept_embeddings.float()[None]).expand(b, -1, -1)
        n_text = text.shape[1]
        last = self.depth - 1 if last is None else last
        out = {"video": [], "text": [], "attn": [], "scores": {}}
        for i in range(last + 1):
            pre = f"blocks.{i}"
            shift, scale, gate, t_shift, t_scale, t_gate = self._mods(f"{pre}.norm1", temb)
            joint = torch.cat([_ln(w, f"{pre}.norm1.norm", text, 1e-5) * (1 + t_scale) + t_shift,
                               _ln(w, f"{pre}.norm1.norm", video, 1e-5) * (1 + scale) + shift], 1)
            q, k, v = self._qkv(pre, joint)
            q_plain = q
            if rope is not None:
                q = torch.cat([q[:, :, :n_text], _rotate(q[:, :, n_text:], *rope)], 2)
                k = torch.cat([k[:, :, :n_text], _rotate(k[:, :, n_text:], *rope)], 2)
            attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), -1) @ v
            attn = attn.transpose(1, 2).flatten(2)
            projected = _linear(w, f"{pre}.attn_out", attn)
            text2 = text + t_gate * projected[:, :n_text]
            video2 = video + gate * projected[:, n_text:]
            shift2, scale2, gate2, t_shift2, t_scale2, t_gate2 = self._mods(f"{pre}.norm2", temb)
            ff = self._ff(pre, torch.cat([_ln(w, f"{pre}.norm2.norm", text2, 1e-5) * (1 + t_scale2) + t_shift2,
                                          _ln(w, f"{pre}.norm2.norm", video2, 1e-5) * (1 + scale2) + shift2], 1))
            if concepts is not None:
                cx = _ln(w, f"{pre}.norm1.norm", concepts, 1e-5) * (1 + t_scale) + t_shift
                cq, ck, cv = self._qkv(pre, cx)
                keys, values = torch.cat([ck, k[:, :, n_text:]], 2), torch.cat([cv, v[:, :, n_text:]], 2)
                concept_out = (torch.softmax(cq @ keys.transpose(-1, -2) / math.sqrt(self.head_dim), -1) @ values)
                concept_out = concept_out.transpose(1, 2).flatten(2)
                if i in blocks:
                    if variant == "cross attention":
                        query = linear_normalization(cq, 2) if normalize_concepts else cq
                        out["scores"][i] = torch.einsum("bhcd,bhnd->bcn", query, q_plain[:, :, n_text:])
                    else:
                        vectors = linear_normalization(concept_out, 1) if normalize_concepts else concept_out
                        out["scores"][i] = vectors @ attn[:, n_text:].transpose(1, 2)
                concepts = concepts + t_gate * _linear(w, f"{pre}.attn_out", concept_out)
                cx2 = _ln(w, f"{pre}.norm2.norm", concepts, 1e-5) * (1 + t_scale2) + t_shift2
                concepts = concepts + t_gate2 * self._ff(pre, cx2)
            text = text2 + t_gate2 * ff[:, :n_text]
            video = video2 + gate2 * ff[:, n_text:]
            out["video"].append(video)
            out["text"].append(text)
            out["attn"].append(attn)
        return out
