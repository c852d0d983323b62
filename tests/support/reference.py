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


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_norm(weights, name, x):
    return rms(x, weights.get(f"{name}.scale", weights.get(f"{name}.weight")), 1e-6)


def modulation(weights, name, vec):
    out = linear(weights, f"{name}.lin", F.silu(vec))[:, None, :]
    return out.chunk(6, dim=-1)  # shift1, scale1, gate1, shift2, scale2, gate2


def rotation_angles(ids, axes_dim, theta, dtype=torch.float32):
    """ids [B, L, A] -> angles [B, L, D/2] (one angle per feature pair; axis a owns axes_dim[a]
    features), computed in float64, returned in `dtype`."""
    angles = []
    for axis, dim in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles.append(ids[..., axis:axis + 1].double() * omega)
    return torch.cat(angles, dim=-1).to(dtype)


def rotate(x, angles):
    """x [B, H, L, D]: rotate consecutive feature pairs (x0, x1) by the angle of their pair."""
    return rotate_pairs(x, angles.cos(), angles.sin())


def heads(x, num_heads):
    b, l, _ = x.shape
    return x.reshape(b, l, num_heads, -1).transpose(1, 2)


def qkv(weights, prefix, x, num_heads):
    q, k, v = linear(weights, f"{prefix}.qkv", x).chunk(3, dim=-1)
    q, k, v = heads(q, num_heads), heads(k, num_heads), heads(v, num_heads)
    return rms_norm(weights, f"{prefix}.norm.query_norm", q), rms_norm(weights, f"{prefix}.norm.key_norm", k), v


def attention(q, k, v):
    return masked_attention(q, k, v)


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


# ---------------------------------------------------------------------------------------------
# Flux.2 (dev, Klein) and Chroma. Same concept stream as above; what differs is where the
# modulations come from, the MLP, biases and positions. Written from the design page's section
# "Flux.2 (dev, Klein) and Chroma: what we compute", on raw weights; no ComfyUI forward is called.
# Unlike ReferenceFlux, only the C concept query rows are computed (the same numbers as the
# authors' full attention with its image rows discarded).
# ---------------------------------------------------------------------------------------------


def rms_norm_eps(module) -> float:
    """The epsilon a ComfyUI RMSNorm module uses (torch's RMSNorm: None means finfo(float32).eps)."""
    eps = getattr(module, "eps", 1e-6)
    return torch.finfo(torch.float32).eps if eps is None else float(eps)


def rope_cos_sin(ids, axes_dim, theta):
    """ids [B, L, A] -> (cos, sin) [B, L, D/2] of float64 angles, then cast, as ComfyUI builds its
    rotation matrices."""
    angles = rotation_angles(ids, axes_dim, theta, torch.float64)
    return angles.cos().float(), angles.sin().float()


def rotate_pairs(x, cos, sin):
    """x [B, H, L, D]; rotate each pair (x0, x1) by its angle."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[:, None], sin[:, None]
    return torch.stack([cos * x0 - sin * x1, sin * x0 + cos * x1], dim=-1).flatten(-2)


def masked_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(D) [+ mask]) v, heads concatenated. mask [B, Lq, Lk] (or broadcastable):
    boolean (True = may attend, as torch's SDPA) or additive."""
    logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mask is not None:
        mask = mask.to(logits.device)
        if mask.ndim == 3:
            mask = mask[:, None]
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask.float()
    return (torch.softmax(logits, dim=-1) @ v).transpose(1, 2).flatten(2)


