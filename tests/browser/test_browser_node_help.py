"""The nodes' help pages in ComfyUI's real frontend (headless Chromium through Playwright), with the
frontend's default settings: a node is put on an empty canvas, clicked, and its Node Info button in
the selection toolbox opens the node documentation panel, which must show the pack's page
`js/docs/<node id>.md` (the frontend fetches `/extensions/<pack>/docs/<node id>/<locale>.md`, then
`/extensions/<pack>/docs/<node id>.md`; without a page it shows the node's one-line description).
Checked: the page's title, an Inputs and an Output(s) section, every input and output the server
declares for the node named in the page, its pictures loaded, and nothing logging an error. Both
frontends (1.47.10 with ComfyUI 0.29, 1.27.10 with 0.3.64)."""
from __future__ import annotations

import pathlib

import pytest

from conftest import COMFYUI
from test_browser_workflows import IGNORED_ERRORS, READY, browser  # noqa: F401  (browser: the fixture)

pytestmark = pytest.mark.comfy

ROOT = pathlib.Path(__file__).resolve().parents[2]
# node id -> the page's title, and the pictures it shows (relative to js/docs/)
PAGES = {
    "ConceptAttentionFlux": ("Concept Attention", []),
    "ConceptSaliency": ("Concept Saliency", ["node_ui_hover.png"]),
    "ConceptBlockMaps": ("Concept Block Maps", []),
    "ConceptMask": ("Concept Mask", []),
}

# The node alone on the canvas at zoom 1, its top-left 300 x 250 px into the canvas (clear of the
# side bars and of a right-hand panel left open); returns where its title bar is on the screen.
PLACE_NODE = """(type) => {
  const app = window.app, canvas = app.canvas;
  app.graph.clear();
  const node = LiteGraph.createNode(type);
  node.pos = [0, 0];
  app.graph.add(node);
  canvas.ds.scale = 1;
  canvas.ds.offset[0] = 300;
  canvas.ds.offset[1] = 250;
  canvas.setDirty(true, true);
  canvas.draw(true, true);
  const box = canvas.canvas.getBoundingClientRect();
  return [box.left + 300 + 40, box.top + 250 - LiteGraph.NODE_TITLE_HEIGHT / 2];
}"""

# What the documentation panel shows: headings, the code spans of its tables, its pictures.
READ_PANEL = """() => {
  const panel = document.querySelector('.node-help-content');
  if (!panel) return null;
  const texts = (selector) => Array.from(panel.querySelectorAll(selector)).map(e => e.textContent.trim());
  return {h1: texts('h1'), h2: texts('h2'), cells: texts('td code'), text: panel.textContent,
          images: Array.from(panel.querySelectorAll('img')).map(i => ({src: i.getAttribute('src'),
            loaded: i.complete && i.naturalWidth > 0}))};
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from comfy_server import ComfyServer
    server = ComfyServer(COMFYUI, tmp_path_factory.mktemp("comfy_node_help"))  # no settings changed
    yield server
    server.stop()


def _open_help(browser, server, node_id: str, shots: pathlib.Path):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    messages = []
    page.on("console", lambda m: messages.append((m.type, m.text)))
    page.on("pageerror", lambda e: messages.append(("pageerror", str(e))))
    page.goto(server.url)
    page.wait_for_function(READY, timeout=120_000)
    page.wait_for_timeout(1000)
    del messages[:]  # READY itself probes app.graph before the app has one, which logs an error
    page.keyboard.press("Escape")  # a first-run dialog (templates, missing models), if any
    page.wait_for_timeout(300)
    x, y = page.evaluate(PLACE_NODE, node_id)
    page.mouse.click(x, y)
    # the selection toolbox's info button: aria-label in 1.47, a test id in 1.27
    info = page.locator('button[aria-label="Node Info"], [data-testid="info-button"]').first
    info.wait_for(state="visible", timeout=30_000)
    info.click()
    try:
        page.wait_for_function("""() => { const p = document.querySelector('.node-help-content');
            return p && p.querySelector('h2') && Array.from(p.querySelectorAll('img')).every(i => i.complete); }""",
                               timeout=30_000)
    except Exception:  # noqa: BLE001  (the panel's content is reported below)
        pass
    page.wait_for_timeout(300)
    page.screenshot(path=str(shots / f"{node_id}.png"))
    panel = page.evaluate(READ_PANEL)
    page.close()
    errors = [text for kind, text in messages if kind in ("error", "pageerror") and not text.startswith(IGNORED_ERRORS)]
    return panel, errors


@pytest.mark.parametrize("node_id", list(PAGES))
def test_node_info_opens_the_packs_help_page_with_every_input_and_output(server, browser, node_id, tmp_path_factory):
    title, pictures = PAGES[node_id]
    definition = server.get(f"/object_info/{node_id}")[node_id]
    inputs = [*definition["input"].get("required", {}), *definition["input"].get("optional", {})]
    outputs = list(definition["output_name"])
    shots = tmp_path_factory.mktemp(f"node_help_{node_id}")
    panel, errors = _open_help(browser, server, node_id, shots)

    assert panel is not None, f"no node documentation panel opened (screenshot in {shots})"
    assert panel["h1"] == [title] and "Inputs" in panel["h2"] and {"Output", "Outputs"} & set(panel["h2"]), (
        f"the panel does not show js/docs/{node_id}.md; it shows: {panel['text'][:300]!r} (screenshot in {shots})")
    undocumented = [name for name in inputs + outputs if name not in panel["cells"]]
    assert not undocumented, f"js/docs/{node_id}.md does not describe {undocumented}"
    shown = [image["src"].rsplit("/", 1)[-1] for image in panel["images"]]
    assert shown == pictures, f"pictures shown: {panel['images']}"
    assert all(image["loaded"] for image in panel["images"]), f"a picture did not load: {panel['images']}"
    assert not errors, errors
