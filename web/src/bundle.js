// Reading a "sega-bundle" (format_version 1 or 2) from a folder URL or a .zip (URL or dropped file).
//
// A bundle is a manifest.json plus the files it names (static.ply, the per-frame ONNX graphs, clips);
// see docs/bundle-format.md for the contract. Every file listed in manifest.files is checked against its
// SHA-256 when it is read (Web Crypto; skipped with a warning where the page is not a secure context).

import { strFromU8, unzipSync } from "fflate";

export const BUNDLE_FORMAT = "sega-bundle";
export const READABLE_VERSIONS = [1, 2]; // 2: splat outputs may be component-major ("layout")
export const OUTPUT_LAYOUTS = ["splat_major", "component_major"];
export const MANIFEST = "manifest.json";
export const DYNAMIC_INDEX_PROPERTY = "sega_dynamic_index";

export class BundleError extends Error {}

/** Files from a folder served over HTTP (base URL ends with "/"). */
class FolderSource {
  constructor(baseUrl, label = null) {
    this.base = new URL(baseUrl, location.href);
    if (!this.base.pathname.endsWith("/")) this.base.pathname += "/";
    this.label = label || this.base.pathname;
  }
  async bytes(rel) {
    const url = new URL(safeRelative(rel), this.base);
    const res = await fetch(url);
    if (!res.ok) throw new BundleError(`${url.pathname}: HTTP ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }
}

/** Files from an in-memory zip; members may sit under one top folder (the one holding manifest.json). */
class ZipSource {
  constructor(zipBytes, label) {
    let entries;
    try {
      entries = unzipSync(zipBytes);
    } catch (err) {
      throw new BundleError(`${label}: not a readable zip (${err.message})`);
    }
    const manifests = Object.keys(entries)
      .filter((n) => n === MANIFEST || n.endsWith(`/${MANIFEST}`))
      .sort((a, b) => a.length - b.length);
    if (!manifests.length) throw new BundleError(`${label}: no ${MANIFEST} in the zip`);
    this.prefix = manifests[0].slice(0, -MANIFEST.length);
    this.entries = entries;
    this.label = label;
  }
  async bytes(rel) {
    const data = this.entries[this.prefix + safeRelative(rel)];
    if (!data) throw new BundleError(`${this.label}: ${rel} is missing from the zip`);
    return data;
  }
}

function safeRelative(rel) {
  if (typeof rel !== "string" || !rel || rel.startsWith("/") || rel.includes("\\") || rel.split("/").some((p) => p === ".." || p === "")) {
    throw new BundleError(`bad file path in the manifest: ${JSON.stringify(rel)}`);
  }
  return rel;
}

async function sha256Hex(bytes) {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An opened bundle: the manifest and verified access to its files. */
export class Bundle {
  constructor(source, manifest) {
    this.source = source;
    this.manifest = manifest;
    this.label = source.label;
    this.verified = [];
  }

  /** Bytes of a file named in the manifest, checked against manifest.files[rel] (every file must be listed). */
  async bytes(rel) {
    const want = (this.manifest.files || {})[rel];
    if (!want) throw new BundleError(`${rel} is not listed in the manifest's files: every file of a bundle is listed with its SHA-256`);
    const data = await this.source.bytes(rel);
    {
      if (globalThis.crypto && crypto.subtle) {
        const got = await sha256Hex(data);
        if (got !== String(want).toLowerCase()) {
          throw new BundleError(`${rel}: SHA-256 mismatch (manifest ${want}, file ${got}); the bundle is damaged`);
        }
        this.verified.push(rel);
      } else if (!Bundle.warnedNoCrypto) {
        Bundle.warnedNoCrypto = true;
        console.warn("Web Crypto is unavailable (page not in a secure context): bundle hashes are not checked");
      }
    }
    return data;
  }

  async json(rel) {
    const text = strFromU8(await this.bytes(rel));
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new BundleError(`${rel}: not valid JSON (${err.message})`);
    }
  }
}

