"""How the shipped UI workflows are laid out: stages left to right, each a stack of titled
groups (with columns of node ids) and notes. Node inputs come from workflows/api/*.json only;
this file adds what the UI format has and the API format has not: positions (computed from the
sizes below by tests/support/ui_workflow.py), groups, notes, node titles and the loaders' download
metadata. Sizes are at least what both tested frontends (1.27.10 with ComfyUI 0.3.64, 1.47.10
with 0.29, there in both node modes: LiteGraph and Vue nodes, whose widget rows are taller) compute
for the node's widgets, and Concept Saliency's hold its preview after a run;
tests/browser/test_browser_workflows.py checks it."""
from __future__ import annotations

# Copied from ComfyUI's own template flux_schnell_full_text_to_image.json (the same entries are in
# flux_dev_full_text_to_image.json), package comfyui-workflow-templates 0.1.95 (ComfyUI 0.3.64)
# and comfyui-workflow-templates-json 0.1.18 (ComfyUI 0.29, inside the template's subgraph).
MODEL_SOURCES = {
    "flux1-dev.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        "directory": "diffusion_models"},
    "flux1-schnell.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors",
        "directory": "diffusion_models"},
    "t5xxl_fp16.safetensors": {
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors",
        "directory": "text_encoders"},
    "clip_l.safetensors": {
        "url": "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "directory": "text_encoders"},
    "ae.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "directory": "vae"},
    # Flux.2 Klein 4B (distilled): copied from ComfyUI's own template image_flux2_klein_text_to_image.json
    # (its "Text to Image (Flux.2 Klein 4B Distilled)" subgraph), comfyui-workflow-templates-json 0.1.18.
    "flux-2-klein-4b.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/diffusion_models/flux-2-klein-4b.safetensors",
        "directory": "diffusion_models"},
    "qwen_3_4b.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/flux2-klein/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
        "directory": "text_encoders"},
    "flux2-vae.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/flux2-dev/resolve/main/split_files/vae/flux2-vae.safetensors",
        "directory": "vae"},
    # SD3.5 Large, fp8, with its text encoders (clip_l, clip_g, t5xxl) and VAE in the one checkpoint: from
    # ComfyUI's own template sd3.5_simple_example.json (CheckpointLoaderSimple), comfyui-workflow-templates-json
    # 0.1.18 (there its URL ends in "?download=true": the same file).
    "sd3.5_large_fp8_scaled.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/sd3.5_large_fp8_scaled.safetensors",
        "directory": "checkpoints"},
    # Qwen-Image and Qwen-Image-Edit 2509 with their text encoder (Qwen2.5-VL 7B) and VAE: from ComfyUI's own
    # templates image_qwen_image.json ("Text to Image (Qwen-Image)" subgraph) and image_qwen_image_edit_2509.json
    # ("Image Edit (Qwen 2509)" subgraph), comfyui-workflow-templates-json 0.1.18 (the same entries are in
    # comfyui-workflow-templates 0.1.95's copies of both, ComfyUI 0.3.64).
    "qwen_image_fp8_e4m3fn.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
        "directory": "diffusion_models"},
    "qwen_image_edit_2509_fp8_e4m3fn.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image-Edit_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_edit_2509_fp8_e4m3fn.safetensors",
        "directory": "diffusion_models"},
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "directory": "text_encoders"},
    "qwen_image_vae.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors",
        "directory": "vae"},
    # Z-Image Turbo: from ComfyUI's own template image_z_image_turbo.json ("Text to Image (Z-Image-Turbo)"
    # subgraph; its qwen_3_4b.safetensors and ae.safetensors, the same files as above, come from the
    # z_image_turbo repository there). Krea 2 Turbo with its text encoder (Qwen3-VL 4B): from
    # image_krea2_turbo_t2i.json ("Text to Image (Krea-2 Turbo)" subgraph; its VAE is qwen_image_vae).
    "z_image_turbo_bf16.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
        "directory": "diffusion_models"},
    "krea2_turbo_fp8_scaled.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Krea-2/resolve/main/diffusion_models/krea2_turbo_fp8_scaled.safetensors",
        "directory": "diffusion_models"},
    "qwen3vl_4b_fp8_scaled.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/Krea-2/resolve/main/text_encoders/qwen3vl_4b_fp8_scaled.safetensors",
        "directory": "text_encoders"},
    # HunyuanVideo 1.5 720p text-to-video: the files of ComfyUI's template video_hunyuan_video_1.5_720p_t2v.json,
    # in Comfy-Org/HunyuanVideo_1.5_repackaged (its qwen_2.5_vl_7b_fp8_scaled is Qwen-Image's file, above).
    "hunyuanvideo1.5_720p_t2v_fp16.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/diffusion_models/hunyuanvideo1.5_720p_t2v_fp16.safetensors",
        "directory": "diffusion_models"},
    "byt5_small_glyphxl_fp16.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/text_encoders/byt5_small_glyphxl_fp16.safetensors",
        "directory": "text_encoders"},
    "hunyuanvideo15_vae_fp16.safetensors": {
        "url": "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/vae/hunyuanvideo15_vae_fp16.safetensors",
        "directory": "vae"},
}
MODEL_LOADERS = {"UNETLoader": ["unet_name"], "DualCLIPLoader": ["clip_name1", "clip_name2"], "CLIPLoader": ["clip_name"],
                 "VAELoader": ["vae_name"], "CheckpointLoaderSimple": ["ckpt_name"]}

