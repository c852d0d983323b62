"""The shipped UI workflows opened in ComfyUI's real frontend (headless Chromium through
Playwright) with its default settings, in both node modes on 0.29 (LiteGraph and Vue nodes): the
workflow opens at a zoom the canvas draws text at, its first groups in view and clear of the
sidebar; after the frontend has sized every node for its widgets, and again with Concept
Saliency's preview shown as after a run, no two nodes overlap, no two groups overlap, every node
lies inside the group the layout puts it in, nothing in the workflow logs an error, and the
loaders keep the model download metadata.

Needs the `playwright` Python package and a Chromium binary (Debian's `chromium`; Playwright's own
browser download is not used): set CHROMIUM_PATH, or have `chromium` on PATH. Screenshots go to
pytest's temporary directory (the test prints where)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import urllib.request

import pytest

from conftest import COMFYUI, comfyui_version

pytestmark = pytest.mark.comfy

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "workflows").glob("*.json"))
MODES = ["canvas", "vue"] if comfyui_version().startswith("0.29") else ["canvas"]
PREVIEW_PICTURE = "concept_preview.png"  # the segmentation the preview shows (in the server's input folder)


def _chromium() -> str | None:
    candidates = [os.environ.get("CHROMIUM_PATH"), shutil.which("chromium"), shutil.which("chromium-browser"),
                  "/usr/bin/chromium"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
CHROMIUM = _chromium()
if COMFYUI is not None and sync_playwright is None:
    pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium, "
                "no `playwright install` needed)", allow_module_level=True)
if COMFYUI is not None and CHROMIUM is None:
    pytest.skip("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)", allow_module_level=True)

# Only the frontend's own resource fetches may fail (favicons, optional endpoints of a frontend
# newer or older than the server); any other error logged while a workflow loads fails the test.
IGNORED_ERRORS = ("Failed to load resource",)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from comfy_server import ComfyServer
    server = ComfyServer(COMFYUI, tmp_path_factory.mktemp("comfy_browser"))
    # the photo the photo workflow names, so LoadImage shows its preview as it would for a user
    Image.fromarray((np.random.default_rng(1).random((600, 800, 3)) * 255).astype(np.uint8)).save(
        server.base / "input" / "example.png")
    Image.fromarray((np.random.default_rng(2).random((512, 512, 3)) * 255).astype(np.uint8)).save(
        server.base / "input" / PREVIEW_PICTURE)
    # a returning user (no first-run template browser over the canvas) and no minimap; every other
    # setting is the frontend's default (its level-of-detail switch included)
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
    request = urllib.request.Request(server.url + "/settings", data=json.dumps(settings).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    yield server
    server.stop()


def set_node_mode(server, mode: str):
    """LiteGraph ("canvas") or Vue nodes ("vue"), as the frontend's setting Comfy.VueNodes.Enabled."""
    request = urllib.request.Request(server.url + "/settings",
                                     data=json.dumps({"Comfy.VueNodes.Enabled": mode == "vue"}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


READY = """() => !!(window.app && window.app.canvas && window.LiteGraph && window.app.graph
                   && LiteGraph.registered_node_types['ConceptSaliency'])"""

# Every node's box as drawn: pos/size after the frontend has laid out its widgets, the title bar
# above pos, and the frontend's own minimum size for the widgets.
READ_GRAPH = """() => {
  const graph = window.app.graph;
  const titleHeight = LiteGraph.NODE_TITLE_HEIGHT;
  const nodes = (graph.nodes || graph._nodes).map(node => {
    const min = node.computeSize();
    const bounding = node.getBounding ? Array.from(node.getBounding()) : null;
    return {id: Number(node.id), type: node.type, title: node.title, pos: Array.from(node.pos),
            size: Array.from(node.size), min: Array.from(min), bounding, titleHeight,
            collapsed: !!(node.flags && node.flags.collapsed), properties: JSON.parse(JSON.stringify(node.properties || {}))};
  });
  const groups = (graph.groups || graph._groups).map(group => ({
    title: group.title, bounding: Array.from(group._bounding || group.bounding),
    titleHeight: group.titleHeight || (group.font_size || 24) * 1.4}));
  return {nodes, groups, frontend: window.__COMFYUI_FRONTEND_VERSION__ || null};
}"""

# Show the whole graph in the canvas, for the screenshot.
FIT_VIEW = """() => {
  const canvas = window.app.canvas, graph = window.app.graph;
  const boxes = (graph.nodes || graph._nodes).map(n => Array.from(n.getBounding()))
      .concat((graph.groups || graph._groups).map(g => Array.from(g._bounding || g.bounding)));
  const left = Math.min(...boxes.map(b => b[0])), top = Math.min(...boxes.map(b => b[1]));
  const right = Math.max(...boxes.map(b => b[0] + b[2])), bottom = Math.max(...boxes.map(b => b[1] + b[3]));
  const element = canvas.canvas, width = element.clientWidth, height = element.clientHeight;
  const scale = Math.min((width - 120) / (right - left), (height - 160) / (bottom - top));
  canvas.ds.scale = scale;
  canvas.ds.offset[0] = (width / scale - (right - left)) / 2 - left;
  canvas.ds.offset[1] = (height / scale - (bottom - top)) / 2 - top;
  canvas.setDirty(true, true);
  canvas.draw(true, true);
}"""


# Give every Concept Saliency node a preview as a run would (its panel from js/, the payload as
# the node's `ui` output has it), without running models.
SHOW_PREVIEW = """(payload) => {
  for (const node of (window.app.graph.nodes || window.app.graph._nodes)) {
    if (node.type === 'ConceptSaliency') node.conceptPanel.show(payload);
  }
}"""


def _preview_payload(workflow: dict) -> dict:
    """A payload like Concept Saliency's `ui` output for the workflow's concepts (random maps of a
    512 px picture, its segmentation a picture in the server's input folder)."""
    import torch

    from concept_attention_pack.nodes.render import palette
    from concept_attention_pack.nodes.ui_payload import map_payload
    attention = next(node for node in workflow["nodes"] if node["type"] == "ConceptAttentionFlux")
    names = [n.strip() for n in attention["widgets_values"][0].replace(",", "\n").splitlines() if n.strip()]
    soft = torch.softmax(torch.randn(1, len(names), 512, 512, generator=torch.Generator().manual_seed(0)), dim=1)
    payload = map_payload(soft, names, palette(len(names)), source="sampling", detail="maps captured while sampling")
    return {**payload, "segmentation": [{"filename": PREVIEW_PICTURE, "subfolder": "", "type": "input"}],
            "overlays": []}


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _drawn_box(node) -> list[float]:
    """The node's box including its title bar, at least as large as the frontend's minimum size."""
    width, height = max(node["size"][0], node["min"][0]), max(node["size"][1], node["min"][1])
    return [node["pos"][0], node["pos"][1] - node["titleHeight"], width, height + node["titleHeight"]]


def layout_problems(graph: dict, layout: dict) -> list[str]:
    """Overlapping nodes or groups, nodes outside their group, nodes smaller than their widgets."""
    problems = []
    nodes = graph["nodes"]
    boxes = {node["id"]: _drawn_box(node) for node in nodes}
    names = {node["id"]: f"{node['id']} {node['type']} ({node['title']})" for node in nodes}
    for node in nodes:
        if node["collapsed"]:
            problems.append(f"{names[node['id']]} is collapsed")
        if node["size"][0] < node["min"][0] - 0.5 or node["size"][1] < node["min"][1] - 0.5:
            problems.append(f"{names[node['id']]}: size {node['size']} is below the frontend's minimum "
                            f"{[round(v) for v in node['min']]} for its widgets")
        if node["bounding"] and node["bounding"][3] < boxes[node["id"]][3] - 0.5:
            problems.append(f"{names[node['id']]}: drawn box {node['bounding']} differs from {boxes[node['id']]}")
    ids = sorted(boxes)
    for i, first in enumerate(ids):
        for second in ids[i + 1:]:
            if _overlap(boxes[first], boxes[second]):
                problems.append(f"{names[first]} {boxes[first]} overlaps {names[second]} {boxes[second]}")
    groups = {group["title"]: group for group in graph["groups"]}
    for i, first in enumerate(graph["groups"]):
        for second in graph["groups"][i + 1:]:
            if _overlap(first["bounding"], second["bounding"]):
                problems.append(f"group {first['title']!r} overlaps group {second['title']!r}")
    expected = {block["title"]: [int(n) for column in block["columns"] for n in column]
                for stage in layout["stages"] for block in stage if "title" in block}
    if sorted(groups) != sorted(expected):
        problems.append(f"groups {sorted(groups)}, the layout has {sorted(expected)}")
    grouped = set()
    for title, members in expected.items():
        if title not in groups:
            continue
        x, y, width, height = groups[title]["bounding"]
        inner = [x, y + groups[title]["titleHeight"], width, height - groups[title]["titleHeight"]]
        for node_id in members:
            grouped.add(node_id)
            box = boxes.get(node_id)
            if box is None:
                problems.append(f"node {node_id} of group {title!r} is missing")
            elif not (inner[0] <= box[0] and box[0] + box[2] <= inner[0] + inner[2]
                      and inner[1] <= box[1] and box[1] + box[3] <= inner[1] + inner[3]):
                problems.append(f"{names[node_id]} {box} is not inside group {title!r} {inner} (below its title)")
    for node_id in set(boxes) - grouped:
        for group in graph["groups"]:
            if _overlap(boxes[node_id], group["bounding"]):
                problems.append(f"{names[node_id]} (in no group) overlaps group {group['title']!r}")
    return problems


def _open(browser, server, workflow: dict, name: str, downloads: list | None = None, mode: str = "canvas",
          viewport=(2560, 1300)):
    """A fresh page on the server's frontend in node `mode` with `workflow` loaded; returns (page,
    graph, errors). The missing-models dialog asks the download URLs for their size: those
    requests are answered here (no network needed) and their URLs appended to `downloads`."""
    set_node_mode(server, mode)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})

    def answer_download(route):
        if downloads is not None:
            downloads.append(route.request.url)
        route.fulfill(status=200, headers={"Content-Length": str(23 * 2**30), "Access-Control-Allow-Origin": "*",
                                           "Access-Control-Expose-Headers": "Content-Length"}, body="")

    page.route("https://huggingface.co/**", answer_download)
    messages = []
    page.on("console", lambda message: messages.append((message.type, message.text)))
    page.on("pageerror", lambda error: messages.append(("pageerror", str(error))))
    page.goto(server.url)
    page.wait_for_function(READY, timeout=120_000)
    page.wait_for_timeout(500)
    first = len(messages)
    if downloads is not None:
        # only what the loaded workflow asks: the frontend's default graph (1.47: a Z-Image Turbo
        # graph) asks about its own files, qwen_3_4b.safetensors among them, at its own URLs; on a busy
        # CPU its requests come late, so wait until they stop (at most ~10 s)
        for _ in range(14):
            seen = len(downloads)
            page.wait_for_timeout(700)
            if len(downloads) == seen:
                break
        downloads.clear()
    page.evaluate("async ([workflow, name]) => { await window.app.loadGraphData(workflow, true, true, name); }",
                  [workflow, name])
    # let the frontend lay out widgets, load LoadImage's preview and redraw a few frames
    page.wait_for_timeout(1500)
    page.evaluate("() => { window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true); }")
    page.wait_for_timeout(300)
    errors = [text for kind, text in messages[first:]
              if kind in ("error", "pageerror") and not text.startswith(IGNORED_ERRORS)]
    return page, page.evaluate(READ_GRAPH), errors