class _ReferenceDoubleStream:
    """Shared double-block arithmetic: prompt + image joint attention as in the model; concepts
    with the text-side weights and the text-side modulation, attending to concept and image keys."""

    mlp = "gelu"

    def __init__(self, diffusion_model, weight_deltas=None):
        self.w = {k: v.detach().float().cpu() for k, v in diffusion_model.state_dict().items()}
        for name, delta in (weight_deltas or {}).items():
            self.w[name] = self.w[name] + delta
        block = diffusion_model.double_blocks[0]
        self.num_heads = block.num_heads
        self.depth = len(diffusion_model.double_blocks)
        self.qk_eps = rms_norm_eps(block.img_attn.norm.query_norm)
        p = diffusion_model.params
        self.axes_dim, self.theta, self.patch_size = list(p.axes_dim), p.theta, p.patch_size

    def linear(self, name, x):
        return linear(self.w, name, x)

    def norm_weight(self, name):
        """RMSNorm scales are `.weight` in 0.29 (`.scale` in older ComfyUI)."""
        return self.w[f"{name}.weight"] if f"{name}.weight" in self.w else self.w[f"{name}.scale"]

    def qkv(self, prefix, x):
        q, k, v = self.linear(f"{prefix}.qkv", x).chunk(3, dim=-1)
        q, k, v = heads(q, self.num_heads), heads(k, self.num_heads), heads(v, self.num_heads)
        q = rms(q, self.norm_weight(f"{prefix}.norm.query_norm"), self.qk_eps)
        k = rms(k, self.norm_weight(f"{prefix}.norm.key_norm"), self.qk_eps)
        return q, k, v

    def mlp_forward(self, prefix, x):
        hidden = self.linear(f"{prefix}_mlp.0", x)
        if self.mlp == "silu_gated":
            gate, value = hidden.chunk(2, dim=-1)
            hidden = F.silu(gate) * value
        else:
            hidden = F.gelu(hidden, approximate="tanh")
        return self.linear(f"{prefix}_mlp.2", hidden)

    def update(self, prefix, x, attn_out, mods):
        (shift1, scale1, gate1), (shift2, scale2, gate2) = mods
        x = x + gate1 * self.linear(f"{prefix}_attn.proj", attn_out)
        return x + gate2 * self.mlp_forward(prefix, (1 + scale2) * layer_norm(x) + shift2)

    def patchify(self, x):
        """x [B, C, h, w] -> tokens [B, N, C*p*p] and positions [B, N, A] as the model builds them."""
        b, ch, height, width = x.shape
        ps = self.patch_size
        gh, gw = -(-height // ps), -(-width // ps)
        x = F.pad(x, (0, gw * ps - width, 0, gh * ps - height), mode="circular")
        tokens = x.reshape(b, ch, gh, ps, gw, ps).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, ch * ps * ps)
        ids = torch.zeros(gh, gw, len(self.axes_dim))
        ids[..., 1] = torch.arange(gh)[:, None].float()
        ids[..., 2] = torch.arange(gw)[None].float()
        return tokens, ids.reshape(1, -1, len(self.axes_dim)).expand(b, -1, -1)

    def prompt_ids(self, b, length):
        return torch.zeros(b, length, len(self.axes_dim))

    def embed_text(self, context):
        return self.linear("txt_in", context)

    def embed_image(self, tokens):
        return self.linear("img_in", tokens)

    def embed_concepts(self, embeddings, conditioning, b):
        """[C, text_dim] -> [B, C, d]: as the prompt enters (HunyuanVideo: one-token prompts)."""
        return self.embed_text(embeddings[None].expand(b, -1, -1))

    def double_modulations(self, conditioning, i):
        """((img_mod1, img_mod2), (txt_mod1, txt_mod2)), each mod (shift, scale, gate) [B, 1, d]."""
        raise NotImplementedError

    def run(self, x, t, context, guidance=None, concept_embeddings=None, blocks=(), variant="output space",
            normalize_concepts=False, attn_mask=None, last_block=None, prompt_ids=None, references=(),
            reference_index_scale=10.0):
        """One model call. x [B, C, h, w] latent rows as the diffusion model receives them, t [B],
        context [B, L, text_dim] exactly as the diffusion model receives it, guidance [B] or None,
        concept_embeddings [C, text_dim] or None, attn_mask the model's joint (prompt + image)
        mask or None (concepts never see it: they attend to concept and image keys only),
        prompt_ids [B, L, A] to replace the model's prompt positions (what a post_input patch can do).
        Returns {"img", "txt", "concepts": per-block outputs (after block i),
        "img_attn": the image rows of each block's joint attention output (before proj),
        "img_q", "concept_q": queries [B, H, N or C, D] after QK-norm, before RoPE,
        "txt_mods": each block's text-side modulation, "scores": {block: [B, C, N]}}.
        references: reference latents [1, C, h', w'] (multi-reference editing, the "index" method:
        reference k at position reference_index_scale * k on the first axis), their tokens after the
        image's; concepts attend to the generated image's keys only; "reference_scores": {block:
        [scores [B, C, N_k] per reference]}."""
        x, t, context = x.float().cpu(), t.float().cpu(), context.float().cpu()
        guidance = None if guidance is None else guidance.float().cpu()
        b = x.shape[0]
        tokens, img_ids = self.patchify(x)
        n_img, ref_counts = tokens.shape[1], []
        for k, ref in enumerate(references):
            ref_tokens, ref_ids = self.patchify(ref.float().cpu().expand(b, -1, -1, -1))
            ref_ids = ref_ids.clone()
            ref_ids[..., 0] = reference_index_scale * (k + 1)
            tokens, img_ids = torch.cat([tokens, ref_tokens], 1), torch.cat([img_ids, ref_ids], 1)
            ref_counts.append(ref_tokens.shape[1])
        img = self.embed_image(tokens)
        conditioning = self.conditioning(t, guidance, b)
        self.timestep = t  # for a text path that reads it (HunyuanVideo's token refiner)
        txt = self.embed_text(context)
        concepts = None
        if concept_embeddings is not None:
            concepts = self.embed_concepts(concept_embeddings.float().cpu(), conditioning, b)
        prompt_ids = self.prompt_ids(b, txt.shape[1]) if prompt_ids is None else prompt_ids.float().cpu()
        cos, sin = rope_cos_sin(torch.cat([prompt_ids, img_ids], dim=1), self.axes_dim, self.theta)
        n_txt = txt.shape[1]
        out = {"img": [], "txt": [], "concepts": [], "img_attn": [], "txt_mods": [], "img_q": [], "concept_q": [],
               "scores": {}, "reference_scores": {}}
        last = last_block if last_block is not None else (max(blocks) if blocks else self.depth - 1)
        for i in range(last + 1):
            p = f"double_blocks.{i}"
            img_mods, txt_mods = self.double_modulations(conditioning, i)
            iq, ik, iv = self.qkv(f"{p}.img_attn", (1 + img_mods[0][1]) * layer_norm(img) + img_mods[0][0])
            tq, tk, tv = self.qkv(f"{p}.txt_attn", (1 + txt_mods[0][1]) * layer_norm(txt) + txt_mods[0][0])
            q = rotate_pairs(torch.cat([tq, iq], 2), cos, sin)
            k = rotate_pairs(torch.cat([tk, ik], 2), cos, sin)
            joint = masked_attention(q, k, torch.cat([tv, iv], 2), attn_mask)
            txt_out, img_out = joint[:, :n_txt], joint[:, n_txt:]
            if concepts is not None:
                cq, ck, cv = self.qkv(f"{p}.txt_attn", (1 + txt_mods[0][1]) * layer_norm(concepts) + txt_mods[0][0])
                # concept positions are 0 on every axis: RoPE is the identity on concept queries and keys
                concept_out = masked_attention(cq, torch.cat([ck, k[:, :, n_txt:n_txt + n_img]], 2),
                                               torch.cat([cv, iv[:, :, :n_img]], 2))
                if i in blocks:
                    spans, start = [slice(0, n_img)], n_img
                    for count in ref_counts:
                        spans.append(slice(start, start + count))
                        start += count
                    if variant == "output space":
                        vectors = linear_normalization(concept_out, 1) if normalize_concepts else concept_out
                        scores = [vectors @ img_out[:, span].transpose(1, 2) for span in spans]
                    elif variant == "cross attention":
                        vectors = linear_normalization(cq, 2) if normalize_concepts else cq
                        scores = [torch.einsum("bhcd,bhnd->bcn", vectors, iq[:, :, span]) for span in spans]
                    else:
                        raise ValueError(f"variant: {variant!r}")
                    out["scores"][i], out["reference_scores"][i] = scores[0], scores[1:]
                concepts = self.update(f"{p}.txt", concepts, concept_out, txt_mods)
                out["concepts"].append(concepts)
                out["concept_q"].append(cq)
            img = self.update(f"{p}.img", img, img_out, img_mods)
            txt = self.update(f"{p}.txt", txt, txt_out, txt_mods)
            out["img"].append(img)
            out["txt"].append(txt)
            out["img_attn"].append(img_out)
            out["img_q"].append(iq)
            out["txt_mods"].append(txt_mods)
        return out


