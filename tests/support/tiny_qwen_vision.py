"""A tiny Qwen-Image text encoder that can see pictures, for the Qwen-Image-Edit workflow: the one
of tiny_qwen.tiny_qwen_clip with a tiny real Qwen2.5-VL vision tower in place of its empty one, so
TextEncodeQwenImageEditPlus runs unchanged (its picture is embedded into the prompt by ComfyUI's own
Qwen2VLVisionTransformer and patch merger). Import after ComfyUI is on sys.path."""
from __future__ import annotations

import torch

from tiny_qwen import TEXT_DIM, tiny_qwen_clip

VISION_WIDTH = 32  # tiny (real: 1280 wide, 32 layers)


def tiny_qwen_vl_clip(seed=0, width=VISION_WIDTH, layers=2):
    """tiny_qwen_clip(seed) (the same text weights) whose Qwen2.5-VL gets a real vision tower of
    ComfyUI's class, `layers` blocks `width` wide, merging 2x2 patches into TEXT_DIM-wide picture
    tokens; random weights (std 0.1, norms near 1)."""
    import comfy.text_encoders.qwen_vl as qwen_vl
    clip = tiny_qwen_clip(seed)
    encoder = clip.cond_stage_model.qwen25_7b
    visual = qwen_vl.Qwen2VLVisionTransformer(
        hidden_size=width, output_hidden_size=TEXT_DIM, intermediate_size=2 * width, num_heads=2,
        num_layers=layers, device="cpu", dtype=torch.float32, ops=encoder.operations)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in visual.state_dict().items():
            if param.is_floating_point():
                values = torch.randn(param.shape, generator=generator) * 0.1
                if "norm" in name or name.endswith("ln_q.weight"):
                    values = values * 0.2 + 1.0
                param.copy_(values)
    encoder.transformer.visual = visual.eval()
    return clip
