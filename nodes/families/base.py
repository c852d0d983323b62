"""What a model family answers for the concept stream, read by the generic layer (patching.py).

One short file per family describes what differs (as ComfyUI's supported_models.py describes model
families): how to recognise its diffusion model; its joint blocks and the replace patch that reaches
them; the text-side view of a block that the concept stream calls; how concept embeddings enter (the
model's own text projection); where the image tokens sit in the joint sequence; the token grid of a
latent; what the encode pass feeds the model; its default blocks; its text encoder. The defaults here
are the Flux layout (text tokens first, a 2-D grid of patch_size tokens, blocks in `double_blocks`).
Nothing outside nodes/families/ names a family.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch

from ..capture import ConceptInputError, readable_title


@functools.partial(readable_title, title="Concept Attention: unsupported model")
class UnsupportedModelError(ConceptInputError):
    pass


@dataclass(frozen=True)
class ModelCall:
    """One call of the diffusion model as BaseModel.apply_model receives it (the APPLY_MODEL wrapper,
    or the encode pass): what a family may need to compute the concepts' own modulation."""

    x: torch.Tensor  # the latent the model is called on, [B, channels, (frames,) h, w]
    sigma: torch.Tensor  # [B]
    timestep: torch.Tensor  # model_sampling.timestep(sigma), float32 [B]: what the diffusion model gets
    conds: dict  # the call's other inputs (guidance, y, ref_latents, ...), as calc_cond_batch gives them
    dtype: torch.dtype  # the model's compute dtype


