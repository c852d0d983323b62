"""What differs between the model families the concept stream runs through, one short description
each (as ComfyUI's supported_models.py describes model families). The stream itself, the run
capture and the encode pass are shared (patching.py, concept_stream.py).

A family says: how to recognise its diffusion model, the text encoder output the concepts are
encoded with, where the concepts' text-side modulation comes from in each double block, and what
the encode pass feeds the model besides the prompt (pooled vector, guidance). Everything else
(double_blocks, txt_in, patch_size, the latent layout) the families share with Flux.1.
"""
from __future__ import annotations

import torch

from .capture import ConceptInputError


class UnsupportedModelError(ConceptInputError):
    pass


class Family:
    name = ""
    description = ""  # for the list of supported models
    text_encoders = ""  # which CLIP the concepts need, for error messages
    text_keys: tuple[str, ...] = ()  # the tokenizer output whose hidden states feed the model's txt_in
    # the diffusion model's forward arguments, in order (what a DIFFUSION_MODEL wrapper receives)
    forward_arguments = ("x", "timestep", "context", "y", "guidance", "ref_latents", "control", "transformer_options")

    @classmethod
    def matches(cls, diffusion) -> bool:
        raise NotImplementedError

    @staticmethod
    def text_dim(diffusion) -> int:
        return diffusion.params.context_in_dim

    def concept_vector(self, diffusion, timestep, guidance, rows, dtype):
        """Per model call: what the concepts' modulation is computed from (None: taken per block)."""
        return None

    def concept_modulation(self, block, block_vec, concept_vec, rows):
        """(attention half, MLP half) modulations of the concepts in one double block, given the
        block's own `vec` argument and this call's concept_vector."""
        _, (txt_mod1, txt_mod2) = block_vec
        return _rows(txt_mod1, rows), _rows(txt_mod2, rows)

    def encode_conditioning(self, diffusion, rows: int, device) -> dict:
        """What the encode pass gives the model besides the prompt: guidance 0 where the model has a
        guidance input (the authors' setting), a zero pooled vector where it has one."""
        return {"guidance": torch.zeros(rows, device=device)}


def _rows(modulation, rows):
    """A ModulationOut (shift/scale/gate [B, 1, d]) restricted to the concept stream's batch rows."""
    if modulation.shift.shape[0] == 1:
        return modulation
    return type(modulation)(modulation.shift[rows], modulation.scale[rows], modulation.gate[rows])


class Flux1(Family):
    """Flux.1 dev/schnell and models built on them: per-block modulation from the concepts' own
    vector, time (+ guidance) + vector_in(0), i.e. the pooled CLIP vector replaced by zeros."""

    name = "Flux.1"
    description = "Flux.1 dev, Flux.1 schnell and models built on them (Krea, Kontext, Fill, fine-tunes, LoRAs)"
    text_encoders = "DualCLIPLoader with type 'flux' (clip_l + t5xxl)"
    text_keys = ("t5xxl",)

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.flux.model
        return (isinstance(diffusion, comfy.ldm.flux.model.Flux) and not getattr(diffusion.params, "global_modulation", False)
                and getattr(diffusion, "vector_in", None) is not None)

    def concept_vector(self, diffusion, timestep, guidance, rows, dtype):
        from comfy.ldm.flux.layers import timestep_embedding
        vec = diffusion.time_in(timestep_embedding(timestep[rows], 256).to(dtype))
        if diffusion.params.guidance_embed and guidance is not None:
            vec = vec + diffusion.guidance_in(timestep_embedding(guidance[rows], 256).to(dtype))
        pooled = torch.zeros(vec.shape[0], diffusion.params.vec_in_dim, device=vec.device, dtype=dtype)
        return vec + diffusion.vector_in(pooled)

    def concept_modulation(self, block, block_vec, concept_vec, rows):
        return block.txt_mod(concept_vec)

    def encode_conditioning(self, diffusion, rows: int, device) -> dict:
        return {"y": torch.zeros(rows, diffusion.params.vec_in_dim, device=device),
                "guidance": torch.zeros(rows, device=device)}


class Flux2(Family):
    """Flux.2 dev and Klein: one shared text-side modulation from the model (no pooled vector), which
    the concepts take exactly as the prompt gets it in each block."""

    name = "Flux.2"
    description = "Flux.2 dev and Flux.2 Klein (4B, 9B)"
    text_encoders = "the Flux.2 text encoder (Mistral 3 Small for dev, Qwen3 4B/8B for Klein) in CLIPLoader with type 'flux2'"
    text_keys = ("mistral3_24b", "qwen3_4b", "qwen3_8b")

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.flux.model
        return isinstance(diffusion, comfy.ldm.flux.model.Flux) and bool(getattr(diffusion.params, "global_modulation", False))

    def encode_conditioning(self, diffusion, rows: int, device) -> dict:
        return {"guidance": torch.zeros(rows, device=device)} if diffusion.params.guidance_embed else {}


class Chroma(Family):
    """Chroma: per-block modulations from its approximator; the concepts take the text side of each
    block's, as the prompt does. No pooled vector; the prompt's padding mask never concerns the
    concepts (they attend to concept and image keys only)."""

    name = "Chroma"
    description = "Chroma"
    text_encoders = "CLIPLoader with type 'chroma' (t5xxl)"
    text_keys = ("t5xxl",)
    forward_arguments = ("x", "timestep", "context", "guidance", "control", "transformer_options")

    @classmethod
    def matches(cls, diffusion) -> bool:
        try:
            import comfy.ldm.chroma.model
        except ImportError:
            return False
        return type(diffusion) is comfy.ldm.chroma.model.Chroma


FAMILIES = (Flux1(), Flux2(), Chroma())
SUPPORTED = "; ".join(f.description for f in FAMILIES)


def diffusion_model(model):
    return getattr(getattr(model, "model", None), "diffusion_model", None)


def family_of(model) -> Family:
    """The family of the diffusion model inside a ModelPatcher, or an error listing the supported ones."""
    diffusion = diffusion_model(model)
    for family in FAMILIES:
        if diffusion is not None and family.matches(diffusion):
            return family
    name = type(diffusion).__name__ if diffusion is not None else type(model).__name__
    raise UnsupportedModelError(
        f"model: this is a {name} model; Concept Attention supports {SUPPORTED}. Connect the MODEL "
        "from one of those (a checkpoint or UNET loader).")
