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


# ---------------------------------------------------------------------------------------------
# Flux.2 (dev, Klein) and Chroma: tiny random models and tiny text encoders, ComfyUI 0.29 classes.
# ---------------------------------------------------------------------------------------------

FLUX2_LAYERS = [1, 2, 3]  # hidden states the tiny Flux.2 text encoders stack (real: [10,20,30] / [9,18,27])
FLUX2_LM_WIDTH = 32  # tiny Mistral 3 / Qwen3 hidden size
FLUX2_TEXT_DIM = len(FLUX2_LAYERS) * FLUX2_LM_WIDTH  # 96: the tiny Flux.2's context_in_dim
FLUX2_PROMPT_LENGTH = 512  # ComfyUI pads Flux.2 prompts (Klein: tokenizer, pad tokens; dev: model, zeros)
CHROMA_TEXT_DIM = TEXT_DIM  # tiny T5 width = the tiny Chroma's context_in_dim

_TINY_T5 = {"d_ff": 64, "d_kv": 16, "d_model": TEXT_DIM, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True,
            "layer_norm_epsilon": 1e-6, "model_type": "t5", "num_heads": 2, "num_layers": 1,
            "relative_attention_num_buckets": 32, "vocab_size": 32128, "eos_token_id": 1, "pad_token_id": 0,
            "decoder_start_token_id": 0}


def _known_fields(config: dict, params_class) -> dict:
    known = {f.name for f in dataclasses.fields(params_class)} | {"image_model"}
    return {k: v for k, v in config.items() if k in known}


def _randomize(module: torch.nn.Module, seed: int, std: float, dtype=None):
    """Seeded normal weights (std ~0.1, so the prompt matters); parameters named like a norm
    (QK-norm, txt_norm, the approximator's norms) are near 1, as in build_flux."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, param in module.state_dict().items():
        if not param.is_floating_point():
            state[name] = param
            continue
        values = torch.randn(param.shape, generator=generator) * std
        if "norm" in name:
            values = values + 1.0
        state[name] = values.to(dtype or param.dtype)
    module.load_state_dict(state)


def _patcher(model_config, seed, dtype, std, manual_cast=None):
    import comfy.model_management
    import comfy.model_patcher
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({})
    _randomize(model.diffusion_model, seed, std, dtype)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


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


def chroma_conditioning(context: torch.Tensor):
    """What CLIPTextEncode gives for Chroma: T5 features, no pooled vector (guidance defaults to 0)."""
    return [[context, {"pooled_output": None}]]


def random_chroma_conditioning(batch=1, tokens=8, seed=0, width=CHROMA_TEXT_DIM):
    generator = torch.Generator().manual_seed(seed)
    return chroma_conditioning(torch.randn(batch, tokens, width, generator=generator))


def _randomize_text_encoder(clip, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in clip.cond_stage_model.state_dict().items():
            if param.is_floating_point():
                values = torch.randn(param.shape, generator=generator) * 0.5
                if "norm" in name:
                    values = values * 0.2 + 1.0
                param.copy_(values.to(param.dtype))
    return clip


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


def tiny_chroma_clip(seed=0):
    """A real comfy.sd.CLIP for Chroma: ComfyUI's PixArt T5 tokenizer (no padding, end token </s>)
    and T5 wrapper, with a tiny random T5 (width 64 = the tiny Chroma's context_in_dim)."""
    import comfy.sd
    import comfy.text_encoders.pixart_t5 as pixart_t5
    target = types.SimpleNamespace(clip=pixart_t5.pixart_te(), tokenizer=pixart_t5.PixArtTokenizer, params={})
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, "t5xxl_model_config": dict(_TINY_T5)})
    return _randomize_text_encoder(clip, seed)


def own_token_positions(clip, text: str) -> list[int]:
    """Rows of clip.encode_from_tokens(clip.tokenize(text)) that belong to `text` itself, for the
    Flux.2 (Mistral 3 / Qwen3) and Chroma (T5) encoders: the tokens that differ from the same
    template around an empty text. Start, end and pad tokens (word id 0) are never included;
    template tokens (word id 1, like the text: the template is tokenized together with it) are
    removed as the common prefix and suffix with the empty text's tokens.

    Rows are positions in the text encoder's output. For Flux.2 dev the model later left-pads
    that output to 512 rows with zeros (shift by 512 - length); Klein's output already has 512
    rows (right padding)."""
    (batches,) = clip.tokenize(text, return_word_ids=True).values()
    (empty,) = clip.tokenize("", return_word_ids=True).values()
    if len(batches) != 1 or len(empty) != 1:
        raise ValueError(f"own_token_positions: {text!r} spans {len(batches)} encoder windows; expected 1")
    words = [(i, int(t[0])) for i, t in enumerate(batches[0]) if t[2] != 0]
    template = [int(t[0]) for t in empty[0] if t[2] != 0]
    prefix = 0
    while prefix < min(len(words), len(template)) and words[prefix][1] == template[prefix]:
        prefix += 1
    suffix = 0
    while suffix < len(template) - prefix and words[-1 - suffix][1] == template[-1 - suffix]:
        suffix += 1
    return [i for i, _ in words[prefix:len(words) - suffix]]


