"""The node UI's payload: the maps quantised and base64-encoded for the browser (pure), and
Concept Saliency's `ui` output through a real server: the preview images exist, the payload's
maps agree with the node's masks, and a cached re-run sends the same preview again."""
from __future__ import annotations

import asyncio
import io as _io
import json
import urllib.parse
import uuid

import numpy as np
import pytest
import torch

from concept_attention_pack.nodes.render import palette
from concept_attention_pack.nodes.ui_payload import (MAX_CELLS, MAX_CONCEPTS, MAX_TOTAL_CELLS, MIN_CELLS, cell_size,
                                                     cells_per_map, color_hex, decode_grid, encode_grid, map_payload,
                                                     shrink_maps)


def _soft(b, c, h, w, seed=0):
    return torch.softmax(torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 3, dim=1)


@pytest.mark.parametrize("bits", [8, 16])
def test_encoding_round_trips_within_half_a_step(bits):
    grid = _soft(1, 5, 7, 9)[0]
    text = encode_grid(grid, bits)
    assert len(__import__("base64").b64decode(text)) == grid.numel() * bits // 8
    back = decode_grid(text, grid.shape, bits)
    step = 1 / ((1 << bits) - 1)
    assert (back - grid).abs().max() <= step / 2 + 1e-7
    assert back.shape == grid.shape


def test_encoding_is_concept_major_row_major_little_endian():
    grid = torch.zeros(2, 2, 3)
    grid[1, 0, 2] = 1.0  # concept 1, row 0, column 2
    raw = __import__("base64").b64decode(encode_grid(grid, 16))
    index = 1 * 6 + 0 * 3 + 2
    assert raw[2 * index:2 * index + 2] == b"\xff\xff" and raw.count(b"\xff") == 2
    raw8 = __import__("base64").b64decode(encode_grid(grid, 8))
    assert raw8[index] == 255 and sum(raw8) == 255


def test_bad_bits_is_refused():
    with pytest.raises(ValueError, match="bits"):
        encode_grid(torch.zeros(1, 2, 2), 12)


