"""Tiny random Flux.2 (dev, Klein) models and their tiny text encoders (Mistral 3 / Qwen3 with
ComfyUI's own tokenizers and wrappers), ComfyUI 0.29 classes. Import after ComfyUI is on sys.path."""
from __future__ import annotations

import types

import torch

from tiny_flux import _known_fields, _patcher, _randomize_text_encoder

FLUX2_LAYERS = [1, 2, 3]  # hidden states the tiny Flux.2 text encoders stack (real: [10,20,30] / [9,18,27])

FLUX2_LM_WIDTH = 32  # tiny Mistral 3 / Qwen3 hidden size

FLUX2_TEXT_DIM = len(FLUX2_LAYERS) * FLUX2_LM_WIDTH  # 96: the tiny Flux.2's context_in_dim

FLUX2_PROMPT_LENGTH = 512  # ComfyUI pads Flux.2 prompts (Klein: tokenizer, pad tokens; dev: model, zeros)


def flux2_config(hidden=128, heads=2, depth=2, single=2, context=FLUX2_TEXT_DIM, guidance=True, txt_norm=False) -> dict:
    """The unet_config ComfyUI 0.29's model detection produces for a Flux.2 state dict
    (comfy/model_detection.py, "flux2" branch), at tiny sizes: 4 RoPE axes (the prompt's
    position on axis 3), no biases, SiLU-gated MLP, one shared modulation per stream."""
    head_dim = hidden // heads
    config = dict(image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None, context_in_dim=context,
                  hidden_size=hidden, mlp_ratio=3.0, num_heads=heads, depth=depth, depth_single_blocks=single,
                  axes_dim=[head_dim // 4] * 4, theta=2000, patch_size=1, qkv_bias=False, guidance_embed=guidance,
                  txt_ids_dims=[3], global_modulation=True, mlp_silu_act=True, ops_bias=False,
                  default_ref_method="index", ref_index_scale=10.0, yak_mlp=False, txt_norm=txt_norm)
    import comfy.ldm.flux.model as flux_model
    return _known_fields(config, flux_model.FluxParams)


def build_flux2(seed=0, klein=False, depth=2, single=2, hidden=128, heads=2, dtype=torch.float32, std=0.1,
                txt_norm=False, context=FLUX2_TEXT_DIM, manual_cast=None):
    """A ModelPatcher around a tiny random Flux.2: dev-like (guidance embedding) or Klein-like
    (klein=True: no guidance embedding). Latents are [B, 128, h, w], one token per latent pixel.
    txt_norm=True adds the optional RMSNorm on the prompt features (neither real dev nor Klein has it)."""
    import comfy.supported_models
    config = flux2_config(hidden, heads, depth, single, context, guidance=not klein, txt_norm=txt_norm)
    return _patcher(comfy.supported_models.Flux2(config), seed, dtype, std, manual_cast)


def flux2_conditioning(context: torch.Tensor, guidance=None):
    """What CLIPTextEncode (+ FluxGuidance for dev) gives for Flux.2: no pooled vector. ComfyUI
    left-pads the context to 512 tokens with zeros before the model sees it."""
    extra = {"pooled_output": None}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[context, extra]]


def random_flux2_conditioning(batch=1, tokens=8, seed=0, guidance=None, width=FLUX2_TEXT_DIM):
    generator = torch.Generator().manual_seed(seed)
    return flux2_conditioning(torch.randn(batch, tokens, width, generator=generator), guidance)


def _llm_config(vocab_size):
    return {"vocab_size": vocab_size, "hidden_size": FLUX2_LM_WIDTH, "intermediate_size": 64,
            "num_hidden_layers": max(FLUX2_LAYERS) + 1, "num_attention_heads": 2, "num_key_value_heads": 1}


def tiny_klein_clip(seed=0):
    """A real comfy.sd.CLIP for Flux.2 Klein: ComfyUI's KleinTokenizer (the Qwen chat template,
    Qwen2 BPE files shipped with ComfyUI, right-padded to 512 with <|endoftext|>) and its Flux.2
    text-encoder wrapper around a tiny random Qwen3 (4 layers, width 32; hidden states 1, 2, 3
    stacked: output width 96)."""
    import functools

    import comfy.sd
    import comfy.text_encoders.flux as flux_te

    def text_encoder(device="cpu", dtype=None, model_options={}):
        return flux_te.Flux2TEModel(device=device, dtype=dtype, model_options=model_options, name="qwen3_4b",
                                    clip_model=functools.partial(flux_te.Qwen3_4BModel, layer=list(FLUX2_LAYERS)))

    target = types.SimpleNamespace(clip=text_encoder, tokenizer=flux_te.KleinTokenizer, params={})
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32,
                                                       "qwen3_4b_model_config": _llm_config(151936)})
    return _randomize_text_encoder(clip, seed)