FAMILIES_SKIP_REASON = ("ComfyUI 0.3.64 has no Flux.2/Chroma-on-Flux classes; these families are tested on 0.29")


def families_supported() -> bool:
    """True when ComfyUI has Flux.2 and runs Chroma on Flux's own double blocks (0.29); False on
    0.3.64 (no Flux.2; Chroma has its own block class there) or without ComfyUI."""
    try:
        import comfy.ldm.chroma.model as chroma_model
        import comfy.ldm.flux.layers as flux_layers
        import comfy.supported_models
    except ImportError:
        return False
    return hasattr(comfy.supported_models, "Flux2") and chroma_model.DoubleStreamBlock is flux_layers.DoubleStreamBlock


def family_test_marks(comfyui_found: bool) -> list:
    """pytestmark of a Flux.2/Chroma test module: `comfy`, and where ComfyUI lacks those classes
    (0.3.64) a skip that says so (conftest lets exactly that skip pass under CI=true)."""
    import pytest
    marks = [pytest.mark.comfy]
    if comfyui_found and not families_supported():
        marks.append(pytest.mark.skip(reason=FAMILIES_SKIP_REASON))
    return marks


def _is_chroma(model_patcher) -> bool:
    return hasattr(model_patcher.model.diffusion_model, "distilled_guidance_layer")


def record_diffusion_calls(model_patcher, key="test_family_recorder") -> list[dict]:
    """Register (on this patcher: clone first) a DIFFUSION_MODEL wrapper that records each call's
    inputs for Flux.1/Flux.2 (x, timestep, context, y, guidance, ref_latents, ...) and Chroma
    (x, timestep, context, guidance, ...): dicts with x, t, context, guidance, y, attention_mask,
    ref_latents (Flux.1/Flux.2 reference images, or None), cond_or_uncond, sigma, schedule (tensors cloned)."""
    import comfy.patcher_extension
    calls = []
    chroma = _is_chroma(model_patcher)

    def clone(value):
        return value.clone() if torch.is_tensor(value) else value

    def record(executor, *args, **kwargs):
        x, timestep, context = args[0], args[1], args[2]
        refs = None
        if chroma:
            y, guidance = None, args[3] if len(args) > 3 else kwargs.get("guidance")
        else:
            y = args[3] if len(args) > 3 else kwargs.get("y")
            guidance = args[4] if len(args) > 4 else kwargs.get("guidance")
            refs = args[5] if len(args) > 5 else kwargs.get("ref_latents")
        options = next((a for a in reversed(args) if isinstance(a, dict)), kwargs.get("transformer_options", {}))
        calls.append(dict(x=clone(x), t=clone(timestep), context=clone(context), y=clone(y), guidance=clone(guidance),
                          attention_mask=clone(kwargs.get("attention_mask")),
                          ref_latents=None if refs is None else [clone(r) for r in refs],
                          cond_or_uncond=list(options.get("cond_or_uncond", [0])),
                          sigma=options["sigmas"].max().item() if "sigmas" in options else None,
                          schedule=clone(options.get("sample_sigmas"))))
        return executor(*args, **kwargs)

    model_patcher.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, key, record)
    return calls


def capture_double_blocks(model_patcher) -> list[dict]:
    """Register (on this patcher: clone first) a replace patch on every double block that calls
    the original block and records, per call and block: block index, its inputs img_in/txt_in,
    its outputs img/txt, the joint attention output attn ([B, L + N, d], prompt rows first,
    before proj; via optimized_attention_override scoped to that block), vec (the modulations
    the block got), pe and attn_mask. Results keep ComfyUI's in-place updates out (inputs cloned)."""
    records = []

    def make_patch(index):
        def patch(args, extra):
            seen = {}
            options = dict(args.get("transformer_options") or {})
            previous = options.get("optimized_attention_override")

            def override(func, *a, **kw):
                out = previous(func, *a, **kw) if previous is not None else func(*a, **kw)
                seen["attn"] = out.clone()
                return out

            options["optimized_attention_override"] = override
            img_in, txt_in = args["img"].clone(), args["txt"].clone()
            out = extra["original_block"]({**args, "img": args["img"].clone(), "txt": args["txt"].clone(),
                                           "transformer_options": options})
            records.append(dict(block=index, img_in=img_in, txt_in=txt_in, img=out["img"].clone(),
                                txt=out["txt"].clone(), attn=seen.get("attn"), vec=args["vec"], pe=args["pe"],
                                attn_mask=args.get("attn_mask")))
            return out
        return patch

    for index in range(len(model_patcher.model.diffusion_model.double_blocks)):
        model_patcher.set_model_patch_replace(make_patch(index), "dit", "double_block", index)
    return records
