"""Tiny random CogVideoX models built inside real ComfyUI 0.29 from its own classes, with the
unet_config ComfyUI's model detection derives from a checkpoint's keys (comfy/model_detection.py,
the cogvideox branch: heads = dim / 64 there, here 3 heads of 32: the 2B sin/cos embedding splits
the width in thirds; Conv2d patches of 2), tiny widths:

- "5b": RoPE on the video tokens (use_rotary_positional_embeddings, as CogVideoX-5B), no
  positional embedding;
- "2b": sin/cos positional embeddings added to the video tokens (CogVideoX-2B), no RoPE.

Latents [B, 16, T, h, w]. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import torch

from tiny_sd3 import randomize, record_model_calls  # noqa: F401  (the one APPLY_MODEL recorder)

TEXT_DIM = 48
VERSION_SKIP_REASON = "ComfyUI 0.3.64 has no CogVideoX class; tested on 0.29"


def cogvideox_supported() -> bool:
    try:
        import comfy.ldm.cogvideo.model  # noqa: F401
    except ImportError:
        return False
    return True


def cogvideox_config(variant="5b", layers=3) -> dict:
    return dict(image_model="cogvideox", num_attention_heads=3, attention_head_dim=32, time_embed_dim=32,
                num_layers=layers, in_channels=16, out_channels=16, patch_size=2, text_embed_dim=TEXT_DIM,
                sample_width=12, sample_height=8, sample_frames=9, max_text_seq_length=8,
                use_rotary_positional_embeddings=variant == "5b")


def build_cogvideox(seed=0, variant="5b", layers=3, dtype=torch.float32, std=0.05):
    """std 0.05 (the other families' tiny models: 0.1): at 0.1 CogVideoX's shared text/video weights
    give concept scores whose top-two gap is 8-20 at most pixels, a saturated softmax where the two
    float32 implementations' rounding moves a near-tie pixel's map by 2e-4; at 0.05 the gaps are 4-7,
    as in the other families' tiny models, and the maps agree within 1e-4 (measured 6e-5)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    model_config = comfy.supported_models.CogVideoX_T2V(cogvideox_config(variant, layers))
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def random_cogvideox_conditioning(batch=1, tokens=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, TEXT_DIM, generator=generator), {"pooled_output": None}]]
