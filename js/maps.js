// Concept Saliency's map payload in the browser (pure, no DOM): decoding, which token a pixel of
// the preview lies in, the concepts ranked there, and the legend. The payload is built by
// nodes/ui_payload.py: per image, [C, h, w] shares quantised to `bits`, base64, concept-major,
// 16-bit values little-endian.

/** base64 -> Uint8Array (atob exists in browsers and in node >= 16). */
function bytesOf(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The maps of image `index`: {c, h, w, values: Float32Array of c*h*w shares 0..1}. */
export function decodeMaps(payload, index = 0) {
  if (!payload?.shape || !payload.maps?.[index]) return null;
  const [c, h, w] = payload.shape;
  const bytes = bytesOf(payload.maps[index]);
  const count = c * h * w;
  const top = 2 ** payload.bits - 1;
  if (bytes.length !== count * (payload.bits / 8)) {
    throw new Error(`concept maps: expected ${count} values of ${payload.bits} bits, received ${bytes.length} bytes`);
  }
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    values[i] = (payload.bits === 16 ? bytes[2 * i] | (bytes[2 * i + 1] << 8) : bytes[i]) / top;
  }
  return { c, h, w, values };
}

/**
 * The image pixel under a pointer at (px, py) inside a box of width x height where the image of
 * `size` [H, W] is drawn scaled to fit and centred (CSS object-fit: contain). null outside it.
 */
export function imagePixel(px, py, box, size) {
  const [H, W] = size;
  const scale = Math.min(box.width / W, box.height / H);
  const left = (box.width - W * scale) / 2, top = (box.height - H * scale) / 2;
  const x = Math.floor((px - left) / scale), y = Math.floor((py - top) / scale);
  return x < 0 || y < 0 || x >= W || y >= H ? null : { x, y };
}

/** The grid cell holding image pixel (x, y): the grid spans `covers` [height, width] pixels. */
export function cellAt(payload, x, y) {
  const [, h, w] = payload.shape;
  const [coverH, coverW] = payload.covers;
  return { row: Math.min(h - 1, Math.floor((y * h) / coverH)), col: Math.min(w - 1, Math.floor((x * w) / coverW)) };
}

/** The concepts at a cell, strongest first: [{index, name, color, share}]. */
export function rankAt(maps, payload, row, col) {
  const plane = maps.h * maps.w, at = row * maps.w + col;
  const ranked = payload.names.map((name, index) => ({
    index, name, color: payload.colors[index], share: maps.values[index * plane + at],
  }));
  return ranked.sort((a, b) => b.share - a.share || a.index - b.index);
}

/** The ranking under the pointer, or null where there is no image or no maps. */
export function rankAtPointer(payload, maps, px, py, box) {
  if (!maps) return null;
  const pixel = imagePixel(px, py, box, payload.size);
  if (!pixel) return null;
  const { row, col } = cellAt(payload, pixel.x, pixel.y);
  return { pixel, row, col, ranking: rankAt(maps, payload, row, col) };
}

/** "73%" (one decimal below 10%, "<0.1%" for crumbs). */
export function formatShare(share) {
  const percent = share * 100;
  if (percent > 0 && percent < 0.1) return "<0.1%";
  return percent < 10 ? `${percent.toFixed(1)}%` : `${Math.round(percent)}%`;
}

/**
 * The legend for one image: every concept with its colour, its mean share over the grid and the
 * share of cells it wins (0 without maps), and whether it is among `chosen` (lower-case names).
 */
export function legendModel(payload, maps, chosen = []) {
  const wanted = new Set(chosen.map((n) => n.toLowerCase()));
  const entries = payload.names.map((name, index) => ({
    index, name, color: payload.colors[index], mean: 0, wins: 0, chosen: wanted.has(name.toLowerCase()),
  }));
  if (!maps) return entries;
  const plane = maps.h * maps.w;
  for (let at = 0; at < plane; at++) {
    let best = 0;
    for (let k = 0; k < maps.c; k++) {
      const v = maps.values[k * plane + at];
      entries[k].mean += v / plane;
      if (v > maps.values[best * plane + at]) best = k;
    }
    entries[best].wins += 1 / plane;
  }
  return entries;
}