def _six(vectors):
    """[B, 1, 6d] or six [B, 1, d] -> ((shift1, scale1, gate1), (shift2, scale2, gate2))."""
    parts = vectors.chunk(6, dim=-1) if torch.is_tensor(vectors) else vectors
    return tuple(parts[:3]), tuple(parts[3:])


class ReferenceFlux2(_ReferenceDoubleStream):
    """Flux.2 dev (guidance embedding) and Klein (none). vec = time_in(t) [+ guidance_in(g)]
    (no pooled vector); every double block takes the same two modulations, shared by the model:
    double_stream_modulation_img(vec) and double_stream_modulation_txt(vec). No biases anywhere,
    SiLU-gated MLPs, optional RMSNorm on the prompt features (txt_norm) before txt_in, which the
    concept embeddings get too. Prompt token l sits at position l on axis 3 (txt_ids_dims),
    image tokens at (0, row, col, 0), concept tokens at 0."""

    mlp = "silu_gated"

    def __init__(self, diffusion_model, weight_deltas=None):
        super().__init__(diffusion_model, weight_deltas)
        p = diffusion_model.params
        self.guidance_embed, self.txt_ids_dims = p.guidance_embed, list(p.txt_ids_dims)
        self.txt_norm_eps = rms_norm_eps(diffusion_model.txt_norm) if getattr(p, "txt_norm", False) else None

    def prompt_ids(self, b, length):
        ids = torch.zeros(b, length, len(self.axes_dim))
        for axis in self.txt_ids_dims:
            ids[..., axis] = torch.arange(length).float()
        return ids

    def embed_text(self, context):
        if self.txt_norm_eps is not None:
            context = rms(context, self.norm_weight("txt_norm"), self.txt_norm_eps)
        return self.linear("txt_in", context)

    def vector(self, t, guidance):
        vec = mlp_embed(self.w, "time_in", timestep_embedding(t))
        if self.guidance_embed and guidance is not None:
            vec = vec + mlp_embed(self.w, "guidance_in", timestep_embedding(guidance))
        return vec

    def conditioning(self, t, guidance, b):
        vec = self.vector(t, guidance)
        img = self.linear("double_stream_modulation_img.lin", F.silu(vec))[:, None]
        txt = self.linear("double_stream_modulation_txt.lin", F.silu(vec))[:, None]
        return _six(img), _six(txt)

    def double_modulations(self, conditioning, i):
        return conditioning

    def concept_scores(self, x, t, context, guidance, concept_embeddings, blocks, variant="output space",
                       normalize_concepts=False, attn_mask=None):
        """{block: [B, C, N]}; x [B, 128, h, w], context as the model receives it (512 rows)."""
        return self.run(x, t, context, guidance, concept_embeddings, blocks, variant, normalize_concepts,
                        attn_mask)["scores"]


