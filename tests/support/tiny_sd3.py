"""Tiny random SD3 / SD3.5 models (ComfyUI's MMDiT) and a tiny SD3 triple CLIP, built inside real
ComfyUI from its own classes, with the unet_config ComfyUI's model detection derives from an SD3
checkpoint's keys (comfy/model_detection.py, the mmdit branch): hidden = 64 x depth, heads = depth,
`depth` joint blocks, the last one's context half pre_only. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import types

import torch

TEXT_DIM = 4096  # SD3's conditioning width: CLIP-L/G features zero-padded to 4096, then T5-XXL's 4096
CLIP_L_WIDTH, CLIP_G_WIDTH = 32, 48  # tiny CLIP-L / CLIP-G widths (real 768 / 1280)
POOLED_DIM = CLIP_L_WIDTH + CLIP_G_WIDTH  # the pooled vector: CLIP-L's + CLIP-G's (real 2048)
CLIP_TOKENS = 77
GRID_MAX = 16  # pos_embed_max_size: token grids up to 16 x 16 (latents up to 32 x 32)

VARIANTS = {
    # SD3 Medium: no QK-norm. SD3.5 Large: RMS QK-norm. SD3.5 Medium: RMS QK-norm and MMDiT-X
    # image-only second attention in the first blocks.
    "sd3": dict(qk_norm=None, x_block_self_attn_layers=[]),
    "sd35_large": dict(qk_norm="rms", x_block_self_attn_layers=[]),
    "sd35_medium": dict(qk_norm="rms", x_block_self_attn_layers=[0, 1]),
}


def sd3_config(depth=3, qk_norm="rms", x_block_self_attn_layers=(), context=TEXT_DIM, pooled=POOLED_DIM) -> dict:
    config = dict(in_channels=16, patch_size=2, out_channels=16, depth=depth, input_size=None, adm_in_channels=pooled,
                  context_embedder_config={"target": "torch.nn.Linear",
                                           "params": {"in_features": context, "out_features": 64 * depth}},
                  num_patches=GRID_MAX * GRID_MAX, pos_embed_max_size=GRID_MAX, pos_embed_scaling_factor=None,
                  x_block_self_attn_layers=list(x_block_self_attn_layers))
    if qk_norm:
        config["qk_norm"] = qk_norm
    return config


def randomize(module: torch.nn.Module, seed: int, std: float = 0.1, dtype=None) -> None:
    """Seeded normal weights; norm scales (QK RMS norms `ln_q`/`ln_k`, other `norm`s) near 1."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in module.state_dict().items():
        if not param.is_floating_point():
            state[name] = param
            continue
        values = torch.randn(param.shape, generator=generator) * std
        if "norm" in name or ".ln_" in name:
            values = values + 1.0
        state[name] = values.to(dtype or param.dtype)
    module.load_state_dict(state)


