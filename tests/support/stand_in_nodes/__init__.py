"""Test-only ComfyUI nodes: tiny stand-ins for the Flux.1 UNET, DualCLIP and VAE loaders and the
Flux.2 Klein UNET, CLIP (qwen_3_4b, type flux2) and VAE (flux2-vae) loaders, and an SD3/SD3.5
checkpoint loader (MODEL, CLIP, VAE, like CheckpointLoaderSimple on sd3.5_large_fp8_scaled), and the
Qwen-Image UNET (qwen_image / qwen_image_edit_2509), CLIP (qwen_2.5_vl_7b, type qwen_image, with a
tiny vision tower for TextEncodeQwenImageEditPlus) and VAE (qwen_image_vae) loaders, Z-Image Turbo and Krea 2 (0.29) with their text encoders, so that
workflows run headless with no model files. Loaded by the test server beside the pack. The Klein
ones need ComfyUI 0.29 (Flux.2 classes) when they run; the module imports on 0.3.64 too."""
import pathlib
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from tiny_flux import build_flux, tiny_clip  # noqa: E402
from tiny_flux2 import tiny_klein_clip  # noqa: E402
from tiny_flux2 import build_flux2
from tiny_sd3 import VARIANTS as SD3_VARIANTS, build_sd3, tiny_sd3_clip  # noqa: E402
from tiny_qwen import build_qwen_image  # noqa: E402
from tiny_qwen_vision import tiny_qwen_vl_clip  # noqa: E402
from tiny_single_stream import CLIP_WIDTH, build_krea2, tiny_krea2_clip, tiny_z_image_clip  # noqa: E402
from tiny_hunyuan import build_hunyuan, tiny_hunyuan15_clip  # noqa: E402


SEED = ("INT", {"default": 0})


def _loader(return_type: str | tuple[str, ...], make, **inputs):
    """A loader node in ComfyUI's classic node format: the given inputs -> make(**inputs). Several
    return types (a checkpoint loader's MODEL, CLIP, VAE): make returns one value per type."""
    several = not isinstance(return_type, str)

    class Loader:
        RETURN_TYPES = tuple(return_type) if several else (return_type,)
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": dict(inputs)}

        def load(self, **values):
            return tuple(make(**values)) if several else (make(**values),)

    return Loader


class TinyVAE:
    """8x downscale to 16 channels (Flux.1's latent) by a fixed mixing of 8x8 means; decode undoes
    it approximately. Subclasses change the channels and the ratio."""

    channels = 16
    downscale_ratio = 8
    upscale_ratio = 8

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.mix = torch.randn(self.channels, 3, generator=g)
        self.latent_channels = self.channels

    def spacial_compression_encode(self):
        return self.downscale_ratio

    def spacial_compression_decode(self):
        return self.upscale_ratio

    def encode(self, pixels):
        pooled = F.avg_pool2d(pixels[..., :3].movedim(-1, 1), self.downscale_ratio)
        return torch.einsum("oc,bchw->bohw", self.mix, pooled)

    def decode(self, latent):
        rgb = torch.einsum("oc,bohw->bchw", torch.linalg.pinv(self.mix).T, latent)
        return F.interpolate(rgb, scale_factor=self.upscale_ratio, mode="nearest").movedim(1, -1).clamp(0, 1)


class TinyFlux2VAE(TinyVAE):
    """Like ComfyUI's Flux.2 VAE (flux2-vae.safetensors) from the outside: 128 latent channels at
    16x spatial compression, the latent EmptyFlux2LatentImage makes."""

    channels = 128
    downscale_ratio = 16
    upscale_ratio = 16


class TinyQwenImageVAE(TinyVAE):
    """Like the Wan 2.1 VAE of Qwen-Image (qwen_image_vae.safetensors) from the outside: 16 channels
    at 8x with a frame axis, encode [B, H, W, 3] -> [B, 16, 1, H/8, W/8]; decode takes that or
    [B, 16, h, w] (EmptySD3LatentImage's, before the sampler adds the frame axis)."""

    def encode(self, pixels):
        return super().encode(pixels).unsqueeze(2)

    def decode(self, latent):
        return super().decode(latent[:, :, 0] if latent.ndim == 5 else latent)


