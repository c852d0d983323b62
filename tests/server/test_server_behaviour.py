"""What a user meets through a real ComfyUI server: output names, which maps were used and why,
latents that must find their captured maps, regional prompts, bad input, and ComfyUI's cache."""
from __future__ import annotations

import copy

import pytest

import test_workflows_through_server as workflows
from comfy_server import cached_nodes
from test_workflows_through_server import CUSTOM_ADVANCED, KSAMPLER, _image_sizes

pytestmark = pytest.mark.comfy


def _graph(sampler_nodes, latent_ref, **kwargs):
    """The workflow tests' graph, with its own copy of the sampler nodes (tests here edit them)."""
    return workflows._graph(copy.deepcopy(sampler_nodes), latent_ref, **kwargs)


def saliency_text(entry, node="saliency") -> list[str]:
    return entry["outputs"][node]["text"]


def test_output_names_are_shown_in_both_versions(server):
    info = server.get("/object_info/ConceptSaliency")["ConceptSaliency"]
    assert info["output_name"] == ["masks", "heatmaps", "mask", "overlay", "segmentation"]
    assert info["output"] == ["MASK", "IMAGE", "MASK", "IMAGE", "IMAGE"]


def test_node_says_which_maps_it_used(server):
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["saliency"]["inputs"]["source"] = "auto"
    [captured] = saliency_text(server.run(graph))
    assert captured.startswith("maps captured while sampling: 3 model passes x 2 blocks")
    graph["empty_again"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}}
    graph["saliency"]["inputs"]["latent"] = ["empty_again", 0]  # never sampled: computed, and said so
    [computed] = saliency_text(server.run(graph))
    assert computed.startswith("maps computed from the latent: 1 noise seed at sigma 0.7")
    assert "no maps captured while sampling matched this latent" in computed
    assert "Concept Saliency: maps computed from the latent" in server.read_log()


def test_sampler_custom_advanced_denoised_output_finds_its_maps(server):
    graph = _graph(CUSTOM_ADVANCED, ["sampler", 1], batch=2)  # denoised_output, not output
    entry = server.run(graph)
    assert all(text.startswith("maps captured while sampling") for text in saliency_text(entry))
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)] * 2


def test_list_run_of_ten_latents_keeps_every_runs_maps(server):
    """RebatchLatents turns a batch of 10 into a list: 10 sampler runs, then 10 saliency runs, each
    of which must find the maps of its own latent (the store once kept only the last 8)."""
    graph = _graph(KSAMPLER, ["rebatch", 0], batch=10)
    graph["rebatch"] = {"class_type": "RebatchLatents", "inputs": {"latents": ["empty", 0], "batch_size": 1}}
    graph["sampler"]["inputs"].update(latent_image=["rebatch", 0], steps=2)
    graph["saliency"]["inputs"]["latent"] = ["sampler", 0]
    entry = server.run(graph)
    texts = saliency_text(entry)
    assert len(texts) == 10 and all(text.startswith("maps captured while sampling: 2 model passes") for text in texts)
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)] * 10


@pytest.mark.parametrize("regional", ["ConditioningSetArea", "ConditioningSetMask"])
def test_regional_prompt_graph_samples_and_masks(server, regional):
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["region_text"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["clip", 0], "text": "a red moon"}}
    if regional == "ConditioningSetArea":
        graph["region"] = {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": ["region_text", 0], "width": 64, "height": 64, "x": 16, "y": 0, "strength": 1.0}}
    else:
        graph["region_mask"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 40, "height": 24}}
        graph["region_canvas"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 96, "height": 64}}
        graph["region_full"] = {"class_type": "MaskComposite", "inputs": {
            "destination": ["region_canvas", 0], "source": ["region_mask", 0], "x": 24, "y": 16, "operation": "add"}}
        graph["region"] = {"class_type": "ConditioningSetMask", "inputs": {
            "conditioning": ["region_text", 0], "mask": ["region_full", 0], "strength": 1.0,
            "set_cond_area": "mask bounds"}}
    graph["combined"] = {"class_type": "ConditioningCombine", "inputs": {
        "conditioning_1": ["positive", 0], "conditioning_2": ["region", 0]}}
    graph["sampler"]["inputs"]["positive"] = ["combined", 0]
    entry = server.run(graph)
    assert saliency_text(entry)[0].startswith("maps captured while sampling: 3 model passes")
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)]


