// The node UI of Concept Saliency: after a run the node shows its segmentation (or one concept's
// overlay; a video: of the frame its slider chooses), ranks the concepts under the pointer from the
// real maps (of that frame), and sets its `concept`
// widget on a click (shift-click: the union). The `concept` widget is checked against the
// concepts typed in the Concept Attention node its MODEL comes from, and suggests them while it is
// edited (a datalist on the frontend's own text input). After a page reload the node shows its last
// preview again, from the server's history. Talks to the frontend only through
// app.registerExtension, beforeRegisterNodeDef, chained onExecuted / onConfigure, addDOMWidget,
// the concept widget's own onClick and the /history API; the logic lives in maps.js and
// concept_names.js (unit-tested with node --test).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

import { conceptSuggestions, conceptWarning, chosenNames, parseConcepts, pickConcept } from "./concept_names.js";
import {
  batchLabels, decodeMaps, drawnRect, formatShare, frameLabel, imageIndex, legendModel, rankAtPointer,
  rankingPlacement, segmentationPixels, videoLayout,
} from "./maps.js";

const SALIENCY = "ConceptSaliency";
const ATTENTION = "ConceptAttentionFlux";
const RANKED = 6; // lines in the pointer ranking
const PREVIEW_MIN_HEIGHT = 260; // px of the widget once there is a preview
const LEGEND_ROW_HEIGHT = 24; // px of one row of concept buttons
const LEGEND_MAX_ROWS = 4; // before a run the node grows for at most this many rows of names
const WARNING_HEIGHT = 20; // px of the unknown-name warning
const WIDGET_MARGIN = 8; // px the frontends take off a DOM widget's height for its margins
const RANKING_COVER = 0.2; // the pointer ranking covers at most this share of the picture it lies over
const HISTORY_ITEMS = 32; // runs searched for the node's last preview after a reload