CHROMA_MODULATION_SLOTS = 344  # ComfyUI's Chroma always asks its approximator for 344 vectors


class ReferenceChroma(_ReferenceDoubleStream):
    """Chroma: Flux.1's double blocks (biases, GELU MLP) without their own modulation layers.
    The approximator (distilled_guidance_layer) maps [emb16(t), emb16(guidance), emb32(slot)] for
    344 slots to 344 vectors; the layout is single blocks (3 each), then image sides of the double
    blocks (6 each), then their text sides (6 each), then the final layer (2). Double block i's
    text side is what the prompt, and so the concepts, get. All prompt positions are 0."""

    def __init__(self, diffusion_model, weight_deltas=None):
        super().__init__(diffusion_model, weight_deltas)
        self.singles = len(diffusion_model.single_blocks)
        self.approximator_layers = len(diffusion_model.distilled_guidance_layer.layers)
        self.approximator_eps = rms_norm_eps(diffusion_model.distilled_guidance_layer.norms[0])

    def approximator(self, t, guidance, b):
        slots = timestep_embedding(torch.arange(CHROMA_MODULATION_SLOTS), 32)[None].expand(b, -1, -1)
        tg = torch.cat([timestep_embedding(t, 16), timestep_embedding(guidance, 16)], dim=1)
        x = torch.cat([tg[:, None].expand(-1, CHROMA_MODULATION_SLOTS, -1), slots], dim=-1)
        x = self.linear("distilled_guidance_layer.in_proj", x)
        for j in range(self.approximator_layers):
            normed = rms(x, self.norm_weight(f"distilled_guidance_layer.norms.{j}"), self.approximator_eps)
            x = x + mlp_embed(self.w, f"distilled_guidance_layer.layers.{j}", normed)
        return self.linear("distilled_guidance_layer.out_proj", x)

    def conditioning(self, t, guidance, b):
        guidance = torch.zeros(b) if guidance is None else guidance
        return self.approximator(t, guidance, b)

    def double_modulations(self, vectors, i):
        img = 3 * self.singles + 6 * i
        txt = 3 * self.singles + 6 * self.depth + 6 * i
        return (_six([vectors[:, j:j + 1] for j in range(img, img + 6)]),
                _six([vectors[:, j:j + 1] for j in range(txt, txt + 6)]))

    def concept_scores(self, x, t, context, guidance, concept_embeddings, blocks, variant="output space",
                       normalize_concepts=False, attn_mask=None):
        """{block: [B, C, N]}; x [B, 16, h, w]; guidance defaults to 0 as in ComfyUI."""
        return self.run(x, t, context, guidance, concept_embeddings, blocks, variant, normalize_concepts,
                        attn_mask)["scores"]


