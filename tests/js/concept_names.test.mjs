// node --test tests/js : concept names on the node (js/concept_names.js).
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  chosenNames, conceptSuggestions, conceptWarning, parseConcepts, pickConcept, unknownNames,
} from "../../js/concept_names.js";

test("concepts text: one per line or comma-separated, blanks dropped", () => {
  assert.deepEqual(parseConcepts("dragon\n sky , mountains\n\n background \r\n"), ["dragon", "sky", "mountains", "background"]);
  assert.deepEqual(parseConcepts(""), []);
  assert.deepEqual(parseConcepts(undefined), []);
});

test("click sets the concept, replacing the union", () => {
  assert.equal(pickConcept("dragon, sky", "background"), "background");
  assert.equal(pickConcept("", "sky"), "sky");
});

test("shift-click adds to the union, and removes a name already in it", () => {
  assert.equal(pickConcept("dragon", "sky", true), "dragon, sky");
  assert.equal(pickConcept("dragon, sky", "SKY", true), "dragon");
  assert.equal(pickConcept("dragon", "DRAGON", true), "dragon"); // the only one stays: an empty value would be the first concept
  assert.equal(pickConcept("dragon, sky", "dragon", true), "sky");
  assert.equal(pickConcept("", "sky", true), "sky");
  assert.deepEqual(chosenNames(" dragon ,, sky "), ["dragon", "sky"]);
});

test("names not among the connected node's concepts are found, case-insensitively", () => {
  const known = ["dragon", "sky", "background"];
  assert.deepEqual(unknownNames("Dragon, skyy, tree", known), ["skyy", "tree"]);
  assert.deepEqual(unknownNames("", known), []);
  assert.equal(conceptWarning("dragn", known), "'dragn' is not among the concepts: dragon, sky, background");
  assert.equal(conceptWarning("a, b", known), "'a', 'b' are not among the concepts: dragon, sky, background");
  assert.equal(conceptWarning("sky", known), "");
  assert.equal(conceptWarning("anything", []), ""); // no Concept Attention node connected: nothing to say
});

test("suggestions: the names, then completions of the name after the last comma", () => {
  const known = ["dragon", "sky", "mountains"];
  assert.deepEqual(conceptSuggestions("", known), known);
  assert.deepEqual(conceptSuggestions("dra", known), known);
  assert.deepEqual(conceptSuggestions("dragon, s", known), ["dragon, sky", "dragon, mountains"]);
  assert.deepEqual(conceptSuggestions("Dragon,sky,", known), ["Dragon, sky, mountains"]);
  assert.deepEqual(conceptSuggestions(",", known), known);
  assert.deepEqual(conceptSuggestions("x", null), []);
});
