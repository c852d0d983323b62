// The node UI of Concept Saliency: after a run the node shows its segmentation (or one concept's
// overlay), ranks the concepts under the pointer from the real maps, and sets its `concept`
// widget on a click (shift-click: the union). The `concept` widget is checked against the
// concepts typed in the Concept Attention node its MODEL comes from. Talks to the frontend only
// through app.registerExtension, beforeRegisterNodeDef, a chained onExecuted and addDOMWidget;
// the logic lives in maps.js and concept_names.js (unit-tested with node --test).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { conceptWarning, chosenNames, parseConcepts, pickConcept } from "./concept_names.js";
import { decodeMaps, formatShare, legendModel, rankAtPointer } from "./maps.js";

const SALIENCY = "ConceptSaliency";
const ATTENTION = "ConceptAttentionFlux";
const RANKED = 6; // lines in the pointer ranking
const PREVIEW_MIN_HEIGHT = 260; // px of the widget once there is a preview
const LEGEND_ROW_HEIGHT = 24; // px of one row of concept buttons
const LEGEND_MAX_ROWS = 4; // before a run the node grows for at most this many rows of names
const WARNING_HEIGHT = 20; // px of the unknown-name warning
const WIDGET_MARGIN = 8; // px the frontends take off a DOM widget's height for its margins

const STYLE = `
.ca-panel { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%; box-sizing: border-box;
  overflow: hidden; font: 12px sans-serif; color: var(--input-text, #ddd); }
.ca-panel [hidden] { display: none !important; }
.ca-row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.ca-source { opacity: 0.8; }
.ca-warning { color: #ff6b6b; }
.ca-figure { position: relative; flex: 1 1 auto; min-height: 120px; }
.ca-image { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; cursor: crosshair; }
.ca-ranking { position: absolute; top: 4px; right: 4px; padding: 4px 6px; border-radius: 4px; pointer-events: none;
  background: rgba(0, 0, 0, 0.75); color: #fff; }
.ca-rank { display: flex; gap: 6px; align-items: center; white-space: nowrap; }
.ca-rank:first-child { font-weight: bold; }
.ca-chip { display: inline-block; width: 10px; height: 10px; border: 1px solid #ddd; flex: none; }
.ca-legend { display: flex; flex-wrap: wrap; gap: 3px; }
.ca-concept { display: flex; gap: 4px; align-items: center; padding: 1px 5px; border-radius: 3px; cursor: pointer;
  border: 1px solid transparent; background: rgba(127, 127, 127, 0.15); color: inherit; font: inherit; }
.ca-concept.ca-chosen { border-color: currentColor; font-weight: bold; }
.ca-panel select { font: inherit; }
`;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function viewUrl(saved) {
  const query = new URLSearchParams({ filename: saved.filename, subfolder: saved.subfolder ?? "", type: saved.type });
  return api.apiURL(`/view?${query}`);
}

