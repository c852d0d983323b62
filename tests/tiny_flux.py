"""Tiny random Flux.1 models and a tiny Flux CLIP, built inside real ComfyUI (no weights needed).

Used by the tests, the test stand-in nodes and the benchmark. Import only after ComfyUI is on
sys.path (see conftest.py)."""
from __future__ import annotations

import dataclasses
import types

import torch

TEXT_DIM = 64  # tiny T5 width = the tiny Flux's context_in_dim
POOLED_DIM = 32  # tiny CLIP-L width = the tiny Flux's vec_in_dim


def flux_config(hidden=128, heads=2, depth=2, single=2, context=TEXT_DIM, pooled=POOLED_DIM,
                guidance=True, axes=None, in_channels=16) -> dict:
    head_dim = hidden // heads
    axes = list(axes or (head_dim - 2 * (head_dim * 7 // 16), head_dim * 7 // 16, head_dim * 7 // 16))
    config = dict(image_model="flux", in_channels=in_channels, out_channels=16, vec_in_dim=pooled,
                  context_in_dim=context, hidden_size=hidden, mlp_ratio=4.0, num_heads=heads, depth=depth,
                  depth_single_blocks=single, axes_dim=axes, theta=10000, patch_size=2, qkv_bias=True,
                  guidance_embed=guidance, txt_ids_dims=[])
    import comfy.ldm.flux.model as flux_model
    known = {f.name for f in dataclasses.fields(flux_model.FluxParams)} | {"image_model"}
    return {k: v for k, v in config.items() if k in known}


def build_flux(seed=0, dtype=torch.float32, std=0.1, schnell=False, manual_cast=None, model_class=None, **config):
    """A ModelPatcher around a tiny random Flux.1 (dev unless schnell). dtype: how weights are
    stored; manual_cast: the compute dtype when it differs (ComfyUI casts weights on the fly)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    unet_config = flux_config(guidance=not schnell, **config)
    model_class = model_class or (comfy.supported_models.FluxSchnell if schnell else comfy.supported_models.Flux)
    model_config = model_class(unet_config)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({})
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in model.diffusion_model.state_dict().items():
        values = torch.randn(param.shape, generator=generator) * std
        if "norm" in name:  # QK-norm scales near 1
            values = values + 1.0
        state[name] = values.to(dtype)
    model.diffusion_model.load_state_dict(state)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def tiny_clip(seed=0):
    """A real comfy.sd.CLIP with the real Flux tokenizers and tiny random clip_l / t5xxl encoders."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.text_encoders.flux
    import comfy.text_encoders.t5

    clip_config = {"hidden_act": "quick_gelu", "hidden_size": POOLED_DIM, "intermediate_size": 64,
                   "layer_norm_eps": 1e-5, "max_position_embeddings": 77, "num_attention_heads": 2,
                   "num_hidden_layers": 1, "projection_dim": POOLED_DIM, "vocab_size": 49408,
                   "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1, "model_type": "clip_text_model"}
    t5_config = {"d_ff": 64, "d_kv": 16, "d_model": TEXT_DIM, "dense_act_fn": "gelu_pytorch_tanh",
                 "is_gated_act": True, "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_heads": 2,
                 "num_layers": 1, "relative_attention_num_buckets": 32, "vocab_size": 32128,
                 "eos_token_id": 1, "pad_token_id": 0, "decoder_start_token_id": 0}

    class TinyFluxClipModel(comfy.text_encoders.flux.FluxClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False,
                                                     textmodel_json_config=clip_config, model_options=model_options)
            self.t5xxl = comfy.sd1_clip.SDClipModel(
                device=device, layer="last", textmodel_json_config=t5_config, dtype=dtype,
                special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                model_options={**model_options, "model_name": "t5xxl"})
            self.dtypes = {dtype}

    target = types.SimpleNamespace(clip=TinyFluxClipModel, tokenizer=comfy.text_encoders.flux.FluxTokenizer, params={})
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32})
    generator = torch.Generator().manual_seed(seed)
    model = clip.cond_stage_model
    with torch.no_grad():
        for name, param in model.state_dict().items():
            if param.is_floating_point():
                values = torch.randn(param.shape, generator=generator) * 0.5
                if "norm" in name or "layer_norm" in name:
                    values = values * 0.2 + 1.0
                param.copy_(values.to(param.dtype))
    return clip


def conditioning(context: torch.Tensor, pooled: torch.Tensor, guidance=3.5):
    return [[context, {"pooled_output": pooled, "guidance": guidance}]]


def random_conditioning(batch=1, tokens=8, seed=0, guidance=3.5):
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(batch, tokens, TEXT_DIM, generator=generator)
    pooled = torch.randn(batch, POOLED_DIM, generator=generator)
    return conditioning(context, pooled, guidance)
