// node --test tests/js : the pure modules of the node UI (js/maps.js), against payloads written by
// the python encoder (tests/js/payload_fixture.json, checked by tests/server/test_ui_payload.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  batchLabels, cellAt, decodeMaps, drawnRect, formatShare, frameLabel, imageIndex, imagePixel, legendModel, rankAt,
  rankAtPointer, rankingPlacement, segmentationPixels, videoLayout,
} from "../../js/maps.js";

const fixture = JSON.parse(readFileSync(new URL("./payload_fixture.json", import.meta.url)));

for (const bits of ["8", "16"]) {
  test(`decodes the ${bits}-bit payload to the values python reads back`, () => {
    const payload = fixture[bits];
    for (let i = 0; i < payload.batch; i++) {
      const maps = decodeMaps(payload, i);
      assert.deepEqual([maps.c, maps.h, maps.w], payload.shape);
      payload.decoded[i].forEach((v, k) => assert.ok(Math.abs(maps.values[k] - v) < 1e-6, `${i}/${k}`));
    }
  });
}

test("a payload of the wrong length is refused with the sizes", () => {
  const payload = { ...fixture["8"], maps: ["AAAA"] };
  assert.throws(() => decodeMaps(payload, 0), /expected 18 values of 8 bits, received 3 bytes/);
});

test("no maps (more than 64 concepts) decodes to null", () => {
  assert.equal(decodeMaps({ ...fixture["8"], shape: null, maps: [] }, 0), null);
});

test("pointer -> image pixel with the picture fitted and centred in the box", () => {
  // a 40x30 picture in a 200x100 box: scale 100/30, drawn 133.3 wide from x = 33.3
  assert.equal(imagePixel(10, 50, { width: 200, height: 100 }, [30, 40]), null);
  assert.deepEqual(imagePixel(34, 0, { width: 200, height: 100 }, [30, 40]), { x: 0, y: 0 });
  assert.deepEqual(imagePixel(166, 99, { width: 200, height: 100 }, [30, 40]), { x: 39, y: 29 });
  assert.equal(imagePixel(167, 50, { width: 200, height: 100 }, [30, 40]), null);
});

test("image pixel -> grid cell", () => {
  const payload = fixture["8"]; // grid 2x3 over 32x48 pixels: 16 px cells
  assert.equal(payload.cell, 16);
  assert.deepEqual(cellAt(payload, 0, 0), { row: 0, col: 0 });
  assert.deepEqual(cellAt(payload, 15, 15), { row: 0, col: 0 });
  assert.deepEqual(cellAt(payload, 16, 16), { row: 1, col: 1 });
  assert.deepEqual(cellAt(payload, 47, 31), { row: 1, col: 2 });
});

test("ranking at a cell: strongest first, with names, colours and shares", () => {
  const payload = fixture["16"];
  const maps = decodeMaps(payload, 0);
  const ranking = rankAt(maps, payload, 1, 0); // column 0 of row 1: 0.05, 0.9, 0.05
  assert.deepEqual(ranking.map((r) => r.name), ["sky", "dragon", "background"]);
  assert.equal(ranking[0].color, "#57b5e8");
  assert.ok(Math.abs(ranking[0].share - 0.9) < 1e-4);
  // the second image is the first flipped left-right
  assert.deepEqual(rankAt(decodeMaps(payload, 1), payload, 0, 2).map((r) => r.name), ["dragon", "sky", "background"]);
  // a tie (dragon and sky 0.1) keeps the concepts' order
  assert.deepEqual(rankAt(maps, payload, 0, 2).map((r) => r.name), ["background", "dragon", "sky"]);
});

test("ranking under the pointer goes through pixel and cell", () => {
  const payload = fixture["8"];
  const maps = decodeMaps(payload, 0);
  // box of the picture's own size (48x32): the pointer is the pixel; pixel (x 35, y 20) -> cell (1, 2)
  const at = rankAtPointer(payload, maps, 35.5, 20.5, { width: 48, height: 32 });
  assert.deepEqual([at.row, at.col], [1, 2]);
  assert.equal(at.ranking[0].name, "background");
  assert.equal(rankAtPointer(payload, null, 1, 1, { width: 48, height: 32 }), null);
  assert.equal(rankAtPointer(payload, maps, 48.5, 1, { width: 48, height: 32 }), null); // beside the picture
});

test("shares as percentages", () => {
  assert.equal(formatShare(0.734), "73%");
  assert.equal(formatShare(0.0512), "5.1%");
  assert.equal(formatShare(0.0004), "<0.1%");
  assert.equal(formatShare(0), "0.0%");
});

test("legend: colours, mean shares, cells won and the chosen names", () => {
  const payload = fixture["16"];
  const legend = legendModel(payload, decodeMaps(payload, 0), ["SKY"]);
  assert.deepEqual(legend.map((e) => [e.name, e.color, e.chosen]),
    [["dragon", "#e59e00", false], ["sky", "#57b5e8", true], ["background", "#009e73", false]]);
  // winners per cell: dragon, sky, background / sky, dragon, background
  assert.deepEqual(legend.map((e) => Math.round(e.wins * 6)), [2, 2, 2]);
  assert.ok(Math.abs(legend[0].mean - (0.7 + 0.2 + 0.1 + 0.05 + 0.5 + 0.3) / 6) < 1e-4);
  assert.deepEqual(legendModel(payload, null).map((e) => e.wins), [0, 0, 0]);
});

