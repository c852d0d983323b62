"""Cost of ConceptAttention on a Flux.1, Flux.2, SD3.5 Large, Qwen-Image, Z-Image, Krea 2, HunyuanVideo 1.0 or
CogVideoX-5B with the real block width, inside real ComfyUI.

The model is a Flux.1 dev with the real block width (hidden 3072, 24 heads, MLP ratio 4, text
context 4096, pooled 768), a Flux.2 (Klein 4B, dev), an SD3.5 Large (ComfyUI's MMDiT: hidden
2432 = 64 x 38, 38 heads of 64, text context 4096, pooled 2048, RMS QK-norm) or a Qwen-Image
(ComfyUI's QwenImageTransformer2DModel: hidden 3072 = 24 heads of 128, text width 3584 from
Qwen2.5-VL 7B, 60 dual-stream blocks, optionally with reference latents as the edit models take
them), a Z-Image (ComfyUI's NextDiT as model_detection derives it from Z-Image Turbo: dim 3840 = 30
heads of 128, no GQA, 30 single-stream layers, caption width 2560 from Qwen3 4B) or a Krea 2 (ComfyUI's
krea2.SingleStreamDiT: 6144 = 48 heads of 128, 12 KV heads, 28 single-stream blocks, context 12 x 2560
from 12 tapped Qwen3-VL 4B layers through its text fusion transformer), a HunyuanVideo 1.0 (ComfyUI's
hunyuan_video.HunyuanVideo: Flux's double + single blocks at 3072 = 24 heads of 128, its token refiner over
llava-llama3's 4096-wide rows, pooled CLIP-L 768, guidance embedding, patch [1, 2, 2]) or a CogVideoX-5B (ComfyUI's
cogvideo.CogVideoXTransformer3DModel: 3072 = 48 heads of 64, expert blocks whose text and video share the weights,
time embedding 512, T5 4096 wide padded to 226 tokens, RoPE on the video tokens), random weights and a chosen
number of blocks. In one process, and interleaved (each round
runs the plain model, then every patched configuration; medians over --repeats rounds), it measures:

- sampling wall time and peak extra memory, plain vs patched, per image size, number of
  concepts C and block selection;
- the concept stream's own time (its pieces timed where the pack calls them), for the pack and
  for a full-attention reference of the concept stream (the authors' approach: one (C+N)x(C+N)
  attention over [concepts; image] whose image rows are discarded);
- the encode path (api.concept_maps(source="latent")) vs one full forward;
- peak extra memory at two step counts.

Beside the measurements, an analytic FLOP ratio is printed, labelled as an estimate.
Prints markdown tables and writes benchmarks/results/<name>.json.

    python benchmarks/bench_overhead.py                  # CPU preset (2 cores: about 6 minutes)
    python benchmarks/bench_overhead.py --sizes 256,512  # more sizes, same preset
    python benchmarks/bench_overhead.py --preset gpu     # full depth (19 + 38 blocks), bf16, CUDA
    python benchmarks/bench_overhead.py --preset sd35-large-cpu                # SD3.5 Large width, 3 joint blocks
    python benchmarks/bench_overhead.py --preset sd35-large-gpu --sizes 512,1024  # 38 joint blocks, bf16, CUDA
    python benchmarks/bench_overhead.py --preset qwen-image-cpu                # Qwen-Image width, 2 of its 60 blocks
    python benchmarks/bench_overhead.py --preset qwen-image-cpu --references 1 # an edit model: one reference image
    python benchmarks/bench_overhead.py --preset qwen-image-gpu                # 60 blocks, bf16, CUDA
    python benchmarks/bench_overhead.py --preset z-image-cpu                   # Z-Image width, 2 of its 30 layers
    python benchmarks/bench_overhead.py --preset z-image-gpu                   # 30 layers, bf16, CUDA
    python benchmarks/bench_overhead.py --preset krea2-cpu                     # Krea 2 width, 2 of its 28 blocks
    python benchmarks/bench_overhead.py --preset krea2-gpu                     # 28 blocks, bf16, CUDA
    python benchmarks/bench_overhead.py --preset hunyuan-video-cpu             # HunyuanVideo width, 2 double + 1 single
    python benchmarks/bench_overhead.py --preset hunyuan-video-gpu             # 20 + 40 blocks, bf16, CUDA
    python benchmarks/bench_overhead.py --preset cogvideox-cpu                 # CogVideoX-5B width, 2 of its 42 blocks
    python benchmarks/bench_overhead.py --preset cogvideox-gpu                 # 42 blocks, bf16, CUDA

SD3 (ComfyUI's MMDiT) derives its width from its depth (hidden = 64 x depth, heads = depth); the
model is built with depth 38 for the width and num_blocks = --depth joint blocks. --hidden (a
multiple of 64; smoke tests only) builds it with depth hidden / 64 for the width (heads = hidden /
64). SD3 has no single blocks (--single 0).

Qwen-Image has dual-stream blocks only (--single 0); --depth picks how many of its 60. Its prompt is
what the Qwen2.5-VL encoder gives after ComfyUI drops the template's system part, unpadded: default
--text-tokens 64 for this family. --references R adds R reference latents of the generated image's
size to the conditioning ("reference_latents", as the edit models' TextEncodeQwenImageEdit gives
them): each adds as many image tokens to the joint sequence as the generated image has (the concept
stream attends to the generated image's tokens only).

Z-Image and Krea 2 are single-stream: caption and image tokens are one sequence through layers whose
weights they share; --depth picks how many (Z-Image 30, Krea 2 28) and --single does not apply. No
replace patch reaches their layers: the pack does a layer's concept work inside that layer's attention
call (ConceptForward.attention_override), which is what is timed as the concept stream. Z-Image also
runs its 2 context-refiner layers (caption only; the concepts go through them too, once per model
call) and 2 noise-refiner layers (image only) at every depth. Its prompt is Qwen3 4B rows, unpadded
(default --text-tokens 64); the model pads the caption, and the image tokens, to a multiple of 32 with
its pad tokens. Krea 2's prompt is [1, L, 12 x 2560] (default L = 64, unpadded), fused per token by its
text fusion transformer (2560 wide, 20 heads), as the concepts are. Z-Image needs --hidden of at least
256 (its adaLN input is min(hidden, 256) wide, its timestep embedder gives 256); both need a head dim
(hidden / heads) that is a multiple of 16 (their RoPE axes); Krea 2 smoke widths take heads / 4 KV
heads where heads divide by 4 (its 48:12), else 1.

HunyuanVideo 1.0 and CogVideoX-5B are video models: --sizes are square frame sizes, --frames the latent frames
(default 9: 33 video frames through their causal VAEs, 1 + 4 (T - 1)); latents [B, 16, frames, h, w], tokens
frames x (size / 16)^2 (frame-major). HunyuanVideo: --depth of its 20 double blocks, --single of its 40 single
blocks; its prompt is llava-llama3 rows after ComfyUI drops the template's system part, unpadded (default
--text-tokens 64), through its token refiner (2 blocks), as the concepts are (each a one-token prompt); the
pooled CLIP-L vector and the guidance (sampling 3.5; the encode path 0) go into its vec. CogVideoX: --depth of
its 42 expert blocks (--single 0); its prompt is T5 rows padded to 226 (default --text-tokens 226); the pack does
a block's concept work inside the block's one attention call, as for Z-Image. It is v-prediction DDPM
(ComfyUI's model_sampling noises and scales the input; sampling: euler, simple, as for the others). Smoke widths:
HunyuanVideo heads of 128 (hidden / 128; head dim a multiple of 32: its RoPE axes [hd/8, 7hd/16, 7hd/16]),
CogVideoX heads of 64 (hidden / 64).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACK = "concept_attention_pack"
REFERENCE = "full-attention ref"
KREA2_TXT_LAYERS = 12  # Krea 2's tapped Qwen3-VL 4B layers (txtlayers), each 2560 wide
PRESETS = {
    # Double:single blocks 1:2 as in Flux.1 (19:38), so per-block ratios carry over to full depth.
    "cpu": dict(device="cpu", dtype="fp32", depth=2, single=4, sizes="256", steps=1, steps_check="2,8", repeats=5),
    "gpu": dict(device="cuda", dtype="bf16", depth=19, single=38, sizes="512,1024,2048", steps=4,
                steps_check="4,28", repeats=5),
    # Flux.2 Klein 4B: 5 double + 20 single blocks (1:4); dev: 8 + 48 (1:6).
    "klein-cpu": dict(family="klein", device="cpu", dtype="fp32", depth=1, single=4, sizes="256", steps=1,
                      steps_check="2,8", repeats=5),
    "klein-gpu": dict(family="klein", device="cuda", dtype="bf16", depth=5, single=20, sizes="512,1024,2048", steps=4,
                      steps_check="4,28", repeats=5),
    "flux2-dev-cpu": dict(family="flux2-dev", device="cpu", dtype="fp32", depth=1, single=6, sizes="256", steps=1,
                          steps_check="", repeats=3),
    "flux2-dev-gpu": dict(family="flux2-dev", device="cuda", dtype="bf16", depth=8, single=48, sizes="512,1024", steps=4,
                          steps_check="4,28", repeats=5),
    # SD3.5 Large: 38 joint blocks at full depth; on CPU 3 (the last one's text half pre_only, as in the model).
    "sd35-large-cpu": dict(family="sd35-large", device="cpu", dtype="fp32", depth=3, single=0, sizes="512", steps=1,
                           steps_check="", repeats=3),
    "sd35-large-gpu": dict(family="sd35-large", device="cuda", dtype="bf16", depth=38, single=0, sizes="512,1024",
                           steps=4, steps_check="4,28", repeats=5),
    # Qwen-Image: 60 dual-stream blocks at full depth; on CPU 2 (the per-block ratios carry over: every block is alike).
    "qwen-image-cpu": dict(family="qwen-image", device="cpu", dtype="fp32", depth=2, single=0, sizes="512", steps=1,
                           steps_check="", repeats=3),
    "qwen-image-gpu": dict(family="qwen-image", device="cuda", dtype="bf16", depth=60, single=0, sizes="512,1024",
                           steps=4, steps_check="4,28", repeats=5),
    # Z-Image Turbo: 30 single-stream layers at full depth (and its 2 + 2 refiner layers at every depth); Krea 2: 28
    # blocks. On CPU 2 each (every layer is alike: the per-layer ratios carry over).
    "z-image-cpu": dict(family="z-image", device="cpu", dtype="fp32", depth=2, single=0, sizes="512", steps=1,
                        steps_check="", repeats=3),
    "z-image-gpu": dict(family="z-image", device="cuda", dtype="bf16", depth=30, single=0, sizes="512,1024", steps=4,
                        steps_check="4,28", repeats=5),
    "krea2-cpu": dict(family="krea2", device="cpu", dtype="fp32", depth=2, single=0, sizes="512", steps=1,
                      steps_check="", repeats=3),
    "krea2-gpu": dict(family="krea2", device="cuda", dtype="bf16", depth=28, single=0, sizes="512,1024", steps=4,
                      steps_check="4,28", repeats=5),
    # HunyuanVideo 1.0: 20 double + 40 single blocks; CogVideoX-5B: 42 expert blocks. Video: 9 latent frames (33
    # video frames) by default. On CPU 2 double + 1 single / 2 blocks at a small frame size (every block is alike).
    "hunyuan-video-cpu": dict(family="hunyuan-video", device="cpu", dtype="fp32", depth=2, single=1, sizes="128",
                              steps=1, steps_check="", repeats=2),
    "hunyuan-video-gpu": dict(family="hunyuan-video", device="cuda", dtype="bf16", depth=20, single=40,
                              sizes="256,512", steps=4, steps_check="4,28", repeats=5),
    "cogvideox-cpu": dict(family="cogvideox", device="cpu", dtype="fp32", depth=2, single=0, sizes="128", steps=1,
                          steps_check="", repeats=2),
    "cogvideox-gpu": dict(family="cogvideox", device="cuda", dtype="bf16", depth=42, single=0, sizes="256,480",
                          steps=4, steps_check="4,28", repeats=5),
}
# Real widths per family: architecture, hidden size, heads (head dim 128; SD3: 64), text width (the encoder's
# hidden states; Flux.2 stacks three layers; SD3: CLIP-L/G zero-padded to T5's 4096, then T5; Qwen-Image:
# Qwen2.5-VL 7B), pooled vector, latent channels, pixels per latent pixel and latent pixels per token side,
# guidance input, MLP ratio, the default block selections (each family's default, then all) and the default
# --text-tokens (T5's padding for Flux and SD3; the Qwen encoders of Qwen-Image, Z-Image and Krea 2 do not pad: a
# short prompt). Single-stream families: mlp is the feed-forward's multiplier as the model takes it (Z-Image's
# ffn_dim_multiplier, Krea 2's SwiGLU multiplier); see _ffn.
FAMILIES = {
    "flux1": dict(label="Flux.1 dev", arch="flux1", hidden=3072, heads=24, text=4096, pooled=768, channels=16,
                  scale=8, patch=2, guidance=True, mlp=4.0, blocks="last 4;all", text_tokens=256),
    "klein": dict(label="Flux.2 Klein 4B", arch="flux2", hidden=3072, heads=24, text=3 * 2560, pooled=None,
                  channels=128, scale=16, patch=1, guidance=False, mlp=3.0, blocks="last 4;all", text_tokens=256),
    "flux2-dev": dict(label="Flux.2 dev", arch="flux2", hidden=6144, heads=48, text=3 * 5120, pooled=None,
                      channels=128, scale=16, patch=1, guidance=True, mlp=3.0, blocks="last 4;all", text_tokens=256),
    # MMDiT: no guidance embedding, GELU MLP ratio 4, RMS QK-norm; the pack's default is the last fifth (38 -> 8).
    "sd35-large": dict(label="SD3.5 Large", arch="sd3", hidden=64 * 38, heads=38, text=4096, pooled=2048, channels=16,
                       scale=8, patch=2, guidance=False, mlp=4.0, blocks="last 8;all", text_tokens=256),
    # QwenImageTransformer2DModel: dual-stream blocks only, GELU-tanh FeedForward ratio 4 on both streams, RMS
    # QK-norm, no pooled vector, no guidance, 5-D latents [B, 16, 1, h, w]; the pack's default ('auto') is the
    # last round(60 * 4 / 19) = 13 blocks.
    "qwen-image": dict(label="Qwen-Image", arch="qwen", hidden=3072, heads=24, text=3584, pooled=None, channels=16,
                       scale=8, patch=2, guidance=False, mlp=4.0, blocks="last 13;all", text_tokens=64),
    # NextDiT (Z-Image Turbo): single-stream layers with SwiGLU feed-forward 8/3 (10240 at 3840), RMS QK-norm, z_image
    # modulation (adaLN from a 256-wide timestep vector, tanh gates), captions and image padded to multiples of 32;
    # the pack's default is the last quarter (30 -> last 8).
    "z-image": dict(label="Z-Image Turbo", arch="lumina", hidden=3840, heads=30, text=2560, pooled=None, channels=16,
                    scale=8, patch=2, guidance=False, mlp=8.0 / 3.0, blocks="last 8;all", text_tokens=64),
    # SingleStreamDiT (Krea 2): GQA 48:12, a sigmoid gate on the attention output, SwiGLU multiplier 4 (16384 at 6144),
    # modulation by addition only; context 12 tapped layers x 2560; 5-D latents [B, 16, 1, h, w]; sigma as the
    # timestep (ModelType FLUX). The pack's default is the last quarter (28 -> last 7).
    "krea2": dict(label="Krea 2", arch="krea2", hidden=6144, heads=48, kv_heads=12, text=KREA2_TXT_LAYERS * 2560,
                  txt_dim=2560, txt_layers=KREA2_TXT_LAYERS, txt_heads=20, pooled=None, channels=16, scale=8, patch=2,
                  guidance=False, mlp=4.0, blocks="last 7;all", text_tokens=64),
    # HunyuanVideo 1.0 (T2V): Flux's blocks (GELU-tanh MLP 4, RMS QK-norm, qkv bias), the token refiner (2 blocks) on
    # the llava-llama3 rows, pooled CLIP-L 768, guidance embedding, patch [1, 2, 2]; latents [B, 16, T, h, w]. The
    # pack's default is the last fifth (20 -> last 4).
    "hunyuan-video": dict(label="HunyuanVideo 1.0", arch="hunyuan", hidden=3072, heads=24, text=4096, pooled=768,
                          channels=16, scale=8, patch=2, guidance=True, mlp=4.0, blocks="last 4;all", text_tokens=64,
                          video=True),
    # CogVideoX-5B: expert blocks (shared q/k/v, LayerNorm QK-norm, GELU-tanh feed-forward 4; per half adaLN from the
    # 512-wide time embedding), T5 padded to 226, RoPE on the video tokens; latents [B, 16, T, h, w]; v-prediction
    # DDPM. The pack's default is the last fifth (42 -> last 9).
    "cogvideox": dict(label="CogVideoX-5B", arch="cogvideox", hidden=3072, heads=48, text=4096, pooled=None,
                      channels=16, scale=8, patch=2, guidance=False, mlp=4.0, blocks="last 9;all", text_tokens=226,
                      video=True, time_dim=512),
}
SINGLE_STREAM = ("lumina", "krea2")  # archs whose --depth layers are single-stream (no --single)
FIVE_D = ("qwen", "krea2")  # archs whose latents are [B, 16, 1, h, w] (one frame)
DEFAULT_FRAMES = 9  # the video families' latent frames: 33 video frames (1 + 4 (T - 1))
HUNYUAN_REFINER = 2  # HunyuanVideo's token refiner blocks (txt_in), over the prompt's rows and each concept
QWEN_AXES_DIMS_ROPE = (16, 56, 56)  # Qwen-Image's RoPE axes at head dim 128
Z_IMAGE_PAD = 32  # Z-Image's pad_tokens_multiple: caption and image tokens padded to a multiple of it
Z_IMAGE_ADALN = 256  # Z-Image's adaLN input width (min(dim, 256); its timestep embedder gives 256)
Z_IMAGE_REFINERS = 2  # NextDiT's n_refiner_layers: context refiner (caption) and noise refiner (image) layers each
Z_IMAGE_MULTIPLE_OF = 256  # NextDiT's multiple_of default (model_detection does not set it): 10240 at 3840
SD3_CLIP_TOKENS, SD3_CLIP_WIDTH = 77, 2048  # the CLIP-L/G rows at the start of SD3's prompt, and their width
SD3_POS_EMBED_MAX = 192  # SD3.5 Large's pos_embed grid (up to 192 x 192 tokens: 3072 px)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# The concept stream's functions (nodes/concept_stream.py), timed in every module of the pack that calls them
# (patching.py: the attention and scores; families/flux1.py: Flux's text side and undo_rope; families/qwen_image.py and
# families/z_image.py: apply_rope of the concepts' own position, inside their text side's project, and undo_rope of the
# cross-attention variant's image queries; families/krea2.py: undo_rope). A piece called inside another timed piece
# is counted once, under its own name (see stream_timer).
STREAM_PIECES = ("concept_qkv", "concept_attention", "concept_update", "output_space_scores",
                 "cross_attention_scores", "normalize_over_concepts", "undo_rope", "apply_rope")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=PRESETS, default="cpu", help="defaults for the options below")
    parser.add_argument("--family", choices=FAMILIES,
                        help="model family (default flux1; the klein/flux2-dev/sd35-large/qwen-image/z-image/krea2/"
                             "hunyuan-video/cogvideox presets set it)")
    parser.add_argument("--device", help="cpu or cuda")
    parser.add_argument("--dtype", choices=DTYPES)
    parser.add_argument("--depth", type=int, help="double blocks (Flux.1: 19); SD3: joint blocks (SD3.5 Large: 38); "
                                                   "Qwen-Image: dual-stream blocks (60); Z-Image: single-stream "
                                                   "layers (30); Krea 2: single-stream blocks (28); HunyuanVideo: "
                                                   "double blocks (20); CogVideoX-5B: expert blocks (42)")
    parser.add_argument("--single", type=int, help="single blocks (Flux.1: 38); SD3 and Qwen-Image have none: 0; "
                                                    "Z-Image and Krea 2: does not apply (their layers are --depth)")
    parser.add_argument("--sizes", help="image sizes in pixels, comma-separated (square; video: the frame size)")
    parser.add_argument("--frames", type=int,
                        help="video families only: latent frames (default 9: 33 video frames); latents "
                             "[B, 16, frames, h, w]")
    parser.add_argument("--steps", type=int, help="sampling steps of the timed runs")
    parser.add_argument("--steps-check", help="two step counts whose peak memory is compared")
    parser.add_argument("--repeats", type=int, help="interleaved rounds; medians are reported")
    parser.add_argument("--concepts", default="1,8,32", help="concept counts C")
    parser.add_argument("--blocks", help="';'-separated block selections (default: 'last 4;all'; SD3.5 Large: "
                                         "'last 8;all', the pack's default for 38 joint blocks; Qwen-Image: "
                                         "'last 13;all', the pack's default for 60 blocks; Z-Image: 'last 8;all' "
                                         "of 30 layers; Krea 2: 'last 7;all' of 28 blocks; HunyuanVideo "
                                         "'last 4;all' of 20 double blocks; CogVideoX-5B 'last 9;all' of 42)")
    parser.add_argument("--focus", type=int, default=8,
                        help="C of the full-attention reference, the encode path and the steps check")
    parser.add_argument("--text-tokens", type=int,
                        help="T5 prompt tokens (default 256: ComfyUI pads Flux's T5 prompt to at least 256; Flux.2 "
                             "pads the prompt to 512). SD3: the T5 tokens after its 77 CLIP-L/G rows (77 + 256 = 333; "
                             "ComfyUI pads SD3's T5 part to at least 77). Qwen-Image: the Qwen2.5-VL rows the model "
                             "gets (default 64; not padded: a short prompt and the template's closing tokens). "
                             "Z-Image: Qwen3 4B rows (default 64, unpadded; the model pads them to a multiple of 32). "
                             "Krea 2: rows of 12 x 2560 (its 12 tapped Qwen3-VL layers; default 64, unpadded)")
    parser.add_argument("--references", type=int, default=0,
                        help="Qwen-Image only: reference latents of the generated image's size in the conditioning "
                             "(edit models): each adds the generated image's token count to the joint sequence")
    parser.add_argument("--hidden", type=int,
                        help="block width (default: the family's); change only for smoke tests. SD3: a multiple "
                             "of 64; the MMDiT is then built with depth hidden/64 for the width (heads = hidden/64)")
    parser.add_argument("--heads", type=int, help="attention heads (default: the family's; SD3: hidden/64; at another "
                                                   "--hidden, Qwen-Image, Z-Image and Krea 2: hidden/128)")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", "/opt/ComfyUI"))
    parser.add_argument("--name", help="results file name (default from the settings)")
    args = parser.parse_args()
    single_given = args.single  # a Flux preset's single blocks do not apply to --family sd35-large / qwen-image
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.family = args.family or "flux1"
    spec = FAMILIES[args.family]
    hidden_given = args.hidden is not None and args.hidden != spec["hidden"]
    args.hidden = args.hidden or spec["hidden"]
    if spec["arch"] == "sd3":  # MMDiT: hidden = 64 x depth, heads = depth (head dim 64), no single blocks
        if args.hidden % 64:
            parser.error(f"--hidden {args.hidden}: SD3's width is 64 x its depth (a multiple of 64)")
        if args.heads is not None and args.heads != args.hidden // 64:
            parser.error(f"--heads {args.heads}: SD3 has hidden/64 = {args.hidden // 64} heads at width {args.hidden}")
        if single_given:
            parser.error(f"--single {args.single}: SD3 has joint blocks only (use --single 0)")
        args.single = 0
    if spec["arch"] == "qwen":  # dual-stream blocks only; heads of 128 unless --heads says otherwise
        if single_given:
            parser.error(f"--single {args.single}: Qwen-Image has dual-stream blocks only (use --single 0)")
        args.single = 0
        if args.heads is None:
            args.heads = spec["heads"] if args.hidden == spec["hidden"] else max(1, args.hidden // 128)
        if args.hidden % args.heads or (args.hidden // args.heads) % 16:
            parser.error(f"--hidden {args.hidden} --heads {args.heads}: Qwen-Image's head dim (hidden / heads) must "
                         "be a whole multiple of 16 (its RoPE splits it over three axes)")
    if spec["arch"] == "cogvideox":  # expert blocks only, heads of 64 (model_detection: heads = dim / 64)
        if single_given:
            parser.error(f"--single {args.single}: CogVideoX has expert blocks only (use --single 0)")
        args.single = 0
        if args.heads is None:
            args.heads = spec["heads"] if args.hidden == spec["hidden"] else max(1, args.hidden // 64)
        if args.hidden % args.heads or (args.hidden // args.heads) % 16:
            parser.error(f"--hidden {args.hidden} --heads {args.heads}: CogVideoX's head dim (hidden / heads) must be "
                         "a whole multiple of 16 (its RoPE splits it over three axes)")
    if spec["arch"] == "hunyuan":  # heads of 128 (model_detection: hidden / 128), RoPE axes [hd/8, 7hd/16, 7hd/16]
        if args.heads is None:
            args.heads = spec["heads"] if args.hidden == spec["hidden"] else max(1, args.hidden // 128)
        if args.hidden % args.heads or (args.hidden // args.heads) % 32:
            parser.error(f"--hidden {args.hidden} --heads {args.heads}: HunyuanVideo's head dim (hidden / heads) must "
                         "be a whole multiple of 32 (its RoPE axes hd/8, 7hd/16, 7hd/16, each even)")
    if spec.get("video"):
        args.frames = DEFAULT_FRAMES if args.frames is None else args.frames
        if args.frames < 1:
            parser.error(f"--frames {args.frames}: at least 1 latent frame")
    elif args.frames is not None:
        parser.error(f"--frames {args.frames}: only for the video families (hunyuan-video, cogvideox)")
    else:
        args.frames = 1
    if spec["arch"] in SINGLE_STREAM:  # single-stream layers only, heads of 128 unless --heads says otherwise
        label, kind = spec["label"], "layers" if spec["arch"] == "lumina" else "blocks"
        if single_given:
            parser.error(f"--single {args.single}: {label} has single-stream {kind} only, and --depth picks how many "
                         f"(use --single 0)")
        args.single = 0
        if spec["arch"] == "lumina" and args.hidden < Z_IMAGE_ADALN:
            parser.error(f"--hidden {args.hidden}: Z-Image's width must be at least {Z_IMAGE_ADALN} (its adaLN input "
                         f"is min(hidden, {Z_IMAGE_ADALN}) wide and its timestep embedder gives {Z_IMAGE_ADALN})")
        if args.heads is None:
            args.heads = spec["heads"] if args.hidden == spec["hidden"] else max(1, args.hidden // 128)
        if args.hidden % args.heads or (args.hidden // args.heads) % 16:
            parser.error(f"--hidden {args.hidden} --heads {args.heads}: {label}'s head dim (hidden / heads) must be a "
                         "whole multiple of 16 (its RoPE splits it over three axes)")
    # Krea 2's KV heads: its 48:12 where the heads allow it (a smoke width's 2 heads: 1 KV head)
    if spec["arch"] == "krea2":
        ratio = spec["heads"] // spec["kv_heads"]
        args.kv_heads = args.heads // ratio if args.heads % ratio == 0 else 1
    else:
        args.kv_heads = None
    if args.references < 0 or (args.references and spec["arch"] != "qwen"):
        parser.error(f"--references {args.references}: only for Qwen-Image (--family qwen-image), 0 or more")
    args.heads = args.heads or (args.hidden // 64 if spec["arch"] == "sd3" else spec["heads"])
    args.text_tokens = args.text_tokens or spec["text_tokens"]
    args.text_dim, args.mlp_ratio = spec["text"], spec["mlp"]
    args.blocks = args.blocks or spec["blocks"]
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.concepts = [int(c) for c in args.concepts.split(",")]
    args.steps_check = [int(s) for s in args.steps_check.split(",")] if args.steps_check else []
    args.blocks = [b.strip() for b in args.blocks.split(";")]
    blocks = (f"d{args.depth}" if spec["arch"] in ("sd3", "qwen", "cogvideox", *SINGLE_STREAM)
              else f"d{args.depth}s{args.single}")
    frames = f"-f{args.frames}" if spec.get("video") else ""  # a video's length: its own results
    width = f"-w{args.hidden}" if hidden_given else ""  # a smoke test's file never takes the real width's name
    references = f"-ref{args.references}" if args.references else ""  # an edit configuration: its own results
    args.name = args.name or (f"{args.family}-{args.device}-{args.dtype}-{blocks}{width}{references}-"
                              + "-".join(map(str, args.sizes)) + frames)
    return args


def start(args):
    """ComfyUI in-process (CPU mode unless --device cuda), then the pack as a package."""
    sys.path[:0] = [args.comfyui, str(ROOT / "tests" / "support")]
    import comfy.cli_args
    comfy.cli_args.args.cpu = args.device == "cpu"
    import comfy.model_management  # noqa: F401  (reads args.cpu at import)
    from pack import load_pack  # tests/support (on sys.path above): the one loader of the pack
    load_pack(ROOT)


def build_model(args):
    """A ModelPatcher around a model of the family's real width with random weights (std 0.02, norm and
    QK-norm scales 1; SD3's pos_embed buffer, allocated empty, std 0.02 too), initialised in place so that
    only one copy of the weights exists. A linear layer named after a norm (Qwen-Image's norm_out.linear,
    the final modulation) is a weight like the others. Z-Image and Krea 2: a norm is found by its module
    (Z-Image's cap_embedder.0 is an RMSNorm without "norm" in its name); Krea 2's RMSNorm stores its
    scale zero-centred (weight 1 + scale), so it stays at std 0.02 around 0."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from tiny_flux import flux_config
    from tiny_flux2 import flux2_config
    from tiny_qwen import qwen_config
    from tiny_sd3 import sd3_config
    from tiny_single_stream import krea2_config, z_image_config

    arch = FAMILIES[args.family]["arch"]
    if arch == "flux1":
        config = flux_config(hidden=args.hidden, heads=args.heads, depth=args.depth, single=args.single,
                             context=4096, pooled=768)
        model_config = comfy.supported_models.Flux(config)
    elif arch == "sd3":
        # ComfyUI's MMDiT: width 64 x depth and depth heads; num_blocks joint blocks (the last one's text half
        # pre_only). SD3.5 Large's unet_config as model_detection derives it, with its 192 x 192 pos_embed grid.
        config = sd3_config(depth=args.hidden // 64, qk_norm="rms", context=args.text_dim,
                            pooled=FAMILIES[args.family]["pooled"])
        config.update(num_blocks=args.depth, num_patches=SD3_POS_EMBED_MAX ** 2, pos_embed_max_size=SD3_POS_EMBED_MAX)
        model_config = comfy.supported_models.SD3(config)
    elif arch == "qwen":
        # ComfyUI's QwenImageTransformer2DModel as model_detection derives it from a Qwen-Image checkpoint (the
        # "index" reference method of Qwen-Image / Edit / Edit 2509), --depth of its 60 dual-stream blocks
        head_dim = args.hidden // args.heads
        config = qwen_config(layers=args.depth, heads=args.heads, head_dim=head_dim, text=args.text_dim)
        if head_dim == 128:
            config["axes_dims_rope"] = QWEN_AXES_DIMS_ROPE
        model_config = comfy.supported_models.QwenImage(config)
    elif arch == "lumina":
        # ComfyUI's NextDiT as model_detection derives it from a Z-Image checkpoint (its lumina2 branch, dim 3840):
        # n_kv_heads = n_heads, axes [32, 48, 48] at head dim 128 (scaled with it), rope_theta 256, ffn 8/3,
        # z_image_modulation, time_scale 1000, pad_tokens_multiple 32; NextDiT's own multiple_of (256)
        head_dim = args.hidden // args.heads
        config = z_image_config(layers=args.depth, text=args.text_dim)
        config.update(dim=args.hidden, n_heads=args.heads, n_kv_heads=args.heads, multiple_of=Z_IMAGE_MULTIPLE_OF,
                      axes_dims=[head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8])
        model_config = comfy.supported_models.ZImage(config)
    elif arch == "krea2":
        # ComfyUI's SingleStreamDiT as model_detection derives it from a Krea 2 checkpoint (features, heads and KV
        # heads of 128, layers, txtlayers, txtdim); txtheads / txtkvheads are the class defaults (20 / 20)
        spec = FAMILIES[args.family]
        config = krea2_config(layers=args.depth, txt_dim=spec["txt_dim"], txt_layers=spec["txt_layers"])
        config.update(features=args.hidden, heads=args.heads, kvheads=args.kv_heads, txtheads=spec["txt_heads"],
                      txtkvheads=spec["txt_heads"])
        model_config = comfy.supported_models.Krea2(config)
    elif arch == "hunyuan":
        # ComfyUI's HunyuanVideo as model_detection derives it from a HunyuanVideo 1.0 T2V checkpoint (patch [1, 2, 2],
        # axes [16, 56, 56] at head dim 128, scaled with it; theta 256, qkv bias, vec_in_dim 768, guidance embed)
        import dataclasses
        import comfy.ldm.hunyuan_video.model as hunyuan
        from tiny_hunyuan import hunyuan_config
        head_dim = args.hidden // args.heads
        config = hunyuan_config("1.0", depth=args.depth, single=args.single)
        config.update(hidden_size=args.hidden, num_heads=args.heads, context_in_dim=args.text_dim,
                      vec_in_dim=FAMILIES[args.family]["pooled"],
                      axes_dim=[head_dim // 8, 7 * head_dim // 16, 7 * head_dim // 16])
        fields = {f.name for f in dataclasses.fields(hunyuan.HunyuanVideoParams)}
        config = {k: v for k, v in config.items() if k in fields or k == "image_model"}
        model_config = comfy.supported_models.HunyuanVideo(config)
    elif arch == "cogvideox":
        # ComfyUI's CogVideoXTransformer3DModel as model_detection derives it from CogVideoX-5B (heads of 64, time
        # embedding 512, Conv2d patches of 2, RoPE, no positional embedding); the class's sample size (90 x 60 x 49)
        # and 226 text tokens
        from tiny_cogvideox import cogvideox_config
        spec = FAMILIES[args.family]
        config = cogvideox_config("5b", layers=args.depth)
        config.update(num_attention_heads=args.heads, attention_head_dim=args.hidden // args.heads,
                      time_embed_dim=spec["time_dim"], text_embed_dim=args.text_dim, sample_width=90,
                      sample_height=60, sample_frames=49, max_text_seq_length=226)
        model_config = comfy.supported_models.CogVideoX_T2V(config)
    else:
        config = flux2_config(hidden=args.hidden, heads=args.heads, depth=args.depth, single=args.single,
                              context=args.text_dim, guidance=FAMILIES[args.family]["guidance"])
        model_config = comfy.supported_models.Flux2(config)
    model_config.set_inference_dtype(DTYPES[args.dtype], None)
    model = model_config.get_model({})
    generator = torch.Generator().manual_seed(0)
    modules = dict(model.diffusion_model.named_modules())
    linear = {name for name, module in modules.items() if isinstance(module, torch.nn.Linear)}
    with torch.no_grad():
        for name, param in model.diffusion_model.named_parameters():
            param.normal_(0.0, 0.02, generator=generator)
            owner = name.rpartition(".")[0]
            if arch in SINGLE_STREAM:
                module = modules[owner]
                is_norm = "Norm" in type(module).__name__ and type(module).__module__ != "comfy.ldm.krea2.model"
            else:  # SD3's QK RMS norms are attn.ln_q / attn.ln_k; Qwen-Image's norm_out.linear is a linear layer
                is_norm = ("norm" in name or ".ln_" in name) and owner not in linear
            if is_norm:
                param.add_(1.0)
        pos_embed = getattr(model.diffusion_model, "pos_embed", None)
        if torch.is_tensor(pos_embed):
            pos_embed.normal_(0.0, 0.02, generator=generator)
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=torch.device("cpu"))


def full_attention_reference(concept, img_k, img_v):
    """The authors' concept attention: one full (C+N)x(C+N) attention over [concepts; image], through
    the model's own attention function, keeping the C concept rows. concept_attention is not given the
    image queries; img_k stands in for them (same shape, same cost; the concept rows do not depend on
    them, so the maps are the pack's). Same signature as concept_stream.concept_attention."""
    from comfy.ldm.modules.attention import optimized_attention
    count = concept.q.shape[2]
    q = torch.cat([concept.q, img_k], dim=2)
    k = torch.cat([concept.k, img_k], dim=2)
    v = torch.cat([concept.v, img_v], dim=2)
    return optimized_attention(q, k, v, q.shape[1], skip_reshape=True)[:, :count]


@contextlib.contextmanager
def replaced(owner, name, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


def stream_targets() -> list[tuple[object, str, str]]:
    """(owner, attribute, label) of every piece of the concept stream, where the pack calls it now:

    - each STREAM_PIECES function in every module of the pack that imports it (patching.py: the
      attention and the scores; families/flux1.py: Flux's concept_qkv, concept_update and undo_rope;
      families/qwen_image.py and families/z_image.py: apply_rope and undo_rope; families/krea2.py:
      undo_rope);
    - each family's text side: Family.text_side (Flux.1 computes the concepts' text-side modulation
      there, Qwen-Image its txt_mod, Z-Image its layer's adaLN_modulation of the caption's adaln input,
      Krea 2 its block's mod of the text tokens' vector), SD3's ContextSide.project / update (its
      context half's pre_attention / post_attention: modulation, qkv and QK-norm / proj and MLP),
      Qwen-Image's QwenTextSide.project / update (txt_norm1, modulation, add_q/k/v with norm_added_q/k
      and RoPE / to_add_out, txt_norm2, modulation and txt_mlp), Z-Image's NextDiTTextSide.project /
      update (attention_norm1, qkv, q/k_norm and RoPE at a one-token caption's position / out,
      attention_norm2, ffn_norm1, feed_forward, ffn_norm2) and Krea 2's Krea2TextSide.project / update
      (prenorm, wq/wk/wv with qknorm, the gate / its sigmoid, wo, postnorm and the SwiGLU mlp), CogVideoX's
      CogTextSide.project / update (norm1's text half, q/k/v with norm_q/k / attn_out, norm2's text half,
      ff_proj and ff_out); HunyuanVideo's text side is Flux's (FluxTextSide: concept_qkv / concept_update);
    - the per-call set-up (ConceptForward.__init__: with the concepts' text projection, Z-Image's
      cap_embedder and context refiner, Krea 2's text fusion transformer and txtmlp) and the
      accumulation (ConceptCapture.add): HunyuanVideo's token refiner over the concepts, CogVideoX's
      text_proj and its timestep embedding's text halves are there.

    A STREAM_PIECES function that no module imports (it was renamed or moved) is an error: the table
    would silently lose it."""
    from concept_attention_pack.nodes import concept_stream, families, patching
    from concept_attention_pack.nodes.families import base, cogvideox, krea2, qwen_image, sd3, z_image

    modules = [module for key, module in sorted(sys.modules.items())
               if key.startswith(f"{PACK}.nodes.") and module is not None and module is not concept_stream]
    targets = []
    for name in STREAM_PIECES:
        callers = [module for module in modules if callable(vars(module).get(name))]
        if not callers:
            raise RuntimeError(f"no module of the pack imports concept_stream.{name}: update STREAM_PIECES")
        targets += [(module, name, name) for module in callers]
    # text_side where a family class defines it (a class whose parent defines it too never calls the parent's)
    owners = {cls for family in families.FAMILIES for cls in type(family).__mro__
              if "text_side" in vars(cls) and cls is not base.Family}
    targets += [(cls, "text_side", "Family.text_side") for cls in sorted(owners, key=lambda c: c.__name__)]
    sides = (sd3.ContextSide, qwen_image.QwenTextSide, z_image.NextDiTTextSide, krea2.Krea2TextSide,
             cogvideox.CogTextSide)
    targets += [(side, name, f"{side.__name__}.{name}") for side in sides for name in ("project", "update")]
    targets += [(owner, name, f"{owner.__name__}.{name}")
                for owner, name in ((patching.ConceptForward, "__init__"), (patching.ConceptCapture, "add"))]
    return targets


@contextlib.contextmanager
def stream_timer(sync: bool):
    """Seconds spent in each piece of the concept stream (stream_targets: the block math, where the pack
    calls it, the per-call set-up and the accumulation). The hook's own Python is not included (it shows
    in the wall-time difference). With sync (CUDA) every piece waits for the device. A piece called
    inside another (apply_rope inside QwenTextSide.project / NextDiTTextSide.project) counts under its
    own name only: each piece's seconds exclude the timed pieces inside it, so they add up to the
    stream's time once."""
    seconds: dict[str, float] = {}
    open_pieces: list[float] = []  # per piece being timed now: the seconds of the timed pieces inside it

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if sync:
                torch.cuda.synchronize()
            begin = time.perf_counter()
            open_pieces.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                if sync:
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - begin
                inside = open_pieces.pop()
                seconds[name] = seconds.get(name, 0.0) + elapsed - inside
                if open_pieces:
                    open_pieces[-1] += elapsed
        return wrapper

    with contextlib.ExitStack() as stack:
        for owner, name, label in stream_targets():
            stack.enter_context(replaced(owner, name, timed(label, vars(owner)[name])))
        yield seconds


class Meter:
    """Wall time (device synchronized) and peak tensor memory above the level at the start of a call.
    CUDA: torch.cuda.max_memory_allocated. CPU, where torch keeps no peak: the allocation and free
    events of torch.profiler(profile_memory=True), summed in time order (tensors allocated during the
    call; the profiler slows the call, so memory is measured in runs that are not timed)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.method = ("torch.cuda.max_memory_allocated - memory_allocated before" if self.cuda else
                       "torch.profiler profile_memory: running sum of the CPU allocation/free events")
        self.disturbance = {"other processes": 0.0, "steal": 0.0}  # largest share of the CPUs in a timed call

    def seconds(self, fn):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
        before = disturbance_seconds()
        begin = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - begin
        for key, value in disturbance_seconds().items():
            share = (value - before[key]) / (seconds * os.cpu_count())
            self.disturbance[key] = max(self.disturbance[key], share)
        return seconds, out

    def peak_mb(self, fn):
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            out = fn()
            return (torch.cuda.max_memory_allocated() - before) / 2**20, out
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
        events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
        level = peak = 0
        for _, nbytes in events:
            level += nbytes
            peak = max(peak, level)
        return peak / 2**20, out


def disturbance_seconds() -> dict:
    """CPU seconds so far used by all other processes (busy time minus this process's) and stolen by
    the hypervisor (a virtual machine's neighbours)."""
    import psutil
    system, own = psutil.cpu_times(), psutil.Process().cpu_times()
    busy = system.user + system.system + getattr(system, "nice", 0.0)
    return {"other processes": busy - own.user - own.system, "steal": getattr(system, "steal", 0.0)}


class Bench:
    def __init__(self, args):
        import comfy.model_management
        from concept_attention_pack.nodes import api, capture, patching

        self.args, self.api, self.capture, self.patching = args, api, capture, patching
        self.model = build_model(args)
        self.device = comfy.model_management.get_torch_device()
        self.meter = Meter(self.device)
        generator = torch.Generator().manual_seed(1)
        self.spec = FAMILIES[args.family]
        self.sd3 = self.spec["arch"] == "sd3"
        self.context = torch.randn(1, _text_tokens(args) if self.sd3 else args.text_tokens, args.text_dim,
                                   generator=generator)
        self.pooled = torch.randn(1, self.spec["pooled"], generator=generator) if self.spec["pooled"] else None
        count = max(args.concepts + [args.focus])
        self.embeddings = torch.randn(count, args.text_dim, generator=generator)
        self.qwen = self.spec["arch"] == "qwen"
        # edit models: reference latents (as VAE Encode gives them) of the generated image's size, one per size
        self.references = {size: [torch.randn(self.latent(size).shape, generator=torch.Generator().manual_seed(3 + i))
                                  for i in range(args.references)] for size in args.sizes}
        if self.sd3:  # as SD3's text encoders give them: the CLIP-L/G rows (and the concepts) zero-padded to 4096
            self.context[:, :SD3_CLIP_TOKENS, SD3_CLIP_WIDTH:] = 0
            self.embeddings[:, SD3_CLIP_WIDTH:] = 0
        self.names = [f"concept {i}" for i in range(count)]

    def patched(self, concepts, blocks):
        return self.api.patch_model(self.model, self.embeddings[:concepts], self.names[:concepts], blocks=blocks)

    def latent(self, size):
        """An empty latent; Qwen-Image's and Krea 2's are 5-D [B, 16, 1, h, w] (one frame), the video families'
        [B, 16, --frames, h, w]."""
        side = size // self.spec["scale"]
        frames = (self.args.frames,) if self.spec.get("video") else (1,) if self.spec["arch"] in FIVE_D else ()
        return torch.zeros(1, self.spec["channels"], *frames, side, side)

    def conditioning(self, size):
        """The prompt as CLIP Text Encode gives it: [[context, {pooled_output (Flux.1, SD3), guidance}]];
        Qwen-Image: pooled_output None and, with --references, the edit models' reference_latents."""
        extra = {"pooled_output": self.pooled} if self.pooled is not None or self.qwen else {}
        if self.args.references:
            extra["reference_latents"] = self.references[size]
        return [[self.context, {**extra, **({"guidance": 3.5} if self.spec["guidance"] else {})}]]

    def sample(self, model, size, steps):
        """Flux dev's usual sampling: cfg 1 (the guidance is embedded; no negative pass), euler, simple.
        SD3, Qwen-Image, Z-Image and Krea 2 the same way (cfg 1: one model pass per step, as for Flux)."""
        import comfy.sample
        latent = self.latent(size)
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        cond = self.conditioning(size)
        return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent, disable_pbar=True)

    def variant(self, variant):
        """REFERENCE swaps the full-attention concept stream in for the pack's (patching.py's name for it)."""
        if variant == REFERENCE:
            return replaced(self.patching, "concept_attention", full_attention_reference)
        return contextlib.nullcontext()

    def run(self, model, size, steps, variant=None, probe=False) -> dict:
        """One sampling run: timed, or a probe (peak memory and the maps; not timed). The concept
        stream's pieces are timed in the timed runs on CPU, in the probe on CUDA (there its timers
        synchronize the device)."""
        result = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.variant(variant))
            if variant and probe == self.meter.cuda:
                result["stream_pieces_s"] = stack.enter_context(stream_timer(self.meter.cuda))
            measure = self.meter.peak_mb if probe else self.meter.seconds
            result["peak_mb" if probe else "seconds"], samples = measure(lambda: self.sample(model, size, steps))
        if probe and variant:
            found = self.api.concept_maps(model, samples, source="sampling")
            result["maps"] = found.maps
            # reference images with maps of their own (their tokens scored too), where the pack gives them
            result["reference_maps"] = len(getattr(found, "references", None) or ())
        return result

    def configs(self):
        """(C, block selection, scored blocks, variant) per patched model; selections that score the
        same blocks at this depth run once, under a joint label."""
        selections: dict[tuple, list[str]] = {}
        for spec in self.args.blocks:
            selections.setdefault(self.capture.parse_blocks(spec, self.args.depth), []).append(spec)
        labelled = [(" = ".join(specs), scored) for scored, specs in selections.items()]
        concepts = sorted(set(self.args.concepts) | {self.args.focus})
        configs = [(c, label, scored, "pack") for c in concepts for label, scored in labelled]
        return configs + [(self.args.focus, *labelled[0], REFERENCE)]

    def sampling(self, size):
        """A warm-up, one probe run per model (also a warm-up of each configuration), then interleaved
        timed rounds: the plain model, then every patched configuration."""
        steps, configs = self.args.steps, self.configs()
        models = {config: self.patched(config[0], config[1].split(" = ")[0]) for config in configs}
        self.run(self.model, size, 1)
        plain_probe = self.run(self.model, size, steps, probe=True)
        runs = {config: [self.run(models[config], size, steps, config[3], probe=True)] for config in configs}
        plain = []
        for round_ in range(self.args.repeats):
            plain.append(self.run(self.model, size, steps)["seconds"])
            for config in configs:
                runs[config].append(self.run(models[config], size, steps, config[3]))
            print(f"  {size}px round {round_ + 1}/{self.args.repeats}: plain {plain[-1]:.2f} s", flush=True)
        plain.append(self.run(self.model, size, steps)["seconds"])  # every patched run lies between two plain runs
        plain_s, rows = statistics.median(plain), []
        for index, ((c, label, scored, variant), (probe, *timed)) in enumerate(runs.items()):
            seconds = [run["seconds"] for run in timed]
            # the machine's speed drifts: compare each run with the plain time interpolated at its place in the round
            at = (index + 1) / (len(configs) + 1)
            ratios = [t / (plain[r] + at * (plain[r + 1] - plain[r])) for r, t in enumerate(seconds)]
            pieces = [run["stream_pieces_s"] for run in (probe, *timed) if "stream_pieces_s" in run]
            stream = statistics.median(sum(p.values()) for p in pieces)
            pack_maps = runs[(c, label, scored, "pack")][0]["maps"]
            scored_references = probe["reference_maps"] * _image_tokens(self.args, size)
            rows.append(dict(
                size=size, tokens=_image_tokens(self.args, size), concepts=c, blocks=label, scored_blocks=len(scored),
                variant=variant, steps=steps, plain_s=plain_s, patched_s=statistics.median(seconds),
                overhead_pct=100 * (statistics.median(ratios) - 1), stream_s=stream, stream_pct=100 * stream / plain_s,
                reference_tokens=_reference_tokens(self.args, size), reference_maps=probe["reference_maps"],
                estimate_pct=100 * stream_flops(self.args, size, c, scored, variant, scored_references)
                / forward_flops(self.args, size),
                plain_peak_mb=plain_probe["peak_mb"], extra_peak_mb=probe["peak_mb"] - plain_probe["peak_mb"],
                stream_pieces_s={k: statistics.median(p[k] for p in pieces) for k in pieces[0]},
                maps_max_diff_vs_pack=(probe["maps"] - pack_maps).abs().max().item(),
                raw=dict(plain_s=plain, patched_s=seconds, ratios=ratios, stream_s=[sum(p.values()) for p in pieces])))
        return rows

    def encode(self, size):
        """The encode path vs one full forward of the plain model (batch 1, same size and prompt; with
        --references, the forward carries the reference latents as sampling gives them to the model, and
        the encode path is given them in its CONDITIONING; what the encode pass feeds the model is
        recorded: encode_reference_tokens)."""
        import comfy.model_management
        label = self.configs()[0][1]
        model = self.patched(self.args.focus, label.split(" = ")[0])
        latent = torch.randn(self.latent(size).shape, generator=torch.Generator().manual_seed(2))
        base = self.model.model
        prompt = {"pooled_output": self.pooled} if self.pooled is not None else {}  # SD3's encode_adm reads it
        if self.args.references:
            prompt["reference_latents"] = self.references[size]
        if self.spec["arch"] == "cogvideox":  # its concat_cond reads the noise's channels (none to add for T2V)
            prompt.update(noise=latent, device=self.device)
        conds = base.extra_conds(cross_attn=self.context, **prompt)  # as sampling prepares them
        context = conds["c_crossattn"].cond
        inputs = {"guidance": torch.full((1,), 3.5)} if self.spec["guidance"] else {}
        if self.pooled is not None:
            inputs["y"] = self.pooled
        if "ref_latents" in conds:  # Qwen-Image edit: process_latent_in applied (apply_model moves them)
            inputs["ref_latents"] = conds["ref_latents"].cond
        if "num_tokens" in conds:  # NextDiT's forward takes the caption's length (Lumina2.extra_conds gives it)
            inputs["num_tokens"] = conds["num_tokens"].cond

        # SD3's encode path needs the prompt's pooled vector, Qwen-Image edit's the references: a CONDITIONING
        # carries them, as the node is given it (Flux: the prompt alone)
        # HunyuanVideo 1.0's the pooled CLIP-L vector (its y; the guidance the encode path sets itself)
        full = self.sd3 or self.qwen or self.spec["arch"] == "hunyuan"
        conditioning = self.conditioning(size) if full else self.context

        def encode():
            return self.api.concept_maps(model, latent, source="latent", sigma=0.5, conditioning=conditioning)

        def forward():
            comfy.model_management.load_models_gpu([self.model])
            with torch.no_grad():
                return base.apply_model(latent.to(self.device), torch.full((1,), 0.5, device=self.device),
                                        c_crossattn=context, **inputs)

        # warm-up; the encode pass's image tokens beyond the generated image's (reference latents), as the
        # diffusion model receives them
        diffusion, seen = base.diffusion_model, {}
        own_forward = vars(diffusion).get("forward")  # an instance attribute someone set, kept
        original_forward = diffusion.forward

        def spy(*args, **kwargs):
            seen.setdefault("ref_latents", kwargs.get("ref_latents"))
            return original_forward(*args, **kwargs)

        diffusion.forward = spy
        try:
            encode()
        finally:
            if own_forward is None:
                del diffusion.forward
            else:
                diffusion.forward = own_forward
        encode_refs = sum(_latent_tokens(self.args, ref) for ref in seen.get("ref_latents") or [])
        forward()
        times = {"encode": [], "forward": []}
        for _ in range(self.args.repeats):
            times["encode"].append(self.meter.seconds(encode)[0])
            times["forward"].append(self.meter.seconds(forward)[0])
        encode_s, forward_s = (statistics.median(times[k]) for k in ("encode", "forward"))
        scored = self.capture.parse_blocks(label.split(" = ")[0], self.args.depth)
        estimate = (encode_flops(self.args, size, scored, encode_refs)
                    + stream_flops(self.args, size, self.args.focus, scored, "pack")) / forward_flops(self.args, size)
        return dict(size=size, concepts=self.args.focus, blocks=label, encode_s=encode_s, forward_s=forward_s,
                    ratio=encode_s / forward_s, estimate_ratio=estimate, forward_reference_tokens=_reference_tokens(
                        self.args, size), encode_reference_tokens=encode_refs, raw=times)

    def steps_check(self, size):
        """Peak extra memory of the patched model at two step counts (one plain/patched pair each)."""
        label = self.configs()[0][1]
        model = self.patched(self.args.focus, label.split(" = ")[0])
        rows = []
        for steps in self.args.steps_check:
            plain = self.run(self.model, size, steps, probe=True)["peak_mb"]
            patched = self.run(model, size, steps, "pack", probe=True)["peak_mb"]
            rows.append(dict(size=size, concepts=self.args.focus, blocks=label, steps=steps, plain_peak_mb=plain,
                             extra_peak_mb=patched - plain))
        return rows


def forward_flops(args, size) -> float:
    """Analytic multiply-adds of one forward (batch 1): every block costs 12 d^2 per token (qkv 3, proj
    1, MLP 8; single blocks: linear1 7, linear2 5) plus 2 T^2 d for attention, and its modulation (double
    or joint blocks 12 d^2, single blocks 3 d^2); SD3's last joint block only projects its text tokens
    (see _joint_block_flops); SD3 and Qwen-Image have no single blocks. Qwen-Image's reference latents
    (--references) are image tokens like the generated image's: in every linear layer of the image half,
    in the joint attention and in the image input projection. Plus the text and image input projections.
    Z-Image and Krea 2: what runs before their layers (_single_stream_prelude_flops), then --depth
    single-stream layers over the whole sequence (_layer_flops)."""
    if _arch(args) in SINGLE_STREAM:
        return _single_stream_prelude_flops(args, size) + args.depth * _layer_flops(args, _sequence_tokens(args, size))
    d, n, text = args.hidden, _image_tokens(args, size), _text_tokens(args)
    references = _reference_tokens(args, size)
    tokens = n + references + text
    single = _block_d2(args) * d * d * tokens + 2 * tokens * tokens * d + 3 * d * d
    return (sum(_joint_block_flops(args, size, index, references) for index in range(args.depth))
            + args.single * single + _text_path_flops(args, text) + (n + references) * 64 * d)


def _arch(args) -> str:
    return FAMILIES[args.family]["arch"]


def _image_tokens(args, size) -> int:
    """Image tokens of a square image: 16 pixels per token side in every family (8 x 2 or 16 x 1); a video's
    --frames latent frames of them (one token per latent frame: patch [1, 2, 2] / CogVideoX 1.0's 2-D patches)."""
    spec = FAMILIES[args.family]
    return args.frames * (size // (spec["scale"] * spec["patch"])) ** 2


def _padded(args, tokens) -> int:
    """Tokens as the model runs them: Z-Image pads its caption and its image tokens to a multiple of 32."""
    if _arch(args) == "lumina":
        return -(-tokens // Z_IMAGE_PAD) * Z_IMAGE_PAD
    return tokens


def _sequence_tokens(args, size) -> int:
    """A single-stream model's joint sequence: caption (padded) then image (padded)."""
    return _text_tokens(args) + _padded(args, _image_tokens(args, size))


def _reference_tokens(args, size) -> int:
    """Qwen-Image edit: the reference latents' tokens (--references of the generated image's size)."""
    return args.references * _image_tokens(args, size)


def _latent_tokens(args, latent) -> int:
    """Tokens of a latent [B, C, (frames,) h, w] (patch x patch latent pixels each, padded up)."""
    patch = FAMILIES[args.family]["patch"]
    frames = latent.shape[2] if latent.ndim == 5 else 1
    return frames * ((latent.shape[-2] + patch - 1) // patch) * ((latent.shape[-1] + patch - 1) // patch)


def _text_tokens(args) -> int:
    """Prompt tokens as the model sees them: Flux.2 pads to 512; SD3's 77 CLIP-L/G rows come before T5's;
    Z-Image pads its caption to a multiple of 32; Qwen-Image's and Krea 2's are not padded."""
    if _arch(args) == "flux2":
        return max(args.text_tokens, 512)
    if _arch(args) == "sd3":
        return SD3_CLIP_TOKENS + args.text_tokens
    return _padded(args, args.text_tokens)


def _ffn(args) -> int:
    """A single-stream layer's SwiGLU hidden width, as the model rounds it: Z-Image int(8/3 d) up to a
    multiple of 256 (10240 at 3840), Krea 2 int(2 d / 3) x 4 up to a multiple of 128 (16384 at 6144)."""
    d, multiplier = args.hidden, FAMILIES[args.family]["mlp"]
    if _arch(args) == "lumina":
        hidden, multiple = int(multiplier * d), Z_IMAGE_MULTIPLE_OF
    else:
        hidden, multiple = int(2 * d / 3) * int(multiplier), 128
    return multiple * -(-hidden // multiple)


def _krea2_text_block_d2() -> float:
    """Krea 2's text fusion block per token, in txtdim^2: wq, wk, wv (20 KV heads of 20), gate, wo 5 and
    its SwiGLU (int(2 x 2560 / 3) x 4 -> 6912) 3 x 6912 / 2560."""
    dim = FAMILIES["krea2"]["txt_dim"]
    return 5 + 3 * (128 * -(-(int(2 * dim / 3) * 4) // 128)) / dim


def _qkv_d2(args) -> float:
    """The concepts' projection before the attention, per token in d^2: qkv 3 (Z-Image: no GQA); Krea 2:
    wq 1, wk and wv kv_heads / heads each, its attention gate 1."""
    if _arch(args) == "krea2":
        return 2 + 2 * args.kv_heads / args.heads
    return 3


def _block_d2(args) -> float:
    """Multiply-adds per token of one block's linear layers, in d^2: qkv 3, proj 1, MLP 2r (Flux.2's
    SiLU-gated MLP: 3r; SD3's GELU MLP and Qwen-Image's GELU-tanh FeedForward, on both halves: 2r).
    Z-Image and Krea 2: their projections before the attention (_qkv_d2), out / wo 1 and the SwiGLU
    feed-forward 3 x _ffn / d (8 at both real widths)."""
    if _arch(args) in SINGLE_STREAM:
        return _qkv_d2(args) + 1 + 3 * _ffn(args) / args.hidden
    return 4 + (3 if _arch(args) == "flux2" else 2) * args.mlp_ratio


def _layer_modulation(args) -> float:
    """A single-stream layer's modulation per call (and the concept stream's per block): Z-Image's
    adaLN_modulation 256 x 4 d; Krea 2 adds its mod parameters to the call's vector (no product)."""
    return Z_IMAGE_ADALN * 4 * args.hidden if _arch(args) == "lumina" else 0


def _layer_flops(args, tokens, modulation=True) -> float:
    """One single-stream layer over `tokens` tokens: linear layers, attention, modulation (Z-Image's
    context refiner has none)."""
    d = args.hidden
    return _block_d2(args) * d * d * tokens + 2 * tokens * tokens * d + (_layer_modulation(args) if modulation else 0)


def _text_path_flops(args, tokens, refined=None, prompts=1) -> float:
    """The text projection of `tokens` rows (the prompt's or the concepts'): Flux, SD3, Qwen-Image: one
    linear text_dim -> d. Z-Image: cap_embedder, then its 2 context-refiner layers over `refined` tokens
    (the padded caption; the concepts: one sequence of C). Krea 2: its text fusion transformer (2
    layer-wise blocks over each token's 12 tapped layers, the projector 12 -> 1, 2 refiner blocks over
    the tokens) and txtmlp (txtdim -> d, d -> d). HunyuanVideo: its token refiner over `prompts` prompts of
    tokens / prompts rows each (the prompt: one; the concepts: C one-token prompts): input_embedder text_dim -> d
    per row, 2 refiner blocks (qkv 3, proj 1, MLP 8 per row; attention within each prompt), and per prompt its
    c_embedder (text_dim -> d, d -> d) and the blocks' adaLN (2 d^2 each). CogVideoX: text_proj."""
    d = args.hidden
    if _arch(args) == "hunyuan":
        per = tokens // prompts
        return (tokens * args.text_dim * d + HUNYUAN_REFINER * (12 * d * d * tokens + 2 * per * per * d * prompts)
                + prompts * (args.text_dim * d + d * d + HUNYUAN_REFINER * 2 * d * d))
    if _arch(args) == "lumina":
        refined = tokens if refined is None else refined
        return tokens * args.text_dim * d + Z_IMAGE_REFINERS * _layer_flops(args, refined, modulation=False)
    if _arch(args) == "krea2":
        spec = FAMILIES[args.family]
        width, layers, block = spec["txt_dim"], spec["txt_layers"], _krea2_text_block_d2()
        layerwise = 2 * (tokens * layers * block * width * width + 2 * tokens * layers * layers * width)
        refiner = 2 * (tokens * block * width * width + 2 * tokens * tokens * width)
        return layerwise + tokens * layers * width + refiner + tokens * (width * d + d * d)
    return tokens * args.text_dim * d


def _single_stream_prelude_flops(args, size) -> float:
    """What a single-stream model runs before its layers: the prompt's text path, the image input
    projection (64 -> d per token); Z-Image its 2 noise-refiner layers over the (padded) image tokens;
    Krea 2 its timestep MLP and tproj (tdim -> d, d -> d, d -> 6 d)."""
    d, n = args.hidden, _image_tokens(args, size)
    flops = _text_path_flops(args, args.text_tokens, _text_tokens(args)) + n * 64 * d
    if _arch(args) == "lumina":
        return flops + Z_IMAGE_REFINERS * _layer_flops(args, _padded(args, n))
    return flops + 256 * d + 7 * d * d


def _pre_only(args, index) -> bool:
    """SD3's last joint block: its text half gives q/k/v only (no proj, no MLP; modulation 2 d^2, not 6)."""
    return _arch(args) == "sd3" and index == args.depth - 1


def _joint_modulation(args) -> float:
    """A double (joint) block's modulation of both halves per call: 12 d^2 (Qwen-Image: img_mod and txt_mod,
    6 d^2 each; HunyuanVideo as Flux); CogVideoX: norm1 and norm2 from the time embedding, 6 d each half."""
    if _arch(args) == "cogvideox":
        return 2 * FAMILIES[args.family]["time_dim"] * 6 * args.hidden
    return 12 * args.hidden * args.hidden


def _joint_block_flops(args, size, index, references=0) -> float:
    """One double (joint) block: linear layers on every token, joint attention, modulation of both halves
    (_joint_modulation). references: image tokens beyond the generated image's."""
    d, text = args.hidden, _text_tokens(args)
    tokens = _image_tokens(args, size) + references + text
    flops = _block_d2(args) * d * d * tokens + 2 * tokens * tokens * d + _joint_modulation(args)
    if _pre_only(args, index):
        flops -= (_block_d2(args) - 3) * d * d * text + 4 * d * d
    return flops


def encode_flops(args, size, scored, references=0) -> float:
    """The encode pass: the plain forward's double (joint) blocks up to the last scored one, with the
    reference tokens the encode pass gives the model (references). Z-Image and Krea 2: all that runs
    before their layers, then their layers up to the last scored one."""
    if _arch(args) in SINGLE_STREAM:
        return (_single_stream_prelude_flops(args, size)
                + (scored[-1] + 1) * _layer_flops(args, _sequence_tokens(args, size)))
    return (sum(_joint_block_flops(args, size, index, references) for index in range(scored[-1] + 1))
            + _text_path_flops(args, _text_tokens(args)))


def _stream_modulation(args) -> float:
    """The concepts' own modulation per block: the text half's 6 d^2 (Flux, SD3, Qwen-Image); Z-Image
    and Krea 2 as their layers' (_layer_modulation); CogVideoX: norm1 and norm2 of the time embedding
    (CogTextSide computes both halves and keeps the text's)."""
    if _arch(args) in SINGLE_STREAM:
        return _layer_modulation(args)
    if _arch(args) == "cogvideox":
        return _joint_modulation(args)
    return 6 * args.hidden * args.hidden


def stream_flops(args, size, concepts, scored, variant, scored_references=0) -> float:
    """Analytic multiply-adds of the concept stream per model call: modulation (6 d^2; SD3's last block
    2 d^2; Z-Image 1024 d, Krea 2 none), qkv (3 d^2 C; Krea 2 2.5 d^2 C with its gate), attention
    (2 C (C+N) d; the reference: 2 (C+N)^2 d), the rest of the block (proj + MLP: 9 d^2 C; Z-Image and
    Krea 2: 9 d^2 C too; not after the stream's last block), scores (C N d per scored block) and the
    concepts' text projection (_text_path_flops). N is the generated image's tokens: the concepts do not
    attend to Qwen-Image's reference tokens, nor to Z-Image's pad tokens; scored_references: reference
    tokens that are scored too (C N_ref d per scored block), where the pack gives the references maps of
    their own."""
    d, n, c = args.hidden, _image_tokens(args, size), concepts
    depth = scored[-1] + 1
    attention = 2 * (c + n) ** 2 * d if variant == REFERENCE else 2 * c * (c + n) * d
    modulation = depth * _stream_modulation(args) - (4 * d * d if _pre_only(args, depth - 1) else 0)
    qkv = _qkv_d2(args)
    return (modulation + depth * (qkv * d * d * c + attention) + (depth - 1) * (_block_d2(args) - qkv) * d * d * c
            + len(scored) * c * (n + scored_references) * d + _text_path_flops(args, c, prompts=c))


def markdown(rows, columns):
    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt(row) for _, fmt in columns) + " |")
    return "\n".join(lines)


def report(args, meter, sampling, encode, steps):
    if _arch(args) == "sd3":
        blocks = f"{args.depth} joint blocks (the last one's text half pre_only)"
        prompt = f"{_text_tokens(args)} prompt tokens ({SD3_CLIP_TOKENS} CLIP-L/G + {args.text_tokens} T5)"
    elif _arch(args) == "qwen":
        blocks = f"{args.depth} dual-stream blocks"
        prompt = f"{_text_tokens(args)} prompt tokens (Qwen2.5-VL, unpadded)"
        if args.references:
            prompt += (f", {args.references} reference latent{'s' if args.references > 1 else ''} of the generated "
                       f"image's size (edit: {args.references} x the image's tokens more in the joint attention; the "
                       f"concepts attend to the generated image's)")
    elif _arch(args) == "lumina":
        blocks = (f"{args.depth} single-stream layers (and {Z_IMAGE_REFINERS} context-refiner + {Z_IMAGE_REFINERS} "
                  f"noise-refiner layers)")
        prompt = (f"{args.text_tokens} prompt tokens (Qwen3 4B, unpadded; the model pads the caption to "
                  f"{_text_tokens(args)} and the image tokens to a multiple of {Z_IMAGE_PAD})")
    elif _arch(args) == "krea2":
        spec = FAMILIES[args.family]
        blocks = f"{args.depth} single-stream blocks"
        prompt = (f"{args.text_tokens} prompt tokens (Qwen3-VL 4B, unpadded: {spec['txt_layers']} tapped layers x "
                  f"{spec['txt_dim']}, through its text fusion transformer)")
    elif _arch(args) == "cogvideox":
        blocks = f"{args.depth} expert blocks"
        prompt = f"{_text_tokens(args)} prompt tokens (T5, padded to 226 by its tokenizer)"
    elif _arch(args) == "hunyuan":
        blocks = f"{args.depth} double + {args.single} single blocks (and the {HUNYUAN_REFINER}-block token refiner)"
        prompt = f"{_text_tokens(args)} prompt tokens (llava-llama3, unpadded)"
    else:
        blocks = f"{args.depth} double + {args.single} single blocks"
        prompt = f"{_text_tokens(args)} prompt tokens"
    if FAMILIES[args.family].get("video"):
        blocks += f", {args.frames} latent frames ({1 + 4 * (args.frames - 1)} video frames)"
    heads = f"{args.heads} heads" + (f", {args.kv_heads} KV heads" if args.kv_heads else "")
    out = [f"{FAMILIES[args.family]['label']}, width {args.hidden} ({heads}), text width {args.text_dim}, "
           f"{blocks}, {prompt}, {args.dtype} on {args.device}; {args.steps} euler steps, cfg 1; "
           f"wall times: medians of {args.repeats} interleaved rounds (overhead: median of each run's ratio to the plain "
           f"time interpolated between the plain runs around it); memory: one probe run per model "
           f"({meter.method}).", ""]
    out.append(markdown(sampling, [
        ("size", lambda r: f"{r['size']}^2 ({r['tokens']}"
                           + (f" + {r['reference_tokens']} ref" if r.get("reference_tokens") else "") + " tok)"),
        ("C", lambda r: str(r["concepts"])),
        ("blocks (scored)", lambda r: f"{r['blocks']} ({r['scored_blocks']})"), ("variant", lambda r: r["variant"]),
        ("plain s", lambda r: f"{r['plain_s']:.2f}"), ("patched s", lambda r: f"{r['patched_s']:.2f}"),
        ("wall overhead [range]", lambda r: f"{r['overhead_pct']:+.1f}% [{100 * (min(r['raw']['ratios']) - 1):+.0f}, "
                                            f"{100 * (max(r['raw']['ratios']) - 1):+.0f}]"),
        ("stream s", lambda r: f"{r['stream_s']:.3f}"), ("stream / plain", lambda r: f"{r['stream_pct']:.2f}%"),
        ("FLOP estimate", lambda r: f"{r['estimate_pct']:.3f}%"),
        ("plain peak MB", lambda r: f"{r['plain_peak_mb']:.0f}"), ("extra peak MB", lambda r: f"{r['extra_peak_mb']:+.1f}"),
    ]))
    for r in sampling:
        if r["variant"] == REFERENCE:
            pack = next(p for p in sampling if p["size"] == r["size"] and p["concepts"] == r["concepts"]
                        and p["blocks"] == r["blocks"] and p["variant"] == "pack")
            out.append(f"\n{r['size']}^2, C={r['concepts']}: full-attention reference / pack concept-stream time = "
                       f"{r['stream_s'] / pack['stream_s']:.1f}x (concept_attention alone: "
                       f"{r['stream_pieces_s']['concept_attention'] / pack['stream_pieces_s']['concept_attention']:.1f}x; "
                       f"wall-time difference {r['patched_s'] - pack['patched_s']:+.2f} s); maps differ by at most "
                       f"{r['maps_max_diff_vs_pack']:.1e}.")
    out.append("\nConcept-stream pieces (s per run, medians):\n")
    names = sorted({k for r in sampling for k in r["stream_pieces_s"]})
    out.append(markdown(sampling, [("size", lambda r: str(r["size"])), ("C", lambda r: str(r["concepts"])),
                                   ("blocks", lambda r: r["blocks"]), ("variant", lambda r: r["variant"])]
                        + [(n, lambda r, n=n: f"{r['stream_pieces_s'].get(n, 0.0):.3f}") for n in names]))
    if encode:
        out.append("\nEncode path (api.concept_maps, source='latent', one seed) vs one full forward:\n")
        if args.references:
            out.append(f"(the full forward carries the {args.references} reference latent(s); the encode path is given "
                       f"them in its CONDITIONING; reference tokens it fed the model: "
                       f"{', '.join(str(r['encode_reference_tokens']) for r in encode)})\n")
        out.append(markdown(encode, [
            ("size", lambda r: f"{r['size']}^2"), ("C", lambda r: str(r["concepts"])), ("blocks", lambda r: r["blocks"]),
            ("encode s", lambda r: f"{r['encode_s']:.2f}"), ("forward s", lambda r: f"{r['forward_s']:.2f}"),
            ("ratio", lambda r: f"{r['ratio']:.2f}x"), ("FLOP estimate", lambda r: f"{r['estimate_ratio']:.2f}x")]))
    if steps:
        out.append("\nPeak extra memory vs number of steps (one plain/patched pair each):\n")
        out.append(markdown(steps, [
            ("size", lambda r: f"{r['size']}^2"), ("C", lambda r: str(r["concepts"])), ("steps", lambda r: str(r["steps"])),
            ("plain peak MB", lambda r: f"{r['plain_peak_mb']:.0f}"), ("extra peak MB", lambda r: f"{r['extra_peak_mb']:+.1f}")]))
    return "\n".join(out)


def main():
    args = parse_args()
    start(args)
    import comfy.model_management
    total = time.perf_counter()
    bench = Bench(args)
    print(f"model built in {time.perf_counter() - total:.0f} s on {bench.device}", flush=True)
    sampling, encode, steps, skipped = [], [], [], []
    for size in args.sizes:
        try:
            sampling += bench.sampling(size)
            encode.append(bench.encode(size))
        except (torch.cuda.OutOfMemoryError, MemoryError) as error:  # 2048^2 where memory does not allow
            skipped.append(dict(size=size, error=str(error).splitlines()[0]))
            print(f"  {size}px skipped: {skipped[-1]['error']}", flush=True)
            comfy.model_management.soft_empty_cache()
    if len(args.steps_check) == 2:
        steps = bench.steps_check(min(args.sizes))
    text = report(args, bench.meter, sampling, encode, steps)
    text += ("\n\nLargest share of the machine's CPUs taken during one timed run: " + ", ".join(
        f"{key} {100 * value:.1f}%" for key, value in bench.meter.disturbance.items()) + " (timings are only as good "
        "as these are small).")
    print("\n" + text)
    machine = dict(platform=platform.platform(), processor=platform.processor(), cpu_count=os.cpu_count(),
                   torch=torch.__version__, torch_threads=torch.get_num_threads(),
                   gpu=torch.cuda.get_device_name() if bench.meter.cuda else None)
    comfy_version = pathlib.Path(args.comfyui, "comfyui_version.py")
    if comfy_version.is_file():
        machine["comfyui"] = comfy_version.read_text().split("=")[-1].strip().strip('"')
    path = ROOT / "benchmarks" / "results" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items()}
    path.write_text(json.dumps(dict(settings=settings, machine=machine, memory_method=bench.meter.method,
                                    total_seconds=time.perf_counter() - total, sampling=sampling, encode=encode,
                                    steps_check=steps, skipped=skipped, disturbance=bench.meter.disturbance,
                                    table=text), indent=1))
    print(f"\nwritten {path} ({time.perf_counter() - total:.0f} s in all)")


if __name__ == "__main__":
    main()
