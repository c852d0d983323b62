"""Tiny random Flux.1 models and a tiny Flux CLIP, built inside real ComfyUI (no weights needed),
and what the Flux-block families share: randomising weights and text encoders, the version gate of
Flux.2 / Chroma (ComfyUI 0.29), the call recorder and block capture of the family tests, a
concept's own token rows. Flux.2: tiny_flux2.py; Chroma: tiny_chroma.py. Import only after ComfyUI
is on sys.path (see conftest.py)."""
from __future__ import annotations

import dataclasses
import types

import torch

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