# How the workflow opens: the view's zoom, whether the canvas draws nodes in low quality (blank
# boxes, no text), and for the first stages' groups and notes their box on the screen and what is
# drawn over points of their title bars (the canvas, the note's own element, or something else:
# the sidebar, the tabs, a menu).
READ_VIEW = """(boxes) => {
  const canvas = window.app.canvas, scale = canvas.ds.scale, offset = canvas.ds.offset;
  const frame = canvas.canvas.getBoundingClientRect();
  const seen = boxes.map(([name, nodeId, x, y, width, titleHeight]) => {
    const left = frame.left + (x + offset[0]) * scale, top = frame.top + (y + offset[1]) * scale;
    const covered = [];
    for (let i = 0; i <= 8; i++) {
      const px = left + (4 + (width - 8) * i / 8) * scale, py = top + titleHeight * scale / 2;
      const element = document.elementFromPoint(px, py);
      const own = element === canvas.canvas || (nodeId !== null && element
        && element.closest('[data-node-id]')?.dataset.nodeId === String(nodeId));
      if (!own) covered.push([Math.round(px), Math.round(py), element ? element.tagName + '.' + String(element.className).slice(0, 60) : null]);
    }
    return {name, left, top, right: left + width * scale, covered};
  });
  return {scale, lowQuality: !!canvas.low_quality, width: window.innerWidth, height: window.innerHeight, seen};
}"""


