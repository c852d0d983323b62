"""HunyuanVideo 1.0 (T2V, I2V, SkyReels) and HunyuanVideo 1.5 (ComfyUI's hunyuan_video.HunyuanVideo),
and HunyuanImage 2.1 on the same class (a 2-D patch).

Flux's own double-stream blocks (`double_blocks`, the "double_block" replace patch) then single-stream
blocks; the concepts go through the double blocks' text side with the modulation the prompt's tokens
get there (`txt_mod` of the block's vec: time, pooled CLIP-L on 1.0, guidance; where the first frame
of an I2V latent takes another vector, the text keeps the regular one), as in Flux.

Concepts enter as the prompt does, through the `TokenRefiner` (`txt_in`), each as a one-token prompt
of its own: its own pooled context (the refiner's mean over a prompt's tokens is the concept itself),
the call's timestep, no prompt mask; on 1.5 the text type embedding is added, as to the prompt. The
byT5 glyph tokens and vision tokens that 1.5 puts in the text sequence are never attended by concepts
(they attend to concept and image keys only). Text positions are zero: RoPE is the identity on
concepts. Latents [B, C, T, h, w]; tokens frame-major (frame, row, column), so maps are
[B, C, T, h, w] on the latent frames. ComfyUI 0.29 puts the text first in the joint sequence,
0.3.64 the video first (`flipped_img_txt`); an I2V reference latent's tokens come before the video's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Family, rows_of
from .flux1 import FluxBlocks, FluxTextSide


@dataclass
class HunyuanCall:
    timestep: torch.Tensor  # [b]: what the diffusion model (and its token refiner) gets
    image_first: bool  # ComfyUI 0.3.64's order: the video's tokens before the text's
    offset: int  # tokens before the generated video's in the image part (an I2V reference latent)


class HunyuanVideo(FluxBlocks):
    name = "HunyuanVideo"
    description = "HunyuanVideo 1.0 / 1.5 (T2V, I2V, SkyReels) and HunyuanImage 2.1"
    text_encoders = ("the model's text encoder: DualCLIPLoader type 'hunyuan_video' (llava_llama3 + clip_l) for 1.0, "
                     "type 'hunyuan_video_15' (qwen_2.5_vl_7b + byt5) for 1.5")
    text_keys = ("llama", "qwen25_7b")
    latent_dims = 5
    temporal_scale = 4  # its causal VAE: 1 + 4(T - 1) frames

    @classmethod
    def matches(cls, diffusion) -> bool:
        import comfy.ldm.hunyuan_video.model as hunyuan
        return isinstance(diffusion, hunyuan.HunyuanVideo)

    def default_blocks(self, depth: int) -> str:
        """The analogue of Flux's last 4 of 19 double blocks: the last fifth (1.0: 20 -> last 4; 1.5:
        54 -> last 11). Chosen by analogy, not tuned."""
        return f"last {max(1, round(depth * 4 / 19))}"

    def text_dim(self, diffusion) -> int:
        return int(diffusion.txt_in.input_embedder.in_features)

    def patch_size(self, diffusion) -> int:
        return int(diffusion.patch_size[-1])

    def token_grid(self, diffusion, x):
        patch = list(diffusion.patch_size)
        return tuple(size // p for size, p in zip(x.shape[2:], patch))

    def call_vector(self, diffusion, call, rows):
        reference = call.conds.get("ref_latent")
        offset = 0 if reference is None else math.prod(self.token_grid(diffusion, reference))
        return HunyuanCall(call.timestep[rows], bool(getattr(diffusion.double_blocks[0], "flipped_img_txt", False)),
                           offset)

    def project_concepts(self, diffusion, embeddings, call_vector=None):
        """Each concept a one-token prompt through the token refiner, per batch row (its timestep)."""
        b, count = call_vector.timestep.shape[0], embeddings.shape[1]
        prompts = embeddings[0][:, None].repeat(b, 1, 1)  # [b*C, 1, text_dim]
        timesteps = call_vector.timestep.repeat_interleave(count)
        tokens = diffusion.txt_in(prompts, timesteps, None).reshape(b, count, -1)
        if getattr(diffusion, "cond_type_embedding", None) is not None:  # 1.5: the text's type embedding (0), as the prompt gets
            kind = torch.zeros(tokens.shape[:2], dtype=torch.long, device=tokens.device)
            tokens = tokens + diffusion.cond_type_embedding(kind).to(tokens.dtype)
        return tokens

    def text_side(self, block, args, call_vector, rows):
        vec = args["vec"]
        if vec.ndim == 3:  # I2V token replace: [B, 2, d], the text takes the regular vector
            vec = vec[:, 1]
        return FluxTextSide(block, block.txt_mod(rows_of(vec, rows)))

    def image_span(self, args, tokens):
        call = args["call"]
        start = (0 if call.image_first else args["txt"].shape[1]) + call.offset
        return slice(start, start + tokens)

    def encode_conditioning(self, diffusion, rows, device, pooled, context=None, x=None):
        """The prompt's pooled CLIP-L vector where the model reads one (1.0; else zeros), guidance 0
        (Flux's setting), and zeros for the channels an I2V / 1.5 model concatenates to the latent
        (no conditioning image, an all-zero mask)."""
        conditioning = {}
        if diffusion.vector_in is not None:
            width = diffusion.params.vec_in_dim
            y = torch.zeros(rows, width, device=device) if pooled is None else pooled.to(device).reshape(1, -1)[:, :width]
            conditioning["y"] = y.expand(rows, -1)
        if diffusion.params.guidance_embed:
            conditioning["guidance"] = torch.zeros(rows, device=device)
        extra = diffusion.in_channels - x.shape[1]
        if extra > 0:
            conditioning["c_concat"] = torch.zeros(x.shape[0], extra, *x.shape[2:], device=device)
        return conditioning

    def concept_text(self, clip):
        """The encoders drop the template's system part (HunyuanVideo 1.0's Llama: up to the user
        header; 1.5's Qwen2.5-VL: as Qwen-Image's): their output is the last rows of the tokens."""
        return self.text_keys, None, True