# [width, height] of the node body (the title bar, 30 px, comes on top), by node type.
SIZES = {
    "UNETLoader": [340, 86], "DualCLIPLoader": [340, 142], "VAELoader": [340, 86],
    "ConceptAttentionFlux": [340, 294],
    "ConceptSaliency": [320, 790],  # with its preview shown (Vue nodes: 774 since the 'picture' input)
    "LoadImage": [340, 420], "ImageScaleToTotalPixels": [340, 114], "VAEEncode": [225, 54],
    "VAEDecode": [225, 54], "CLIPTextEncode": [400, 150], "FluxGuidance": [300, 62],
    "EmptySD3LatentImage": [300, 118], "KSampler": [320, 262], "GrowMask": [300, 86],
    "MaskToImage": [300, 34], "ImageBlur": [300, 90], "ImageToMask": [300, 62], "InvertMask": [300, 34],
    "ImageCompositeMasked": [320, 158], "InpaintModelConditioning": [320, 142],
    "SaveImage": [420, 460], "PreviewImage": [420, 460],
    "CLIPLoader": [340, 114], "ConditioningZeroOut": [300, 34], "EmptyFlux2LatentImage": [300, 118],
    "Flux2Scheduler": [300, 118], "KSamplerSelect": [300, 62], "RandomNoise": [300, 82], "CFGGuider": [300, 102],
    "SamplerCustomAdvanced": [300, 126], "SetLatentNoiseMask": [300, 54], "SplitSigmasDenoise": [300, 82],
    "CheckpointLoaderSimple": [380, 126],  # room for ckpt_name beside the SD3.5 file name
    "ModelSamplingAuraFlow": [300, 62], "CFGNorm": [300, 114], "TextEncodeQwenImageEditPlus": [400, 220],
    "EmptyLatentImage": [300, 118], "EmptyImage": [300, 146], "ImageBlend": [300, 110],
}
# the video workflow's nodes
SIZES.update({"ModelSamplingSD3": [300, 62], "EmptyHunyuanVideo15Latent": [300, 146], "ConceptMask": [320, 490],
              "CreateVideo": [300, 110], "SaveVideo": [420, 460], "LoadVideo": [340, 420],
              "GetVideoComponents": [300, 110]})
NOTE_SIZE = [420, 330]

LOADERS = {"title": "1. Load models", "columns": [["1", "2", "3"]]}


