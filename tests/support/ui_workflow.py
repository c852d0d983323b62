"""API-format workflow -> the UI format ComfyUI saves (drag-and-drop), using a live server's
/object_info for each node's sockets and widget order, so the two never drift apart.

Positions, groups, notes, titles and the loaders' model metadata come from workflow_layouts.py.
Regenerate the shipped UI workflows after editing workflows/api/*.json or the layouts:
    python tests/support/ui_workflow.py http://127.0.0.1:8188   (a ComfyUI with this pack loaded)
"""
from __future__ import annotations

import json
import pathlib
import sys
import urllib.request

from workflow_layouts import LAYOUTS, MODEL_LOADERS, MODEL_SOURCES, SIZES

WORKFLOWS = pathlib.Path(__file__).resolve().parents[2] / "workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _inputs_in_order(info):
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            yield name, info["input"][section][name]


# Geometry of the frontend (LiteGraph) the layout is computed for.
NODE_TITLE_HEIGHT = 30      # drawn above a node's pos
GROUP_FONT_SIZE = 24
GROUP_TITLE_HEIGHT = 34     # the group's title bar: font size x 1.4
GROUP_PADDING = 20          # between a group's edge (or title bar) and its nodes
NODE_GAP = 30               # between two nodes in a column (title bar excluded)
COLUMN_GAP = 40             # between columns inside a group
STAGE_GAP = 60              # between stages (left to right) and between blocks of a stage
GROUP_COLOR = "#3f789e"     # ComfyUI's templates use it for their step groups
NOTE_COLORS = {"color": "#432", "bgcolor": "#653"}  # the frontend's yellow note
# The view a workflow opens with (extra.ds): zoom 0.8, above the frontend's level-of-detail switch
# (LiteGraph.Canvas.MinFontSizeForLOD, default 8 px, over LiteGraph.NODE_TEXT_SIZE 14 px times
# sqrt(devicePixelRatio): below zoom 0.571 at a ratio of 1 the canvas draws nodes as blank boxes),
# with the graph's top-left corner at VIEW_ORIGIN screen pixels: clear of frontend 1.47's left
# sidebar (59 px wide) under its workflow tabs (38 px) and the graph breadcrumb (to 104 px).
VIEW_SCALE = 0.8
VIEW_ORIGIN = (100, 120)


def _node(node_id: int, class_type: str, info: dict | None, api_inputs: dict) -> dict:
    inputs, widgets = [], []
    for name, spec in _inputs_in_order(info) if info else ():
        value = api_inputs.get(name)
        if not _is_widget(spec):
            inputs.append({"name": name, "type": spec[0], "link": None})
            continue
        options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
        if value is None:
            choices = spec[0] if isinstance(spec[0], list) else options.get("options", [None])
            value = options.get("default", choices[0] if choices else None)
        widgets.append(value)
        if options.get("image_upload"):
            widgets.append("image")  # the upload button's widget, as the frontend saves it
        control = options.get("control_after_generate")
        if control or (control is None and name in SEED_NAMES):
            widgets.append("fixed")
    outputs = [] if not info else [
        {"name": n, "type": t, "links": [], "slot_index": i}
        for i, (t, n) in enumerate(zip(info["output"], info.get("output_name", info["output"])))]
    return {"id": node_id, "type": class_type, "pos": [0, 0], "size": [0, 0], "flags": {}, "order": 0,
            "mode": 0, "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": class_type},
            "widgets_values": widgets}


def _models(class_type: str, api_inputs: dict) -> list[dict] | None:
    """ComfyUI's template metadata for a loader: the frontend offers these downloads when missing."""
    if class_type not in MODEL_LOADERS:
        return None
    names = [api_inputs[name] for name in MODEL_LOADERS[class_type]]
    unknown = [n for n in names if n not in MODEL_SOURCES]
    if unknown:
        raise ValueError(f"{class_type}: no download source for {unknown}; add it to MODEL_SOURCES")
    return [{"name": n, **MODEL_SOURCES[n]} for n in names]


def _place(layout: dict, sizes: dict[str, list[int]]) -> tuple[dict, list[dict], list[tuple[str, list]]]:
    """Positions of every node id (and note) and the groups' boxes, from the layout's stages."""
    positions, groups, notes = {}, [], []
    x = 0
    for stage in layout["stages"]:
        y, stage_width = 0, 0
        for block in stage:
            if "note" in block:
                note_id = f"note{len(notes)}"
                notes.append((note_id, block["note"]))
                sizes[note_id] = block["size"]
                positions[note_id] = [x, y + NODE_TITLE_HEIGHT]
                width, height = block["size"][0], NODE_TITLE_HEIGHT + block["size"][1]
            else:
                column_x = x + GROUP_PADDING
                heights = []
                for column in block["columns"]:
                    node_y = y + GROUP_TITLE_HEIGHT + GROUP_PADDING
                    for node_id in column:
                        positions[node_id] = [column_x, node_y + NODE_TITLE_HEIGHT]
                        node_y += NODE_TITLE_HEIGHT + sizes[node_id][1] + NODE_GAP
                    heights.append(node_y - NODE_GAP - y)
                    column_x += max(sizes[n][0] for n in column) + COLUMN_GAP
                width = column_x - COLUMN_GAP + GROUP_PADDING - x
                height = max(heights) + GROUP_PADDING
                groups.append({"id": len(groups) + 1, "title": block["title"], "bounding": [x, y, width, height],
                               "color": GROUP_COLOR, "font_size": GROUP_FONT_SIZE, "flags": {}})
            y += height + STAGE_GAP
            stage_width = max(stage_width, width)
        x += stage_width + STAGE_GAP
    return positions, groups, notes