# Mistral's tekken special tokens, in their real ranks (0..19); enough for the Flux.2 template.


TEKKEN_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                   "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]", "[IMG_END]",
                   "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CONTENT]"]


TEKKEN_PATTERN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
                  r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
                  r"\s*[\r\n]+|\s+(?!\S)|\s+")


TEKKEN_WORDS = ["dog", "sky", " sky", "scraper", " window", "window", "for", " the", "You", " are", " image",
                " object", "tion", "ing"]


def tiny_tekken_data(words=TEKKEN_WORDS) -> bytes:
    """A tekken.json (Mistral's tokenizer format, as stored under "tekken_model" in a Flux.2 dev
    text-encoder checkpoint): byte-level BPE with the 256 bytes, every prefix of `words` as merges,
    and the special tokens at their real ranks. Token id = rank + number of special tokens."""
    import base64
    import json
    pieces = [bytes([i]) for i in range(256)]
    for word in words:
        raw = word.encode()
        for end in range(2, len(raw) + 1):
            if raw[:end] not in pieces:
                pieces.append(raw[:end])
    data = {"config": {"pattern": TEKKEN_PATTERN, "default_vocab_size": len(pieces) + len(TEKKEN_SPECIALS),
                       "default_num_special_tokens": len(TEKKEN_SPECIALS)},
            "vocab": [{"rank": r, "token_bytes": base64.b64encode(p).decode(), "token_str": None}
                      for r, p in enumerate(pieces)],
            "special_tokens": [{"rank": r, "token_str": s, "is_control": True} for r, s in enumerate(TEKKEN_SPECIALS)]}
    return json.dumps(data).encode()


def _tekken_loader_for_this_transformers(load_mistral_tokenizer):
    """ComfyUI 0.29 builds the Mistral tokenizer with transformers' old MistralConverter(vocab=...);
    transformers 5 changed it to MistralConverter(vocab_file), so on this venv ComfyUI's own
    loader raises TypeError even for a real checkpoint. Tests then convert the same tekken data
    with the new converter (same ids: specials first, then rank + number of specials)."""
    def load(data):
        try:
            return load_mistral_tokenizer(data)
        except TypeError:
            import os
            import tempfile

            from transformers.integrations.mistral import MistralConverter
            if torch.is_tensor(data):
                data = data.numpy().tobytes()
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "tekken.json")
                with open(path, "wb") as f:
                    f.write(data)
                return {"tokenizer_object": MistralConverter(vocab_file=path).converted(), "legacy": False}
    return load


def tiny_flux2_clip(seed=0):
    """A real comfy.sd.CLIP for Flux.2 dev: ComfyUI's Flux2Tokenizer (Mistral system prompt and
    [INST] template, <s> first, no padding: the model left-pads to 512 with zeros) reading a tiny
    tekken vocabulary, and its Flux.2 text-encoder wrapper around a tiny random Mistral 3 (4
    layers, width 32; hidden states 1, 2, 3 stacked: output width 96)."""
    import functools
    import json
    from unittest import mock

    import comfy.sd
    import comfy.text_encoders.flux as flux_te

    def text_encoder(device="cpu", dtype=None, model_options={}):
        return flux_te.Flux2TEModel(device=device, dtype=dtype, model_options=model_options, name="mistral3_24b",
                                    clip_model=functools.partial(flux_te.Mistral3_24BModel, layer=list(FLUX2_LAYERS)))

    data = tiny_tekken_data()
    vocab_size = json.loads(data)["config"]["default_vocab_size"]
    target = types.SimpleNamespace(clip=text_encoder, tokenizer=flux_te.Flux2Tokenizer, params={})
    loader = _tekken_loader_for_this_transformers(flux_te.load_mistral_tokenizer)
    with mock.patch.object(flux_te, "load_mistral_tokenizer", loader):
        clip = comfy.sd.CLIP(target=target, tokenizer_data={"tekken_model": data},
                             model_options={"dtype": torch.float32, "mistral3_24b_model_config": _llm_config(vocab_size)})
    return _randomize_text_encoder(clip, seed)
