"""API-format workflow -> the UI format ComfyUI saves (drag-and-drop), using a live server's
/object_info for each node's sockets and widget order, so the two never drift apart.

Regenerate the shipped UI workflows after editing workflows/api/*.json:
    python tests/ui_workflow.py http://127.0.0.1:8188   (a ComfyUI with this pack loaded)
"""
from __future__ import annotations

import json
import pathlib
import sys
import urllib.request

WORKFLOWS = pathlib.Path(__file__).resolve().parent.parent / "workflows"
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


def _depths(api):
    depth = {}

    def visit(node_id):
        if node_id not in depth:
            parents = [v[0] for v in api[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((visit(p) for p in parents), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def api_to_ui(api: dict, object_info: dict) -> dict:
    depth = _depths(api)
    rows: dict[int, int] = {}
    nodes, links = {}, []
    for node_id in sorted(api, key=lambda n: (depth[n], int(n))):
        node = api[node_id]
        info = object_info[node["class_type"]]
        column = depth[node_id]
        row = rows.get(column, 0)
        rows[column] = row + 1
        inputs, widgets = [], []
        for name, spec in _inputs_in_order(info):
            value = node["inputs"].get(name)
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
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (t, n) in enumerate(zip(info["output"], info.get("output_name", info["output"])))]
        nodes[node_id] = {
            "id": int(node_id), "type": node["class_type"], "pos": [40 + 400 * column, 40 + 300 * row],
            "size": [360, 260], "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
            "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
        }
    for node_id, node in api.items():
        for slot_index, ui_input in enumerate(nodes[node_id]["inputs"]):
            value = node["inputs"].get(ui_input["name"])
            if not isinstance(value, list):
                continue
            link_id = len(links) + 1
            source, source_slot = value
            ui_input["link"] = link_id
            nodes[source]["outputs"][source_slot]["links"].append(link_id)
            links.append([link_id, int(source), source_slot, int(node_id), slot_index, ui_input["type"]])
    return {"last_node_id": max(int(n) for n in api), "last_link_id": len(links),
            "nodes": [nodes[n] for n in sorted(nodes, key=int)], "links": links, "groups": [], "config": {},
            "extra": {}, "version": 0.4}


def regenerate(server_url: str) -> list[pathlib.Path]:
    with urllib.request.urlopen(server_url.rstrip("/") + "/object_info", timeout=60) as response:
        object_info = json.loads(response.read())
    written = []
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        ui = api_to_ui(json.loads(path.read_text()), object_info)
        target = WORKFLOWS / path.name
        target.write_text(json.dumps(ui, indent=1) + "\n")
        written.append(target)
    return written


if __name__ == "__main__":
    for written_path in regenerate(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8188"):
        print(written_path)