function checkManifest(m, label) {
  const fail = (msg) => new BundleError(`${label}: ${msg}`);
  if (!m || typeof m !== "object") throw fail("manifest.json is not a JSON object");
  if (m.format !== BUNDLE_FORMAT) throw fail(`not a SEGA bundle (format ${JSON.stringify(m.format)})`);
  if (!READABLE_VERSIONS.includes(m.format_version)) {
    throw fail(`bundle format_version ${m.format_version} is not supported by this viewer (it reads versions ${READABLE_VERSIONS.join(", ")})`);
  }
  if (!m.splats || typeof m.splats.file !== "string") throw fail("manifest.splats.file is missing");
  const frame = m.frame;
  if (!frame || !frame.inputs || !Array.isArray(frame.steps) || !frame.outputs) throw fail("manifest.frame needs inputs, steps and outputs");
  for (const step of frame.steps) {
    if (typeof step.graph !== "string" || !step.inputs || !Array.isArray(step.outputs)) throw fail(`bad step ${JSON.stringify(step)}`);
  }
  for (const [name, spec] of Object.entries(frame.outputs)) {
    const layout = spec.layout ?? "splat_major";
    if (!OUTPUT_LAYOUTS.includes(layout) || (layout !== "splat_major" && m.format_version < 2)) {
      throw fail(`output ${name} has layout ${JSON.stringify(layout)}, which format_version ${m.format_version} does not have`);
    }
  }
  if (!m.expressions || !Array.isArray(m.expressions.names)) throw fail("manifest.expressions.names is missing");
  const e = m.expressions.names.length;
  const exprShape = frame.inputs.expression && frame.inputs.expression.shape;
  if (exprShape && exprShape[exprShape.length - 1] !== e) throw fail(`frame input expression has shape ${JSON.stringify(exprShape)} but there are ${e} names`);
  return m;
}

/** Open a bundle from a URL: a folder ("/bundle/") or a .zip file. */
export async function openBundleUrl(url, label = null) {
  const resolved = new URL(url, location.href);
  if (resolved.pathname.toLowerCase().endsWith(".zip")) {
    const res = await fetch(resolved);
    if (!res.ok) throw new BundleError(`${resolved.pathname}: HTTP ${res.status}`);
    return openBundleZip(new Uint8Array(await res.arrayBuffer()), label || resolved.pathname);
  }
  const source = new FolderSource(resolved.href, label);
  const manifest = JSON.parse(strFromU8(await source.bytes(MANIFEST)));
  return new Bundle(source, checkManifest(manifest, source.label));
}

/** Open a bundle from zip bytes (a dropped or fetched .zip). */
export async function openBundleZip(zipBytes, label = "bundle.zip") {
  const source = new ZipSource(zipBytes, label);
  let manifest;
  try {
    manifest = JSON.parse(strFromU8(await source.bytes(MANIFEST)));
  } catch (err) {
    throw new BundleError(`${label}: manifest.json is not valid JSON (${err.message})`);
  }
  return new Bundle(source, checkManifest(manifest, label));
}

// ---- PLY --------------------------------------------------------------------------------------------

const PLY_TYPES = {
  char: ["getInt8", 1], int8: ["getInt8", 1], uchar: ["getUint8", 1], uint8: ["getUint8", 1],
  short: ["getInt16", 2], int16: ["getInt16", 2], ushort: ["getUint16", 2], uint16: ["getUint16", 2],
  int: ["getInt32", 4], int32: ["getInt32", 4], uint: ["getUint32", 4], uint32: ["getUint32", 4],
  float: ["getFloat32", 4], float32: ["getFloat32", 4], double: ["getFloat64", 8], float64: ["getFloat64", 8],
};

/**
 * Read the given vertex properties of a binary little-endian PLY (the 3DGS layout).
 * Spark decodes the splats itself but drops properties it does not know, such as sega_dynamic_index.
 * returns { count, columns: {name: Float64Array} } (a missing property is absent from columns).
 */