class Family:
    name = ""
    description = ""  # for the list of supported models
    text_encoders = ""  # which CLIP the concepts need, for error messages
    text_keys: tuple[str, ...] = ()  # the tokenizer outputs whose hidden states feed the model's text input
    block_patch: str | None = "double_block"  # the "dit" replace patch ComfyUI calls for each joint block
    # (None: the model has no replace patch for them; its joint attention calls are recognised by
    # attention_block, from the block index the model puts in transformer_options)
    block_kind = "double block"  # what the blocks are called, for messages
    latent_dims = 4  # a latent is [B, channels, h, w]
    temporal_scale = 1  # a video family's pixel frames per latent frame (its VAE's), where ComfyUI does not say

    @classmethod
    def matches(cls, diffusion) -> bool:
        raise NotImplementedError

    def refusal(self, diffusion) -> str:
        """Why this model of the family cannot carry concepts here (a variant or a ComfyUI version the
        family does not serve), or "" when it can."""
        return ""

    # -- the blocks ------------------------------------------------------------------------------
    def blocks(self, diffusion):
        """The joint blocks that can carry concepts, in the order the model runs them."""
        return diffusion.double_blocks

    def attention_block(self, transformer_options: dict, call: int) -> int | None:
        """For families without a replace patch (block_patch None): the joint block whose attention
        this attention call is (the model marks it in transformer_options; `call`: how many attention
        calls came before it in this model call, for a model that marks nothing), or None
        (text-only or image-only stages, other attention)."""
        return None

    def default_blocks(self, depth: int) -> str:
        """The blocks whose maps are averaged by default ('auto'): Flux's last 4 double blocks."""
        return "last 4"

    def text_side(self, block, args: dict, call_vector, rows):
        """The text-side view of one joint block for the concept stream: an object with
        `project(concepts [b, C, d]) -> q/k/v [b, H, C, D] (.q .k .v, positions applied; and
        .q_before_rope where RoPE is not the identity on concepts)`, `update(concepts, out
        [b, C, d], projected) -> concepts` and `updates` (False where the text side ends in this
        block). `args` are the block's replace-patch arguments (families keyed by attention_block:
        {"transformer_options": the attention call's, "length": the joint sequence's, "call":
        call_vector()'s answer}), `call_vector` what call_vector() gave for this model call, `rows`
        the concept rows of the batch."""
        raise NotImplementedError

    # -- concept tokens and their modulation -------------------------------------------------------
    def text_dim(self, diffusion) -> int:
        return diffusion.params.context_in_dim

    def project_concepts(self, diffusion, embeddings: torch.Tensor, call_vector=None) -> torch.Tensor:
        """Concept embeddings [1, C, text_dim] -> concept tokens [1 or b, C, d], as the prompt enters
        (call_vector: what call_vector() gave, for a text path that reads the timestep)."""
        if getattr(diffusion, "txt_norm", None) is not None:
            embeddings = diffusion.txt_norm(embeddings)
        return diffusion.txt_in(embeddings)

    def call_vector(self, diffusion, call: ModelCall, rows):
        """Per model call: what the concepts' modulation is computed from (None: from each block's)."""
        return None

    # -- where the image is ----------------------------------------------------------------------
    def image_span(self, args: dict, tokens: int) -> slice:
        """The image tokens in a block's joint sequence: after the prompt (reference-image tokens,
        when there are, come after the image). args also holds "call": call_vector()'s answer."""
        start = args["txt"].shape[1]
        return slice(start, start + tokens)

    def image_queries(self, q: torch.Tensor, args: dict, image: slice, rows) -> torch.Tensor:
        """The image queries [b, H, N, D] of the joint attention without their positional rotation
        (the cross-attention variant compares queries before RoPE). No RoPE: as they are."""
        return q[:, :, image][rows]

    def reference_grids(self, diffusion, call: ModelCall) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(token grid, latent size) of each reference image of an edit, in the order its tokens
        follow the generated image's: Flux Kontext, Flux.2 and Qwen-Image-Edit pass them as
        `ref_latents` and append them, patchified like the image."""
        return [(self.token_grid(diffusion, ref), tuple(ref.shape[-2:])) for ref in call.conds.get("ref_latents") or []]

    def patch_size(self, diffusion) -> int:
        return int(diffusion.patch_size)

    def token_grid(self, diffusion, x: torch.Tensor) -> tuple[int, ...]:
        """The image token grid of latent x: (h, w) of patch_size x patch_size latent pixels each (a
        video family: (T, h, w), tokens frame-major)."""
        patch = self.patch_size(diffusion)
        height, width = x.shape[-2:]
        return ((height + patch // 2) // patch, (width + patch // 2) // patch)

    # -- the encode pass ---------------------------------------------------------------------------
    def encode_conditioning(self, diffusion, rows: int, device, pooled: torch.Tensor | None,
                            context: torch.Tensor | None = None, x: torch.Tensor | None = None) -> dict:
        """What the encode pass gives the model besides the prompt. pooled: the prompt's pooled
        vector [1, width] where the text encoder gives one (else None); context: the prompt [rows, L, dim];
        x: the noised latent the model is called on."""
        return {}

    # -- the text encoder --------------------------------------------------------------------------
    def concept_text(self, clip) -> tuple[tuple[str, ...], int, bool]:
        """(tokenizer outputs to read a concept's tokens from, in preference order; the row of the
        encoder output where that part starts; whether the output is that part alone)."""
        return self.text_keys, 0, True

    # -- identity --------------------------------------------------------------------------------
    def signature(self, diffusion) -> list:
        """What identifies the architecture and weights, for sharing captured maps between patches."""
        parts = [self.name, type(diffusion).__name__, len(self.blocks(diffusion))]
        first = next(iter(diffusion.parameters()), None)
        if first is not None:
            parts.append(tuple(first.shape))
            try:
                parts.append(hashlib.sha1(first.detach().flatten()[:512].float().cpu().numpy().tobytes()).hexdigest())
            except Exception:  # quantised or meta weights: the architecture alone
                pass
        return parts


def rows_of(tensor: torch.Tensor, rows) -> torch.Tensor:
    """A per-row tensor restricted to the concept stream's batch rows (a broadcast row stays)."""
    return tensor if tensor.shape[0] == 1 else tensor[rows]


def diffusion_model(model):
    return getattr(getattr(model, "model", None), "diffusion_model", None)