def _first_boxes(workflow: dict, layout: dict) -> list:
    """[name, node id or None, x, y, width, title height] of the groups and notes of the first two stages."""
    titles = {block["title"] for stage in layout["stages"][:2] for block in stage if "title" in block}
    boxes = [[f"group {g['title']!r}", None, *g["bounding"][:3], g.get("font_size", 24) * 1.4]
             for g in workflow["groups"] if g["title"] in titles]
    notes = sum("note" in block for block in layout["stages"][0])
    boxes += [[f"note {n['id']}", n["id"], n["pos"][0], n["pos"][1] - 30, n["size"][0], 30]
              for n in workflow["nodes"] if n["type"] == "Note"][:notes]
    return boxes


def view_problems(view: dict, saved_scale: float) -> list[str]:
    problems = []
    if abs(view["scale"] - saved_scale) > 1e-6:
        problems.append(f"opened at zoom {view['scale']}, the workflow's view says {saved_scale}")
    if view["lowQuality"]:
        problems.append(f"at zoom {view['scale']} the canvas draws the nodes without text (low quality)")
    for box in view["seen"]:
        if box["left"] < 0 or box["top"] < 0 or box["right"] > view["width"]:
            problems.append(f"{box['name']} is not in view: {box['left']:.0f}..{box['right']:.0f} px from the left, "
                            f"{box['top']:.0f} px from the top of a {view['width']} px wide window")
        if box["covered"]:
            problems.append(f"{box['name']}: its title bar is under {box['covered'][:3]}")
    return problems


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_workflow_layout_in_the_real_frontend(server, browser, path, mode, tmp_path_factory):
    from workflow_layouts import LAYOUTS, MODEL_LOADERS, missing_in_this_comfyui
    if missing_in_this_comfyui(path.stem):
        pytest.skip(missing_in_this_comfyui(path.stem))  # its nodes are missing in 0.3.64 and its frontend
    workflow = json.loads(path.read_text())
    # a common window size: the workflow's saved view must show its first groups there
    page, graph, errors = _open(browser, server, workflow, path.name, mode=mode, viewport=(1920, 1080))
    try:
        shots = tmp_path_factory.mktemp("workflow_screenshots")
        page.keyboard.press("Escape")  # the missing-models dialog (no model files here)
        page.wait_for_timeout(300)
        view = page.evaluate(READ_VIEW, _first_boxes(workflow, LAYOUTS[path.stem]))
        page.screenshot(path=str(shots / f"{path.stem}_{mode}_opened.png"))
        # after a run Concept Saliency shows its preview on the node (js/): the room the layout
        # gives it must hold the preview too, so nothing below is covered after the first run
        page.evaluate(SHOW_PREVIEW, _preview_payload(workflow))
        page.wait_for_function("""() => Array.from(document.querySelectorAll('.ca-image'))
            .every(image => image.complete && image.naturalWidth > 0)""", timeout=10_000)
        page.wait_for_timeout(500)
        page.evaluate("() => { window.app.canvas.setDirty(true, true); window.app.canvas.draw(true, true); }")
        page.wait_for_timeout(300)
        graph_with_preview = page.evaluate(READ_GRAPH)
        page.evaluate(FIT_VIEW)
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{path.stem}_{mode}.png"))
        print(f"frontend {graph['frontend']} ({mode}): screenshots {shots / (path.stem + '_' + mode)}[_opened].png")
    finally:
        page.close()

    assert not errors, f"{path.name}: errors while loading: {errors}"
    problems = view_problems(view, workflow["extra"]["ds"]["scale"])
    assert not problems, f"{path.name} ({mode}) opens unreadable:\n" + "\n".join(problems)
    assert len(graph["nodes"]) == len(workflow["nodes"]), "the frontend dropped or added nodes"
    problems = layout_problems(graph, LAYOUTS[path.stem])
    assert not problems, f"{path.name} in frontend {graph['frontend']} ({mode}):\n" + "\n".join(problems)

    saved = {node["id"]: node for node in workflow["nodes"]}
    resized = [f"{node['id']} {node['type']}: saved {saved[node['id']]['size']}, shown {node['size']}"
               for node in graph["nodes"]
               if any(abs(a - b) > 0.5 for a, b in zip(node["size"], saved[node["id"]]["size"]))]
    assert not resized, f"{path.name} ({mode}): the frontend resized nodes to fit their widgets: {resized}"
    problems = layout_problems(graph_with_preview, LAYOUTS[path.stem])
    assert not problems, f"{path.name} ({mode}) with Concept Saliency's preview shown:\n" + "\n".join(problems)
    grown = [f"{node['id']} {node['type']}: saved {saved[node['id']]['size']}, with its preview {node['size']}"
             for node in graph_with_preview["nodes"]
             if any(abs(a - b) > 0.5 for a, b in zip(node["size"], saved[node["id"]]["size"]))]
    assert not grown, f"{path.name} ({mode}): the node grew for its preview (give it that room in the layout): {grown}"
    loaders = [node for node in graph["nodes"] if node["type"] in MODEL_LOADERS]
    # three loaders (model, text encoder, VAE), or one checkpoint that has all three
    assert sorted(node["type"] for node in loaders) == sorted(
        node["type"] for node in workflow["nodes"] if node["type"] in MODEL_LOADERS) and len(loaders) in (1, 3)
    for node in loaders:
        models = node["properties"].get("models")
        assert models and models == saved[node["id"]]["properties"]["models"], (
            f"{node['type']}: the models metadata did not survive loading: {node['properties']}")
        assert [m["name"] for m in models] == [v for v in saved[node["id"]]["widgets_values"] if v in
                                               {m["name"] for m in models}]
    assert any(node["type"] == "Note" for node in graph["nodes"]), "no note saying what to change"


