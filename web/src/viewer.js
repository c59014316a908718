// The viewer's core: the loaded bundle (avatar + ONNX runtime), the current inputs (expression
// vector, head pose), the render loop, and running the graphs / applying their outputs to the splats
// whenever the inputs change. Drawing (renderer, camera, Spark) is in stage.js, clip playback in
// player.js.
//
// It knows nothing about the page's controls: it emits events (synchronously) that the panel
// (panel.js) listens to:
//   "message" (text | null, isError)  loading / error message (null: hide it)
//   "bundle" (viewer)                 a new bundle is in place (build its controls)
//   "inputs" ({expression, pose})     inputs changed from outside the panel (expression: a name, or true for all)
//   "clip" (player)                   clip playback state changed
//   "frame" (t)                       the rAF loop drew a frame

import { BundleError } from "./bundle.js";
import { FrameRuntime, configureOrt } from "./runtime.js";
import { Avatar } from "./avatar.js";
import { ClipPlayer, loadClips } from "./player.js";
import { Stage } from "./stage.js";

const EMA = 0.1;

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Viewer {
  /** @param config the page's settings (main.js: bundle, threads, animate, ortProfile, graphOpt, panel, background) */
  constructor(canvas, config) {
    this.config = config;
    this.stage = new Stage(canvas, config.background);
    this.listeners = new Map(); // event type -> [fn]
    this.avatar = null;
    this.runtime = null;
    this.extraRuntimes = new Map(); // graphOptimizationLevel -> FrameRuntime (runtimeFor; benchmarks)
    this.bundle = null;
    this.names = [];
    this.range = [0, 1];
    this.expression = new Float32Array(0);
    this.headPose = new Float32Array(6);
    this.player = new ClipPlayer(this);
    this.dirty = false;
    this.updating = null; // promise of the in-flight graph run + splat update
    this.paused = false; // the rAF loop skips rendering (benchmarks drive frames themselves)
    this.frameCount = 0;
    this.stats = { onnxMs: 0, updateMs: 0, renderMs: 0, frameMs: 0, fps: 0, graphRuns: 0, threads: 0, splats: 0, dynamic: 0, lastOnnxMs: 0, lastUpdateMs: 0 };
    this.lastFrameTime = 0;
    this.readyResolve = null;
    this.lastLoad = null;
    this.readyReject = null;
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {}); // errors are shown on the page and logged; no unhandled rejection
    requestAnimationFrame((t) => this.loop(t));
  }

  // ---- events (synchronous) ----------------------------------------------------------------------

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  emit(type, ...args) {
    for (const fn of this.listeners.get(type) || []) fn(...args);
  }

  resize() {
    this.stage.resize();
  }

  // ---- loading -----------------------------------------------------------------------------------

  /** Load a bundle (opener() -> Bundle); resolves with info, or with null after showing the error. */
  load(opener, label) {
    this.lastLoad = this.loadInner(opener, label);
    return this.lastLoad;
  }

  async loadInner(opener, label) {
    this.emit("message", `Loading ${label}…`);
    try {
      const bundle = await opener();
      await this.useBundle(bundle);
      this.emit("message", null);
      const info = this.info();
      this.readyResolve(info);
      return info;
    } catch (err) {
      const msg = err instanceof BundleError ? err.message : `${err && err.message ? err.message : err}`;
      console.error(`SEGA viewer: cannot load ${label}: ${msg}`, err instanceof BundleError ? "" : err);
      this.emit("message", `Cannot load ${label}: ${msg}`, true);
      this.readyReject(err);
      return null;
    }
  }

  async useBundle(bundle) {
    const { config } = this;
    const m = bundle.manifest;
    const threads = config.animate ? configureOrt(config.threads) : 0; // before the first session
    const runtimePromise = config.animate ? FrameRuntime.create(bundle, { graphOptimizationLevel: config.graphOpt, enableProfiling: config.ortProfile }) : Promise.resolve(null);
    const [avatar, runtime] = await Promise.all([Avatar.load(bundle), runtimePromise]);
    const clips = config.animate ? await loadClips(bundle) : new Map();
    // Swap in the new avatar.
    if (this.avatar) this.avatar.dispose();
    if (this.runtime) await this.runtime.release();
    for (const rt of this.extraRuntimes.values()) await rt.release();
    this.extraRuntimes.clear();
    this.bundle = bundle;
    this.avatar = avatar;
    this.runtime = runtime;
    this.names = m.expressions.names.slice();
    const range = m.expressions.range;
    this.range = Array.isArray(range) && range.length === 2 && range[0] < range[1] ? range.map(Number) : [0, 1];
    this.expression = new Float32Array(this.names.length);
    this.headPose = new Float32Array(6);
    this.player.setClips(clips);
    this.stage.scene.add(avatar.mesh);
    this.stats.splats = avatar.numSplats;
    this.stats.dynamic = avatar.numDynamic;
    this.stats.threads = threads;
    this.setCameraFromManifest();
    this.emit("bundle", this);
    if (runtime) {
      this.dirty = true;
      await this.flushUpdate();
    }
    await this.renderSettled();
  }

  /**
   * A FrameRuntime of the current bundle with the given ORT graphOptimizationLevel: the viewer's own
   * when the level is its own (or null), else one made on first use and kept until the next bundle.
   */
  async runtimeFor(graphOptimizationLevel = null) {
    if (!this.runtime) throw new Error("no ONNX runtime (animate=0 or no bundle)");
    if (!graphOptimizationLevel || graphOptimizationLevel === this.runtime.graphOptimizationLevel) return this.runtime;
    if (!this.extraRuntimes.has(graphOptimizationLevel)) {
      this.extraRuntimes.set(graphOptimizationLevel, await FrameRuntime.create(this.bundle, { graphOptimizationLevel }));
    }
    return this.extraRuntimes.get(graphOptimizationLevel);
  }

  /** The manifest's camera (position, target, up, fov), orbit controls about its target. */
  setCameraFromManifest() {
    this.stage.setCamera(this.bundle && this.bundle.manifest.camera);
  }

  /**
   * Put the camera back where the manifest has it, then orbit it about the target: azimuth degrees
   * about the camera's up axis (+ moves the camera towards +X, i.e. shows the subject's left side),
   * elevation degrees up; distanceScale scales the distance to the target.
   */
  orbitCamera(azimuthDeg = 0, elevationDeg = 0, distanceScale = 1) {
    this.setCameraFromManifest();
    this.stage.orbit(azimuthDeg, elevationDeg, distanceScale);
  }

  info() {
    const m = this.bundle.manifest;
    return {
      label: this.bundle.label,
      splats: this.avatar.numSplats,
      dynamic: this.avatar.numDynamic,
      expressions: this.names.slice(),
      clips: this.player.names,
      threads: this.stats.threads,
      animate: this.config.animate,
      graphOptimizationLevel: this.runtime ? this.runtime.graphOptimizationLevel : null,
      steps: (m.frame && m.frame.steps ? m.frame.steps : []).map((s) => s.graph),
      crossOriginIsolated,
      verifiedFiles: this.bundle.verified.slice(),
      camera: m.camera || null,
    };
  }

  // ---- per-frame work ------------------------------------------------------------------------------

  /** Run the graphs for the current inputs and write the outputs into the splats (one at a time). */
  async flushUpdate() {
    while (this.updating) await this.updating;
    if (!this.dirty || !this.runtime || !this.avatar) return;
    this.dirty = false;
    this.updating = (async () => {
      const t0 = now();
      const out = await this.runtime.run({ expression: this.expression, head_pose: this.headPose });
      const t1 = now();
      this.avatar.apply(out);
      const t2 = now();
      this.recordUpdate(t1 - t0, t2 - t1);
    })();
    try {
      await this.updating;
    } finally {
      this.updating = null;
    }
  }

  recordUpdate(onnxMs, updateMs) {
    const s = this.stats;
    s.lastOnnxMs = onnxMs;
    s.lastUpdateMs = updateMs;
    s.onnxMs = s.graphRuns ? s.onnxMs + EMA * (onnxMs - s.onnxMs) : onnxMs;
    s.updateMs = s.graphRuns ? s.updateMs + EMA * (updateMs - s.updateMs) : updateMs;
    s.graphRuns += 1;
  }

  /** Draw a frame (counted in frameCount and stats.renderMs). */
  render() {
    const ms = this.stage.draw();
    this.stats.renderMs = this.frameCount ? this.stats.renderMs + EMA * (ms - this.stats.renderMs) : ms;
    this.frameCount += 1;
  }

  /** Render, wait for Spark's background sort of the current splats, render again. */
  async renderSettled() {
    this.render();
    await sleep(0);
    await this.stage.waitSorted();
    this.render();
  }

  loop(t) {
    requestAnimationFrame((tt) => this.loop(tt));
    if (this.lastFrameTime) {
      const dt = t - this.lastFrameTime;
      this.stats.frameMs = this.stats.frameMs ? this.stats.frameMs + EMA * (dt - this.stats.frameMs) : dt;
      this.stats.fps = 1000 / Math.max(1e-3, this.stats.frameMs);
    }
    this.lastFrameTime = t;
    if (this.paused || !this.avatar) return;
    this.player.advance(t);
    if (this.dirty && !this.updating) this.flushUpdate().catch((err) => this.fail(err));
    this.render();
    this.emit("frame", t);
  }

  /** Run fn with the rAF loop held still; a playing clip resumes where it was, not after the pause. */
  async withLoopPaused(fn) {
    const was = this.paused;
    this.paused = true;
    try {
      return await fn();
    } finally {
      this.paused = was;
      this.player.last = 0;
    }
  }

  fail(err) {
    console.error("SEGA viewer: frame update failed:", err && err.message ? err.message : err);
    this.emit("message", `Frame update failed: ${err && err.message ? err.message : err}`, true);
    this.runtime = null; // stop trying every frame
  }

  // ---- inputs ------------------------------------------------------------------------------------------

  /** The inputs changed: run the graphs on the next frame; what ({expression: name | true, pose}) tells listeners. */
  inputsChanged(what = null) {
    this.dirty = true;
    if (what) this.emit("inputs", what);
  }

  /** fromUi: the change came from the panel's own control (nothing to sync back). */
  setExpression(name, value, fromUi = false) {
    const i = this.names.indexOf(name);
    if (i < 0) throw new Error(`unknown expression ${name}`);
    const [lo, hi] = this.range;
    this.expression[i] = Math.min(hi, Math.max(lo, Number(value)));
    this.inputsChanged(fromUi ? null : { expression: name });
  }

  setExpressionVector(values) {
    if (values.length !== this.names.length) throw new Error(`expected ${this.names.length} expression values`);
    this.expression.set(values);
    this.inputsChanged({ expression: true });
  }

  setHeadPose(pose, fromUi = false) {
    if (pose.length !== 6) throw new Error("head pose is [rx, ry, rz, tx, ty, tz]");
    this.headPose.set(pose);
    this.inputsChanged(fromUi ? null : { pose: true });
  }

  /** Stop the clip, zero the inputs, manifest camera. */
  reset() {
    this.player.stop();
    this.expression.fill(0);
    this.headPose.fill(0);
    this.setCameraFromManifest();
    this.inputsChanged({ expression: true, pose: true });
  }
}