const STYLE = `
.ca-panel { display: flex; flex-direction: column; gap: 4px; width: 100%; height: 100%; box-sizing: border-box;
  overflow: hidden; font: 12px sans-serif; color: var(--input-text, #ddd); }
.ca-panel [hidden] { display: none !important; }
.ca-row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.ca-source { opacity: 0.8; }
.ca-warning { color: #ff6b6b; }
.ca-figure { position: relative; flex: 1 1 auto; min-height: 120px; }
.ca-image { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; cursor: crosshair;
  image-rendering: pixelated; }
.ca-ranking { position: absolute; top: 4px; right: 4px; padding: 4px 6px; border-radius: 4px; pointer-events: none;
  background: rgba(0, 0, 0, 0.75); color: #fff; line-height: 16px; }
.ca-hint { position: relative; flex: 1 1 0; min-height: 0; }
.ca-hint > span { position: absolute; inset: 0; overflow: hidden; opacity: 0.6; padding: 4px; }
.ca-rank { display: flex; gap: 6px; align-items: center; white-space: nowrap; }
.ca-rank:first-child { font-weight: bold; }
.ca-chip { display: inline-block; width: 10px; height: 10px; border: 1px solid #ddd; flex: none; }
.ca-legend { display: flex; flex-wrap: wrap; gap: 3px; }
.ca-concept { display: flex; gap: 4px; align-items: center; padding: 1px 5px; border-radius: 3px; cursor: pointer;
  border: 1px solid transparent; background: rgba(127, 127, 127, 0.15); color: inherit; font: inherit; }
.ca-concept.ca-chosen { border-color: currentColor; font-weight: bold; }
.ca-panel select { font: inherit; }
.ca-frames { display: flex; gap: 6px; align-items: center; flex: 1 1 160px; min-width: 120px; }
.ca-frame { flex: 1 1 auto; min-width: 60px; margin: 0; }
.ca-frame-label { white-space: nowrap; font-variant-numeric: tabular-nums; }
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
    this.batch = 0; // the image shown: video * frames + frame (video-major)
    this.video = 0;
    this.frame = 0;
    this.view = -1; // -1: segmentation; k: concept k's overlay
    this.known = null;
    this.root = element("div", "ca-panel");
    this.source = element("div", "ca-source");
    this.controls = element("div", "ca-row");
    this.batchSelect = element("select", "ca-batch");
    this.viewSelect = element("select", "ca-view");
    // a video: which frame (the batch menu chooses the video)
    this.frames = element("label", "ca-frames");
    this.frameSlider = element("input", "ca-frame");
    this.frameSlider.type = "range";
    this.frameSlider.min = "0";
    this.frameSlider.step = "1";
    this.frameSlider.title = "the video frame shown and ranked under the pointer";
    this.frameLabel = element("span", "ca-frame-label");
    this.frames.append(this.frameSlider, this.frameLabel);
    this.controls.append(this.batchSelect, this.viewSelect, this.frames);
    this.figure = element("div", "ca-figure");
    this.image = element("img", "ca-image");
    this.image.alt = "concept segmentation";
    this.ranking = element("div", "ca-ranking");
    this.ranking.hidden = true;
    this.figure.append(this.image, this.ranking);
    this.legend = element("div", "ca-legend");
    this.warning = element("div", "ca-warning");
    // before a run (or after a reload with no run in the server's history) the room stays labelled
    this.hint = element("div", "ca-hint");
    this.hint.append(element("span", "", "After a run the concepts' segmentation is shown here: point at it to "
      + "rank the concepts there, click to use one for 'mask'."));
    this.suggestions = element("datalist");
    this.suggestions.id = `ca-concepts-${Math.random().toString(36).slice(2)}`;
    this.root.append(this.source, this.controls, this.figure, this.legend, this.warning, this.hint);
    this.batchSelect.addEventListener("change", () => this.select(Number(this.batchSelect.value), this.frame, this.view));
    this.viewSelect.addEventListener("change", () => this.select(this.video, this.frame, Number(this.viewSelect.value)));
    this.frameSlider.addEventListener("input", () => this.select(this.video, Number(this.frameSlider.value), this.view));
    // dragging the slider moves the frame, not the node (Vue nodes drag from any pointerdown)
    this.frameSlider.addEventListener("pointerdown", (event) => event.stopPropagation());
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
    if (this.view >= (payload?.names?.length ?? 0) || !payload?.overlays?.length) this.view = -1;
    this.select(this.video, this.frame, this.view);
    this.fit();
  }

  /** Show frame `frame` of video `video` (a picture: video = the image, frame 0) and `view`. */
  select(video, frame, view) {
    const { videos, frames } = videoLayout(this.payload);
    this.video = Math.min(Math.max(0, video), videos - 1);
    this.frame = Math.min(Math.max(0, frame), frames - 1);
    this.batch = imageIndex(this.payload, this.video, this.frame);
    this.view = view;
    this.maps = this.payload ? decodeMaps(this.payload, this.batch) : null;
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
    const lines = at.ranking.slice(0, RANKED).map((entry) => {
      const line = element("div", "ca-rank");
      line.dataset.concept = entry.name;
      const chip = element("span", "ca-chip");
      chip.style.background = entry.color;
      line.append(chip, element("span", "ca-name", entry.name), element("span", "ca-share", formatShare(entry.share)));
      return line;
    });
    this.ranking.replaceChildren(...lines);
    // away from the pointer, beside the picture where there is room, never over most of a small one
    const figure = this.figure.getBoundingClientRect();
    const zoom = figure.width / (this.figure.offsetWidth || figure.width) || 1; // the canvas' scale
    const box = { width: this.figure.offsetWidth, height: this.figure.offsetHeight };
    const style = getComputedStyle(this.ranking);
    const ranking = { width: this.ranking.offsetWidth, lineHeight: lines[0].offsetHeight || 16,
                      padding: parseFloat(style.paddingTop) || 0 };
    const place = rankingPlacement(box, drawnRect(box, this.payload.size), ranking,
                                   (event.clientX - figure.left) / zoom, (event.clientY - figure.top) / zoom,
                                   lines.length, RANKING_COVER);
    lines.slice(place.lines).forEach((line) => line.remove());
    Object.assign(this.ranking.style, { left: `${place.left}px`, top: `${place.top}px`, right: "auto" });
  }

  pickAtPointer(event) {
    const at = this.pointerRanking(event);
    if (at) this.pick(at.ranking[0].name, event.shiftKey);
  }

  /** The preview of this node's last run in the server's history (after a page reload the
   * frontend has no outputs; the node keeps the size its preview gave it). Runs of this workflow
   * only: the history's saved workflow has the same id as the graph the node is in. */
  async restore() {
    const graph = this.node.graph;
    if (this.payload || !graph?.id || this.node.id == null || graph !== (app.rootGraph ?? app.graph)) return;
    let history;
    try {
      history = await (await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`)).json();
    } catch {
      return; // no history to show: the hint stays
    }
    for (const entry of Object.values(history ?? {}).reverse()) {
      if (entry?.prompt?.[3]?.extra_pnginfo?.workflow?.id !== graph.id) continue;
      const payload = entry.outputs?.[String(this.node.id)]?.concept_saliency?.[0];
      if (!payload) continue;
      if (!this.payload && this.node.graph === graph) this.show(payload);
      return;
    }
  }

  /** The `concept` widget's suggestions for the text being typed: the connected node's names. */
  suggest(input) {
    if (!this.suggestions.isConnected) document.body.append(this.suggestions);
    const fill = () => {
      const names = conceptSuggestions(input.value, this.known ?? upstreamConcepts(this.node) ?? []);
      this.suggestions.replaceChildren(...names.map((name) => {
        const option = element("option");
        option.value = name;
        return option;
      }));
    };
    input.setAttribute("list", this.suggestions.id);
    input.setAttribute("autocomplete", "off");
    if (input.dataset.caSuggest !== this.suggestions.id) {
      input.dataset.caSuggest = this.suggestions.id;
      input.addEventListener("input", fill);
    }
    fill();
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

  drawnSegmentation() {
    const key = `${this.batch}`;
    if (this.drawn?.payload === this.payload && this.drawn.key === key) return this.drawn.url;
    const pixels = segmentationPixels(this.payload, this.maps);
    const canvas = element("canvas");
    canvas.width = pixels.width;
    canvas.height = pixels.height;
    canvas.getContext("2d").putImageData(new ImageData(pixels.rgba, pixels.width, pixels.height), 0, 0);
    this.drawn = { payload: this.payload, key, url: canvas.toDataURL("image/png") };
    return this.drawn.url;
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
    this.hint.hidden = !!payload;
    if (payload) {
      const { videos, frames } = videoLayout(payload);
      const labels = batchLabels(payload);
      this.batchSelect.hidden = videos < 2;
      if (this.batchSelect.options.length !== labels.length
          || labels.some((label, i) => this.batchSelect.options[i].textContent !== label)) {
        this.batchSelect.replaceChildren(...labels.map((label, i) => {
          const option = element("option", "", label);
          option.value = String(i);
          return option;
        }));
      }
      this.batchSelect.value = String(this.video);
      this.frames.hidden = frames < 2;
      this.frameSlider.max = String(frames - 1);
      this.frameSlider.value = String(this.frame);
      this.frameLabel.textContent = frameLabel(this.frame, frames);
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
      // a small picture (maps at its own pixels): the segmentation drawn from the maps, without the
      // legend the server's picture carries, which would hide most of it
      const url = this.view < 0 && payload.cell === 1 && this.maps ? this.drawnSegmentation()
        : saved ? viewUrl(saved) : "";
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
  // LiteGraph mode: the frontend edits the text in its own prompt box, opened by the widget's onClick
  const concept = panel.conceptWidget();
  const onClick = concept?.onClick;
  if (concept && typeof onClick === "function") {
    concept.onClick = function (options) {
      const result = onClick.apply(this, arguments);
      const input = options?.canvas?.prompt_box?.querySelector?.("input, textarea")
        ?? document.querySelector(".graphdialog input");
      if (input) panel.suggest(input);
      return result;
    };
  }
  const timer = setInterval(() => panel.check(), 300);
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    clearInterval(timer);
    panel.suggestions.remove();
    return onRemoved?.apply(this, arguments);
  };
  panel.check();
}

/** Vue node mode: the widget is a text input in the node's element, labelled with its name. */
function suggestInVueNode(event) {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.getAttribute("aria-label") !== "concept") return;
  const id = input.closest("[data-node-id]")?.dataset.nodeId;
  const graph = app.canvas?.graph ?? app.graph;
  const node = id != null ? graph?.getNodeById?.(Number(id)) ?? graph?.getNodeById?.(id) : null;
  node?.conceptPanel?.suggest(input);
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
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const result = onConfigure?.apply(this, arguments);
      // a loaded workflow (a page reload restores the last one): its graph and ids are set after this
      setTimeout(() => this.conceptPanel?.restore(), 0);
      return result;
    };
  },
  setup() {
    document.addEventListener("focusin", suggestInVueNode);
  },
  nodeCreated(node) {
    if ((node.comfyClass ?? node.constructor?.comfyClass) === SALIENCY) addPanel(node);
  },
});
