"""An independent float32 implementation of Qwen-Image's dual-stream blocks and of ConceptAttention
on them, written from the equations on raw weights (no pack or ComfyUI code). The concept stream is
the authors' formulation: a full (C+N) x (C+N) attention over [concepts; image] with the text-side
weights, the image rows discarded.

    temb = timestep_embedder(cos/sin(1000 sigma))          (Qwen's Timesteps: cos first)
    per block, per stream: (shift, scale, gate, shift2, scale2, gate2) = mod(SiLU(temb))
    q, k, v = proj(LN(h) (1 + scale) + shift) per head, q/k RMS-normed, RoPE over [text; image]
    h += gate out(attn); h += gate2 mlp(LN(h) (1 + scale2) + shift2)
Positions (3 axes): image token (r, c) at (0, r - h//2, c - w//2); prompt token j at txt_start + j
on every axis, txt_start = max(h//2, w//2) on the token grid; a concept at txt_start."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import linear_normalization, rotate, rotation_angles


def _linear(w, name, x):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _rms(w, name, x, eps=1e-6):
    out = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return out * w[f"{name}.weight"] if f"{name}.weight" in w else out


def _layer_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def _attention(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


class ReferenceQwenImage:
    def __init__(self, diffusion_model, weight_deltas=None):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        for name, delta in (weight_deltas or {}).items():
            self.w[name] = self.w[name] + delta
        self.depth = len(diffusion_model.transformer_blocks)
        self.heads = diffusion_model.transformer_blocks[0].attn.heads
        self.axes = list(diffusion_model.pe_embedder.axes_dim)

    def _temb(self, t):
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = 1000 * t.float()[:, None] * freqs[None]
        proj = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        hidden = F.silu(_linear(self.w, "time_text_embed.timestep_embedder.linear_1", proj))
        return _linear(self.w, "time_text_embed.timestep_embedder.linear_2", hidden)

    def _heads(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, -1).transpose(1, 2)

    def _side(self, p, stream, h, temb):
        """(q, k, v [B, H, L, D] before RoPE, gate, (shift2, scale2, gate2)) of one stream."""
        mods = _linear(self.w, f"{p}.{stream}_mod.1", F.silu(temb))[:, None]
        shift, scale, gate, shift2, scale2, gate2 = mods.chunk(6, dim=-1)
        x = _layer_norm(h) * (1 + scale) + shift
        names = {"img": ("to_q", "to_k", "to_v", "norm_q", "norm_k"),
                 "txt": ("add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k")}[stream]
        q = _rms(self.w, f"{p}.attn.{names[3]}", self._heads(_linear(self.w, f"{p}.attn.{names[0]}", x)))
        k = _rms(self.w, f"{p}.attn.{names[4]}", self._heads(_linear(self.w, f"{p}.attn.{names[1]}", x)))
        v = self._heads(_linear(self.w, f"{p}.attn.{names[2]}", x))
        return q, k, v, gate, (shift2, scale2, gate2)

    def _finish(self, p, stream, h, attn_out, gate, mods2):
        out_name = "to_out.0" if stream == "img" else "to_add_out"
        h = h + gate * _linear(self.w, f"{p}.attn.{out_name}", attn_out)
        shift2, scale2, gate2 = mods2
        hidden = F.gelu(_linear(self.w, f"{p}.{stream}_mlp.net.0.proj", _layer_norm(h) * (1 + scale2) + shift2),
                        approximate="tanh")
        return h + gate2 * _linear(self.w, f"{p}.{stream}_mlp.net.2", hidden)

    @staticmethod
    def _patchify(x):
        b, ch, frames, height, width = x.shape
        gh, gw = (height + 1) // 2, (width + 1) // 2
        x = F.pad(x.float().cpu(), (0, gw * 2 - width, 0, gh * 2 - height, 0, 0), mode="circular")
        tokens = x.reshape(b, ch, frames, gh, 2, gw, 2).permute(0, 2, 3, 5, 1, 4, 6).reshape(b, frames * gh * gw, ch * 4)
        return tokens, gh, gw

    @staticmethod
    def _grid_ids(gh, gw, index=0):
        ids = torch.zeros(gh, gw, 3)
        ids[..., 0] = index
        ids[..., 1] = torch.arange(gh)[:, None].float() - gh // 2
        ids[..., 2] = torch.arange(gw)[None].float() - gw // 2
        return ids.reshape(1, -1, 3)

    def run(self, x, t, context, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, last=None, references=()):
        """One model call on x [B, 16, 1, h, w] -> per block "img", "txt", "attn" and {block: scores};
        with reference latents (edit; "index" method: reference k at index k on the first axis), their
        tokens follow the image's and "reference_scores" gives {block: [scores per reference]}."""
        context = context.float().cpu()
        tokens, gh, gw = self._patchify(x)
        b = tokens.shape[0]
        img_ids = self._grid_ids(gh, gw)
        ref_counts = []
        for k, ref in enumerate(references):
            ref_tokens, rh, rw = self._patchify(ref.expand(b, -1, -1, -1, -1))
            tokens = torch.cat([tokens, ref_tokens], 1)
            img_ids = torch.cat([img_ids, self._grid_ids(rh, rw, k + 1)], 1)
            ref_counts.append(ref_tokens.shape[1])
        n_img = gh * gw
        img = _linear(self.w, "img_in", tokens)
        txt = _linear(self.w, "txt_in", _rms(self.w, "txt_norm", context))
        temb = self._temb(t.float().cpu())
        txt_start = max(gw // 2, gh // 2)
        txt_ids = (txt_start + torch.arange(txt.shape[1]).float())[:, None].expand(-1, 3)
        img_angles = rotation_angles(img_ids.expand(b, -1, -1), self.axes, 10000)
        txt_angles = rotation_angles(txt_ids[None].expand(b, -1, -1), self.axes, 10000)
        concepts = None
        if concept_embeddings is not None:
            emb = concept_embeddings.float().cpu()[None].expand(b, -1, -1)
            concepts = _linear(self.w, "txt_in", _rms(self.w, "txt_norm", emb))
            concept_angles = rotation_angles(torch.full((b, concepts.shape[1], 3), float(txt_start)), self.axes, 10000)
        out = {"img": [], "txt": [], "attn": [], "scores": {}, "reference_scores": {}}
        n_txt = txt.shape[1]
        last = self.depth - 1 if last is None else last
        for i in range(last + 1):
            p = f"transformer_blocks.{i}"
            iq, ik, iv, igate, imods = self._side(p, "img", img, temb)
            tq, tk, tv, tgate, tmods = self._side(p, "txt", txt, temb)
            angles = torch.cat([txt_angles, img_angles], 1)
            q, k = rotate(torch.cat([tq, iq], 2), angles), rotate(torch.cat([tk, ik], 2), angles)
            attn = _attention(q, k, torch.cat([tv, iv], 2))
            txt_attn, img_attn = attn[:, :n_txt], attn[:, n_txt:]
            if concepts is not None:
                cq, ck, cv, cgate, cmods = self._side(p, "txt", concepts, temb)
                n_c = concepts.shape[1]
                # concepts attend to the generated image's tokens only (not the references')
                both = torch.cat([concept_angles, img_angles[:, :n_img]], 1)
                cq_all = rotate(torch.cat([cq, iq[:, :, :n_img]], 2), both)
                ck_all = rotate(torch.cat([ck, ik[:, :, :n_img]], 2), both)
                concept_attn = _attention(cq_all, ck_all, torch.cat([cv, iv[:, :, :n_img]], 2))[:, :n_c]
                if i in blocks:
                    spans, start = [slice(0, n_img)], n_img
                    for count in ref_counts:
                        spans.append(slice(start, start + count))
                        start += count
                    if variant == "output space":
                        vectors = linear_normalization(concept_attn, 1) if normalize_concepts else concept_attn
                        scores = [vectors @ img_attn[:, span].transpose(1, 2) for span in spans]
                    else:  # concept query . image query, after QK-norm, before RoPE
                        queries = linear_normalization(cq, 2) if normalize_concepts else cq
                        scores = [torch.einsum("bhcd,bhnd->bcn", queries, iq[:, :, span]) for span in spans]
                    out["scores"][i], out["reference_scores"][i] = scores[0], scores[1:]
                concepts = self._finish(p, "txt", concepts, concept_attn, cgate, cmods)
            out["attn"].append(attn)
            txt = self._finish(p, "txt", txt, txt_attn, tgate, tmods)
            img = self._finish(p, "img", img, img_attn, igate, imods)
            out["img"].append(img)
            out["txt"].append(txt)
        return out


def reference_qwen_maps(model_patcher, calls, embeddings, blocks, variant="output space", window=(0.0, 1.0),
                        normalize=True):
    """maps_over_calls for the calls tiny_qwen.record_model_calls recorded, through ReferenceQwenImage."""
    from reference import maps_over_calls
    ref = ReferenceQwenImage(model_patcher.model.diffusion_model)
    return maps_over_calls(calls, lambda call, rows: ref.run(
        call["x"][rows], call["t"][rows], call["context"][rows], embeddings, blocks, variant, normalize,
        last=max(blocks))["scores"], window)