export function readPlyColumns(bytes, names) {
  const head = strFromU8(bytes.subarray(0, Math.min(bytes.length, 65536)), true);
  const end = head.indexOf("end_header\n");
  if (!head.startsWith("ply") || end < 0) throw new BundleError("static splats: not a PLY file");
  const lines = head.slice(0, end).split(/\r?\n/);
  if (!lines.some((l) => l.trim() === "format binary_little_endian 1.0")) throw new BundleError("static splats: only binary_little_endian PLY is supported");
  let offset = end + "end_header\n".length;
  const elements = [];
  for (const line of lines) {
    const w = line.trim().split(/\s+/);
    if (w[0] === "element") elements.push({ name: w[1], count: Number(w[2]), props: [], stride: 0 });
    else if (w[0] === "property") {
      const el = elements[elements.length - 1];
      if (!el) throw new BundleError("static splats: property before element in the PLY header");
      if (w[1] === "list") throw new BundleError(`static splats: list property ${w[4]} is not supported`);
      const t = PLY_TYPES[w[1]];
      if (!t) throw new BundleError(`static splats: unknown PLY type ${w[1]}`);
      el.props.push({ name: w[2], getter: t[0], offset: el.stride });
      el.stride += t[1];
    }
  }
  const vertex = elements.find((e) => e.name === "vertex");
  if (!vertex) throw new BundleError("static splats: the PLY has no vertex element");
  for (const el of elements) {
    if (el === vertex) break;
    offset += el.count * el.stride;
  }
  if (offset + vertex.count * vertex.stride > bytes.length) throw new BundleError("static splats: the PLY is truncated");
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, vertex.count * vertex.stride);
  const columns = {};
  for (const name of names) {
    const prop = vertex.props.find((p) => p.name === name);
    if (!prop) continue;
    const col = new Float64Array(vertex.count);
    for (let i = 0, o = prop.offset; i < vertex.count; i++, o += vertex.stride) col[i] = view[prop.getter](o, true);
    columns[name] = col;
  }
  return { count: vertex.count, columns };
}

// ---- clips (export/clips.py format) ------------------------------------------------------------------

/** A clip re-indexed to the bundle's expression order: {name, fps, count, duration, frames [T*E], pose [T*6]}. */
export function prepareClip(clip, names, where) {
  const fail = (msg) => new BundleError(`${where}: ${msg}`);
  if (!clip || clip.format !== "sega-clip") throw fail("not a sega-clip JSON file");
  if (clip.version !== 1) throw fail(`clip version ${clip.version} is not supported`);
  const fps = Number(clip.fps);
  const frames = clip.frames;
  const poses = clip.head_pose;
  if (!(fps > 0) || !Array.isArray(frames) || !frames.length || !Array.isArray(poses) || poses.length !== frames.length) {
    throw fail("needs fps > 0 and equally long frames / head_pose lists");
  }
  const index = new Map(names.map((n, i) => [n, i]));
  const map = (clip.expression_names || []).map((n) => (index.has(n) ? index.get(n) : -1));
  const e = names.length;
  const t = frames.length;
  const out = new Float32Array(t * e);
  const pose = new Float32Array(t * 6);
  for (let f = 0; f < t; f++) {
    const row = frames[f];
    for (let j = 0; j < map.length; j++) if (map[j] >= 0) out[f * e + map[j]] = row[j];
    for (let j = 0; j < 6; j++) pose[f * 6 + j] = poses[f][j];
  }
  const unknown = (clip.expression_names || []).filter((n, j) => map[j] < 0);
  if (unknown.length) console.warn(`${where}: ignoring ${unknown.length} expression names the avatar lacks (${unknown.slice(0, 3).join(", ")}...)`);
  return { name: String(clip.name || where), fps, count: t, duration: t / fps, frames: out, pose };
}