def _view(positions: dict, sizes: dict, groups: list[dict]) -> dict:
    """extra.ds: the scale and offset the workflow opens with: readable (VIEW_SCALE), the first
    stages in view from the top-left corner (a screen point is (graph point + offset) x scale)."""
    boxes = [g["bounding"] for g in groups] + [
        [x, y - NODE_TITLE_HEIGHT, sizes[n][0], sizes[n][1] + NODE_TITLE_HEIGHT] for n, (x, y) in positions.items()]
    left, top = min(b[0] for b in boxes), min(b[1] for b in boxes)
    return {"scale": VIEW_SCALE,
            "offset": [round(VIEW_ORIGIN[0] / VIEW_SCALE - left, 2), round(VIEW_ORIGIN[1] / VIEW_SCALE - top, 2)]}


def api_to_ui(api: dict, object_info: dict, layout: dict) -> dict:
    """The UI workflow of an API one: node inputs and widget values from `api` (in the order of
    the server's /object_info), positions, groups, notes, titles and model metadata from `layout`
    (see workflow_layouts.py)."""
    placed = [n for stage in layout["stages"] for block in stage for column in block.get("columns", []) for n in column]
    if sorted(placed, key=int) != sorted(api, key=int):
        raise ValueError(f"the layout places {sorted(placed, key=int)}, the workflow has {sorted(api, key=int)}")
    sizes = {n: list(layout.get("sizes", {}).get(n, SIZES[api[n]["class_type"]])) for n in api}
    positions, groups, notes = _place(layout, sizes)
    nodes, links = {}, []
    for node_id in sorted(api, key=int):
        node = api[node_id]
        nodes[node_id] = ui = _node(int(node_id), node["class_type"], object_info[node["class_type"]], node["inputs"])
        models = _models(node["class_type"], node["inputs"])
        if models:
            ui["properties"]["models"] = models
        if node_id in layout.get("titles", {}):
            ui["title"] = layout["titles"][node_id]
    next_id = max(int(n) for n in api) + 1
    for offset, (note_id, text) in enumerate(notes):
        nodes[note_id] = {**_node(next_id + offset, "Note", None, {}), "title": "Read me: what to change",
                          "properties": {}, "widgets_values": [text], **NOTE_COLORS}
    for key, ui in nodes.items():
        ui["pos"], ui["size"] = positions[key], sizes[key]
    for node_id, node in sorted(api.items(), key=lambda item: int(item[0])):
        for slot_index, ui_input in enumerate(nodes[node_id]["inputs"]):
            value = node["inputs"].get(ui_input["name"])
            if not isinstance(value, list):
                continue
            link_id = len(links) + 1
            source, source_slot = value
            ui_input["link"] = link_id
            nodes[source]["outputs"][source_slot]["links"].append(link_id)
            links.append([link_id, int(source), source_slot, int(node_id), slot_index, ui_input["type"]])
    ordered = sorted(nodes.values(), key=lambda n: n["id"])
    for order, ui in enumerate(ordered):
        ui["order"] = order
    return {"last_node_id": max(n["id"] for n in ordered), "last_link_id": len(links), "nodes": ordered,
            "links": links, "groups": groups, "config": {},
            "extra": {"ds": _view(positions, sizes, groups)}, "version": 0.4}


def ui_for(path: pathlib.Path, object_info: dict) -> dict:
    """The UI workflow for workflows/api/<name>.json, with the layout of that name."""
    return api_to_ui(json.loads(path.read_text()), object_info, LAYOUTS[path.stem])


def regenerate(server_url: str) -> list[pathlib.Path]:
    with urllib.request.urlopen(server_url.rstrip("/") + "/object_info", timeout=60) as response:
        object_info = json.loads(response.read())
    written = []
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        ui = ui_for(path, object_info)
        target = WORKFLOWS / path.name
        target.write_text(json.dumps(ui, indent=1) + "\n")
        written.append(target)
    return written


if __name__ == "__main__":
    for written_path in regenerate(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188"):
        print(written_path)
