// The avatar's splats in Spark, and how per-frame graph outputs update them.
//
// Coordinates: SEGA world space (metres, right-handed, +X subject's left, +Y up, +Z out of the face)
// is used unchanged as the three.js world: three.js is also right-handed with +Y up, so no axis flip
// is applied anywhere (unlike the 180-degree X rotation Spark's examples use for OpenCV-style y-down
// captures). static.ply holds canonical head space; the SplatMesh's object matrix is the rigid
// head_matrix (row-major in the bundle; Matrix4.set takes row-major arguments).
//
// How dynamic splats are updated (Spark 2.2.0): we write the new centre / rotation / scale / colour /
// opacity of the D dynamic splats straight into the SplatMesh's PackedSplats array with Spark's own
// packing helpers (utils.setPackedSplatCenter/Quat/Scales/Rgb/Opacity), then set
// `packedSplats.needsUpdate = true` (re-upload of the packed texture) and `mesh.updateVersion()` (so the
// SparkRenderer regenerates and re-sorts its splat accumulator on the next render). This is the path
// Spark itself uses for animated splats (its XR hand visualiser), needs no shader code, keeps
// the static splats untouched in GPU memory layout, and makes the packed data the single source of
// truth (raycasting and screenshots see the animated state). The alternative, a dyno objectModifier
// that reads per-splat deltas from a data texture, would avoid re-uploading the whole packed texture
// (16 bytes x N) each frame; at the splat counts of a head avatar (10^4-10^5) that upload is well
// under a millisecond, so the simpler CPU path wins. Centres are stored as float16 by Spark
// (about 0.05 mm resolution at head scale), colours and opacity as 8 bits.

import * as THREE from "three";
import { SplatMesh, utils as sparkUtils } from "@sparkjsdev/spark";
import { BundleError, DYNAMIC_INDEX_PROPERTY, readPlyColumns } from "./bundle.js";

const { setPackedSplatCenter, setPackedSplatQuat, setPackedSplatRgb, setPackedSplatOpacity, setPackedSplatScales } = sparkUtils;

/** Updates this viewer knows (manifest.frame.outputs[*].updates). */
export const KNOWN_UPDATES = ["center", "quaternion_wxyz", "rgb", "opacity", "scale", "object_matrix_row_major"];

export class Avatar {
  /** Load static.ply into a Spark SplatMesh and map dynamic indices to splat indices. */
  static async load(bundle) {
    const m = bundle.manifest;
    const plyBytes = await bundle.bytes(m.splats.file);
    const { count, columns } = readPlyColumns(plyBytes, ["x", "y", "z", DYNAMIC_INDEX_PROPERTY]);
    if (m.splats.count !== undefined && m.splats.count !== count) {
      throw new BundleError(`${m.splats.file} holds ${count} splats but the manifest says ${m.splats.count}`);
    }
    const d = m.splats.dynamic_count ?? 0;
    const dynToSplat = new Int32Array(d).fill(-1);
    const dynCol = columns[DYNAMIC_INDEX_PROPERTY];
    if (d > 0 && !dynCol) throw new BundleError(`${m.splats.file} has no ${DYNAMIC_INDEX_PROPERTY} property but the manifest has ${d} dynamic splats`);
    if (dynCol) {
      for (let i = 0; i < count; i++) {
        const k = dynCol[i];
        if (k < 0) continue;
        if (k >= d || dynToSplat[k] !== -1) throw new BundleError(`${m.splats.file}: ${DYNAMIC_INDEX_PROPERTY} value ${k} is out of range or repeated`);
        dynToSplat[k] = i;
      }
      const missing = dynToSplat.indexOf(-1);
      if (missing >= 0) throw new BundleError(`${m.splats.file}: no splat has ${DYNAMIC_INDEX_PROPERTY} = ${missing}`);
    }
    const mesh = new SplatMesh({ fileBytes: plyBytes.slice().buffer, fileName: m.splats.file });
    await mesh.initialized;
    const packed = mesh.packedSplats;
    if (!packed || !packed.packedArray) throw new BundleError("Spark did not produce packed splats for static.ply");
    if (packed.numSplats !== count) throw new BundleError(`Spark decoded ${packed.numSplats} splats, the PLY holds ${count}`);
    // Spark must keep the file order (the dynamic indices refer to it): check a sample of centres.
    const step = Math.max(1, Math.floor(count / 64));
    for (let i = 0; i < count; i += step) {
      const c = packed.getSplat(i).center;
      const err = Math.max(Math.abs(c.x - columns.x[i]), Math.abs(c.y - columns.y[i]), Math.abs(c.z - columns.z[i]));
      if (!(err <= 1e-3 * (1 + Math.abs(columns.x[i]) + Math.abs(columns.y[i]) + Math.abs(columns.z[i])))) {
        throw new BundleError(`Spark reordered or altered splat ${i} of ${m.splats.file}; dynamic updates would go to the wrong splats`);
      }
    }
    mesh.matrixAutoUpdate = false; // the object matrix comes from head_matrix
    return new Avatar(mesh, dynToSplat, m.frame.outputs);
  }

  constructor(mesh, dynToSplat, outputs) {
    this.mesh = mesh;
    this.dynToSplat = dynToSplat;
    this.outputs = outputs;
    this.numSplats = mesh.packedSplats.numSplats;
    this.numDynamic = dynToSplat.length;
    this.warned = new Set();
    this.lastApplyMs = {}; // update kind -> ms spent writing it in the latest apply()
  }