def build_sd3(seed=0, variant="sd35_large", depth=3, dtype=torch.float32, std=0.1, manual_cast=None):
    """A ModelPatcher around a tiny random SD3-family MMDiT. Latents are [B, 16, h, w] (2x2 patches)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    model_config = comfy.supported_models.SD3(sd3_config(depth, **VARIANTS[variant]))
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def _clip_config(width, projection):
    return {"hidden_act": "quick_gelu", "hidden_size": width, "intermediate_size": 64, "layer_norm_eps": 1e-5,
            "max_position_embeddings": 77, "num_attention_heads": 2, "num_hidden_layers": 3,
            "projection_dim": projection, "vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 49407,
            "pad_token_id": 1, "model_type": "clip_text_model"}


TINY_T5 = {"d_ff": 64, "d_kv": 8, "d_model": TEXT_DIM, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
           "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_heads": 2, "num_layers": 1,
           "relative_attention_num_buckets": 32, "vocab_size": 32128, "eos_token_id": 1, "pad_token_id": 0,
           "decoder_start_token_id": 0}


def tiny_sd3_clip(seed=0, clip_l=True, clip_g=True, t5=False):
    """A real comfy.sd.CLIP with ComfyUI's SD3Tokenizer and SD3 text-encoder class (sd3_clip), its
    CLIP-L / CLIP-G / T5-XXL tiny and random. T5 keeps SD3's 4096 width (its output rows follow the
    77 CLIP rows in the conditioning), so it is 130 M parameters, mostly its vocabulary: off by default."""
    import comfy.sd
    import comfy.text_encoders.sd3_clip as sd3_clip
    target = types.SimpleNamespace(clip=sd3_clip.sd3_clip(clip_l=clip_l, clip_g=clip_g, t5=t5),
                                   tokenizer=sd3_clip.SD3Tokenizer, params={})
    options = {"dtype": torch.float32, "clip_l_model_config": _clip_config(CLIP_L_WIDTH, CLIP_L_WIDTH),
               "clip_g_model_config": _clip_config(CLIP_G_WIDTH, CLIP_G_WIDTH), "t5xxl_model_config": dict(TINY_T5)}
    from tiny_flux import _randomize_text_encoder
    return _randomize_text_encoder(comfy.sd.CLIP(target=target, model_options=options), seed)


def sd3_conditioning(context: torch.Tensor, pooled: torch.Tensor):
    """What CLIPTextEncode gives for SD3: [B, 77 (+ T5 tokens), 4096] and the pooled CLIP-L/G vector."""
    return [[context, {"pooled_output": pooled}]]


def random_sd3_conditioning(batch=1, t5_tokens=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    context = torch.zeros(batch, CLIP_TOKENS + t5_tokens, TEXT_DIM)
    context[:, :CLIP_TOKENS, :POOLED_DIM] = torch.randn(batch, CLIP_TOKENS, POOLED_DIM, generator=generator)
    context[:, CLIP_TOKENS:] = torch.randn(batch, t5_tokens, TEXT_DIM, generator=generator)
    return sd3_conditioning(context, torch.randn(batch, POOLED_DIM, generator=generator))


def record_model_calls(model_patcher, key="test_apply_model_recorder") -> list[dict]:
    """Register (on this patcher: clone first) an APPLY_MODEL wrapper recording each model call as the
    diffusion model receives it: x (model input), t (model_sampling.timestep: SD3 1000 sigma,
    Qwen-Image sigma), context, y (SD3's pooled vector, else None), c_concat (channels concatenated to x
    inside apply_model, e.g. HunyuanVideo 1.5's), kwargs (the call's other inputs,
    e.g. ref_latents), cond_or_uncond, sigma, schedule. (SD3's MMDiT has no DIFFUSION_MODEL wrapper.)"""
    import comfy.patcher_extension
    calls = []

    def record(executor, x, sigma, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        base = executor.class_obj
        y = kwargs.get("y")
        calls.append(dict(x=base.model_sampling.calculate_input(sigma, x).clone(),
                          t=base.model_sampling.timestep(sigma).float().clone(), context=c_crossattn.clone(),
                          y=None if y is None else y.clone(), kwargs=dict(kwargs),
                          c_concat=None if c_concat is None else c_concat.clone(),
                          cond_or_uncond=list(transformer_options.get("cond_or_uncond", [0])),
                          sigma=transformer_options["sigmas"].max().item() if "sigmas" in transformer_options else None,
                          schedule=transformer_options.get("sample_sigmas")))
        return executor(x, sigma, c_concat, c_crossattn, control, transformer_options, **kwargs)

    model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, key, record)
    return calls


def capture_joint_blocks(model_patcher) -> list[dict]:
    """Register (on this patcher: clone first) a replace patch on every joint block that calls the
    original block and records block index, inputs (img_in, txt_in, vec), outputs (img, txt; txt None
    after the pre_only block) and every attention call's output ([B, L, H*D]: first the joint one,
    context rows first, then MMDiT-X's image-only one where the block has it)."""
    records = []

    def make_patch(index):
        def patch(args, extra):
            seen = []
            options = dict(args.get("transformer_options") or {})

            def override(func, *a, **kw):
                out = func(*a, **kw)
                seen.append(out.clone())
                return out

            options["optimized_attention_override"] = override
            img_in, txt_in = args["img"].clone(), args["txt"].clone()
            out = extra["original_block"]({**args, "transformer_options": options})
            records.append(dict(block=index, img_in=img_in, txt_in=txt_in, vec=args["vec"].clone(), img=out["img"].clone(),
                                txt=None if out["txt"] is None else out["txt"].clone(), attn=seen))
            return out
        return patch

    for index in range(len(model_patcher.model.diffusion_model.joint_blocks)):
        model_patcher.set_model_patch_replace(make_patch(index), "dit", "double_block", index)
    return records