def note(text: str, size=None) -> dict:
    return {"note": text.strip(), "size": size or NOTE_SIZE}


LAYOUTS = {
    "photo_mask_new_background": {
        "ignored_by_0_3_64": ["ImageScaleToTotalPixels.resolution_steps"],  # an input 0.29 added (0.3.64 ignores it)
        "stages": [
            [note("""
Cut a person (or anything you name) out of a photo and put it on a new background.

What to change:
- 2: your photo. It is scaled to about 1 megapixel for Flux (megapixels); the final composite is made at the photo's own size.
- 3: Concept Attention's concepts: name what is in the photo (person, sky, grass, ... and background). Concept Saliency's concept: the one to keep. seed_count: more seeds, cleaner masks, slower.
- 4: GrowMask expand (negative shrinks the cut-out, positive grows it) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the new background's prompt and seed.
"""), LOADERS],
            [{"title": "2. Load the photo", "columns": [["5", "15", "6"]]}],
            [{"title": "3. Mask by concept", "columns": [["4", "7"], ["14"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["16", "17", "18", "19", "20"]]}],
            [{"title": "5. Generate the new background", "columns": [["8", "9", "10", "11"]]}],
            [{"title": "6. Composite at the photo's size", "columns": [["12", "13"]]}],
        ],
        "titles": {"15": "Scale to Flux size (about 1 MP)", "9": "Negative (unused at cfg 1)",
                   "7": "Concept Saliency (the photo, 5 seeds)", "20": "Invert (1 = new background)",
                   "14": "Preview: segmentation", "17": "Feather: mask to image", "18": "Feather: blur",
                   "19": "Feather: back to mask", "12": "Photo over the new background"},
    },
    "flux_generate_mask_inpaint": {
        "stages": [
            [note("""
Generate a picture, mask one of its concepts from the maps recorded while sampling, and inpaint it with a second prompt.

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, sky, mountains, ... and background).
- 3: Concept Saliency's concept: the one to repaint (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the second prompt and KSampler's denoise (lower keeps more of the first picture).
"""), LOADERS],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["4", "5", "6", "9"], ["7", "8", "10"]]}],
            [{"title": "3. Mask by concept", "columns": [["11", "19"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["12", "20", "21", "22"]]}],
            [{"title": "5. Inpaint with a new prompt", "columns": [["13", "14", "15"], ["16", "17"]]}],
            [{"title": "6. Paste into the first picture", "columns": [["23", "18"]]}],
        ],
        "titles": {"5": "Prompt", "9": "Negative (unused at cfg 1)", "13": "Second prompt (the inpainted part)",
                   "19": "Preview: each concept's map", "20": "Feather: mask to image", "21": "Feather: blur",
                   "22": "Feather: back to mask", "16": "KSampler (inpaint)", "23": "Paste the inpainted part"},
    },
    "flux2_klein_generate_mask_edit": {
        "needs_flux2": True,  # ComfyUI 0.29's Flux.2 nodes; the tests skip it on 0.3.64
        "stages": [
            [note("""
Flux.2 Klein 4B: generate a picture, mask one of its concepts from the maps recorded while sampling, and repaint that part with a second prompt. Sampler settings are those of ComfyUI's Klein 4B distilled template (4 steps, cfg 1, euler, Flux2Scheduler).

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, sofa, wall, ... and background). The size: width/height in Empty Flux 2 Latent and in Flux2Scheduler (the same numbers).
- 3: Concept Saliency's concept: the one to repaint (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the second prompt and the denoise (lower keeps more of the first picture; with 4 steps it moves in quarters: 0.75 = the last 3 steps).
"""), LOADERS],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["4", "5", "6"], ["7", "8", "9", "10"], ["11", "12", "13"]]}],
            [{"title": "3. Mask by concept", "columns": [["14", "15"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["16", "17", "18", "19"]]}],
            [{"title": "5. Repaint the masked part with a new prompt",
              "columns": [["20", "21", "22"], ["23", "24", "25", "26", "27"]]}],
            [{"title": "6. Paste into the first picture", "columns": [["28", "29"]]}],
        ],
        "sizes": {"24": [340, 102]},  # wide enough for its title
        "titles": {"5": "Prompt", "6": "Negative (zeroed)", "15": "Preview: each concept's map",
                   "17": "Feather: mask to image", "18": "Feather: blur", "19": "Feather: back to mask",
                   "20": "Second prompt (the repainted part)", "21": "Negative (zeroed)",
                   "22": "Noise mask (repaint only it)", "24": "CFGGuider (the model without the patch)",
                   "25": "Denoise of the second pass", "26": "SamplerCustomAdvanced (repaint)",
                   "28": "Paste the repainted part"},
    },
    "sd35_generate_mask_inpaint": {
        "stages": [
            [note("""
SD3.5 Large: generate a picture, mask one of its concepts from the maps recorded while sampling, and repaint that part with a second prompt. The model, its three text encoders (clip_l, clip_g, t5xxl) and its VAE come from the one checkpoint of ComfyUI's SD3.5 template. Sampler: euler, sgm_uniform, 28 steps, cfg 4.5.

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, bench, trees, ... and background). The size: Empty SD3 Latent Image.
- 3: Concept Saliency's concept: the one to repaint (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the second prompt and KSampler's denoise (lower keeps more of the first picture).
"""), {"title": "1. Load models", "columns": [["1"]]}],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["2", "3", "4"], ["5", "6", "7"]]}],
            [{"title": "3. Mask by concept", "columns": [["8", "9"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["10", "11", "12", "13"]]}],
            [{"title": "5. Repaint the masked part with a new prompt", "columns": [["14", "15"], ["16", "17"]]}],
            [{"title": "6. Paste into the first picture", "columns": [["18", "19"]]}],
        ],
        "titles": {"3": "Prompt", "4": "Negative prompt", "9": "Preview: each concept's map",
                   "11": "Feather: mask to image", "12": "Feather: blur", "13": "Feather: back to mask",
                   "14": "Second prompt (the repainted part)", "15": "Noise mask (repaint only it)",
                   "16": "KSampler (repaint)", "18": "Paste the repainted part"},
    },
    "qwen_image_generate_mask_inpaint": {
        "stages": [
            [note("""
Qwen-Image: generate a picture, mask one of its concepts from the maps recorded while sampling, and repaint that part with a second prompt. Loaders, shift (ModelSamplingAuraFlow 3.1), size and sampler are those of ComfyUI's Qwen-Image template without its Lightning LoRA: 20 steps, cfg 4, euler, simple, 1328x1328.

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, snow, trees, ... and background). The size: Empty SD3 Latent Image (the template's list: 1328x1328, 1664x928, 928x1664, 1472x1140, 1140x1472, 1584x1056, 1056x1584).
- 3: Concept Saliency's concept: the one to repaint (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the second prompt and KSampler's denoise (lower keeps more of the first picture).
"""), {"title": "1. Load models", "columns": [["1", "2", "3"], ["4"]]}],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["5", "6", "7"], ["8", "9", "10"]]}],
            [{"title": "3. Mask by concept", "columns": [["11", "12"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["13", "14", "15", "16"]]}],
            [{"title": "5. Repaint the masked part with a new prompt", "columns": [["17", "18"], ["19", "20"]]}],
            [{"title": "6. Paste into the first picture", "columns": [["21", "22"]]}],
        ],
        "titles": {"4": "Shift (ModelSamplingAuraFlow)", "6": "Prompt", "7": "Negative prompt",
                   "12": "Preview: each concept's map", "14": "Feather: mask to image", "15": "Feather: blur",
                   "16": "Feather: back to mask", "17": "Second prompt (the repainted part)",
                   "18": "Noise mask (repaint only it)", "19": "KSampler (repaint)",
                   "21": "Paste the repainted part"},
    },
    "qwen_image_edit_mask_photo": {
        "ignored_by_0_3_64": ["ImageScaleToTotalPixels.resolution_steps", "CFGNorm.pre_cfg"],  # inputs 0.29 added
        "stages": [
            [note("""
Qwen-Image-Edit 2509: mask one thing in a photo by concept (e.g. the jacket), then edit only there with an instruction, and put the edited part back into the photo at its own size. Loaders, shift (ModelSamplingAuraFlow 3), CFGNorm, the two TextEncodeQwenImageEditPlus and the sampler are those of ComfyUI's Qwen-Image-Edit 2509 template without its Lightning LoRA: 20 steps, cfg 4, euler, simple.

What to change:
- 2: your photo. It is scaled to about 1 megapixel (megapixels); the final composite is made at the photo's own size.
- 3: Concept Attention's concepts: name what is in the photo (jacket, face, hair, ... and background). Concept Saliency's concept: the part to edit. seed_count: more seeds, cleaner masks, slower.
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the edit instruction (the photo is its Picture 1) and the seed.
"""), {"title": "1. Load models", "columns": [["1", "2", "3"], ["4", "5"]]}],
            [{"title": "2. Load the photo", "columns": [["7", "8", "9"]]}],
            [{"title": "3. Mask by concept", "columns": [["6", "10"], ["11"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["12", "13", "14", "15"]]}],
            [{"title": "5. Edit the masked part", "columns": [["16", "17", "18"], ["19", "20"]]}],
            [{"title": "6. Composite at the photo's size", "columns": [["21", "22"]]}],
        ],
        "titles": {"4": "Shift (ModelSamplingAuraFlow)", "8": "Scale to about 1 MP",
                   "10": "Concept Saliency (the photo, 3 seeds)", "11": "Preview: segmentation",
                   "13": "Feather: mask to image", "14": "Feather: blur", "15": "Feather: back to mask",
                   "16": "Edit instruction (Picture 1: the photo)", "17": "Negative (empty, with the photo)",
                   "18": "Noise mask (edit only it)", "19": "KSampler (edit)",
                   "21": "Edited part over the photo"},
    },
    "flux_concept_grid": {
        "stages": [
            [note("""
Generate a picture and see what the model attends to: every concept's map over the picture, and a colour-coded segmentation.

What to change:
- 2: the prompt, and Concept Attention's concepts (one per line; keep a "background" concept).
- 3: Concept Saliency's mask_mode and blur change the segmentation; the overlays are the soft maps.
""", size=[420, 200]), LOADERS],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["4", "5", "6", "9"], ["7", "8", "10"]]}],
            [{"title": "3. Maps of every concept", "columns": [["11"]]}],
            [{"title": "4. Save", "columns": [["12", "14"], ["13"]]}],
        ],
        "sizes": {"4": [340, 300]},  # seven concepts, one per line
        "titles": {"5": "Prompt", "9": "Negative (unused at cfg 1)", "12": "Save: picture",
                   "13": "Save: each concept's map over the picture", "14": "Preview: segmentation"},
    },
    "z_image_turbo_generate_mask_inpaint": {
        "needs_single_stream": True,  # ComfyUI 0.29's Z-Image; the tests skip it on 0.3.64
        "stages": [
            [note("""
Z-Image Turbo: generate a picture, mask one of its concepts from the maps recorded while sampling, and repaint that part with a second prompt. Loaders, shift (ModelSamplingAuraFlow 3), size and sampler are those of ComfyUI's Z-Image Turbo template: 8 steps, cfg 1, res_multistep, simple, 1024x1024, the negative zeroed.

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, hair, boats, ... and background). The size: Empty SD3 Latent Image.
- 3: Concept Saliency's concept: the one to repaint (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand (pixels added around the mask) and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the second prompt and KSampler's denoise (lower keeps more of the first picture).
"""), {"title": "1. Load models", "columns": [["1", "2", "3"], ["4"]]}],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["5", "6", "7"], ["8", "9", "10"]]}],
            [{"title": "3. Mask by concept", "columns": [["11", "12"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["13", "14", "15", "16"]]}],
            [{"title": "5. Repaint the masked part with a new prompt", "columns": [["17", "18"], ["19", "20"]]}],
            [{"title": "6. Paste into the first picture", "columns": [["21", "22"]]}],
        ],
        "titles": {"4": "Shift (ModelSamplingAuraFlow)", "6": "Prompt", "7": "Negative (zeroed; unused at cfg 1)",
                   "12": "Preview: each concept's map", "14": "Feather: mask to image", "15": "Feather: blur",
                   "16": "Feather: back to mask", "17": "Second prompt (the repainted part)",
                   "18": "Noise mask (repaint only it)", "19": "KSampler (repaint)",
                   "21": "Paste the repainted part"},
    },
    "krea2_generate_mask_recolour": {
        "needs_single_stream": True,  # ComfyUI 0.29's Krea 2; the tests skip it on 0.3.64
        "stages": [
            [note("""
Krea 2 Turbo: generate a picture, mask one of its concepts from the maps recorded while sampling, and recolour that part. Loaders, size and sampler are those of ComfyUI's Krea 2 Turbo template without its prompt enhancer and LoRA: 8 steps, cfg 1, euler, simple, 1024x1024, the negative zeroed.

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the picture (the subject, road, trees, ... and background). The size: Empty Latent Image.
- 3: Concept Saliency's concept: the one to recolour (several, comma-separated: their union; invert: everything else).
- 4: GrowMask expand and ImageBlur blur_radius / sigma (how soft the edge of the new colour is).
- 5: the colour (Empty Image's color), Image Blend's blend_mode (soft_light keeps the shading) and blend_factor (how strong).
"""), {"title": "1. Load models", "columns": [["1", "2", "3"]]}],
            [{"title": "2. Generate (concepts recorded while sampling)",
              "columns": [["4", "5", "6"], ["7", "8", "9"]]}],
            [{"title": "3. Mask by concept", "columns": [["10", "11"]]}],
            [{"title": "4. Grow and feather the mask", "columns": [["12", "13", "14", "15"]]}],
            [{"title": "5. Recolour the masked part", "columns": [["16", "17", "18"], ["19"]]}],
        ],
        "titles": {"5": "Prompt", "6": "Negative (zeroed; unused at cfg 1)", "11": "Preview: each concept's map",
                   "13": "Feather: mask to image", "14": "Feather: blur", "15": "Feather: back to mask",
                   "16": "The new colour", "17": "Tint the picture", "18": "Paste the tinted part"},
    },
}

