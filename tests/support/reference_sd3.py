"""An independent float32 implementation of SD3 / SD3.5's MMDiT joint blocks and of ConceptAttention
on them, written from the equations (../shared/design/concept-attention.md, "SD3 / SD3.5") on raw
weights, with no pack or ComfyUI code. The concept stream is the authors' formulation: a full
(C+N) x (C+N) attention over [concepts; image] with the context-side weights, image rows discarded.

Per joint block i, with c = t_embedder(1000 sigma) + y_embedder(pooled), shared by both halves:
    context half: (shift, scale, gate, shift2, scale2, gate2) = adaLN(c)   (pre_only: shift, scale)
    x half:       the same six from its own adaLN (MMDiT-X: nine, a second image-only attention)
    q, k, v = split(qkv(LN(h) (1 + scale) + shift)), q/k RMS-normed per head (SD3.5)
    joint attention over [context; image]; context rows first
    h += gate proj(attn); h += gate2 mlp(LN(h) (1 + scale2) + shift2)
Concepts: context_embedder(embeddings), then the context half's weights and c, attending to
[concepts; image]; no update after the pre_only block. S = Oc . Ox^T, Ox the image rows of the
model's joint attention, both before proj."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import linear_normalization


def _linear(w, name, x):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _mlp2(w, name, x):  # Linear, SiLU, Linear (time and pooled embedders)
    return _linear(w, f"{name}.mlp.2", F.silu(_linear(w, f"{name}.mlp.0", x)))


def _layer_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _timestep_embedding(t, dim=256, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _attention(q, k, v, heads):
    """q/k/v [B, L, H*D] -> [B, L, H*D]: softmax(q k^T / sqrt(D)) v per head."""
    b, lq, _ = q.shape
    split = lambda t: t.reshape(b, t.shape[1], heads, -1).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, lq, -1)


class ReferenceSD3:
    def __init__(self, diffusion_model, weight_deltas=None):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        for name, delta in (weight_deltas or {}).items():
            self.w[name] = self.w[name] + delta
        self.depth = sum(1 for k in self.w if k.startswith("joint_blocks.") and k.endswith(".x_block.attn.qkv.weight"))
        self.heads = self.w["x_embedder.proj.weight"].shape[0] // 64  # SD3: 64 features per head
        self.patch = self.w["x_embedder.proj.weight"].shape[-1]
        self.grid_max = round(math.sqrt(self.w["pos_embed"].shape[1]))

    # -- pieces ----------------------------------------------------------------------------------
    def _qkv(self, prefix, h):
        b, n, _ = h.shape
        q, k, v = _linear(self.w, f"{prefix}.qkv", h).reshape(b, n, 3, self.heads, -1).unbind(2)
        if f"{prefix}.ln_q.weight" in self.w:
            rms = lambda x, name: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.w[name]  # noqa: E731
            q, k = rms(q, f"{prefix}.ln_q.weight"), rms(k, f"{prefix}.ln_k.weight")
        return q.reshape(b, n, -1), k.reshape(b, n, -1), v.reshape(b, n, -1)

    def _mods(self, prefix, c):
        return _linear(self.w, f"{prefix}.adaLN_modulation.1", F.silu(c))[:, None, :]

    def _half_in(self, prefix, h, c):
        """(q, k, v, modulation chunks) of one half of a joint block."""
        mods = self._mods(prefix, c)
        chunks = mods.chunk(mods.shape[-1] // h.shape[-1], dim=-1)
        q, k, v = self._qkv(f"{prefix}.attn", _layer_norm(h) * (1 + chunks[1]) + chunks[0])
        return q, k, v, chunks

    def _half_out(self, prefix, h, attn, chunks, attn2=None):
        h = h + chunks[2] * _linear(self.w, f"{prefix}.attn.proj", attn)
        if attn2 is not None:  # MMDiT-X: the image-only attention's output, gated by the ninth chunk
            h = h + chunks[8] * _linear(self.w, f"{prefix}.attn2.proj", attn2)
        hidden = F.gelu(_linear(self.w, f"{prefix}.mlp.fc1", _layer_norm(h) * (1 + chunks[4]) + chunks[3]),
                        approximate="tanh")
        return h + chunks[5] * _linear(self.w, f"{prefix}.mlp.fc2", hidden)

    def embed_image(self, x):
        p = self.patch
        b, _, height, width = x.shape
        gh, gw = (height + 1) // p, (width + 1) // p
        x = F.pad(x.float().cpu(), (0, gw * p - width, 0, gh * p - height), mode="circular")
        tokens = F.conv2d(x, self.w["x_embedder.proj.weight"], self.w["x_embedder.proj.bias"], stride=p)
        tokens = tokens.flatten(2).transpose(1, 2)
        top, left = (self.grid_max - gh) // 2, (self.grid_max - gw) // 2
        pos = self.w["pos_embed"].reshape(self.grid_max, self.grid_max, -1)[top:top + gh, left:left + gw]
        return tokens + pos.reshape(1, gh * gw, -1), (gh, gw)

    def vector(self, t, pooled):
        return _mlp2(self.w, "t_embedder", _timestep_embedding(t.float().cpu())) + _mlp2(self.w, "y_embedder", pooled.float().cpu())

    def embed_text(self, context):
        return _linear(self.w, "context_embedder", context.float().cpu())

    # -- the model and the concept stream -------------------------------------------------------
    def run(self, x, t, context, pooled, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, last=None):
        """One model call. Returns per block the image/context outputs and joint attention outputs
        ("img", "txt", "attn" lists) and, with concepts, {block: scores [B, C, N]} under "scores"."""
        img, grid = self.embed_image(x)
        txt = self.embed_text(context)
        c = self.vector(t, pooled)
        concepts = None
        if concept_embeddings is not None:
            concepts = self.embed_text(concept_embeddings.float().cpu()[None]).expand(img.shape[0], -1, -1)
        out = {"img": [], "txt": [], "attn": [], "scores": {}, "grid": grid}
        n_txt = txt.shape[1]
        last = self.depth - 1 if last is None else last
        for i in range(last + 1):
            ctx, xb = f"joint_blocks.{i}.context_block", f"joint_blocks.{i}.x_block"
            pre_only = f"{ctx}.attn.proj.weight" not in self.w
            tq, tk, tv, t_chunks = self._half_in(ctx, txt, c)
            iq, ik, iv, i_chunks = self._half_in(xb, img, c)
            attn = _attention(torch.cat([tq, iq], 1), torch.cat([tk, ik], 1), torch.cat([tv, iv], 1), self.heads)
            txt_attn, img_attn = attn[:, :n_txt], attn[:, n_txt:]
            attn2 = None
            if f"{xb}.attn2.qkv.weight" in self.w:
                q2, k2, v2 = self._qkv(f"{xb}.attn2", _layer_norm(img) * (1 + i_chunks[7]) + i_chunks[6])
                attn2 = _attention(q2, k2, v2, self.heads)
            if concepts is not None:
                cq, ck, cv, c_chunks = self._half_in(ctx, concepts, c)
                n_c = concepts.shape[1]
                concept_attn = _attention(torch.cat([cq, iq], 1), torch.cat([ck, ik], 1), torch.cat([cv, iv], 1),
                                          self.heads)[:, :n_c]
                if i in blocks:
                    if variant == "output space":
                        vectors = linear_normalization(concept_attn, 1) if normalize_concepts else concept_attn
                        out["scores"][i] = vectors @ img_attn.transpose(1, 2)
                    else:  # sum over heads of concept query . image query (no RoPE in SD3)
                        queries = linear_normalization(cq, 1) if normalize_concepts else cq
                        b = queries.shape[0]
                        out["scores"][i] = torch.einsum("bchd,bnhd->bcn", queries.reshape(b, n_c, self.heads, -1),
                                                        iq.reshape(b, iq.shape[1], self.heads, -1))
                if not pre_only:
                    concepts = self._half_out(ctx, concepts, concept_attn, c_chunks)
            out["attn"].append(attn)
            txt = None if pre_only else self._half_out(ctx, txt, txt_attn, t_chunks)
            img = self._half_out(xb, img, img_attn, i_chunks, attn2)
            out["img"].append(img)
            out["txt"].append(txt)
            if txt is None:
                break
        return out


def reference_sd3_maps(model_patcher, calls, embeddings, blocks, variant="output space", window=(0.0, 1.0),
                       normalize=True, weight_deltas=None):
    """maps_over_calls for the calls tiny_sd3.record_model_calls recorded, through ReferenceSD3."""
    from reference import maps_over_calls
    ref = ReferenceSD3(model_patcher.model.diffusion_model, weight_deltas)
    return maps_over_calls(calls, lambda call, rows: ref.run(
        call["x"][rows], call["t"][rows], call["context"][rows], call["y"][rows], embeddings, blocks, variant,
        normalize, last=max(blocks))["scores"], window)