test("drawn rect of a fitted picture", () => {
  assert.deepEqual(drawnRect({ width: 200, height: 100 }, [50, 50]), { left: 50, top: 0, width: 100, height: 100 });
});

test("segmentation from the maps: each cell in its strongest concept's colour, ties to the first", () => {
  const payload = { colors: ["#ff0000", "#00ff00"] };
  const maps = { c: 2, h: 1, w: 3, values: Float32Array.from([0.9, 0.2, 0.5, 0.1, 0.8, 0.5]) };
  const { width, height, rgba } = segmentationPixels(payload, maps);
  assert.deepEqual([width, height], [3, 1]);
  assert.deepEqual(Array.from(rgba), [255, 0, 0, 255, 0, 255, 0, 255, 255, 0, 0, 255]);
  assert.equal(segmentationPixels(payload, null), null);
});

test("ranking placement: beside the picture when a margin holds it, away from the pointer", () => {
  const figure = { width: 400, height: 100 };
  const image = drawnRect(figure, [100, 100]); // 150 px margins left and right
  const ranking = { width: 120, lineHeight: 16, padding: 4 };
  assert.deepEqual(rankingPlacement(figure, image, ranking, 160, 20, 6), { left: 276, top: 8, lines: 5 });
  assert.deepEqual(rankingPlacement(figure, image, ranking, 240, 80, 3), { left: 4, top: 4, lines: 3 });
});

test("ranking placement over a small picture: few enough lines to cover at most the share asked", () => {
  const figure = { width: 240, height: 160 };
  const image = drawnRect(figure, [64, 96]); // fills the box
  const ranking = { width: 120, lineHeight: 16, padding: 4 };
  const place = rankingPlacement(figure, image, ranking, 20, 20, 6, 0.2);
  assert.ok(place.lines >= 1 && ranking.width * (place.lines * 16 + 8) <= 0.2 * 240 * 160, JSON.stringify(place));
  assert.equal(place.lines, 3);
  assert.equal(place.left, 240 - 120 - 4); // pointer top-left: the box goes bottom-right
  assert.equal(place.top, 160 - 56 - 4);
  // never fewer than one line, however small the picture
  assert.equal(rankingPlacement({ width: 50, height: 50 }, drawnRect({ width: 50, height: 50 }, [10, 10]),
    ranking, 10, 10, 6).lines, 1);
});

test("pictures are videos of one frame; a payload without `frames` (older servers) too", () => {
  assert.deepEqual(videoLayout(fixture["8"]), { videos: 2, frames: 1 });
  const { frames, videos, ...older } = fixture["8"];
  assert.equal(frames, 1);
  assert.equal(videos, 2);
  assert.deepEqual(videoLayout(older), { videos: 2, frames: 1 });
  assert.deepEqual(videoLayout(null), { videos: 1, frames: 1 });
  assert.deepEqual(batchLabels(fixture["8"]), ["image 1 of 2", "image 2 of 2"]);
  assert.equal(imageIndex(fixture["8"], 1, 0), 1);
  assert.equal(imageIndex(fixture["8"], 1, 5), 1, "a picture has frame 0 only");
});

test("a video's frames are images, video-major: video v, frame f is image v * frames + f", () => {
  const payload = fixture.video;
  assert.deepEqual([payload.batch, payload.frames, payload.videos], [4, 2, 2]);
  assert.deepEqual(videoLayout(payload), { videos: 2, frames: 2 });
  assert.deepEqual(batchLabels(payload), ["video 1 of 2", "video 2 of 2"]);
  assert.deepEqual([[0, 0], [0, 1], [1, 0], [1, 1]].map(([v, f]) => imageIndex(payload, v, f)), [0, 1, 2, 3]);
  // out of range (a new run with fewer frames or videos): the last one
  assert.equal(imageIndex(payload, 5, 9), 3);
  assert.equal(imageIndex(payload, -1, -1), 0);
  assert.equal(frameLabel(0, 9), "frame 1 of 9");
  assert.equal(frameLabel(8, 9), "frame 9 of 9");
});

test("the ranking under the pointer is the chosen frame's", () => {
  const payload = fixture.video;
  const box = { width: 48, height: 32 };
  const [c, h, w] = payload.shape;
  for (let video = 0; video < 2; video++) {
    for (let frame = 0; frame < 2; frame++) {
      const index = imageIndex(payload, video, frame);
      const at = rankAtPointer(payload, decodeMaps(payload, index), 40, 20, box); // cell (1, 2)
      const expected = Array.from({ length: c }, (_, k) => payload.decoded[index][k * h * w + 1 * w + 2]);
      assert.deepEqual(at.ranking.map((e) => e.share), [...expected].sort((a, b) => b - a));
    }
  }
  // the frames differ there, so choosing another frame ranks other concepts first
  const first = (index) => rankAtPointer(payload, decodeMaps(payload, index), 40, 20, box).ranking[0].name;
  assert.notEqual(first(0), first(2));
});