LAYOUTS["hunyuan_video15_generate_mask_recolour"] = {
    "needs_hunyuan15": True,  # ComfyUI 0.29's HunyuanVideo 1.5; the tests skip it on 0.3.64
    "stages": [
        [note("""
HunyuanVideo 1.5: generate a video, mask one of its concepts in every frame from the maps recorded while sampling, and recolour that part frame by frame. Loaders, shift (ModelSamplingSD3 7), size and sampler are those of ComfyUI's HunyuanVideo 1.5 720p text-to-video template (its SamplerCustomAdvanced as a KSampler: 20 steps, cfg 6, euler, simple; 1280x720, 121 frames).

What to change:
- 2: the prompt, and Concept Attention's concepts: name what will be in the video (the subject, grass, trees, ... and background). The size and length: Empty HunyuanVideo 1.5 Latent (length 4n + 1).
- 3: Concept Mask's concept: the one to recolour (several, comma-separated: their union; invert: everything else). It gives one mask per frame, made a few frames at a time.
- 4: GrowMask expand and ImageBlur blur_radius / sigma (how soft the edge of the new colour is).
- 5: the colour (Empty Image's color), Image Blend's blend_mode (soft_light keeps the shading) and blend_factor.
"""), {"title": "1. Load models", "columns": [["1", "2", "3"], ["4"]]}],
        [{"title": "2. Generate (concepts recorded while sampling)", "columns": [["5", "6", "7"], ["8", "9", "10"]]}],
        [{"title": "3. Mask by concept, every frame", "columns": [["11"]]}],
        [{"title": "4. Grow and feather the masks", "columns": [["12", "13", "14", "15"]]}],
        [{"title": "5. Recolour the masked part", "columns": [["16", "17", "18"], ["19", "20"]]}],
    ],
    "titles": {"4": "Shift (ModelSamplingSD3)", "6": "Prompt", "7": "Negative prompt",
               "11": "Concept Mask (one per frame)", "13": "Feather: mask to image", "14": "Feather: blur",
               "15": "Feather: back to mask", "16": "The new colour", "17": "Tint the frames",
               "18": "Paste the tinted part", "19": "Frames to video (24 fps)"},
}