def test_cells_are_whole_pixels_and_the_grid_stays_within_the_budget():
    assert cell_size(64, 96) == 1  # a small picture goes pixel by pixel
    assert cell_size(1024, 1024) == 8 and cell_size(1024, 1024) ** 2 * MAX_CELLS == 1024 * 1024
    for height, width in [(1024, 1024), (1000, 1500), (1080, 1920), (2048, 512), (129, 129)]:
        cell = cell_size(height, width)
        assert -(-height // cell) * -(-width // cell) <= MAX_CELLS
        assert cell == 1 or -(-height // (cell - 1)) * -(-width // (cell - 1)) > MAX_CELLS  # the smallest


def test_cells_average_the_shares_and_still_sum_to_one():
    maps = _soft(1, 3, 10, 7)
    small = shrink_maps(maps, 3)  # edge cells average the pixels they have
    assert small.shape == (1, 3, 4, 3)
    torch.testing.assert_close(small.sum(1), torch.ones(1, 4, 3))
    torch.testing.assert_close(small[0, :, 3, 2], maps[0, :, 9:, 6:].mean((-2, -1)))
    torch.testing.assert_close(shrink_maps(maps, 1), maps)


def test_payload_carries_names_colours_shape_and_one_string_per_image():
    maps = _soft(2, 3, 30, 45)
    payload = map_payload(maps, ["dragon", "sky", "background"], palette(3), source="sampling",
                          detail="maps captured", max_cells=100)
    assert payload["names"] == ["dragon", "sky", "background"]
    assert payload["colors"] == [color_hex(c) for c in palette(3)] and payload["colors"][0] == "#e59e00"
    assert payload["cell"] == 4 and payload["shape"] == [3, 8, 12] and payload["covers"] == [32, 48]
    assert payload["batch"] == 2 and len(payload["maps"]) == 2 and payload["size"] == [30, 45]
    assert payload["bits"] == 8
    back = decode_grid(payload["maps"][1], payload["shape"], 8)
    assert (back - shrink_maps(maps, 4)[1]).abs().max() <= 0.5 / 255 + 1e-7
    json.dumps(payload)  # goes through the server's JSON as it is


def test_a_long_video_gets_coarser_cells_so_that_all_grids_stay_within_the_total_budget():
    assert cells_per_map(1, 8) == MAX_CELLS and cells_per_map(16, 8) == MAX_CELLS  # pictures as before
    assert cells_per_map(121, 8) == MAX_TOTAL_CELLS // (121 * 8) < MAX_CELLS
    assert cells_per_map(10_000, 64) == MIN_CELLS  # never coarser than 16 x 16 cells
    # 121 frames of 1280 x 720, 8 concepts: 21 px cells (the model's tokens are 16 px), 35 x 61
    cell = cell_size(720, 1280, cells_per_map(121, 8))
    assert cell == 21 and 121 * 8 * -(-720 // cell) * -(-1280 // cell) <= MAX_TOTAL_CELLS


def test_a_video_payload_says_its_frames_per_video_and_its_videos():
    maps = _soft(6, 3, 20, 30)
    payload = map_payload(maps, ["a", "b", "c"], palette(3), source="sampling", detail="", frames=3)
    assert (payload["batch"], payload["frames"], payload["videos"]) == (6, 3, 2) and len(payload["maps"]) == 6
    picture = map_payload(maps, ["a", "b", "c"], palette(3), source="sampling", detail="")
    assert (picture["frames"], picture["videos"]) == (1, 6)
    # the budget counts every frame: 6 images x 3 concepts of at most 300 cells each
    small = map_payload(maps, ["a", "b", "c"], palette(3), source="sampling", detail="", frames=3, max_total=6 * 3 * 300)
    assert small["cell"] == 2 and small["shape"] == [3, 10, 15]
    with pytest.raises(ValueError, match="whole videos"):
        map_payload(maps, ["a", "b", "c"], palette(3), source="sampling", detail="", frames=4)


def test_more_than_64_concepts_send_names_but_no_maps():
    c = MAX_CONCEPTS + 1
    payload = map_payload(_soft(1, c, 2, 2), [f"c{i}" for i in range(c)], palette(c), source="latent", detail="")
    assert payload["maps"] == [] and payload["shape"] is None and "64" in payload["omitted"]
    assert len(payload["colors"]) == c


# ---- through a real server ----------------------------------------------------------------------

def _graph():
    from test_workflows_through_server import KSAMPLER, _graph as graph
    g = graph(KSAMPLER, ["sampler", 0], batch=2)
    g["saliency"]["inputs"]["concept"] = "dragon"
    g["all_masks"] = {"class_type": "MaskToImage", "inputs": {"mask": ["saliency", 0]}}
    g["preview_all_masks"] = {"class_type": "PreviewImage", "inputs": {"images": ["all_masks", 0]}}
    return g


def _picture(server, saved) -> np.ndarray:
    from PIL import Image
    query = urllib.parse.urlencode({k: saved[k] for k in ("filename", "subfolder", "type")})
    return np.asarray(Image.open(_io.BytesIO(server.get_bytes(f"/view?{query}"))).convert("RGB"))


async def _executed_messages(server, prompt: dict) -> tuple[str, dict]:
    """Queue `prompt` as a browser client does (with a client id, over the websocket); return its
    prompt id and the `executed` messages' outputs per node, as the frontend receives them."""
    import aiohttp
    client_id = uuid.uuid4().hex
    outputs = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                prompt_id = (await r.json())["prompt_id"]
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(message.data)
                data = event.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if event["type"] == "executed":
                    outputs[data["node"]] = data["output"]
                elif event["type"] == "execution_error":
                    raise AssertionError(data)
                elif event["type"] == "executing" and data.get("node") is None:
                    break
                elif event["type"] == "execution_success":
                    break
    return prompt_id, outputs


@pytest.mark.comfy
def test_node_ui_payload_matches_the_masks_and_a_cached_run_sends_it_again(server):
    from comfy_server import cached_nodes
    graph = _graph()
    first_id, first = asyncio.run(_executed_messages(server, graph))
    payload = first["saliency"]["concept_saliency"][0]
    assert payload["names"] == ["dragon", "sky", "background"] and payload["batch"] == 2
    assert payload["source"] == "sampling" and payload["detail"].startswith("maps captured while sampling")
    assert first["saliency"]["text"] == [payload["detail"]]
    assert payload["size"] == [64, 96]
    assert len(payload["segmentation"]) == 2 and len(payload["overlays"]) == 6
    assert all(s["type"] == "temp" for s in payload["segmentation"] + payload["overlays"])

    # a 96x64 picture goes pixel by pixel: each pixel's strongest concept in the payload is the
    # concept whose exclusive mask is 1 there, and the segmentation shows its colour
    entry = server.wait(first_id)
    all_masks = [_picture(server, s)[..., 0] for s in entry["outputs"]["preview_all_masks"]["images"]]
    assert payload["cell"] == 1 and payload["shape"] == [3, 64, 96] and payload["covers"] == [64, 96]
    c = 3
    colors = np.array([[int(v * 255) for v in rgb] for rgb in palette(3).tolist()])
    for i in range(payload["batch"]):
        grid = decode_grid(payload["maps"][i], payload["shape"], payload["bits"]).numpy()
        top = grid.argmax(0)
        ordered = np.sort(grid, axis=0)
        clear = ordered[-1] - ordered[-2] > 2 / 255  # not a near tie that quantisation may flip
        exclusive = np.stack([all_masks[i * c + k] for k in range(c)]).argmax(0)
        assert clear.mean() > 0.5
        np.testing.assert_array_equal(top[clear], exclusive[clear])
        segmentation = _picture(server, payload["segmentation"][i]).astype(int)
        outside_legend = np.zeros_like(clear)
        outside_legend[40:, :] = outside_legend[:, 48:] = True
        shown = np.abs(segmentation - colors[top][..., :]).max(-1) <= 1
        assert shown[clear & outside_legend].all()

    again_id, again = asyncio.run(_executed_messages(server, graph))
    assert "saliency" in cached_nodes(server.wait(again_id))
    assert again["saliency"] == first["saliency"], "a cached run must send the same preview to the node"
    assert _picture(server, again["saliency"]["concept_saliency"][0]["overlays"][5]).shape == (64, 96, 3)


FIXTURE = __import__("pathlib").Path(__file__).resolve().parents[1] / "js" / "payload_fixture.json"


def fixture_payloads() -> dict:
    """Payloads the JS unit tests (tests/js) decode: 3 concepts, 2 images of 32x48 pixels, constant
    over 16x16 blocks and sent in 16 px cells (a 2x3 grid), in 8 and 16 bits, and 2 videos of 2
    such frames in 8 bits, with the values the python decoder reads back. Regenerate:
    cd tests && python -c "import conftest, test_ui_payload as t; t.write_fixture()" """
    grid = torch.tensor([[[0.7, 0.2, 0.1], [0.05, 0.5, 0.3]],
                         [[0.2, 0.5, 0.1], [0.9, 0.25, 0.3]],
                         [[0.1, 0.3, 0.8], [0.05, 0.25, 0.4]]])
    grids = torch.stack([grid, grid.flip(-1)])  # [2, 3, 2, 3]
    maps = grids.repeat_interleave(16, -2).repeat_interleave(16, -1)  # [2, 3, 32, 48]
    out = {}
    for bits in (8, 16):
        payload = map_payload(maps, ["dragon", "sky", "background"], palette(3), source="sampling",
                              detail="maps captured while sampling: 4 model passes x 4 blocks averaged",
                              bits=bits, max_cells=6)
        payload["decoded"] = [decode_grid(m, payload["shape"], bits).flatten().tolist() for m in payload["maps"]]
        out[str(bits)] = payload
    # 2 videos of 2 frames (video-major): each frame its own maps
    video = torch.cat([grids, grids.roll(1, dims=1)]).repeat_interleave(16, -2).repeat_interleave(16, -1)
    payload = map_payload(video, ["dragon", "sky", "background"], palette(3), source="sampling",
                          detail="maps captured while sampling; 2 latent frames -> 2 video frames", max_cells=6,
                          frames=2)
    payload["decoded"] = [decode_grid(m, payload["shape"], 8).flatten().tolist() for m in payload["maps"]]
    out["video"] = payload
    return out


def test_the_js_tests_fixture_is_what_the_encoder_writes():
    assert json.loads(FIXTURE.read_text()) == json.loads(json.dumps(fixture_payloads())), (
        "regenerate tests/js/payload_fixture.json (see fixture_payloads)")


def write_fixture() -> None:
    FIXTURE.write_text(json.dumps(fixture_payloads(), indent=1) + "\n")


@pytest.mark.comfy
def test_previews_are_scaled_down_to_the_preview_size_and_keep_their_colours():
    """The node's preview pictures: a large batch is written small (the full-size pictures stay on
    the IMAGE outputs); segmentation as exact-colour PNG, overlays as JPEG."""
    import folder_paths
    from PIL import Image

    from concept_attention_pack.nodes.concept_nodes import save_previews
    images = torch.zeros(3, 1200, 600, 3)
    images[:, :, :300] = torch.tensor([0.0, 0.4470588, 0.6980392])  # one palette colour, left half
    for jpeg, suffix in ((False, ".png"), (True, ".jpg")):
        saved = save_previews(images, max_side=512, jpeg=jpeg)
        assert len(saved) == 3 and all(s["type"] == "temp" and s["filename"].endswith(suffix) for s in saved)
        assert len({s["filename"] for s in saved}) == 3
        for entry in saved:
            path = __import__("os").path.join(folder_paths.get_temp_directory(), entry["subfolder"], entry["filename"])
            picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
            assert picture.shape == (512, 256, 3)
            tolerance = 3 if jpeg else 0
            assert np.abs(picture[8:-8, 8:120] - [0, 114, 178]).max() <= tolerance
            assert np.abs(picture[8:-8, 136:-8]).max() <= tolerance
    small = save_previews(torch.rand(1, 40, 30, 3), max_side=512, jpeg=False)
    path = __import__("os").path.join(folder_paths.get_temp_directory(), small[0]["subfolder"], small[0]["filename"])
    assert Image.open(path).size == (30, 40), "a small picture is not enlarged"