  /** Apply graph outputs ({name: {data, dims}}) as manifest.frame.outputs describes. */
  apply(tensors) {
    const packed = this.mesh.packedSplats;
    const arr = packed.packedArray;
    const enc = packed.splatEncoding;
    const map = this.dynToSplat;
    const d = map.length;
    let splatsChanged = false;
    for (const [name, spec] of Object.entries(this.outputs)) {
      const t = tensors[name];
      if (!t) throw new BundleError(`the frame steps did not produce output ${name}`);
      const v = t.data;
      const kind = spec.updates;
      const want = { center: 3 * d, quaternion_wxyz: 4 * d, rgb: 3 * d, opacity: d, scale: 3 * d, object_matrix_row_major: 16 }[kind];
      if (want === undefined) {
        if (!this.warned.has(kind)) {
          this.warned.add(kind);
          console.warn(`output ${name}: unknown update kind ${JSON.stringify(kind)} ignored (this viewer knows ${KNOWN_UPDATES.join(", ")})`);
        }
        continue;
      }
      if (v.length !== want) throw new BundleError(`output ${name} (${kind}) has ${v.length} values, expected ${want}`);
      // Component c of dynamic splat k: v[k * C + c] (splat-major, format 1's only layout) or v[c * d + k]
      // (component-major, what sega's graphs write since format 2: their row layout, no transposes).
      const cm = spec.layout === "component_major";
      const t0 = performance.now();
      switch (kind) {
        case "center":
          if (cm) for (let k = 0; k < d; k++) setPackedSplatCenter(arr, map[k], v[k], v[d + k], v[2 * d + k]);
          else for (let k = 0; k < d; k++) setPackedSplatCenter(arr, map[k], v[3 * k], v[3 * k + 1], v[3 * k + 2]);
          splatsChanged = true;
          break;
        case "quaternion_wxyz":
          // Spark takes x, y, z, w and normalises itself (a zero quaternion becomes the identity), so
          // no normalisation here: it would double the cost of this, the most expensive update.
          if (cm) for (let k = 0; k < d; k++) setPackedSplatQuat(arr, map[k], v[d + k], v[2 * d + k], v[3 * d + k], v[k]);
          else for (let k = 0; k < d; k++) setPackedSplatQuat(arr, map[k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3], v[4 * k]);
          splatsChanged = true;
          break;
        case "rgb":
          if (cm) for (let k = 0; k < d; k++) setPackedSplatRgb(arr, map[k], v[k], v[d + k], v[2 * d + k], enc);
          else for (let k = 0; k < d; k++) setPackedSplatRgb(arr, map[k], v[3 * k], v[3 * k + 1], v[3 * k + 2], enc);
          splatsChanged = true;
          break;
        case "opacity": {
          const lodHalf = enc && enc.lodOpacity ? 0.5 : 1;
          for (let k = 0; k < d; k++) setPackedSplatOpacity(arr, map[k], Math.min(1, Math.max(0, v[k])) * lodHalf);
          splatsChanged = true;
          break;
        }
        case "scale": // linear standard deviations (metres)
          if (cm) for (let k = 0; k < d; k++) setPackedSplatScales(arr, map[k], v[k], v[d + k], v[2 * d + k], enc);
          else for (let k = 0; k < d; k++) setPackedSplatScales(arr, map[k], v[3 * k], v[3 * k + 1], v[3 * k + 2], enc);
          splatsChanged = true;
          break;
        case "object_matrix_row_major": {
          // Row-major 4x4 -> Matrix4.set (row-major arguments). Spark decomposes the object matrix
          // into translation, rotation and one uniform scale: head_matrix must be a similarity.
          this.mesh.matrix.set(...v);
          this.mesh.matrixWorldNeedsUpdate = true;
          break;
        }
      }
      this.lastApplyMs[kind] = performance.now() - t0;
    }
    if (splatsChanged) {
      packed.needsUpdate = true;
      this.mesh.updateVersion();
    }
  }

  dispose() {
    this.mesh.removeFromParent();
    this.mesh.dispose();
  }
}

/** Axis-angle (radians) <-> yaw/pitch/roll in degrees: R = Ry(yaw) Rx(pitch) Rz(roll) (three.js Euler "YXZ"). */
export function eulerDegToAxisAngle(yaw, pitch, roll) {
  const q = new THREE.Quaternion().setFromEuler(new THREE.Euler(THREE.MathUtils.degToRad(pitch), THREE.MathUtils.degToRad(yaw), THREE.MathUtils.degToRad(roll), "YXZ"));
  if (q.w < 0) q.set(-q.x, -q.y, -q.z, -q.w);
  const s = Math.sqrt(1 - Math.min(1, q.w * q.w));
  const angle = 2 * Math.acos(Math.min(1, q.w));
  if (s < 1e-9) return [0, 0, 0];
  return [(q.x / s) * angle, (q.y / s) * angle, (q.z / s) * angle];
}

export function axisAngleToEulerDeg(r) {
  const angle = Math.hypot(r[0], r[1], r[2]);
  const q = new THREE.Quaternion();
  if (angle > 1e-12) q.setFromAxisAngle(new THREE.Vector3(r[0] / angle, r[1] / angle, r[2] / angle), angle);
  const e = new THREE.Euler().setFromQuaternion(q, "YXZ");
  return [THREE.MathUtils.radToDeg(e.y), THREE.MathUtils.radToDeg(e.x), THREE.MathUtils.radToDeg(e.z)];
}
