"""Tiny random Chroma models (Flux's double blocks with an approximator) and a tiny Chroma T5,
ComfyUI 0.29 classes. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import types

import torch

from tiny_flux import TEXT_DIM, _TINY_T5, _known_fields, _patcher, _randomize_text_encoder

CHROMA_TEXT_DIM = TEXT_DIM  # tiny T5 width = the tiny Chroma's context_in_dim


def chroma_config(hidden=128, heads=2, depth=2, single=2, context=CHROMA_TEXT_DIM, approximator_width=64,
                  approximator_layers=2) -> dict:
    """The unet_config ComfyUI's model detection produces for a Chroma state dict (Flux.1 layout
    without vector_in/guidance_in/per-block modulation; an approximator instead), at tiny sizes."""
    head_dim = hidden // heads
    axes = [head_dim - 2 * (head_dim * 7 // 16), head_dim * 7 // 16, head_dim * 7 // 16]
    config = dict(image_model="chroma", in_channels=64, out_channels=64, context_in_dim=context, hidden_size=hidden,
                  mlp_ratio=4.0, num_heads=heads, depth=depth, depth_single_blocks=single, axes_dim=axes,
                  theta=10000, patch_size=2, qkv_bias=True, in_dim=64, out_dim=hidden,
                  hidden_dim=approximator_width, n_layers=approximator_layers, txt_ids_dims=[], vec_in_dim=None)
    import comfy.ldm.chroma.model as chroma_model
    return _known_fields(config, chroma_model.ChromaParams)


def build_chroma(seed=0, depth=2, single=2, hidden=128, heads=2, dtype=torch.float32, std=0.1, context=CHROMA_TEXT_DIM,
                 approximator_width=64, approximator_layers=2, manual_cast=None):
    """A ModelPatcher around a tiny random Chroma. Latents are Flux.1's [B, 16, h, w] (2x2 patches).
    Its approximator (distilled_guidance_layer) turns (timestep, guidance, slot index) into 344
    modulation vectors; the blocks take theirs from fixed slots."""
    import comfy.supported_models
    config = chroma_config(hidden, heads, depth, single, context, approximator_width, approximator_layers)
    return _patcher(comfy.supported_models.Chroma(config), seed, dtype, std, manual_cast)


def chroma_conditioning(context: torch.Tensor):
    """What CLIPTextEncode gives for Chroma: T5 features, no pooled vector (guidance defaults to 0)."""
    return [[context, {"pooled_output": None}]]


def random_chroma_conditioning(batch=1, tokens=8, seed=0, width=CHROMA_TEXT_DIM):
    generator = torch.Generator().manual_seed(seed)
    return chroma_conditioning(torch.randn(batch, tokens, width, generator=generator))


def tiny_chroma_clip(seed=0):
    """A real comfy.sd.CLIP for Chroma: ComfyUI's PixArt T5 tokenizer (no padding, end token </s>)
    and T5 wrapper, with a tiny random T5 (width 64 = the tiny Chroma's context_in_dim)."""
    import comfy.sd
    import comfy.text_encoders.pixart_t5 as pixart_t5
    target = types.SimpleNamespace(clip=pixart_t5.pixart_te(), tokenizer=pixart_t5.PixArtTokenizer, params={})
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, "t5xxl_model_config": dict(_TINY_T5)})
    return _randomize_text_encoder(clip, seed)