def reference_for(model_patcher, weight_deltas=None):
    """The reference class matching a tiny ComfyUI model: Flux.2 (dev/Klein), Chroma or Flux.1."""
    diffusion = model_patcher.model.diffusion_model
    if hasattr(diffusion, "distilled_guidance_layer"):
        return ReferenceChroma(diffusion, weight_deltas)
    if getattr(diffusion.params, "global_modulation", False):
        return ReferenceFlux2(diffusion, weight_deltas)
    return ReferenceFlux(diffusion, weight_deltas)


def maps_over_calls(calls, scores_of, window=(0.0, 1.0)):
    """The maps the pack should give for recorded model calls: the positive-prompt rows
    (cond_or_uncond 0) of the calls whose step lies in `window`, scored by scores_of(call, rows) ->
    {block: [b, C, N]}, softmax per (call, block), then the mean per image: [B, C, N]."""
    per_image = {}
    for call in calls:
        schedule = call["schedule"]
        step = int((schedule >= call["sigma"]).sum()) - 1
        if not window[0] <= step / (len(schedule) - 1) < window[1]:
            continue
        chunk = call["x"].shape[0] // len(call["cond_or_uncond"])
        for j, kind in enumerate(call["cond_or_uncond"]):
            if kind != 0:
                continue
            for s in scores_of(call, slice(j * chunk, (j + 1) * chunk)).values():
                for image in range(chunk):
                    per_image.setdefault(image, []).append(s[image:image + 1])
    return torch.cat([mean_softmax_maps(per_image[i]) for i in sorted(per_image)])


def reference_maps(model_patcher, calls, embeddings, blocks, variant="output space", window=(0.0, 1.0),
                   normalize=True, weight_deltas=None):
    """maps_over_calls for the calls tiny_flux.record_diffusion_calls recorded, through the family's reference."""
    ref = reference_for(model_patcher, weight_deltas)

    def scores_of(call, rows):
        inputs = [call["x"][rows], call["t"][rows], call["context"][rows]]
        if isinstance(ref, ReferenceFlux):
            inputs.append(call["y"][rows])  # Flux.1's pooled vector
        guidance = None if call["guidance"] is None else call["guidance"][rows]
        return ref.concept_scores(*inputs, guidance, embeddings, blocks, variant, normalize)

    return maps_over_calls(calls, scores_of, window)


def pad_flux2_context(context, length=512):
    """What ComfyUI does to a Flux.2 prompt before the model: left-pad with zero rows to 512."""
    return F.pad(context, (0, 0, max(0, length - context.shape[1]), 0))


def encode_path_inputs(model_patcher, latent, noise, t):
    """Inputs of the encode path's one model call per family: x_t = t * noise + (1 - t) * x0 with
    x0 the latent as the model sees it (process_latent_in), timestep t, guidance 0 where the model
    has a guidance input (Flux.2 dev, Chroma's approximator, Flux.1 dev), None otherwise (Klein,
    schnell). Returns {"x", "t", "guidance"}."""
    x0 = model_patcher.model.process_latent_in(latent).float()
    b = x0.shape[0]
    diffusion = model_patcher.model.diffusion_model
    has_guidance = hasattr(diffusion, "distilled_guidance_layer") or bool(getattr(diffusion.params, "guidance_embed", False))
    return {"x": t * noise.float() + (1 - t) * x0, "t": torch.full((b,), float(t)),
            "guidance": torch.zeros(b) if has_guidance else None}
