// Just enough of PNG to check a screenshot's pixels: 8-bit greyscale, RGB, grey+alpha and
// RGBA, not interlaced (what Chromium writes). IDAT is inflated with node:zlib and the five
// scanline filters are undone, giving RGBA bytes.
import zlib from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const CHANNELS = { 0: 1, 2: 3, 4: 2, 6: 4 };

/** Decodes a PNG buffer into {width, height, rgba: Buffer}. */
export function decodePNG(buf) {
  if (!buf.subarray(0, 8).equals(SIGNATURE)) throw new Error('not a PNG');
  let off = 8;
  let hdr = null;
  const idat = [];
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      hdr = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), depth: data[8], color: data[9], interlace: data[12] };
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      break;
    }
    off += 12 + len;
  }
  if (!hdr) throw new Error('PNG without IHDR');
  const ch = CHANNELS[hdr.color];
  if (hdr.depth !== 8 || !ch || hdr.interlace) {
    throw new Error(`unsupported PNG: depth ${hdr.depth}, color type ${hdr.color}, interlace ${hdr.interlace}`);
  }
  const { width, height } = hdr;
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * ch;
  if (raw.length < height * (stride + 1)) throw new Error('PNG data too short');
  const rgba = Buffer.alloc(width * height * 4);
  let prev = Buffer.alloc(stride);
  let cur = Buffer.alloc(stride);
  for (let y = 0; y < height; y++) {
    const p = y * (stride + 1);
    const filter = raw[p];
    for (let i = 0; i < stride; i++) {
      const x = raw[p + 1 + i];
      const a = i >= ch ? cur[i - ch] : 0;
      const b = prev[i];
      const c = i >= ch ? prev[i - ch] : 0;
      let v;
      switch (filter) {
        case 0: v = x; break;
        case 1: v = x + a; break;
        case 2: v = x + b; break;
        case 3: v = x + ((a + b) >> 1); break;
        case 4: {
          const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
          v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
          break;
        }
        default: throw new Error(`bad PNG filter ${filter} on row ${y}`);
      }
      cur[i] = v & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 4;
      const s = x * ch;
      if (ch >= 3) {
        rgba[o] = cur[s]; rgba[o + 1] = cur[s + 1]; rgba[o + 2] = cur[s + 2];
        rgba[o + 3] = ch === 4 ? cur[s + 3] : 255;
      } else {
        rgba[o] = rgba[o + 1] = rgba[o + 2] = cur[s];
        rgba[o + 3] = ch === 2 ? cur[s + 1] : 255;
      }
    }
    [prev, cur] = [cur, prev];
  }
  return { width, height, rgba };
}

/**
 * What an image (or a rectangle of it) holds: how many distinct colors, how many pixels are
 * not the background (the most common color), how many are within `tol` of `ink` ([r,g,b]),
 * and how many columns have at least one such pixel (a line across the chart fills many).
 */
export function analyze(img, { ink, tol = 40, rect } = {}) {
  const { x0 = 0, y0 = 0, x1 = img.width, y1 = img.height } = rect || {};
  const counts = new Map();
  let inkPixels = 0;
  const inkColumns = new Set();
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const o = (y * img.width + x) * 4;
      const r = img.rgba[o], g = img.rgba[o + 1], b = img.rgba[o + 2];
      const key = (r << 16) | (g << 8) | b;
      counts.set(key, (counts.get(key) || 0) + 1);
      if (ink && Math.abs(r - ink[0]) <= tol && Math.abs(g - ink[1]) <= tol && Math.abs(b - ink[2]) <= tol) {
        inkPixels++;
        inkColumns.add(x);
      }
    }
  }
  const total = (x1 - x0) * (y1 - y0);
  const background = Math.max(0, ...counts.values());
  return {
    total,
    colors: counts.size,
    notBackground: total - background,
    inkPixels,
    inkColumns: inkColumns.size,
    width: x1 - x0,
  };
}