class TinyHunyuanVideo15VAE(TinyVAE):
    """Like HunyuanVideo 1.5's VAE (hunyuanvideo15_vae_fp16.safetensors) from the outside: 32 channels
    at 16x, causal 4x in time: F = 1 + 4(T-1) frames <-> T latent frames (frame 0 alone, then groups
    of 4, each latent frame the mean of its group). Encode takes frames [F, H, W, 3] -> [1, 32, T, h,
    w]; decode gives [B, F, H, W, 3] (VAE Decode makes it a batch of frames)."""

    channels = 32
    downscale_ratio = 16
    upscale_ratio = 16
    temporal = 4

    def encode(self, pixels):
        groups = [pixels[:1]] + [pixels[i:i + self.temporal] for i in range(1, pixels.shape[0], self.temporal)]
        frames = torch.stack([super(TinyHunyuanVideo15VAE, self).encode(g.mean(0, keepdim=True))[0] for g in groups], 1)
        return frames[None]

    def decode(self, latent):
        b, c, t, h, w = latent.shape
        source = [0] + [k for k in range(1, t) for _ in range(self.temporal)]
        frames = super().decode(latent[:, :, source].transpose(1, 2).reshape(-1, c, h, w))
        return frames.reshape(b, len(source), *frames.shape[1:])


def _sd3_checkpoint(seed, variant):
    """CheckpointLoaderSimple on an SD3 / SD3.5 checkpoint that has its text encoders and VAE
    (sd3.5_large_fp8_scaled.safetensors has them), tiny and random: a 3-block MMDiT of the variant,
    ComfyUI's SD3 triple CLIP with CLIP-L and CLIP-G (no T5: tiny_sd3's keeps the 4096 width, 130 M
    parameters) and the 16-channel 8x VAE stand-in (SD3's latent has Flux.1's shape)."""
    return build_sd3(seed=seed, variant=variant), tiny_sd3_clip(seed=seed), TinyVAE()


def _z_image(seed):
    import comfy.supported_models
    from tiny_single_stream import _patcher, z_image_config
    return _patcher(comfy.supported_models.ZImage(z_image_config(text=CLIP_WIDTH)), seed, 0.1, torch.float32)


# Flux.1 (dev, or schnell), its DualCLIP and VAE; Flux.2 Klein (no guidance embedding, 128-channel
# latents, one token per latent pixel), ComfyUI's Klein tokenizer and text-encoder wrapper around a
# tiny random Qwen3, and the Flux.2 VAE; an SD3 / SD3.5 checkpoint (MODEL, CLIP, VAE).
NODE_CLASS_MAPPINGS = {
    "TinyFluxLoader": _loader("MODEL", lambda seed, schnell: build_flux(seed=seed, schnell=schnell),
                              seed=SEED, schnell=("BOOLEAN", {"default": False})),
    "TinyFluxClipLoader": _loader("CLIP", tiny_clip, seed=SEED),
    "TinyVAELoader": _loader("VAE", TinyVAE),
    "TinyKleinLoader": _loader("MODEL", lambda seed: build_flux2(seed=seed, klein=True), seed=SEED),
    "TinyKleinClipLoader": _loader("CLIP", tiny_klein_clip, seed=SEED),
    "TinyFlux2VAELoader": _loader("VAE", TinyFlux2VAE),
    "TinySD3CheckpointLoader": _loader(("MODEL", "CLIP", "VAE"), _sd3_checkpoint, seed=SEED,
                                       variant=(list(SD3_VARIANTS), {"default": "sd35_large"})),
    "TinyQwenImageLoader": _loader("MODEL", lambda seed: build_qwen_image(seed=seed), seed=SEED),
    "TinyQwenImageClipLoader": _loader("CLIP", tiny_qwen_vl_clip, seed=SEED),
    "TinyQwenImageVAELoader": _loader("VAE", TinyQwenImageVAE),
    # Z-Image Turbo (a tiny NextDiT that reads the tiny Qwen3's 16 features) with ComfyUI's Z-Image
    # text encoder (qwen_3_4b, type lumina2) and the Flux VAE (ae); Krea 2 Turbo (txtdim 16 x 12 tapped
    # layers) with ComfyUI's Krea 2 text encoder (qwen3vl_4b, type krea2) and the Qwen-Image VAE.
    "TinyZImageLoader": _loader("MODEL", lambda seed: _z_image(seed), seed=SEED),
    "TinyZImageClipLoader": _loader("CLIP", tiny_z_image_clip, seed=SEED),
    "TinyKrea2Loader": _loader("MODEL", lambda seed: build_krea2(seed=seed, txt_dim=CLIP_WIDTH, txt_layers=12),
                               seed=SEED),
    "TinyKrea2ClipLoader": _loader("CLIP", tiny_krea2_clip, seed=SEED),
    # HunyuanVideo 1.5 (a tiny one, 32-channel latents and 33 concatenated channels) with ComfyUI's 1.5
    # text encoder around a tiny Qwen2.5-VL (no byT5) and the 16x, 4x-in-time VAE stand-in.
    "TinyHunyuanVideo15Loader": _loader("MODEL", lambda seed: build_hunyuan(seed=seed, variant="1.5"), seed=SEED),
    "TinyHunyuanVideo15ClipLoader": _loader("CLIP", tiny_hunyuan15_clip, seed=SEED),
    "TinyHunyuanVideo15VAELoader": _loader("VAE", TinyHunyuanVideo15VAE),
}
