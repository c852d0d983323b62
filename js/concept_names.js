// Concept names on the node (pure, no DOM): the concepts typed in Concept Attention, the value of
// Concept Saliency's `concept` widget after a click or shift-click, and the names in it that the
// connected Concept Attention node does not have. Mirrors nodes/capture.py parse_concepts and
// nodes/masks.py select_concepts (case-insensitive names, comma-separated union).

/** Concept Attention's `concepts` text -> names: one per line or comma-separated, trimmed. */
export function parseConcepts(text) {
  return String(text ?? "")
    .split(/\r?\n/)
    .flatMap((line) => line.split(","))
    .map((name) => name.trim())
    .filter(Boolean);
}

/** The `concept` widget's names (comma-separated). */
export function chosenNames(value) {
  return String(value ?? "").split(",").map((n) => n.trim()).filter(Boolean);
}

/**
 * The widget value after picking `name`: a click (additive false) makes it the only concept; a
 * shift-click (additive true) adds it to the union, or removes it when it is already there. The
 * only chosen concept stays: an empty value would mean the node's first concept while the UI showed
 * none chosen, so the mask and what the UI shows would disagree.
 */
export function pickConcept(value, name, additive = false) {
  if (!additive) return name;
  const names = chosenNames(value);
  const at = names.findIndex((n) => n.toLowerCase() === name.toLowerCase());
  if (at >= 0 && names.length === 1) return names[0];
  if (at >= 0) names.splice(at, 1);
  else names.push(name);
  return names.join(", ");
}

/** Names in `value` that are not among `known` (case-insensitive), in the order typed. */
export function unknownNames(value, known) {
  const lookup = new Set(known.map((n) => n.toLowerCase()));
  return chosenNames(value).filter((n) => !lookup.has(n.toLowerCase()));
}

/** The line shown on the node for a `concept` value against the connected node's concepts. */
export function conceptWarning(value, known) {
  if (!known?.length) return "";
  const unknown = unknownNames(value, known);
  if (!unknown.length) return "";
  const quoted = unknown.map((n) => `'${n}'`).join(", ");
  return `${quoted} ${unknown.length > 1 ? "are" : "is"} not among the concepts: ${known.join(", ")}`;
}

/**
 * What the `concept` widget suggests while it is edited: for the name being typed (after the last
 * comma), each known name not chosen yet, as the whole value it would give ("dragon, s" ->
 * "dragon, sky", "dragon, mountains", ...). Without a comma: the names themselves.
 */
export function conceptSuggestions(value, known) {
  const text = String(value ?? "");
  const cut = text.lastIndexOf(",");
  if (cut < 0) return [...(known ?? [])];
  const before = chosenNames(text.slice(0, cut));
  const taken = new Set(before.map((n) => n.toLowerCase()));
  const prefix = before.length ? `${before.join(", ")}, ` : "";
  return (known ?? []).filter((n) => !taken.has(n.toLowerCase())).map((n) => prefix + n);
}
