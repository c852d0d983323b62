"""ModelPatcher glue that runs the concept stream beside a joint-attention model. It never names
a family: what differs between families (their blocks, text side, token layout, encode inputs) is
asked of the model's description in nodes/families/.

Only ModelPatcher APIs are used (clone, block replace patches, wrappers, the attention
override): the incoming model is never mutated, and nothing stays hooked after a run.

Per patched model: a ConceptStore (concepts, settings, access to captured maps) in transformer_options.
Per sampling run: a SamplingRun put in place by the OUTER_SAMPLE wrapper, dropped after.
Per predict_noise call: the first calc_cond_batch that contains the guider's positive prompt is
the regular conditional pass (RegularPass); extra passes of guidance nodes (skip-layer, PAG, SAG,
perp-neg's empty prompt) come later or lack the positive prompt, and never contribute.
Per model call: a ConceptForward (the concept stream's state between blocks) put in place
by the APPLY_MODEL wrapper (BaseModel.apply_model: every family has it) for the full-frame positive rows of a selected step's regular pass
(area-conditioned chunks run on a crop and pass through untouched).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from einops import rearrange

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils

from .capture import (
    ConceptCapture, ConceptConfig, ConceptInputError, ConceptMaps, ConceptStore, patch_fingerprint,
)
from .concept_stream import concept_attention, cross_attention_scores, normalize_over_concepts, output_space_scores
from .families import Family, ModelCall, UnsupportedModelError, diffusion_model, family_of  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

STORE_KEY = "concept_attention"
CAPTURE_KEY = "concept_attention_capture"  # the SamplingRun, in the guider's options during a run
PASS_KEY = "concept_attention_pass"  # the RegularPass, only in the regular calc_cond_batch's options
FORWARD_KEY = "concept_attention_forward"
WRAPPER_KEY = "concept_attention"
WRAPPER_TYPES = (comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, comfy.patcher_extension.WrappersMP.PREDICT_NOISE,
                 comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, comfy.patcher_extension.WrappersMP.APPLY_MODEL)
ENCODE_ROWS_PER_PASS = 8

class _StopAfterConcepts(Exception):
    """Ends an encode pass after the last scored block (the blocks after it are not needed)."""


def concept_store(model) -> ConceptStore | None:
    return model.model_options.get("transformer_options", {}).get(STORE_KEY)


def latent_scale(model) -> int:
    """Image pixels per latent pixel (the VAE's downscale): 8 for Flux.1 and Chroma, 16 for Flux.2."""
    return int(getattr(model.get_model_object("latent_format"), "spacial_downscale_ratio", 8))


def temporal_scale(model) -> int:
    """A video latent's pixel frames per latent frame after the first (the VAE's temporal
    compression: 4 for HunyuanVideo and CogVideoX; the family's where the latent format does not say,
    as in ComfyUI 0.3.64); 1 for image models."""
    stated = getattr(model.get_model_object("latent_format"), "temporal_downscale_ratio", None)
    return int(stated or family_of(model).temporal_scale)


def model_signature(model, family: Family, diffusion) -> str:
    """What identifies the model for sharing captured maps between identical patches: the family's
    architecture and weight sample, and the weight patches (LoRAs)."""
    parts = family.signature(diffusion)
    parts.append(sorted((key, float(p[0]), float(p[2])) for key, patches in model.patches.items() for p in patches))
    return repr(parts)


def patch(model, config: ConceptConfig):
    """Clone `model` and hook the concept stream into it. A model patched before is re-patched:
    the new concepts replace the old ones (one concept stream per model)."""
    family = family_of(model)
    diffusion = diffusion_model(model)
    depth = len(family.blocks(diffusion))
    if config.blocks[-1] >= depth:
        raise ConceptInputError(f"blocks: block {config.blocks[-1]} does not exist; this model has "
                                f"{family.block_kind}s 0-{depth - 1}.")
    text_dim = family.text_dim(diffusion)
    if config.embeddings.ndim != 2 or config.embeddings.shape != (len(config.names), text_dim):
        raise ConceptInputError(
            f"concept embeddings: expected shape [{len(config.names)}, {text_dim}] (one row per concept, "
            f"the model's text width), received {list(config.embeddings.shape)}. For {family.name} encode "
            f"concepts with {family.text_encoders}.")

    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    options[STORE_KEY] = ConceptStore(config, patch_fingerprint(config, model_signature(model, family, diffusion)),
                                      family=family, latent_scale=latent_scale(model))
    options[STORE_KEY].temporal_scale = temporal_scale(model)
    for wrapper_type in WRAPPER_TYPES:
        patched.remove_wrappers_with_key(wrapper_type, WRAPPER_KEY)
    wrappers = (capture_sampling_run, mark_regular_pass, select_regular_pass, start_concept_stream)
    for wrapper_type, wrapper in zip(WRAPPER_TYPES, wrappers):
        patched.add_wrapper_with_key(wrapper_type, WRAPPER_KEY, wrapper)
    replaced = options.get("patches_replace", {}).get("dit", {})
    for index in range(config.stream_depth if family.block_patch else 0):
        previous = replaced.get((family.block_patch, index))
        if isinstance(previous, BlockHook):
            previous = previous.previous
        patched.set_model_patch_replace(BlockHook(index, previous), "dit", family.block_patch, index)
    return patched


class SamplingRun:
    """One sampling run: its capture, the guider (to recognise its positive prompt) and whether the
    current predict_noise call still has its regular pass to come."""

    def __init__(self, capture: ConceptCapture, store: ConceptStore, guider):
        self.capture = capture
        self.family = store.family
        self.latent_scale = store.latent_scale
        self.temporal_scale = store.temporal_scale
        self.guider = guider
        self.regular_pending = False

    def __deepcopy__(self, memo):
        return self

    def positive_index(self, conds) -> int | None:
        """Where the guider's positive prompt is in this calc_cond_batch's conds (CFGGuider: 0;
        DualCFGGuider: 2), or None when it is not there."""
        guider_conds = getattr(self.guider, "conds", None)
        positive = guider_conds.get("positive") if isinstance(guider_conds, dict) else None
        if positive is None:  # a guider without a "positive" prompt: the usual order, positive first
            return 0 if conds and conds[0] is not None else None
        return next((i for i, cond in enumerate(conds) if cond is positive), None)


@dataclass(frozen=True)
class RegularPass:
    """Marks the model calls of a step's regular conditional pass."""

    run: SamplingRun
    positive_index: int  # the cond_or_uncond value of the positive prompt's chunks
    full_size: tuple[int, ...]  # spatial size of the whole latent; smaller chunks are area crops

    def __deepcopy__(self, memo):
        return self


def capture_sampling_run(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: a fresh capture per run; the maps are recorded under the output latent."""
    guider = executor.class_obj
    original_options = guider.model_options
    store = original_options.get("transformer_options", {}).get(STORE_KEY)
    if store is None:
        return executor(*args, **kwargs)
    capture = ConceptCapture(store.config)
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    guider.model_options.setdefault("transformer_options", {})[CAPTURE_KEY] = SamplingRun(capture, store, guider)
    try:
        output = executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
    try:
        maps = capture.result("sampling")
        store.last_failure = capture.failure
        if maps is not None and torch.is_tensor(output) and not getattr(output, "is_nested", False):
            store.record(output, maps)
    except Exception as error:  # never fail a finished sampling run because of its maps
        log.warning("Concept Attention: could not keep this run's maps: %s", error)
    return output


def mark_regular_pass(executor, *args, **kwargs):
    """PREDICT_NOISE wrapper: this call's first calc_cond_batch with the positive prompt is regular."""
    run = executor.class_obj.model_options.get("transformer_options", {}).get(CAPTURE_KEY)
    if run is None:
        return executor(*args, **kwargs)
    run.regular_pending = True
    try:
        return executor(*args, **kwargs)
    finally:
        run.regular_pending = False


def select_regular_pass(executor, model, conds, x_in, timestep, model_options, *args, **kwargs):
    """CALC_COND_BATCH wrapper: put the RegularPass marker in the options of the regular pass only."""
    run = model_options.get("transformer_options", {}).get(CAPTURE_KEY)
    if run is not None and run.regular_pending:
        index = run.positive_index(conds)
        if index is not None:
            run.regular_pending = False
            regular = RegularPass(run, index, tuple(x_in.shape[2:]))
            model_options = {**model_options,
                             "transformer_options": {**model_options.get("transformer_options", {}), PASS_KEY: regular}}
    return executor(model, conds, x_in, timestep, model_options, *args, **kwargs)


APPLY_ARGUMENTS = ("c_concat", "c_crossattn", "control", "transformer_options")  # after x, t


def start_concept_stream(executor, x, sigma, *args, **kwargs):
    """APPLY_MODEL wrapper: set up the concept stream for the full-frame positive rows of a selected
    step's regular pass. Anything that goes wrong here is logged once and the call passes through:
    maps may be missing, sampling never fails because of them."""
    index = APPLY_ARGUMENTS.index("transformer_options")
    transformer_options = (args[index] if len(args) > index else kwargs.get("transformer_options")) or {}
    regular = transformer_options.get(PASS_KEY)
    forward = None
    if regular is not None and tuple(x.shape[2:]) == regular.full_size:
        run = regular.run
        capture = run.capture
        try:
            if _step_selected(capture.config, transformer_options):
                rows = positive_rows(transformer_options.get("cond_or_uncond"), x.shape[0], x.device,
                                     regular.positive_index)
                if rows is not None:
                    base = executor.class_obj
                    call = ModelCall(x, sigma, base.model_sampling.timestep(sigma).float(), kwargs,
                                     _inference_dtype(base))
                    forward = ConceptForward(run.family, base.diffusion_model, capture, call, *rows,
                                             latent_scale=run.latent_scale, temporal_scale=run.temporal_scale)
                    if forward.active:
                        options = forward.options(transformer_options)
                        if len(args) > index:
                            args = (*args[:index], options, *args[index + 1:])
                        else:
                            kwargs = {**kwargs, "transformer_options": options}
        except Exception as error:
            forward = None
            capture.fail(f"{type(error).__name__}: {error}")
    out = executor(x, sigma, *args, **kwargs)
    if forward is not None:
        forward.check_complete()
    return out


def _step_selected(config: ConceptConfig, transformer_options) -> bool:
    if config.all_steps:
        return True  # no host sync on the default path
    schedule = transformer_options.get("sample_sigmas")
    sigma = transformer_options.get("sigmas")
    if schedule is None or sigma is None:
        return True
    step = int((schedule >= sigma.max()).sum().item()) - 1
    return config.step_selected(max(step, 0), len(schedule) - 1)


def positive_rows(cond_or_uncond, batch: int, device, positive_index: int = 0):
    """(rows, image_index, images) of the positive-prompt rows. ComfyUI stacks equal chunks, one per entry
    of cond_or_uncond (the index of the chunk's prompt in calc_cond_batch's conds; CFGGuider: 0 =
    positive, 1 = negative, the negative first)."""
    if not cond_or_uncond:
        return slice(0, batch), torch.arange(batch, device=device), batch
    chunk = batch // len(cond_or_uncond)
    positive = [i for i, kind in enumerate(cond_or_uncond) if kind == positive_index]
    if not positive:
        return None
    image_index = torch.arange(chunk, device=device)
    if len(positive) == 1:
        return slice(positive[0] * chunk, (positive[0] + 1) * chunk), image_index, chunk
    rows = torch.cat([torch.arange(i * chunk, (i + 1) * chunk, device=device) for i in positive])
    return rows, image_index.repeat(len(positive)), chunk


def _inference_dtype(base) -> torch.dtype:
    """The dtype ComfyUI casts the model inputs to (0.29 names it; 0.3.64 derives it)."""
    if hasattr(base, "get_dtype_inference"):
        return base.get_dtype_inference()
    return getattr(base, "manual_cast_dtype", None) or base.get_dtype()


class BlockHook:
    """Block replace patch for joint block `index`. Shared, not copied, by ModelPatcher clones."""

    def __init__(self, index: int, previous=None):
        self.index = index
        self.previous = previous  # another pack's replace patch on this block, kept in the chain

    def __deepcopy__(self, memo):
        return self

    def __call__(self, args, extra):
        if self.previous is not None:
            run_block = lambda block_args: self.previous(block_args, extra)  # noqa: E731
        else:
            run_block = extra["original_block"]
        forward = args["transformer_options"].get(FORWARD_KEY)
        if forward is None or self.index >= forward.depth:
            return run_block(args)
        return forward.run_block(self.index, args, run_block)


def _heads_first(tensor: torch.Tensor, heads: int, skip_reshape: bool) -> torch.Tensor:
    """q/k/v as ComfyUI's attention function received them ([B, H, L, D] with skip_reshape, else
    [B, L, H*D] or [B, L, H, D]: SD3 hands v over unflattened) -> [B, H, L, D]."""
    if skip_reshape:
        return tensor
    return tensor.reshape(tensor.shape[0], tensor.shape[1], heads, -1).transpose(1, 2)


class ConceptForward:
    """The concept stream during one model call: its tokens between blocks, for the positive rows."""

    def __init__(self, family: Family, diffusion, capture: ConceptCapture, call: ModelCall, rows,
                 image_index, images: int, stop_after_stream: bool = False, latent_scale: int = 8,
                 temporal_scale: int = 1):
        config = capture.config
        self.family, self.diffusion, self.capture, self.config = family, diffusion, capture, config
        self.rows, self.image_index = rows, image_index
        self.depth = config.stream_depth
        self.scored = frozenset(config.blocks)
        self.stop_after_stream = stop_after_stream
        self.seen = set()  # the blocks that ran with the concepts in this call
        x = call.x
        grid = family.token_grid(diffusion, x)
        self.tokens = math.prod(grid)
        references = family.reference_grids(diffusion, call)
        self.reference_tokens = [math.prod(g) for g, _ in references]
        frames = temporal_scale if len(grid) == 3 else 1  # a video's token grid is (T, h, w)
        self.active = capture.begin_forward(images, grid, tuple(x.shape[-2:]), x.device,
                                            (latent_scale, family.patch_size(diffusion), frames), references)
        if not self.active:
            return

        self.blocks = family.blocks(diffusion)
        self.call_vector = family.call_vector(diffusion, call, rows)
        embeddings = capture.embeddings_on(x.device, call.dtype)[None]
        # the text projection once, then one view per image row (the rows differ from the first block on)
        concepts = family.project_concepts(diffusion, embeddings, self.call_vector)
        self.concepts = concepts.expand(len(image_index), -1, -1) if concepts.shape[0] == 1 else concepts

    def options(self, transformer_options: dict) -> dict:
        """The model call's transformer_options with this stream in them (and, for families without
        a replace patch, its attention override around any other pack's)."""
        options = {**transformer_options, FORWARD_KEY: self}
        if self.family.block_patch is None:
            options["optimized_attention_override"] = self.attention_override(
                transformer_options.get("optimized_attention_override"))
        return options

    def run_block(self, index: int, args, run_block):
        """A joint block reached by its replace patch: the concepts' projection before it, their
        attention inside its first attention call, their update after it."""
        if not self.active:
            return run_block(args)
        step = self._begin(index, args)
        if step is None:
            return run_block(args)
        found = {}
        options = dict(args["transformer_options"])
        previous = options.get("optimized_attention_override")

        def capture_attention(func, q, k, v, *rest, **kwargs):
            out = previous(func, q, k, v, *rest, **kwargs) if previous else func(q, k, v, *rest, **kwargs)
            if not found and self.active:  # the block's first attention is its joint one
                found.update(self._joint_attention(index, step, q, k, v, out, rest, kwargs, args))
            return out

        options["optimized_attention_override"] = capture_attention
        out = run_block({**args, "transformer_options": options})
        if self.active and not found:
            self._fail(RuntimeError(f"{self.family.block_kind} {index} ran no attention through ComfyUI's attention "
                                    "function, so the image tokens cannot be read"))
        self._finish(index, step, found)
        return out

    def attention_override(self, previous=None):
        """For families without a replace patch: an attention override for the whole model call that
        does a block's concept work inside that block's joint attention call (projection, attention,
        scores, update: none of it needs the block's other modules' outputs)."""
        calls = [0]  # attention calls so far in this model call (a model that marks no block counts them)

        def capture_attention(func, q, k, v, *rest, **kwargs):
            out = previous(func, q, k, v, *rest, **kwargs) if previous else func(q, k, v, *rest, **kwargs)
            calls[0] += 1
            if self.active:
                options = kwargs.get("transformer_options") or {}
                index = self.family.attention_block(options, calls[0] - 1)
                if index is not None and index < self.depth and index not in self.seen:
                    length = q.shape[-2] if kwargs.get("skip_reshape") else q.shape[1]
                    args = {"transformer_options": options, "length": length, "call": self.call_vector}
                    step = self._begin(index, args)
                    if step is not None:
                        found = self._joint_attention(index, step, q, k, v, out, rest, kwargs, args)
                        self._finish(index, step, found)
            return out
        return capture_attention

    def check_complete(self) -> None:
        """After the model call: every block up to the last scored one carried the concepts."""
        missing = [i for i in range(self.depth) if i not in self.seen]
        if self.active and missing:
            self._fail(RuntimeError(f"{self.family.block_kind} {missing[0]} ran no attention through ComfyUI's "
                                    "attention function, so the image tokens cannot be read"))

    def _begin(self, index, args):
        """(text side, projected concepts) of block `index`, or None when the stream failed here."""
        self.seen.add(index)
        try:
            side = self.family.text_side(self.blocks[index], args, self.call_vector, self.rows)
            return side, side.project(self.concepts)
        except Exception as error:
            self._fail(error)
            return None

    def _joint_attention(self, index, step, q, k, v, out, rest, kwargs, args) -> dict:
        try:
            heads, skip = kwargs.get("heads", rest[0] if rest else None), kwargs.get("skip_reshape", False)
            if kwargs.get("skip_output_reshape", False):
                out = rearrange(out, "B H L D -> B L (H D)")
            return self._attend(index, step[1], _heads_first(q, heads, skip), _heads_first(k, heads, skip),
                                _heads_first(v, heads, skip), out, args)
        except Exception as error:
            self._fail(error)
            return {}

    def _finish(self, index, step, found) -> None:
        """Scores recorded, the concepts updated for the next block; the encode pass ends after the
        last block the stream needs."""
        if not self.active:
            return
        side, concept = step
        try:
            if "scores" in found:
                self.capture.add(self.image_index, found["scores"], index)
                for k, scores in enumerate(found.get("reference_scores", ())):
                    self.capture.add_reference(k, self.image_index, scores)
            if index + 1 < self.depth and side.updates:
                self.concepts = side.update(self.concepts, found["concept_out"], concept)
        except Exception as error:
            self._fail(error)
            return
        if index + 1 >= self.depth and self.stop_after_stream:
            raise _StopAfterConcepts()

    def _fail(self, error: Exception) -> None:
        """While sampling, a failure of the concept stream only ends this run's maps (said once in the
        log). On the encode path the maps are the whole point: the error goes to the user."""
        if self.stop_after_stream:
            raise error
        self.active = False
        self.capture.fail(f"{type(error).__name__}: {error}")

    def _attend(self, index, concept, q, k, v, out, args):
        """q, k, v [B, H, L, D] and out [B, L, H*D] of the block's joint attention."""
        args = args if "call" in args else {**args, "call": self.call_vector}
        image = self.family.image_span(args, self.tokens)
        img_k = k[:, :, image][self.rows]
        img_v = v[:, :, image][self.rows]
        concept_out = concept_attention(concept, img_k, img_v)
        found = {"concept_out": concept_out}
        if index in self.scored:
            normalize = normalize_over_concepts if self.config.normalize_concepts else (lambda x, dim: x)
            spans = [image] + self._reference_spans(image, k.shape[2])
            if self.config.variant == "cross attention":
                concept_q = normalize(getattr(concept, "q_before_rope", concept.q).float(), -2)  # Flux: RoPE is the identity on concepts
                scores = [cross_attention_scores(concept_q, self.family.image_queries(q, args, span, self.rows))
                          for span in spans]
            else:
                vectors = normalize(concept_out.float(), -2)
                scores = [output_space_scores(vectors, out[:, span][self.rows]) for span in spans]
            found["scores"], found["reference_scores"] = scores[0], scores[1:]
        return found

    def _reference_spans(self, image: slice, length: int) -> list[slice]:
        """The reference images' tokens, one after the other after the generated image's (none when
        the joint sequence is shorter than that: this family lays them out otherwise)."""
        spans, start = [], image.stop
        for tokens in self.reference_tokens:
            spans.append(slice(start, start + tokens))
            start += tokens
        return spans if start <= length else []


def _encode_pass(model, family, diffusion, capture, options, x0, noise, sigma_value, context, pooled):
    """One batched forward for S noises of B images, rows image-major (image b, noise s at b*S+s),
    stopped right after the last scored block. Noised as the model's own sampling noises a latent
    at that sigma (model_sampling.noise_scaling: flow models t * noise + (1 - t) * x0)."""
    base, device = model.model, x0.device
    seeds_count, images = noise.shape[0], x0.shape[0]
    rows = images * seeds_count
    x0 = x0.repeat_interleave(seeds_count, dim=0)
    sigma = torch.full((rows,), float(sigma_value), device=device)
    x_t = base.model_sampling.noise_scaling(sigma, noise.transpose(0, 1).reshape(x0.shape), x0)
    context = context.expand(rows, -1, -1) if context.shape[0] == 1 else context.repeat_interleave(seeds_count, 0)
    conditioning = family.encode_conditioning(diffusion, rows, device, pooled, context, x_t)
    image_index = torch.arange(images, device=device).repeat_interleave(seeds_count)
    call = ModelCall(x_t, sigma, base.model_sampling.timestep(sigma).float(), conditioning, _inference_dtype(base))
    forward = ConceptForward(family, diffusion, capture, call, slice(0, rows), image_index, images,
                             stop_after_stream=True, latent_scale=latent_scale(model),
                             temporal_scale=temporal_scale(model))
    options = {**forward.options(options), "cond_or_uncond": [0], "sigmas": sigma}
    try:
        base.apply_model(x_t, sigma, c_crossattn=context, transformer_options=options, **conditioning)
    except _StopAfterConcepts:
        return
    forward.check_complete()
    raise RuntimeError(f"Concept Attention: the encode pass ran past the last scored {family.block_kind}; "
                       f"another patch replaced the {family.block_kind}s.")


def prompt_parts(conditioning) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(prompt [B, L, text_dim], pooled vector or None) of a prompt tensor or a one-entry
    CONDITIONING ([[tensor, {"pooled_output": ...}]])."""
    if conditioning is None or torch.is_tensor(conditioning):
        return conditioning, None
    if len(conditioning) != 1:
        raise ConceptInputError(f"conditioning: expected one prompt, received {len(conditioning)} "
                                "entries (combine them with one CLIP Text Encode).")
    tensor, extra = conditioning[0][0], (conditioning[0][1] if len(conditioning[0]) > 1 else {}) or {}
    return tensor, extra.get("pooled_output")


@torch.no_grad()
def maps_from_latent(model, latent: torch.Tensor, noise_level: float, seeds: list[int],
                     conditioning=None, noise: torch.Tensor | None = None) -> ConceptMaps:
    """The encode path: noise the latent to `noise_level` (a sigma), run one forward pass that
    stops after the last scored block, with what the family feeds it (Flux.1: pooled vector 0 and
    guidance 0; SD3: the prompt's pooled vector).

    latent: as VAE Encode gives it. conditioning: a prompt tensor or a CONDITIONING (None: the
    patch's empty prompt). noise: optional [S, *latent.shape] explicit noise, otherwise one seeded
    noise per seed (ComfyUI's prepare_noise). Seeds run batched, at most ENCODE_ROWS_PER_PASS rows
    per forward, with ComfyUI's progress bar.
    """
    import comfy.sample

    family = family_of(model)
    diffusion = diffusion_model(model)
    store = concept_store(model)
    if store is None:
        raise ConceptInputError("model: this MODEL has no concepts; connect it through a "
                                "Concept Attention node first.")
    config = store.config
    if noise is None:
        noise = torch.stack([comfy.sample.prepare_noise(latent.cpu(), seed) for seed in seeds])
    seeds_count, images = noise.shape[0], latent.shape[0]
    context, pooled = prompt_parts(conditioning)
    if context is None:
        context, pooled = config.empty_prompt, config.empty_pooled
    if context is None:
        raise ConceptInputError("conditioning: no prompt was given and this model was patched "
                                "without a CLIP; connect a CONDITIONING.")

    text_dim = family.text_dim(diffusion)
    if context.ndim != 3 or context.shape[-1] != text_dim:
        raise ConceptInputError(
            f"conditioning: this prompt is {list(context.shape)} ({context.shape[-1]} features per token); this "
            f"{family.name} model takes [1, L, {text_dim}]. Encode the prompt with the CLIP of this model "
            f"({family.text_encoders}).")

    comfy.model_management.load_models_gpu([model])
    base = model.model
    device = model.load_device
    x0 = base.process_latent_in(latent.to(device, torch.float32))
    # the model's own prompt preparation, once (Flux.2: left-padded to 512; 0.3.64's Flux reads pooled_output;
    # the latent's shape for models that build concatenated channels from it, e.g. HunyuanVideo 1.5)
    prepared = base.extra_conds(cross_attn=context, pooled_output=None, noise=x0, latent_image=x0,
                                device=device).get("c_crossattn")
    context = (prepared.cond if prepared is not None else context).to(device)
    capture = ConceptCapture(config)
    options = comfy.model_patcher.create_model_options_clone(model.model_options).get("transformer_options", {})
    per_pass = max(1, ENCODE_ROWS_PER_PASS // images)
    progress = comfy.utils.ProgressBar(seeds_count)
    for first in range(0, seeds_count, per_pass):
        comfy.model_management.throw_exception_if_processing_interrupted()
        chunk = noise[first:first + per_pass].to(device, torch.float32)
        _encode_pass(model, family, diffusion, capture, options, x0, chunk, noise_level, context, pooled)
        progress.update(chunk.shape[0])
    maps = capture.result("latent")
    if maps is None:
        raise RuntimeError(f"Concept Attention: the encode pass recorded no scores ({capture.failure}).")
    maps.detail = (f"computed from the latent: {seeds_count} noise seed{'s' if seeds_count != 1 else ''} "
                   f"at sigma {noise_level:.3f}, {len(config.blocks)} blocks")
    return maps
