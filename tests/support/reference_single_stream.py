"""Independent float32 implementations of the single-stream families (Z-Image / Lumina 2's NextDiT,
Krea 2's SingleStreamDiT) and of ConceptAttention on them, written from the equations on raw
weights (no pack or ComfyUI code). The concept stream is the rule of the design page carried to a
single-stream block: its shared weights with the text tokens' modulation; concept queries attend to
[concept keys; image keys] (never to the prompt's, nor to padding); nothing flows back; scores are
the concepts' attention outputs . the image tokens' attention outputs, before the output projection.

NextDiT (Z-Image, Lumina 2), per joint layer, a = the adaLN input (timestep embedding of 1 - t):
    (scale1, gate1, scale2, gate2) = adaLN(a)       (Z-Image: Linear; Lumina 2: Linear(SiLU))
    h += tanh(gate1) RMS2(out(attn(RMS1(h) (1 + scale1))))
    h += tanh(gate2) RMSf2(w2(silu(w1 u) * w3 u)),  u = RMSf1(h) (1 + scale2)
    attn: q, k, v = split(qkv(.)), q/k RMS-normed per head, RoPE, k/v heads repeated (GQA)
  caption: cap_embedder (RMS, Linear), padded to a multiple of 32 (Z-Image), context refiner
  (the same layer without modulation), positions (j + 1, 0, 0); image: 2x2 patches (ph, pw, c),
  x_embedder, padded likewise, noise refiner (modulated), positions (L_cap + 1, row, col); padding
  tokens at 0. Concepts: cap_embedder, the context refiner over the concepts alone, position (1, 0, 0).

Krea 2, per block, (prescale, preshift, pregate, postscale, postshift, postgate) = tproj(tmlp(t)) + lin:
    h += pregate wo(attn(x) sigmoid(gate(x))),  x = (1 + prescale) RMS(h) + preshift
    h += postgate down(silu(gate(u)) up(u)),    u = (1 + postscale) RMS(h) + postshift
  RMS weights are 1 + scale; text positions 0, image (0, row, col); patches (c, ph, pw).
  text: each token's tapped layers through two layer-wise blocks, a Linear over the layers, two
  refiner blocks over the tokens, txtmlp. Concepts: the same, the refiner over the concepts alone."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reference import linear_normalization, rotate, rotation_angles, timestep_embedding

QK_EPS = torch.finfo(torch.float32).eps  # the per-head q/k RMS norms of NextDiT (eps None)


def _linear(w, name, x):
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _heads(x, heads):
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)


def _softmax_attention(q, k, v):
    """[B, H, Lq, D] x [B, H, Lk, D] -> [B, Lq, H*D]."""
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def _scores(concept_out, image_out, normalize_concepts):
    if normalize_concepts:
        concept_out = linear_normalization(concept_out, dim=1)
    return torch.einsum("bcd,bnd->bcn", concept_out, image_out)


class ReferenceNextDiT:
    """Z-Image (z_image_modulation, padding) and Lumina 2 (SiLU adaLN, GQA), ComfyUI 0.29's layout."""

    def __init__(self, diffusion_model):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        self.depth = len(diffusion_model.layers)
        self.refiners = len(diffusion_model.context_refiner)
        self.heads = diffusion_model.n_heads
        first = diffusion_model.layers[0].attention
        self.kv_heads = first.n_kv_heads
        self.head_dim = first.head_dim
        self.axes = list(diffusion_model.axes_dims)
        self.theta = float(diffusion_model.rope_embedder.theta)
        self.time_scale = float(diffusion_model.time_scale)
        self.pad = diffusion_model.pad_tokens_multiple
        self.patch = diffusion_model.patch_size
        self.silu_adaln = "layers.0.adaLN_modulation.1.weight" in self.w

    # -- pieces -------------------------------------------------------------------------------
    def adaln_input(self, t):
        emb = timestep_embedding((1.0 - t.float()) * self.time_scale, 256, time_factor=1.0)
        return _linear(self.w, "t_embedder.mlp.2", F.silu(_linear(self.w, "t_embedder.mlp.0", emb)))

    def _mods(self, p, adaln):
        if self.silu_adaln:
            out = _linear(self.w, f"{p}.adaLN_modulation.1", F.silu(adaln))
        else:
            out = _linear(self.w, f"{p}.adaLN_modulation.0", adaln)
        return [m[:, None] for m in out.chunk(4, dim=-1)]

    def _qkv(self, p, x, angles):
        """q, k, v [B, H, L, D] (k/v heads repeated), q/k normed and rotated; q before RoPE too."""
        d = self.head_dim
        q, k, v = _linear(self.w, f"{p}.attention.qkv", x).split(
            [self.heads * d, self.kv_heads * d, self.kv_heads * d], dim=-1)
        q = _rms(_heads(q, self.heads), self.w[f"{p}.attention.q_norm.weight"], QK_EPS)
        k = _rms(_heads(k, self.kv_heads), self.w[f"{p}.attention.k_norm.weight"], QK_EPS)
        v = _heads(v, self.kv_heads)
        repeat = self.heads // self.kv_heads
        k_rot = rotate(k, angles).repeat_interleave(repeat, dim=1)
        return rotate(q, angles), k_rot, v.repeat_interleave(repeat, dim=1), q

    def _norm(self, p, name, x):
        return _rms(x, self.w[f"{p}.{name}.weight"], 1e-5)

    def _ffn(self, p, x):
        return _linear(self.w, f"{p}.feed_forward.w2",
                       F.silu(_linear(self.w, f"{p}.feed_forward.w1", x)) * _linear(self.w, f"{p}.feed_forward.w3", x))

    def _layer(self, p, h, angles, mods=None):
        """One layer; returns (h, attention output [B, L, H*D], (q, k, v, q before RoPE))."""
        scale1, gate1, scale2, gate2 = mods if mods is not None else (0.0, None, 0.0, None)
        projected = self._qkv(p, self._norm(p, "attention_norm1", h) * (1 + scale1), angles)
        attn = _softmax_attention(*projected[:3])
        h, _ = self._update(p, h, attn, mods)
        return h, attn, projected

    def _update(self, p, h, attn, mods):
        scale1, gate1, scale2, gate2 = mods if mods is not None else (0.0, None, 0.0, None)
        attended = self._norm(p, "attention_norm2", _linear(self.w, f"{p}.attention.out", attn))
        h = h + (attended if gate1 is None else gate1.tanh() * attended)
        mlp = self._norm(p, "ffn_norm2", self._ffn(p, self._norm(p, "ffn_norm1", h) * (1 + scale2)))
        return h + (mlp if gate2 is None else gate2.tanh() * mlp), None

    def _padded(self, tokens, name):
        if not self.pad:
            return tokens
        extra = (-tokens.shape[1]) % self.pad
        pad = self.w[name].reshape(1, 1, -1).expand(tokens.shape[0], extra, -1)
        return torch.cat([tokens, pad], dim=1)

    def _angles(self, ids):
        return rotation_angles(ids, self.axes, self.theta)

    def embed_caption(self, context):
        tokens = _linear(self.w, "cap_embedder.1", _rms(context.float(), self.w["cap_embedder.0.weight"], 1e-5))
        tokens = self._padded(tokens, "cap_pad_token")
        ids = torch.zeros(tokens.shape[0], tokens.shape[1], 3)
        ids[..., 0] = torch.arange(tokens.shape[1]) + 1.0
        angles = self._angles(ids)
        for i in range(self.refiners):
            tokens = self._layer(f"context_refiner.{i}", tokens, angles)[0]
        return tokens

    def embed_concepts(self, embeddings):
        tokens = _linear(self.w, "cap_embedder.1", _rms(embeddings.float()[None], self.w["cap_embedder.0.weight"], 1e-5))
        ids = torch.zeros(1, tokens.shape[1], 3)
        ids[..., 0] = 1.0
        angles = self._angles(ids)
        for i in range(self.refiners):
            tokens = self._layer(f"context_refiner.{i}", tokens, angles)[0]
        return tokens

    # -- the model and the concept stream ------------------------------------------------------
    def run(self, x, t, context, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, last=None):
        """x [B, 16, h, w] as the model receives it, t [B] its timestep (sigma), context [B, L, dim].
        Returns {"out": per layer [B, L_all, dim], "attn": per layer [B, L_all, H*D], "scores":
        {block: [B, C, N]}}."""
        x, t = x.float(), t.float()
        b, c, height, width = x.shape
        p = self.patch
        x = F.pad(x, (0, (-width) % p, 0, (-height) % p), mode="circular")  # as ComfyUI pads to patches
        rows, cols = x.shape[2] // p, x.shape[3] // p
        adaln = self.adaln_input(t)
        caption = self.embed_caption(context)
        cap_len = caption.shape[1]
        patches = x.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1).reshape(b, rows * cols, p * p * c)
        image = self._padded(_linear(self.w, "x_embedder", patches), "x_pad_token")
        ids = torch.zeros(b, image.shape[1], 3)
        ids[:, :rows * cols, 0] = cap_len + 1.0
        ids[:, :rows * cols, 1] = torch.arange(rows).repeat_interleave(cols).float()
        ids[:, :rows * cols, 2] = torch.arange(cols).repeat(rows).float()
        image_angles = self._angles(ids)
        for i in range(self.refiners):
            image = self._layer(f"noise_refiner.{i}", image, image_angles, self._mods(f"noise_refiner.{i}", adaln))[0]
        cap_ids = torch.zeros(b, cap_len, 3)
        cap_ids[..., 0] = torch.arange(cap_len) + 1.0
        h = torch.cat([caption, image], dim=1)
        angles = torch.cat([self._angles(cap_ids), image_angles], dim=1)
        span = slice(cap_len, cap_len + rows * cols)

        concepts = None if concept_embeddings is None else self.embed_concepts(concept_embeddings).expand(b, -1, -1)
        concept_ids = torch.zeros(1, 1, 3)
        concept_ids[..., 0] = 1.0
        concept_angles = self._angles(concept_ids)
        last = self.depth - 1 if last is None else last
        outs, attns, scores = [], [], {}
        for i in range(last + 1):
            prefix, mods = f"layers.{i}", self._mods(f"layers.{i}", adaln)
            h_next, attn, (q, k, v, q_plain) = self._layer(prefix, h, angles, mods)
            if concepts is not None:
                cq, ck, cv, cq_plain = self._qkv(prefix, self._norm(prefix, "attention_norm1", concepts) * (1 + mods[0]),
                                                 concept_angles)
                concept_out = _softmax_attention(cq, torch.cat([ck, k[:, :, span]], 2), torch.cat([cv, v[:, :, span]], 2))
                if i in blocks:
                    if variant == "cross attention":
                        query = linear_normalization(cq_plain, dim=2) if normalize_concepts else cq_plain
                        scores[i] = torch.einsum("bhcd,bhnd->bcn", query, q_plain[:, :, span])
                    else:
                        scores[i] = _scores(concept_out, attn[:, span], normalize_concepts)
                concepts = self._update(prefix, concepts, concept_out, mods)[0]
            outs.append(h_next)
            attns.append(attn)
            h = h_next
        return {"out": outs, "attn": attns, "scores": scores}