def test_sd_latent_into_saliency_names_the_input_and_the_fix(server):
    from comfy_server import WorkflowError
    graph = _graph(KSAMPLER, ["sd_latent", 0], batch=1)
    graph["sd_latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}}
    graph["saliency"]["inputs"]["source"] = "latent"
    with pytest.raises(WorkflowError, match=r"latent: this model works on \[B, 16, h, w\] latents, received "
                                            r"\[1, 4, 8, 12\]\. Encode the image with this model's VAE"):
        server.run(graph)


def test_largest_seed_with_several_seed_counts_runs(server):
    graph = _graph(KSAMPLER, ["empty", 0], batch=1)
    graph["saliency"]["inputs"].update(source="latent", seed=2**64 - 1, seed_count=3)
    entry = server.run(graph)
    assert saliency_text(entry)[0].startswith("maps computed from the latent: 3 noise seeds")


def test_whitespace_only_edit_of_concepts_reruns_nothing(server):
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1, concepts="dragon\nsky\nbackground")
    graph["sampler"]["inputs"]["seed"] = 11
    server.run(graph)
    edited = copy.deepcopy(graph)
    edited["patch"]["inputs"]["concepts"] = "  dragon ,sky\n\nbackground \n"
    entry = server.run(edited)
    assert cached_nodes(entry) >= {"patch", "sampler", "saliency"}
    renamed = copy.deepcopy(graph)
    renamed["patch"]["inputs"]["concepts"] = "dragon\nsky\nground"
    renamed["saliency"]["inputs"]["concept"] = "dragon"
    assert not {"patch", "sampler"} & cached_nodes(server.run(renamed))


def test_reference_image_of_an_edit_gets_masks_at_its_own_size(server):
    """Flux.1 Kontext-style edit (ReferenceLatent on the prompt): Concept Saliency's picture 1 gives
    the reference image's masks at the reference's size, picture 0 the generated image's; a
    reference that does not exist is refused with the count."""
    from comfy_server import WorkflowError
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["reference"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 48, "height": 80, "batch_size": 1}}
    graph["edit"] = {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["positive", 0],
                                                                   "latent": ["reference", 0]}}
    graph["sampler"]["inputs"]["positive"] = ["edit", 0]
    graph["saliency_ref"] = copy.deepcopy(graph["saliency"])
    graph["saliency_ref"]["inputs"]["picture"] = 1
    graph["ref_mask_image"] = {"class_type": "MaskToImage", "inputs": {"mask": ["saliency_ref", 2]}}
    graph["preview_ref_mask"] = {"class_type": "PreviewImage", "inputs": {"images": ["ref_mask_image", 0]}}
    entry = server.run(graph)
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)]
    assert _image_sizes(server, entry, "preview_ref_mask") == [(48, 80)]
    [text] = saliency_text(entry, "saliency_ref")
    assert text.startswith("maps captured while sampling") and text.endswith("of reference image 1")
    graph["saliency_ref"]["inputs"]["picture"] = 2
    with pytest.raises(WorkflowError, match=r"picture: reference image 2 does not exist for this latent \(the "
                                            r"sampler's conditioning had 1 reference image\)"):
        server.run(graph)


def test_klein_reference_image_gets_masks_at_its_own_size(server):
    """Flux.2 Klein multi-reference editing through the server: two ReferenceLatent references of
    their own sizes; picture 1 and 2 give each reference's masks at its size (16 px per latent pixel)."""
    from tiny_flux import FAMILIES_SKIP_REASON, families_supported
    if not families_supported():
        pytest.skip(FAMILIES_SKIP_REASON)
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["model"] = {"class_type": "TinyKleinLoader", "inputs": {"seed": 0}}
    graph["clip"] = {"class_type": "TinyKleinClipLoader", "inputs": {"seed": 0}}
    graph["empty"] = {"class_type": "EmptyFlux2LatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}}
    graph["patch"]["inputs"]["blocks"] = "auto"
    for k, (width, height) in enumerate([(64, 48), (32, 80)], start=1):
        graph[f"reference{k}"] = {"class_type": "EmptyFlux2LatentImage",
                                  "inputs": {"width": width, "height": height, "batch_size": 1}}
        graph[f"edit{k}"] = {"class_type": "ReferenceLatent", "inputs": {
            "conditioning": ["positive", 0] if k == 1 else ["edit1", 0], "latent": [f"reference{k}", 0]}}
        graph[f"saliency{k}"] = copy.deepcopy(graph["saliency"])
        graph[f"saliency{k}"]["inputs"]["picture"] = k
        graph[f"mask{k}"] = {"class_type": "MaskToImage", "inputs": {"mask": [f"saliency{k}", 2]}}
        graph[f"preview{k}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"mask{k}", 0]}}
    graph["sampler"]["inputs"].update(positive=["edit2", 0], cfg=1.0)
    entry = server.run(graph)
    assert _image_sizes(server, entry, "preview_mask") == [(96, 64)]
    assert _image_sizes(server, entry, "preview1") == [(64, 48)]
    assert _image_sizes(server, entry, "preview2") == [(32, 80)]


def test_errors_are_titled_readably_in_the_frontend(server):
    """ComfyUI titles an error with its class's module path; the pack's read 'Concept Attention: ...'."""
    from comfy_server import WorkflowError
    graph = _graph(KSAMPLER, ["sampler", 0], batch=1)
    graph["saliency"]["inputs"]["picture"] = 3
    with pytest.raises(WorkflowError) as raised:
        server.run(graph)
    [details] = [m[1] for m in raised.value.messages if m[0] == "execution_error"]
    assert details["exception_type"] == "Concept Attention: invalid input"
    assert details["exception_message"].startswith("picture: reference image 3 does not exist")
