"""Tiny random HunyuanVideo models built inside real ComfyUI from its own classes, with the
unet_config ComfyUI's model detection derives from a checkpoint's keys (comfy/model_detection.py,
the hunyuan_video branch: patch [1, 2, 2], axes for a 3-D grid, theta 256, qkv bias), tiny widths:

- "1.0": HunyuanVideo 1.0 T2V: CLIP-L pooled vector (vector_in), guidance embedding, 16 latent channels;
- "1.5": HunyuanVideo 1.5: no pooled vector nor guidance, the text type embedding, 32 latent channels and
  33 concatenated ones (a conditioning image's latent and a mask: zeros for text-to-video).

Latents [B, C, T, h, w]. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import dataclasses

import torch

from tiny_qwen import capture_blocks  # noqa: F401  (with attribute='double_blocks')
from tiny_sd3 import randomize, record_model_calls  # noqa: F401  (the one APPLY_MODEL recorder)

TEXT_DIM, POOLED_DIM = 48, 24

VARIANTS = {
    "1.0": dict(in_channels=16, out_channels=16, vec_in_dim=POOLED_DIM, guidance_embed=True, use_cond_type_embedding=False,
                vision_in_dim=None),
    "1.5": dict(in_channels=65, out_channels=32, vec_in_dim=None, guidance_embed=False, use_cond_type_embedding=True,
                vision_in_dim=None),
}
LATENT_CHANNELS = {"1.0": 16, "1.5": 32}


def hunyuan_config(variant="1.0", depth=3, single=1) -> dict:
    return dict(image_model="hunyuan_video", patch_size=[1, 2, 2], axes_dim=[8, 12, 12], meanflow=False,
                context_in_dim=TEXT_DIM, hidden_size=64, mlp_ratio=4.0, num_heads=2, depth=depth,
                depth_single_blocks=single, theta=256, qkv_bias=True, byt5=False, meanflow_sum=False,
                **VARIANTS[variant])


def build_hunyuan(seed=0, variant="1.0", depth=3, dtype=torch.float32, std=0.1):
    """(ComfyUI 0.3.64's HunyuanVideoParams lack 1.5's fields: they are left out there, as its model
    detection leaves them out; 1.5 itself needs 0.29.)"""
    import comfy.ldm.hunyuan_video.model as hunyuan
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    config = hunyuan_config(variant, depth)
    fields = {f.name for f in dataclasses.fields(hunyuan.HunyuanVideoParams)}
    config = {k: v for k, v in config.items() if k in fields or k == "image_model"}
    config_class = comfy.supported_models.HunyuanVideo15 if variant == "1.5" else comfy.supported_models.HunyuanVideo
    model_config = config_class(config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def random_hunyuan_conditioning(variant="1.0", batch=1, tokens=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pooled = torch.randn(batch, POOLED_DIM, generator=generator) if variant == "1.0" else None
    return [[torch.randn(batch, tokens, TEXT_DIM, generator=generator), {"pooled_output": pooled}]]


def tiny_hunyuan15_clip(seed=0):
    """A real comfy.sd.CLIP for HunyuanVideo 1.5: ComfyUI's HunyuanVideo15Tokenizer (its video prompt
    template) and HunyuanImage text-encoder class (the Qwen-Image encoder's template cropping) around
    tiny_qwen's tiny Qwen2.5-VL (width TEXT_DIM, 4 layers: the encoder reads the third-to-last); no byT5 (glyph text is not needed for maps)."""
    import comfy.text_encoders.hunyuan_image as hunyuan_image
    import comfy.text_encoders.hunyuan_video as hunyuan_video
    from tiny_qwen import tiny_qwen_clip
    return tiny_qwen_clip(seed, hunyuan_image.te(byt5=False), hunyuan_video.HunyuanVideo15Tokenizer, layers=4)