class ReferenceKrea2:
    def __init__(self, diffusion_model):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        self.depth = len(diffusion_model.blocks)
        self.heads, self.kv_heads = diffusion_model.heads, diffusion_model.blocks[0].attn.kvheads
        self.txt_heads = diffusion_model.txtfusion.layerwise_blocks[0].attn.heads
        self.txt_kv_heads = diffusion_model.txtfusion.layerwise_blocks[0].attn.kvheads
        self.txt_layers, self.txt_dim = diffusion_model.txtlayers, diffusion_model.txtdim
        head_dim = diffusion_model.blocks[0].attn.headdim
        self.axes = [head_dim - 12 * (head_dim // 16), 6 * (head_dim // 16), 6 * (head_dim // 16)]
        self.patch, self.tdim = diffusion_model.patch, diffusion_model.tdim

    def _rms(self, name, x):
        return _rms(x, self.w[f"{name}.scale"] + 1.0, 1e-5)

    def _gelu_mlp(self, prefix, x, first, second):
        return _linear(self.w, f"{prefix}.{second}", F.gelu(_linear(self.w, f"{prefix}.{first}", x), approximate="tanh"))

    def _qkv(self, p, x, heads, kv_heads, angles=None):
        q = _rms(_heads(_linear(self.w, f"{p}.attn.wq", x), heads), self.w[f"{p}.attn.qknorm.qnorm.scale"] + 1.0, 1e-5)
        k = _rms(_heads(_linear(self.w, f"{p}.attn.wk", x), kv_heads), self.w[f"{p}.attn.qknorm.knorm.scale"] + 1.0, 1e-5)
        v = _heads(_linear(self.w, f"{p}.attn.wv", x), kv_heads)
        q_plain = q
        if angles is not None:
            q, k = rotate(q, angles), rotate(k, angles)
        repeat = heads // kv_heads
        return q, k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1), q_plain

    def _swiglu(self, p, x):
        return _linear(self.w, f"{p}.mlp.down", F.silu(_linear(self.w, f"{p}.mlp.gate", x)) * _linear(self.w, f"{p}.mlp.up", x))

    def _text_block(self, p, x):
        u = self._rms(f"{p}.prenorm", x)
        q, k, v, _ = self._qkv(p, u, self.txt_heads, self.txt_kv_heads)
        x = x + _linear(self.w, f"{p}.attn.wo", _softmax_attention(q, k, v) * torch.sigmoid(_linear(self.w, f"{p}.attn.gate", u)))
        return x + self._swiglu(p, self._rms(f"{p}.postnorm", x))

    def embed_text(self, context):
        """[B, L, layers * dim] -> [B, L, features]."""
        b, length, _ = context.shape
        x = context.float().reshape(b * length, self.txt_layers, self.txt_dim)
        for i in range(2):
            x = self._text_block(f"txtfusion.layerwise_blocks.{i}", x)
        x = x.reshape(b, length, self.txt_layers, self.txt_dim).transpose(2, 3)  # b l d n
        x = F.linear(x, self.w["txtfusion.projector.weight"]).squeeze(-1)
        for i in range(2):
            x = self._text_block(f"txtfusion.refiner_blocks.{i}", x)
        return self._gelu_mlp("txtmlp", self._rms("txtmlp.0", x), "1", "3")

    def _mods(self, p, tvec):
        return (tvec + self.w[f"{p}.mod.lin"]).chunk(6, dim=-1)

    def run(self, x, t, context, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, last=None):
        """x [B, 16, 1, h, w] as the model receives it, t [B] its timestep (sigma), context
        [B, L, layers * dim]. Returns {"out", "attn", "scores"} as ReferenceNextDiT.run."""
        x = x.float()[:, :, 0]
        b, c, height, width = x.shape
        p = self.patch
        x = F.pad(x, (0, (-width) % p, 0, (-height) % p), mode="circular")  # as ComfyUI pads to patches
        rows, cols = x.shape[2] // p, x.shape[3] // p
        patches = x.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, c * p * p)
        image = _linear(self.w, "first", patches)
        temb = self._gelu_mlp("tmlp", timestep_embedding(t.float(), self.tdim)[:, None], "0", "2")
        tvec = _linear(self.w, "tproj.1", F.gelu(temb, approximate="tanh"))
        text = self.embed_text(context)
        txt_len = text.shape[1]
        h = torch.cat([text, image], dim=1)
        ids = torch.zeros(b, h.shape[1], 3)
        ids[:, txt_len:, 1] = torch.arange(rows).repeat_interleave(cols).float()
        ids[:, txt_len:, 2] = torch.arange(cols).repeat(rows).float()
        angles = rotation_angles(ids, self.axes, 1000.0)
        span = slice(txt_len, txt_len + rows * cols)
        concepts = None
        if concept_embeddings is not None:
            concepts = self.embed_text(concept_embeddings[None]).expand(b, -1, -1)
        last = self.depth - 1 if last is None else last
        outs, attns, scores = [], [], {}
        for i in range(last + 1):
            prefix = f"blocks.{i}"
            prescale, preshift, pregate, postscale, postshift, postgate = self._mods(prefix, tvec)

            def block(tokens, keys=None, rope=True):
                u = (1 + prescale) * self._rms(f"{prefix}.prenorm", tokens) + preshift
                q, k, v, q_plain = self._qkv(prefix, u, self.heads, self.kv_heads, angles if rope else None)
                attn = _softmax_attention(q, *(keys(k, v) if keys else (k, v)))
                gated = attn * torch.sigmoid(_linear(self.w, f"{prefix}.attn.gate", u))
                tokens = tokens + pregate * _linear(self.w, f"{prefix}.attn.wo", gated)
                u2 = (1 + postscale) * self._rms(f"{prefix}.postnorm", tokens) + postshift
                return tokens + postgate * self._swiglu(prefix, u2), attn, (k, v, q_plain)

            h_next, attn, (k, v, q_plain) = block(h)
            if concepts is not None:
                keys = lambda ck, cv: (torch.cat([ck, k[:, :, span]], 2), torch.cat([cv, v[:, :, span]], 2))  # noqa: E731
                new_concepts, concept_out, (_, _, cq_plain) = block(concepts, keys, rope=False)  # text positions 0
                if i in blocks:
                    if variant == "cross attention":
                        query = linear_normalization(cq_plain, dim=2) if normalize_concepts else cq_plain
                        scores[i] = torch.einsum("bhcd,bhnd->bcn", query, q_plain[:, :, span])
                    else:
                        scores[i] = _scores(concept_out, attn[:, span], normalize_concepts)
                concepts = new_concepts
            outs.append(h_next)
            attns.append(attn)
            h = h_next
        return {"out": outs, "attn": attns, "scores": scores}