LAYOUTS["hunyuan_video15_clip_mask_background"] = {
    "needs_hunyuan15": True,  # ComfyUI 0.29's HunyuanVideo 1.5; the tests skip it on 0.3.64
    "stages": [
        [note("""
HunyuanVideo 1.5 on a video you load: mask a concept in every frame with the maps computed from the clip itself (its latent noised half-way, one forward pass per seed; no generation), and darken everything else frame by frame. The model files are those of ComfyUI's HunyuanVideo 1.5 720p text-to-video template.

What to change:
- 2: your clip (Load Video; its frames are encoded by the model's VAE: 4n + 1 frames, the rest is cut, at a size that is a multiple of 16).
- 3: Concept Attention's concepts: name what is in the clip (person, face, clothes, ... and background). Concept Mask's concept: the one to keep (invert: everything else is masked). seed_count: more seeds, cleaner masks, slower.
- 4: GrowMask expand and ImageBlur blur_radius / sigma (how soft the edge is).
- 5: the colour and Image Blend's blend_mode / blend_factor (multiply darkens).
"""), {"title": "1. Load models", "columns": [["1", "2", "3"], ["4"]]}],
        [{"title": "2. Load the clip", "columns": [["6", "7", "8"]]}],
        [{"title": "3. Mask by concept, every frame", "columns": [["5", "9"]]}],
        [{"title": "4. Grow and feather the masks", "columns": [["10", "11", "12", "13"]]}],
        [{"title": "5. Darken the masked part", "columns": [["14", "15", "16"], ["17", "18"]]}],
    ],
    "titles": {"4": "Shift (ModelSamplingSD3)", "9": "Concept Mask (the clip, 2 seeds)",
               "11": "Feather: mask to image", "12": "Feather: blur", "13": "Feather: back to mask",
               "14": "The new colour", "15": "Darken the frames", "16": "Paste the darkened part",
               "17": "Frames to video (the clip's fps)"},
}


def missing_in_this_comfyui(stem: str) -> str | None:
    """Why a shipped workflow cannot run on this ComfyUI (its model classes or nodes are missing:
    Flux.2, Z-Image and Krea 2 need 0.29), or None."""
    layout = LAYOUTS[stem]
    if layout.get("needs_flux2"):
        from tiny_flux import FAMILIES_SKIP_REASON, families_supported
        if not families_supported():
            return FAMILIES_SKIP_REASON
    if layout.get("needs_hunyuan15"):
        import comfy.supported_models
        if not hasattr(comfy.supported_models, "HunyuanVideo15"):
            return "ComfyUI 0.3.64 has no HunyuanVideo 1.5 class; tested on 0.29"
    if layout.get("needs_single_stream"):
        from tiny_single_stream import VERSION_SKIP_REASON, single_stream_supported
        if not single_stream_supported():
            return VERSION_SKIP_REASON
    return None
