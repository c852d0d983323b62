"""Tiny random single-stream models built inside real ComfyUI 0.29 from its own classes, with the
unet_config ComfyUI's model detection derives from a checkpoint's keys (comfy/model_detection.py):

- Z-Image (`lumina2` branch, dim 3840 there): z_image_modulation, time_scale 1000, rope_theta 256,
  ffn multiplier 8/3, pad_tokens_multiple 32 (the checkpoint has cap_pad_token), no GQA. The tiny
  width is 256: Z-Image's adaLN input is min(dim, 256) wide and its timestep embedder gives 256.
- Lumina 2 (dim 2304 there): SiLU adaLN, GQA (n_kv_heads < n_heads), no padding, time_scale 1.
- Krea 2 (`krea2` branch): GQA, a text fusion transformer over `txtlayers` tapped layers.

Latents: Z-Image / Lumina 2 [B, 16, h, w]; Krea 2 [B, 16, 1, h, w]. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import contextlib

import torch

from tiny_sd3 import randomize, record_model_calls  # noqa: F401  (the one APPLY_MODEL recorder)

VERSION_SKIP_REASON = "ComfyUI 0.3.64 has no single-stream (Z-Image, Krea 2) support; tested on 0.29"


def single_stream_supported() -> bool:
    """ComfyUI 0.29: Krea 2 and a NextDiT that marks its layers (block_index)."""
    try:
        import comfy.ldm.krea2.model  # noqa: F401
        import comfy.ldm.lumina.model as lumina
    except ImportError:
        return False
    return hasattr(lumina.NextDiT, "embed_cap")


Z_IMAGE_TEXT = 40  # tiny cap_feat_dim (real: Qwen3 4B's 2560)
KREA2_TXT_DIM, KREA2_TXT_LAYERS = 32, 3  # tiny txtdim / tapped layers (real 2560 x 12)
KREA2_TEXT = KREA2_TXT_DIM * KREA2_TXT_LAYERS

VARIANTS = {
    "z_image": dict(dim=256, n_heads=4, n_kv_heads=4, axes_dims=[16, 24, 24], axes_lens=[1536, 512, 512],
                    rope_theta=256.0, ffn_dim_multiplier=8.0 / 3.0, z_image_modulation=True, time_scale=1000.0,
                    pad_tokens_multiple=32),
    "lumina2": dict(dim=128, n_heads=4, n_kv_heads=2, axes_dims=[8, 12, 12], axes_lens=[300, 512, 512],
                    rope_theta=10000.0, ffn_dim_multiplier=4.0),
}


def z_image_config(variant="z_image", layers=3, text=Z_IMAGE_TEXT) -> dict:
    return dict(image_model="lumina2", patch_size=2, in_channels=16, cap_feat_dim=text, n_layers=layers, qk_norm=True,
                multiple_of=32, **VARIANTS[variant])


def _patcher(model_config, seed, std, dtype):
    import comfy.model_management
    import comfy.model_patcher
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({})
    randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def build_z_image(seed=0, variant="z_image", layers=3, dtype=torch.float32, std=0.1):
    """(ComfyUI 0.3.64 has Lumina 2 only, and a NextDiT without some of 0.29's options: those are
    left out there, as its model detection leaves them out.)"""
    import inspect

    import comfy.ldm.lumina.model as lumina
    import comfy.supported_models
    config = z_image_config(variant, layers)
    accepted = inspect.signature(lumina.NextDiT.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        config = {k: v for k, v in config.items() if k in accepted or k == "image_model"}
    config_class = getattr(comfy.supported_models, "ZImage" if variant == "z_image" else "Lumina2")
    return _patcher(config_class(config), seed, std, dtype)


def krea2_config(layers=3, txt_dim=KREA2_TXT_DIM, txt_layers=KREA2_TXT_LAYERS) -> dict:
    return dict(image_model="krea2", features=64, tdim=256, txtdim=txt_dim, heads=2, kvheads=1, multiplier=4,
                layers=layers, patch=2, channels=16, txtlayers=txt_layers, txtheads=2, txtkvheads=1)


def build_krea2(seed=0, layers=3, dtype=torch.float32, std=0.1, ref_method=None, txt_dim=KREA2_TXT_DIM,
                txt_layers=KREA2_TXT_LAYERS):
    import comfy.supported_models
    config = krea2_config(layers, txt_dim, txt_layers)
    if ref_method:
        config["default_ref_method"] = ref_method
    return _patcher(comfy.supported_models.Krea2(config), seed, std, dtype)


def random_conditioning(width, batch=1, tokens=7, seed=0, reference_latents=None):
    generator = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": None}
    if reference_latents is not None:
        extra["reference_latents"] = reference_latents
    return [[torch.randn(batch, tokens, width, generator=generator), extra]]


@contextlib.contextmanager
def capture_layers(model_patcher, blocks):
    """While open: every joint block of `blocks` (the module list) records its output (a forward
    hook, removed on exit) and its joint attention's output (an attention override on this patcher,
    keyed by the block_index the model sets). Yields (outputs [{"block", "out"}] in call order,
    {block: [attention outputs [B, L, H*D]]})."""
    records, attention = [], {}
    hooks = [block.register_forward_hook(
        lambda module, inputs, output, index=index: records.append({"block": index, "out": output.detach().clone()}))
        for index, block in enumerate(blocks)]

    def override(func, *args, **kwargs):
        out = func(*args, **kwargs)
        options = kwargs.get("transformer_options") or {}
        if "block_index" in options:
            attention.setdefault(options["block_index"], []).append(out.detach().clone())
        return out

    model_patcher.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    try:
        yield records, attention
    finally:
        for hook in hooks:
            hook.remove()


CLIP_WIDTH = 16  # the tiny text encoders' hidden size


def _llm_config(layers):
    return {"hidden_size": CLIP_WIDTH, "intermediate_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2,
            "num_key_value_heads": 1}


def tiny_z_image_clip(seed=0):
    """A real comfy.sd.CLIP for Z-Image: ComfyUI's ZImageTokenizer (its chat template, the Qwen2 BPE
    files shipped with ComfyUI) and Z-Image text-encoder class, with a tiny random Qwen3 (3 layers,
    width 16; ComfyUI reads the second-to-last hidden state). A Z-Image model for it: text width 16."""
    import types

    import comfy.sd
    import comfy.text_encoders.z_image as z_image_te
    from tiny_flux import _randomize_text_encoder
    target = types.SimpleNamespace(clip=z_image_te.te(), tokenizer=z_image_te.ZImageTokenizer, params={})
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, "qwen3_4b_model_config": _llm_config(3)})
    return _randomize_text_encoder(clip, seed)


def tiny_krea2_clip(seed=0):
    """A real comfy.sd.CLIP for Krea 2: ComfyUI's Krea2Tokenizer (the Qwen-Image system template) and
    Krea2TEModel (12 tapped hidden states of 36 layers, flattened; the template's system part
    dropped), with a tiny random Qwen3-VL language model (width 16); its vision tower (unused for
    text) replaced by an empty module. A Krea 2 model for it: txtdim 16, txtlayers 12."""
    import types
    from unittest import mock

    import comfy.sd
    import comfy.text_encoders.krea2 as krea2_te
    import comfy.text_encoders.qwen3vl as qwen3vl
    from tiny_flux import _randomize_text_encoder

    class NoVision(torch.nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()

    target = types.SimpleNamespace(clip=krea2_te.te(), tokenizer=krea2_te.Krea2Tokenizer, params={})
    with mock.patch.object(qwen3vl, "Qwen3VLVisionModel", NoVision):
        clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32,
                                                           "qwen3vl_4b_model_config": _llm_config(36)})
    return _randomize_text_encoder(clip, seed)