OFFERED = {"photo_mask_new_background": ["flux1-schnell.safetensors", "t5xxl_fp16.safetensors", "clip_l.safetensors",
                                         "ae.safetensors"],
           "flux2_klein_generate_mask_edit": ["flux-2-klein-4b.safetensors", "qwen_3_4b.safetensors",
                                              "flux2-vae.safetensors"],
           "z_image_turbo_generate_mask_inpaint": ["z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors",
                                                   "ae.safetensors"],
           "krea2_generate_mask_recolour": ["krea2_turbo_fp8_scaled.safetensors", "qwen3vl_4b_fp8_scaled.safetensors",
                                            "qwen_image_vae.safetensors"],
           "hunyuan_video15_clip_mask_background": ["hunyuanvideo1.5_720p_t2v_fp16.safetensors",
                                                    "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                                    "byt5_small_glyphxl_fp16.safetensors",
                                                    "hunyuanvideo15_vae_fp16.safetensors"],
           "hunyuan_video15_generate_mask_recolour": ["hunyuanvideo1.5_720p_t2v_fp16.safetensors",
                                                      "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                                                      "byt5_small_glyphxl_fp16.safetensors",
                                                      "hunyuanvideo15_vae_fp16.safetensors"],
           "sd35_generate_mask_inpaint": ["sd3.5_large_fp8_scaled.safetensors"],
           "qwen_image_generate_mask_inpaint": ["qwen_image_fp8_e4m3fn.safetensors",
                                                "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"],
           "qwen_image_edit_mask_photo": ["qwen_image_edit_2509_fp8_e4m3fn.safetensors",
                                          "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"]}