function widgetNamed(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** The names typed in the Concept Attention node whose MODEL reaches `node` (through any nodes
 * passing a MODEL on), or null when none is connected. */
function upstreamConcepts(node) {
  let current = node;
  for (let depth = 0; depth < 16 && current; depth++) {
    const slot = current.inputs?.findIndex((input) => input.type === "MODEL") ?? -1;
    if (slot < 0) return null;
    current = current.getInputNode?.(slot);
    if ((current?.comfyClass ?? current?.type) === ATTENTION) {
      return parseConcepts(widgetNamed(current, "concepts")?.value);
    }
  }
  return null;
}

class SaliencyPanel {
  constructor(node) {
    this.node = node;
    this.payload = null;
    this.maps = null;
    this.batch = 0;
    this.view = -1; // -1: segmentation; k: concept k's overlay
    this.known = null;
    this.root = element("div", "ca-panel");
    this.source = element("div", "ca-source");
    this.controls = element("div", "ca-row");
    this.batchSelect = element("select", "ca-batch");
    this.viewSelect = element("select", "ca-view");
    this.controls.append(this.batchSelect, this.viewSelect);
    this.figure = element("div", "ca-figure");
    this.image = element("img", "ca-image");
    this.image.alt = "concept segmentation";
    this.ranking = element("div", "ca-ranking");
    this.ranking.hidden = true;
    this.figure.append(this.image, this.ranking);
    this.legend = element("div", "ca-legend");
    this.warning = element("div", "ca-warning");
    this.root.append(this.source, this.controls, this.figure, this.legend, this.warning);
    this.batchSelect.addEventListener("change", () => this.select(Number(this.batchSelect.value), this.view));
    this.viewSelect.addEventListener("change", () => this.select(this.batch, Number(this.viewSelect.value)));
    this.image.addEventListener("pointermove", (event) => this.hover(event));
    this.image.addEventListener("pointerleave", () => { this.ranking.hidden = true; });
    this.image.addEventListener("click", (event) => this.pickAtPointer(event));
    this.render();
  }

  /** Height the widget needs: the preview once there is one; before a run, the connected Concept
   * Attention node's names (so a node just added offers them) and the warning line. */
  minHeight() {
    if (this.payload) return PREVIEW_MIN_HEIGHT;
    const legend = this.known?.length
      ? Math.min(Math.max(LEGEND_ROW_HEIGHT, this.legend.scrollHeight), LEGEND_MAX_ROWS * LEGEND_ROW_HEIGHT) : 0;
    const warning = this.warning.textContent ? WARNING_HEIGHT : 0;
    if (!legend && !warning) return 0;
    return legend + warning + (legend && warning ? 4 : 0) + WIDGET_MARGIN;
  }

  show(payload) {
    this.payload = payload ?? null;
    this.batch = Math.min(this.batch, (payload?.batch ?? 1) - 1);
    if (this.view >= (payload?.names?.length ?? 0) || !payload?.overlays?.length) this.view = -1;
    this.select(this.batch, this.view);
    this.fit();
  }

  select(batch, view) {
    this.batch = batch;
    this.view = view;
    this.maps = this.payload ? decodeMaps(this.payload, batch) : null;
    this.render();
  }

  /** Grow the node so that the preview gets its minimum height. */
  fit() {
    const node = this.node;
    const needed = node.computeSize?.();
    if (needed && (node.size[0] < needed[0] || node.size[1] < needed[1])) {
      node.setSize([Math.max(node.size[0], needed[0]), Math.max(node.size[1], needed[1])]);
    }
    node.setDirtyCanvas?.(true, true);
  }

  conceptWidget() {
    return widgetNamed(this.node, "concept");
  }

  pick(name, additive) {
    const widget = this.conceptWidget();
    if (!widget) return;
    const value = pickConcept(widget.value, name, additive);
    widget.value = value;
    widget.callback?.(value, app.canvas, this.node);
    this.node.onWidgetChanged?.(widget.name, value, value, widget);
    this.node.graph?.setDirtyCanvas?.(true, true);
    this.render();
  }

  pointerRanking(event) {
    if (!this.payload) return null;
    const box = this.image.getBoundingClientRect();
    return rankAtPointer(this.payload, this.maps, event.clientX - box.left, event.clientY - box.top, box);
  }

  hover(event) {
    const at = this.pointerRanking(event);
    this.ranking.hidden = !at;
    if (!at) return;
    this.ranking.replaceChildren(...at.ranking.slice(0, RANKED).map((entry) => {
      const line = element("div", "ca-rank");
      line.dataset.concept = entry.name;
      const chip = element("span", "ca-chip");
      chip.style.background = entry.color;
      line.append(chip, element("span", "ca-name", entry.name), element("span", "ca-share", formatShare(entry.share)));
      return line;
    }));
  }

  pickAtPointer(event) {
    const at = this.pointerRanking(event);
    if (at) this.pick(at.ranking[0].name, event.shiftKey);
  }

  /** Re-read the connected Concept Attention node's concepts and the `concept` widget. */
  check() {
    const known = upstreamConcepts(this.node);
    const value = String(this.conceptWidget()?.value ?? "");
    const key = JSON.stringify([known, value]);
    if (key === this.checked) return;
    this.checked = key;
    const before = this.minHeight();
    this.known = known;
    this.render();
    if (this.minHeight() > before) this.fit();
  }

  render() {
    const payload = this.payload;
    const chosen = chosenNames(this.conceptWidget()?.value);
    this.root.dataset.state = payload ? "preview" : "empty";
    // the Vue node mode lays the node out from its content: the preview asks for its height itself
    this.root.style.minHeight = payload ? `${PREVIEW_MIN_HEIGHT}px` : "";
    this.source.textContent = payload?.detail ?? "";
    this.source.hidden = !payload;
    this.controls.hidden = !payload;
    this.figure.hidden = !payload;
    if (payload) {
      this.batchSelect.hidden = payload.batch < 2;
      this.batchSelect.replaceChildren(...Array.from({ length: payload.batch }, (_, i) => {
        const option = element("option", "", `image ${i + 1} of ${payload.batch}`);
        option.value = String(i);
        return option;
      }));
      this.batchSelect.value = String(this.batch);
      const views = [["-1", "segmentation"]];
      if (payload.overlays?.length) payload.names.forEach((name, k) => views.push([String(k), `overlay: ${name}`]));
      this.viewSelect.replaceChildren(...views.map(([value, text]) => {
        const option = element("option", "", text);
        option.value = value;
        return option;
      }));
      this.viewSelect.value = String(this.view);
      const c = payload.names.length;
      const saved = this.view < 0 ? payload.segmentation[this.batch] : payload.overlays[this.batch * c + this.view];
      const url = saved ? viewUrl(saved) : "";
      if (this.image.getAttribute("src") !== url) this.image.src = url;
    }
    // the legend: the maps' concepts after a run, the connected node's concepts before one
    const entries = payload ? legendModel(payload, this.maps, chosen)
      : (this.known ?? []).map((name, index) => ({ index, name, color: null, wins: 0,
          chosen: chosen.some((n) => n.toLowerCase() === name.toLowerCase()) }));
    this.legend.replaceChildren(...entries.map((entry) => {
      const button = element("button", `ca-concept${entry.chosen ? " ca-chosen" : ""}`);
      button.type = "button";
      button.dataset.concept = entry.name;
      button.title = "click: use this concept for 'mask'; shift-click: add it to (or remove it from) the union";
      if (entry.color) {
        const chip = element("span", "ca-chip");
        chip.style.background = entry.color;
        button.append(chip);
      }
      button.append(element("span", "", entry.name));
      if (this.maps) button.append(element("span", "ca-share", formatShare(entry.wins)));
      button.addEventListener("click", (event) => this.pick(entry.name, event.shiftKey));
      return button;
    }));
    this.legend.hidden = !entries.length;
    this.warning.textContent = conceptWarning(chosen.join(", "), this.known ?? []);
  }
}

let styled = false;

function addPanel(node) {
  if (!styled) {
    document.head.append(element("style", "", STYLE));
    styled = true;
  }
  const panel = new SaliencyPanel(node);
  const widget = node.addDOMWidget("concept_preview", "concept_preview", panel.root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => panel.minHeight(),
  });
  widget.serialize = false; // not part of the saved widget values: shipped workflows keep their layout
  node.conceptPanel = panel;
  const timer = setInterval(() => panel.check(), 300);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    clearInterval(timer);
    return onRemoved?.apply(this, arguments);
  };
  panel.check();
}

app.registerExtension({
  name: "ConceptAttention.SaliencyPreview",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== SALIENCY) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      const result = onExecuted?.apply(this, arguments);
      const payload = output?.concept_saliency?.[0];
      if (payload) this.conceptPanel?.show(payload);
      return result;
    };
  },
  nodeCreated(node) {
    if ((node.comfyClass ?? node.constructor?.comfyClass) === SALIENCY) addPanel(node);
  },
});
