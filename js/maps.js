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

/** Where a picture of `size` [H, W] is drawn in a box of width x height (object-fit: contain). */
export function drawnRect(box, size) {
  const [H, W] = size;
  const scale = Math.min(box.width / W, box.height / H);
  const width = W * scale, height = H * scale;
  return { left: (box.width - width) / 2, top: (box.height - height) / 2, width, height };
}

/**
 * The segmentation drawn from the maps, without the legend the server's picture carries (on a
 * small picture that legend hides most of it; the node has its own): RGBA bytes of h x w, each
 * cell in the colour of its strongest concept (ties: the first). null without maps.
 */
export function segmentationPixels(payload, maps) {
  if (!maps) return null;
  const plane = maps.h * maps.w;
  const colors = payload.colors.map((hex) => [1, 3, 5].map((at) => parseInt(hex.slice(at, at + 2), 16)));
  const rgba = new Uint8ClampedArray(plane * 4);
  for (let at = 0; at < plane; at++) {
    let best = 0;
    for (let k = 1; k < maps.c; k++) if (maps.values[k * plane + at] > maps.values[best * plane + at]) best = k;
    rgba.set([...colors[best], 255], at * 4);
  }
  return { width: maps.w, height: maps.h, rgba };
}

/**
 * Where the pointer ranking goes and how many of its lines: in the corner of the figure (a box of
 * width x height holding the picture, `image` its drawn rect) away from the pointer at (px, py);
 * inside a letterbox margin when the box fits there, else over the picture with only as many
 * lines as cover at most `maxCover` of it (at least one). `ranking`: {width, lineHeight, padding}.
 */
export function rankingPlacement(figure, image, ranking, px, py, lines, maxCover = 0.2) {
  const height = (n) => n * ranking.lineHeight + 2 * ranking.padding;
  const right = px < figure.width / 2, bottom = py < figure.height / 2;
  const margins = { x: image.left, y: image.top };
  let shown = lines;
  const beside = margins.x >= ranking.width + 4 && figure.height >= height(1);
  const below = !beside && margins.y >= height(1) + 4 && figure.width >= ranking.width;
  if (beside) {
    shown = Math.min(lines, Math.max(1, Math.floor((figure.height - 8 - 2 * ranking.padding) / ranking.lineHeight)));
  } else if (below) {
    shown = Math.min(lines, Math.max(1, Math.floor((margins.y - 4 - 2 * ranking.padding) / ranking.lineHeight)));
  } else {
    const area = image.width * image.height;
    while (shown > 1 && ranking.width * height(shown) > maxCover * area) shown--;
  }
  const boxHeight = height(shown);
  const left = right ? figure.width - ranking.width - 4 : 4;
  const top = bottom ? figure.height - boxHeight - 4 : 4;
  return { left, top, lines: shown };
}

/**
 * The payload's videos and frames per video: a video's frames are images, video-major (video v,
 * frame f is image v * frames + f); pictures are videos of one frame. Older payloads have no
 * `frames`: pictures.
 */
export function videoLayout(payload) {
  const batch = Math.max(1, payload?.batch ?? 1);
  const frames = Math.max(1, Math.min(batch, Math.floor(payload?.frames ?? 1)));
  return { videos: Math.max(1, Math.floor(batch / frames)), frames };
}

/** The image holding frame `frame` of video `video` (both clamped to the payload's). */
export function imageIndex(payload, video, frame) {
  const { videos, frames } = videoLayout(payload);
  const v = Math.min(Math.max(0, Math.floor(video) || 0), videos - 1);
  const f = Math.min(Math.max(0, Math.floor(frame) || 0), frames - 1);
  return v * frames + f;
}

/** The batch menu's entries: one per video ("video 1 of 2") or per picture ("image 1 of 2"). */
export function batchLabels(payload) {
  const { videos, frames } = videoLayout(payload);
  const kind = frames > 1 ? "video" : "image";
  return Array.from({ length: videos }, (_, i) => `${kind} ${i + 1} of ${videos}`);
}

/** The frame slider's label: "frame 3 of 9" (frame counted from 0). */
export function frameLabel(frame, frames) {
  return `frame ${frame + 1} of ${frames}`;
}
