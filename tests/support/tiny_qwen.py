"""Tiny random Qwen-Image models built inside real ComfyUI from its own classes, with the
unet_config ComfyUI's model detection derives from a Qwen-Image checkpoint's keys
(comfy/model_detection.py: image_model qwen_image, in_channels from img_in, num_layers from the
block count) plus the widths the real model takes by default, here tiny. Latents are
[B, 16, 1, h, w]. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import torch

from tiny_sd3 import record_model_calls  # noqa: F401  (one APPLY_MODEL recorder for every family without DIFFUSION_MODEL wrapper use)

TEXT_DIM = 48  # tiny joint_attention_dim (real: Qwen2.5-VL 7B's 3584)


def qwen_config(layers=3, heads=2, head_dim=32, text=TEXT_DIM, ref_method=None) -> dict:
    config = dict(image_model="qwen_image", in_channels=64, out_channels=16, num_layers=layers,
                  attention_head_dim=head_dim, num_attention_heads=heads, joint_attention_dim=text,
                  axes_dims_rope=(head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8))
    if ref_method:
        config["default_ref_method"] = ref_method
    return config


def build_qwen_image(seed=0, layers=3, dtype=torch.float32, std=0.1, ref_method=None):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from tiny_sd3 import randomize
    model_config = comfy.supported_models.QwenImage(qwen_config(layers, ref_method=ref_method))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def random_qwen_conditioning(batch=1, tokens=7, seed=0, reference_latents=None):
    generator = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": None}
    if reference_latents is not None:
        extra["reference_latents"] = reference_latents
    return [[torch.randn(batch, tokens, TEXT_DIM, generator=generator), extra]]


def capture_blocks(model_patcher, attribute="transformer_blocks") -> list[dict]:
    """A replace patch ("double_block") on every block of the diffusion model's `attribute` list
    recording its outputs and its attention outputs (the joint one first)."""
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
            out = extra["original_block"]({**args, "transformer_options": options})
            records.append(dict(block=index, img=out["img"].clone(), txt=out["txt"].clone(), attn=seen))
            return out
        return patch

    for index in range(len(getattr(model_patcher.model.diffusion_model, attribute))):
        model_patcher.set_model_patch_replace(make_patch(index), "dit", "double_block", index)
    return records


def tiny_qwen_clip(seed=0, text_encoder=None, tokenizer=None, layers=2):
    """A real comfy.sd.CLIP for Qwen-Image: ComfyUI's QwenImageTokenizer (its prompt template, the
    Qwen2.5 BPE files shipped with ComfyUI) and its Qwen-Image text-encoder class, with a tiny random
    Qwen2.5-VL language model (2 layers, width TEXT_DIM). Its vision tower (1280 wide, unused for
    text) is replaced by an empty module while the encoder is built. text_encoder / tokenizer: another
    family's classes around the same Qwen2.5-VL (HunyuanVideo 1.5's), with `layers` layers."""
    import types
    from unittest import mock

    import comfy.sd
    import comfy.text_encoders.qwen_image as qwen_te
    import comfy.text_encoders.qwen_vl as qwen_vl

    class NoVision(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

    target = types.SimpleNamespace(clip=text_encoder or qwen_te.te(), tokenizer=tokenizer or qwen_te.QwenImageTokenizer,
                                   params={})
    config = {"hidden_size": TEXT_DIM, "intermediate_size": 64, "num_hidden_layers": layers, "num_attention_heads": 2,
              "num_key_value_heads": 1}
    with mock.patch.object(qwen_vl, "Qwen2VLVisionTransformer", NoVision):
        clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, "qwen25_7b_model_config": config})
    from tiny_flux import _randomize_text_encoder
    return _randomize_text_encoder(clip, seed)