@pytest.mark.parametrize("stem", sorted(OFFERED))
def test_missing_model_files_are_offered_for_download(server, browser, stem):
    """No model files on this server: the frontend lists each loader's files with a download
    offer (frontend 1.27: a dialog; 1.47: the errors panel behind "View details")."""
    from workflow_layouts import LAYOUTS, MODEL_SOURCES, missing_in_this_comfyui
    if missing_in_this_comfyui(stem):
        pytest.skip(missing_in_this_comfyui(stem))
    path = ROOT / "workflows" / f"{stem}.json"
    workflow = json.loads(path.read_text())
    downloads = []
    page, graph, errors = _open(browser, server, workflow, path.name, downloads)
    try:
        details = page.get_by_text("View details")
        if details.count():
            details.first.click()
            page.wait_for_timeout(1000)
        text = page.inner_text("body")
    finally:
        page.close()
    names = [m["name"] for node in workflow["nodes"] for m in node["properties"].get("models", [])]
    assert sorted(names) == sorted(OFFERED[stem])
    missing = [name for name in names if name not in text]
    assert not missing and "Download" in text, f"not offered for download: {missing}\n{text[:2000]}"
    # what the dialog asked huggingface.co about these files (the page's default graph asks about others)
    asked = {url for url in downloads if url.rsplit("/", 1)[-1] in names}
    assert asked and asked <= {MODEL_SOURCES[name]["url"] for name in names}, asked


def test_overlap_check_sees_a_node_moved_onto_another(server, browser):
    """The check above goes red when one node is moved onto another in the loaded graph."""
    from workflow_layouts import LAYOUTS
    path = ROOT / "workflows" / "photo_mask_new_background.json"
    workflow = json.loads(path.read_text())
    by_type = {node["type"]: node for node in workflow["nodes"]}
    by_type["KSampler"]["pos"] = [by_type["ConceptSaliency"]["pos"][0] + 40, by_type["ConceptSaliency"]["pos"][1] + 200]
    page, graph, errors = _open(browser, server, workflow, "moved.json")
    page.close()
    problems = layout_problems(graph, LAYOUTS[path.stem])
    assert any("KSampler" in p and "ConceptSaliency" in p and "overlaps" in p for p in problems), problems
    assert any("KSampler" in p and "is not inside group" in p for p in problems), problems
