// SEGA web viewer: a drivable Gaussian head avatar bundle, animated in the browser.
//
// URL parameters:
//   bundle=URL   folder ("/bundle/") or .zip URL of a SEGA bundle (or drop a .zip on the page)
//   threads=N    onnxruntime-web wasm threads (default: min(4, cores) when cross-origin isolated, else 1)
//   animate=0    draw static.ply only: no ONNX sessions, no per-frame updates (benchmark baseline)
//   graphopt=L  onnxruntime-web graphOptimizationLevel: all (default), extended, basic, disabled
//   panel=0|1    start with the control panel collapsed / open (default: open if the window is >= 720 px wide)
//   bg=RRGGBB    background colour (default 1e2127)
//
// Test/automation hook: window.segaViewer (see README.md).

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer } from "@sparkjsdev/spark";
import { BundleError, openBundleUrl, openBundleZip, prepareClip } from "./bundle.js";
import { FrameRuntime, GRAPH_OPT_LEVELS, configureOrt } from "./runtime.js";
import { Avatar, axisAngleToEulerDeg, eulerDegToAxisAngle } from "./avatar.js";

const params = new URLSearchParams(location.search);
const defaultThreads = crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
const config = {
  bundle: params.get("bundle"),
  threads: Math.max(1, Number.parseInt(params.get("threads") || String(defaultThreads), 10) || 1),
  animate: params.get("animate") !== "0",
  ortProfile: params.get("ortprofile") === "1",
  graphOpt: GRAPH_OPT_LEVELS.includes(params.get("graphopt")) ? params.get("graphopt") : "all",
  // The panel starts collapsed on narrow windows unless panel=1.
  panel: params.has("panel") ? params.get("panel") !== "0" : window.innerWidth >= 720,
  background: /^[0-9a-fA-F]{6}$/.test(params.get("bg") || "") ? `#${params.get("bg")}` : "#1e2127",
};
const POSE_RANGE_DEG = 45;
const SORT_WAIT_MS = 10000;
const EMA = 0.1;

const $ = (id) => document.getElementById(id);
const now = () => performance.now();
const nextFrame = () => new Promise((r) => requestAnimationFrame(() => r()));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Viewer {
  constructor() {
    this.canvas = $("view");
    this.renderer = new THREE.WebGLRenderer({ canvas: this.canvas, antialias: false, alpha: false });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(config.background);
    this.camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
    this.camera.position.set(0, 0, 0.6);
    this.controls = new OrbitControls(this.camera, this.canvas);
    this.controls.enableDamping = false;
    this.spark = new SparkRenderer({ renderer: this.renderer });
    this.scene.add(this.spark);
    this.avatar = null;
    this.runtime = null;
    this.benchRuntimes = new Map(); // graphOptimizationLevel -> FrameRuntime, made by benchSteps
    this.bundle = null;
    this.names = [];
    this.range = [0, 1];
    this.expression = new Float32Array(0);
    this.headPose = new Float32Array(6);
    this.clips = new Map();
    this.player = { clip: null, playing: false, loop: true, time: 0, last: 0 };
    this.dirty = false;
    this.updating = null; // promise of the in-flight graph run + splat update
    this.paused = false; // the rAF loop skips rendering (benchmarks drive frames themselves)
    this.frameCount = 0;
    this.stats = { onnxMs: 0, updateMs: 0, renderMs: 0, frameMs: 0, fps: 0, graphRuns: 0, threads: 0, splats: 0, dynamic: 0, lastOnnxMs: 0, lastUpdateMs: 0 };
    this.lastFrameTime = 0;
    this.statsShownAt = 0;
    this.readyResolve = null;
    this.lastLoad = null;
    this.readyReject = null;
    this.ready = new Promise((res, rej) => {
      this.readyResolve = res;
      this.readyReject = rej;
    });
    this.ready.catch(() => {}); // errors are shown on the page and logged; no unhandled rejection
    this.resize();
    window.addEventListener("resize", () => this.resize());
    this.bindStaticUi();
    requestAnimationFrame((t) => this.loop(t));
  }

  resize() {
    const w = this.canvas.clientWidth || window.innerWidth;
    const h = this.canvas.clientHeight || window.innerHeight;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / Math.max(1, h);
    this.camera.updateProjectionMatrix();
  }

  // ---- loading -----------------------------------------------------------------------------------

  /** Load a bundle (opener() -> Bundle); resolves with info, or with null after showing the error. */
  load(opener, label) {
    this.lastLoad = this.loadInner(opener, label);
    return this.lastLoad;
  }

  async loadInner(opener, label) {
    showMessage(`Loading ${label}…`);
    try {
      const bundle = await opener();
      await this.useBundle(bundle);
      hideMessage();
      const info = this.info();
      this.readyResolve(info);
      return info;
    } catch (err) {
      const msg = err instanceof BundleError ? err.message : `${err && err.message ? err.message : err}`;
      console.error(`SEGA viewer: cannot load ${label}: ${msg}`, err instanceof BundleError ? "" : err);
      showMessage(`Cannot load ${label}: ${msg}`, true);
      this.readyReject(err);
      return null;
    }
  }

  async useBundle(bundle) {
    const m = bundle.manifest;
    const threads = config.animate ? configureOrt(config.threads) : 0; // before the first session
    const runtimePromise = config.animate ? FrameRuntime.create(bundle, { graphOptimizationLevel: config.graphOpt, enableProfiling: config.ortProfile }) : Promise.resolve(null);
    const [avatar, runtime] = await Promise.all([Avatar.load(bundle), runtimePromise]);
    const clips = new Map();
    if (config.animate) {
      for (const rel of m.clips || []) {
        try {
          const clip = prepareClip(await bundle.json(rel), m.expressions.names, rel);
          clips.set(clip.name, clip);
        } catch (err) {
          if (err instanceof BundleError && /SHA-256/.test(err.message)) throw err;
          console.warn(`clip ${rel} skipped: ${err.message}`);
        }
      }
    }
    // Swap in the new avatar.
    if (this.avatar) this.avatar.dispose();
    if (this.runtime) await this.runtime.release();
    for (const rt of this.benchRuntimes.values()) await rt.release();
    this.benchRuntimes.clear();
    this.bundle = bundle;
    this.avatar = avatar;
    this.runtime = runtime;
    this.clips = clips;
    this.names = m.expressions.names.slice();
    const range = m.expressions.range;
    this.range = Array.isArray(range) && range.length === 2 && range[0] < range[1] ? range.map(Number) : [0, 1];
    this.expression = new Float32Array(this.names.length);
    this.headPose = new Float32Array(6);
    this.player = { clip: null, playing: false, loop: true, time: 0, last: 0 };
    this.scene.add(avatar.mesh);
    this.stats.splats = avatar.numSplats;
    this.stats.dynamic = avatar.numDynamic;
    this.stats.threads = threads;
    this.setCameraFromManifest();
    this.buildUi();
    if (runtime) {
      this.dirty = true;
      await this.flushUpdate();
    }
    await this.renderSettled();
  }

  setCameraFromManifest() {
    const cam = (this.bundle && this.bundle.manifest.camera) || {};
    const pos = cam.position || [0, 0, 0.6];
    const target = cam.target || [0, 0, 0];
    this.camera.fov = cam.fov_deg || 30;
    this.camera.up.fromArray(cam.up || [0, 1, 0]);
    this.camera.position.fromArray(pos);
    const dist = Math.hypot(pos[0] - target[0], pos[1] - target[1], pos[2] - target[2]);
    this.camera.near = Math.max(0.001, dist / 100);
    this.camera.far = dist * 100;
    this.camera.updateProjectionMatrix();
    this.controls.target.fromArray(target);
    this.controls.update();
  }

  /**
   * Put the camera back where the manifest has it, then orbit it about the target: azimuth degrees
   * about the camera's up axis (+ moves the camera towards +X, i.e. shows the subject's left side),
   * elevation degrees up; distanceScale scales the distance to the target.
   */
  orbitCamera(azimuthDeg = 0, elevationDeg = 0, distanceScale = 1) {
    this.setCameraFromManifest();
    const target = this.controls.target;
    const off = this.camera.position.clone().sub(target);
    const up = this.camera.up.clone().normalize();
    off.applyAxisAngle(up, THREE.MathUtils.degToRad(azimuthDeg));
    const right = new THREE.Vector3().crossVectors(up, off).normalize();
    off.applyAxisAngle(right, -THREE.MathUtils.degToRad(elevationDeg));
    this.camera.position.copy(target).addScaledVector(off, distanceScale);
    this.controls.update();
  }

  info() {
    const m = this.bundle.manifest;
    return {
      label: this.bundle.label,
      splats: this.avatar.numSplats,
      dynamic: this.avatar.numDynamic,
      expressions: this.names.slice(),
      clips: [...this.clips.keys()],
      threads: this.stats.threads,
      animate: config.animate,
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

  render() {
    const t0 = now();
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
    const ms = now() - t0;
    this.stats.renderMs = this.frameCount ? this.stats.renderMs + EMA * (ms - this.stats.renderMs) : ms;
    this.frameCount += 1;
  }

  /** Render, wait for Spark's background sort of the current splats, render again. */
  async renderSettled() {
    this.render();
    const t0 = now();
    await sleep(0);
    while ((this.spark.sorting || this.spark.sortDirty) && now() - t0 < SORT_WAIT_MS) await sleep(2);
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
    this.advanceClip(t);
    if (this.dirty && !this.updating) this.flushUpdate().catch((err) => this.fail(err));
    this.render();
    if (t - this.statsShownAt > 250) {
      this.statsShownAt = t;
      this.showStats();
    }
  }

  fail(err) {
    console.error("SEGA viewer: frame update failed:", err && err.message ? err.message : err);
    showMessage(`Frame update failed: ${err && err.message ? err.message : err}`, true);
    this.runtime = null; // stop trying every frame
  }

  // ---- state ------------------------------------------------------------------------------------------

  setExpression(name, value, fromUi = false) {
    const i = this.names.indexOf(name);
    if (i < 0) throw new Error(`unknown expression ${name}`);
    const [lo, hi] = this.range;
    this.expression[i] = Math.min(hi, Math.max(lo, Number(value)));
    if (!fromUi) this.syncSlider(name);
    this.dirty = true;
  }

  setExpressionVector(values) {
    if (values.length !== this.names.length) throw new Error(`expected ${this.names.length} expression values`);
    this.expression.set(values);
    this.syncAllSliders();
    this.dirty = true;
  }

  setHeadPose(pose, fromUi = false) {
    if (pose.length !== 6) throw new Error("head pose is [rx, ry, rz, tx, ty, tz]");
    this.headPose.set(pose);
    if (!fromUi) this.syncPoseSliders();
    this.dirty = true;
  }

  reset() {
    this.stopClip();
    this.expression.fill(0);
    this.headPose.fill(0);
    this.syncAllSliders();
    this.syncPoseSliders();
    this.setCameraFromManifest();
    this.dirty = true;
  }

  // ---- clips ------------------------------------------------------------------------------------------

  playClip(name, { loop = true, from = null } = {}) {
    const clip = this.clips.get(name);
    if (!clip) throw new Error(`unknown clip ${name} (have ${[...this.clips.keys()].join(", ")})`);
    const p = this.player;
    if (p.clip !== clip) p.time = 0;
    p.clip = clip;
    p.loop = loop;
    if (from !== null) p.time = from;
    if (p.time >= clip.duration) p.time = 0;
    p.playing = true;
    p.last = 0;
    this.syncClipUi();
  }

  pauseClip() {
    this.player.playing = false;
    this.syncClipUi();
  }

  stopClip() {
    this.player.playing = false;
    this.player.time = 0;
    this.syncClipUi();
  }

  seekClip(seconds) {
    const p = this.player;
    if (!p.clip) return;
    p.time = Math.min(Math.max(0, seconds), p.clip.duration);
    this.applyClipFrame();
    this.syncClipUi();
  }

  advanceClip(t) {
    const p = this.player;
    if (!p.playing || !p.clip) return;
    if (p.last) p.time += (t - p.last) / 1000;
    p.last = t;
    if (p.time >= p.clip.duration) {
      if (p.loop) p.time %= p.clip.duration;
      else {
        p.time = p.clip.duration;
        p.playing = false;
      }
    }
    this.applyClipFrame();
    this.syncClipUi();
  }

  /** Linear interpolation between the two clip frames around player.time. */
  applyClipFrame() {
    const { clip, time } = this.player;
    const e = this.names.length;
    const f = Math.min(clip.count - 1, Math.max(0, time * clip.fps));
    const i0 = Math.floor(f);
    const i1 = Math.min(clip.count - 1, i0 + 1);
    const a = f - i0;
    for (let j = 0; j < e; j++) this.expression[j] = (1 - a) * clip.frames[i0 * e + j] + a * clip.frames[i1 * e + j];
    for (let j = 0; j < 6; j++) this.headPose[j] = (1 - a) * clip.pose[i0 * 6 + j] + a * clip.pose[i1 * 6 + j];
    this.syncAllSliders();
    this.syncPoseSliders();
    this.dirty = true;
  }

  // ---- UI -----------------------------------------------------------------------------------------------

  bindStaticUi() {
    const panel = $("panel");
    const setPanel = (open) => {
      panel.classList.toggle("collapsed", !open);
      document.body.classList.toggle("panel-open", open);
      this.resize();
    };
    setPanel(config.panel);
    $("toggle-panel").addEventListener("click", () => setPanel(panel.classList.contains("collapsed")));
    $("reset").addEventListener("click", () => this.avatar && this.reset());
    $("screenshot").addEventListener("click", () => this.downloadScreenshot());
    $("open-file").addEventListener("change", (ev) => {
      const file = ev.target.files && ev.target.files[0];
      if (file) this.loadFile(file);
      ev.target.value = "";
    });
    $("clip-play").addEventListener("click", () => {
      const name = $("clip-select").value;
      if (!name) return;
      if (this.player.playing) this.pauseClip();
      else this.playClip(name, { loop: $("clip-loop").checked });
    });
    $("clip-select").addEventListener("change", () => {
      const name = $("clip-select").value;
      if (!name) return;
      const wasPlaying = this.player.playing;
      this.player.clip = this.clips.get(name);
      this.player.time = 0;
      if (wasPlaying) this.playClip(name, { loop: $("clip-loop").checked });
      else this.seekClip(0);
    });
    $("clip-loop").addEventListener("change", () => (this.player.loop = $("clip-loop").checked));
    $("clip-scrub").addEventListener("input", () => {
      const name = $("clip-select").value;
      if (!name) return;
      this.player.clip = this.clips.get(name);
      this.player.playing = false;
      this.seekClip(Number($("clip-scrub").value) * this.player.clip.duration);
    });
    for (const axis of ["yaw", "pitch", "roll"]) {
      $(`pose-${axis}`).addEventListener("input", () => {
        if (this.player.playing) this.pauseClip();
        const r = eulerDegToAxisAngle(Number($("pose-yaw").value), Number($("pose-pitch").value), Number($("pose-roll").value));
        this.setHeadPose([r[0], r[1], r[2], this.headPose[3], this.headPose[4], this.headPose[5]], true);
        this.syncPoseLabels();
      });
    }
    // Drag and drop a bundle .zip anywhere on the page.
    window.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      document.body.classList.add("dragging");
    });
    window.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
    window.addEventListener("drop", (ev) => {
      ev.preventDefault();
      document.body.classList.remove("dragging");
      const file = ev.dataTransfer && ev.dataTransfer.files && ev.dataTransfer.files[0];
      if (file) this.loadFile(file);
    });
  }

  async loadFile(file) {
    if (!file.name.toLowerCase().endsWith(".zip")) {
      showMessage(`${file.name}: drop a SEGA bundle .zip`, true);
      return;
    }
    await this.load(async () => openBundleZip(new Uint8Array(await file.arrayBuffer()), file.name), file.name);
  }

  buildUi() {
    const m = this.bundle.manifest;
    $("bundle-info").textContent = `${this.bundle.label} — ${this.avatar.numSplats} splats (${this.avatar.numDynamic} dynamic), ${this.names.length} expressions`;
    // Expression sliders, grouped as the manifest says (names in no group go to "other").
    const box = $("expressions");
    box.replaceChildren();
    const groups = Object.entries((m.expressions && m.expressions.groups) || {});
    const grouped = new Set(groups.flatMap(([, names]) => names));
    const other = this.names.filter((n) => !grouped.has(n));
    if (other.length) groups.push(["other", other]);
    this.sliders = new Map();
    for (const [group, names] of groups) {
      const details = document.createElement("details");
      details.open = groups.length <= 2 || group === "jaw" || group === "mouth";
      const summary = document.createElement("summary");
      summary.textContent = `${group} (${names.length})`;
      details.append(summary);
      for (const name of names) {
        if (!this.names.includes(name)) continue;
        const row = document.createElement("label");
        row.className = "slider";
        const span = document.createElement("span");
        span.textContent = name;
        const input = document.createElement("input");
        const [lo, hi] = this.range;
        Object.assign(input, { type: "range", min: String(lo), max: String(hi), step: String((hi - lo) / 100), value: "0", id: `expr-${name}` });
        input.dataset.name = name;
        const out = document.createElement("output");
        out.textContent = "0.00";
        input.addEventListener("input", () => {
          if (this.player.playing) this.pauseClip();
          this.setExpression(name, Number(input.value), true);
          out.textContent = Number(input.value).toFixed(2);
        });
        row.append(span, input, out);
        details.append(row);
        this.sliders.set(name, { input, out });
      }
      box.append(details);
    }
    // Clips.
    const select = $("clip-select");
    select.replaceChildren();
    for (const name of this.clips.keys()) select.append(new Option(name, name));
    $("clip-section").hidden = !this.clips.size;
    $("expr-section").hidden = !config.animate;
    $("pose-section").hidden = !config.animate;
    for (const axis of ["yaw", "pitch", "roll"]) {
      const el = $(`pose-${axis}`);
      el.min = String(-POSE_RANGE_DEG);
      el.max = String(POSE_RANGE_DEG);
    }
    this.syncPoseSliders();
    this.syncClipUi();
  }

  syncSlider(name) {
    const s = this.sliders && this.sliders.get(name);
    if (!s) return;
    const v = this.expression[this.names.indexOf(name)];
    s.input.value = String(v);
    s.out.textContent = v.toFixed(2);
  }

  syncAllSliders() {
    if (!this.sliders) return;
    for (const name of this.sliders.keys()) this.syncSlider(name);
  }

  syncPoseSliders() {
    const [yaw, pitch, roll] = axisAngleToEulerDeg(this.headPose);
    $("pose-yaw").value = String(yaw);
    $("pose-pitch").value = String(pitch);
    $("pose-roll").value = String(roll);
    this.syncPoseLabels();
  }

  syncPoseLabels() {
    for (const axis of ["yaw", "pitch", "roll"]) $(`pose-${axis}-out`).textContent = `${Number($(`pose-${axis}`).value).toFixed(1)}°`;
  }

  syncClipUi() {
    const p = this.player;
    $("clip-play").textContent = p.playing ? "Pause" : "Play";
    if (p.clip) {
      $("clip-select").value = p.clip.name;
      $("clip-scrub").value = String(p.clip.duration ? p.time / p.clip.duration : 0);
      $("clip-time").textContent = `${p.time.toFixed(2)} / ${p.clip.duration.toFixed(2)} s`;
    }
  }

  showStats() {
    const s = this.stats;
    const anim = config.animate ? `ONNX ${s.onnxMs.toFixed(2)} ms · splat update ${s.updateMs.toFixed(2)} ms · ` : "static (no animation) · ";
    $("stats").textContent = `${anim}render ${s.renderMs.toFixed(2)} ms · frame ${s.frameMs.toFixed(1)} ms (${s.fps.toFixed(0)} fps) · ${s.splats} splats, ${s.dynamic} dynamic · ${config.animate ? `${s.threads} thread(s)` : ""}`;
  }

  downloadScreenshot() {
    if (!this.avatar) return;
    this.renderer.render(this.scene, this.camera); // read back in the same task: no preserveDrawingBuffer needed
    this.canvas.toBlob((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `sega-${new Date().toISOString().replace(/[:.]/g, "-")}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, "image/png");
  }

  // ---- automation hook --------------------------------------------------------------------------------

  /** PNG data URL of the canvas after the current state has been drawn (and sorted). */
  async snapshot() {
    return this.withLoopPaused(async () => {
      await this.flushUpdate();
      await this.renderSettled();
      this.renderer.render(this.scene, this.camera);
      return this.canvas.toDataURL("image/png");
    });
  }

  /** Apply pending inputs, draw, wait for the sort, draw again (the rAF loop holds still meanwhile). */
  async renderOnce() {
    return this.withLoopPaused(async () => {
      await this.flushUpdate();
      await this.renderSettled();
      return { ...this.stats };
    });
  }

  async withLoopPaused(fn) {
    const was = this.paused;
    this.paused = true;
    try {
      return await fn();
    } finally {
      this.paused = was;
      this.player.last = 0; // a playing clip resumes where it was, not after the pause
    }
  }

  /** Run the frame graphs for given inputs (does not touch the avatar) -> {name: {dims, data: number[]}}. */
  async runGraphs(expression, headPose) {
    if (!this.runtime) throw new Error("no ONNX runtime (animate=0 or no bundle)");
    const out = await this.runtime.run({ expression: Float32Array.from(expression), head_pose: Float32Array.from(headPose) });
    const plain = {};
    for (const [k, v] of Object.entries(out)) plain[k] = { dims: v.dims, data: Array.from(v.data) };
    return plain;
  }

  /**
   * The splats as Spark holds them now (after any pending update), for tests: splat indices ->
   * [{center [3], scales [3] (linear std devs), quaternion [x, y, z, w], color [3], opacity}] in canonical
   * head space (the object matrix is not applied). dynamic=true: the indices are dynamic indices 0..D-1.
   */
  async readSplats(indices, dynamic = false) {
    if (!this.avatar) throw new Error("no bundle loaded");
    await this.flushUpdate();
    const packed = this.avatar.mesh.packedSplats;
    return Array.from(indices, (k) => {
      const i = dynamic ? this.avatar.dynToSplat[k] : k;
      if (!(i >= 0 && i < this.avatar.numSplats)) throw new Error(`no splat ${k}`);
      const s = packed.getSplat(i); // shared scratch object: copy now
      return {
        index: i,
        center: s.center.toArray(),
        scales: s.scales.toArray(),
        quaternion: [s.quaternion.x, s.quaternion.y, s.quaternion.z, s.quaternion.w],
        color: [s.color.r, s.color.g, s.color.b],
        opacity: s.opacity,
      };
    });
  }

  /**
   * Timings of the graph steps alone: n runs with random inputs (after warmup runs) -> ms per run.
   * The rAF loop is paused and Spark's background sort is let finish first, so that drawing (which is
   * slow with software WebGL and shares the CPU) does not land in the figures.
   */
  async benchGraphs(n = 50, warmup = 5) {
    return (await this.benchSteps(n, warmup)).total;
  }

  /**
   * Like benchGraphs, also per step -> {total: ms[], steps: {graph: ms[]}, graphOptimizationLevel}.
   * graphOptimizationLevel: time sessions created with that ORT level instead of the viewer's own
   * (made once per level and kept for later calls, so levels can be interleaved in one page).
   */
  async benchSteps(n = 50, warmup = 5, { graphOptimizationLevel = null } = {}) {
    if (!this.runtime) throw new Error("no ONNX runtime (animate=0 or no bundle)");
    let rt = this.runtime;
    if (graphOptimizationLevel && graphOptimizationLevel !== rt.graphOptimizationLevel) {
      if (!this.benchRuntimes.has(graphOptimizationLevel)) {
        this.benchRuntimes.set(graphOptimizationLevel, await FrameRuntime.create(this.bundle, { graphOptimizationLevel }));
      }
      rt = this.benchRuntimes.get(graphOptimizationLevel);
    }
    return this.withLoopPaused(async () => {
      const t0 = now();
      while ((this.spark.sorting || this.spark.sortDirty) && now() - t0 < SORT_WAIT_MS) await sleep(2);
      const e = this.names.length;
      const res = { total: [], steps: Object.fromEntries(rt.sessions.map(({ step }) => [step.graph, []])), graphOptimizationLevel: rt.graphOptimizationLevel };
      for (let i = 0; i < n + warmup; i++) {
        const ex = Float32Array.from({ length: e }, () => Math.random());
        const pose = Float32Array.from({ length: 6 }, (_, j) => (j < 3 ? 0.2 : 0.01) * (Math.random() - 0.5));
        const t1 = now();
        await rt.run({ expression: ex, head_pose: pose });
        if (i < warmup) continue;
        res.total.push(now() - t1);
        rt.sessions.forEach(({ step }, k) => res.steps[step.graph].push(rt.lastStepMs[k]));
      }
      return res;
    });
  }

  /**
   * Frame timings with the rAF loop paused. Per frame: (animate) the next frame of a clip (or random
   * inputs) -> graphs -> splat update; (orbit) a 1-degree camera turn; one draw (Spark regenerates its
   * splat buffer when the splats changed and sorts in the background, as in the live loop); then one
   * pixel is read back so the GPU work is finished. returns {frameMs, onnxMs, updateMs, drawMs} arrays.
   */
  async benchFrames({ n = 30, warmup = 3, animate = true, orbit = true, clip = "talk" } = {}) {
    this.paused = true;
    const gl = this.renderer.getContext();
    const px = new Uint8Array(4);
    const c = this.clips.get(clip) || this.clips.values().next().value;
    const res = { frameMs: [], onnxMs: [], updateMs: [], drawMs: [] };
    const angle = (2 * Math.PI) / 360;
    try {
      await this.renderSettled();
      for (let i = 0; i < n + warmup; i++) {
        await sleep(0); // let Spark's background sort (worker messages) progress, as between real frames
        const t0 = now();
        if (animate && this.runtime) {
          if (c) {
            this.player.clip = c;
            this.player.time = (i / c.fps) % c.duration;
            this.applyClipFrame();
          } else {
            this.expression.set(Float32Array.from({ length: this.names.length }, () => Math.random()));
            this.dirty = true;
          }
          await this.flushUpdate();
        }
        if (orbit) {
          const off = this.camera.position.clone().sub(this.controls.target).applyAxisAngle(new THREE.Vector3(0, 1, 0), angle);
          this.camera.position.copy(this.controls.target).add(off);
        }
        const t1 = now();
        this.render();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
        const t2 = now();
        if (i >= warmup) {
          res.frameMs.push(t2 - t0);
          res.drawMs.push(t2 - t1);
          res.onnxMs.push(animate ? this.stats.lastOnnxMs : 0);
          res.updateMs.push(animate ? this.stats.lastUpdateMs : 0);
        }
      }
    } finally {
      this.setCameraFromManifest();
      this.paused = false;
    }
    return res;
  }
}

function showMessage(text, isError = false) {
  const el = $("message");
  el.textContent = text;
  el.classList.toggle("error", isError);
  el.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

const viewer = new Viewer();
window.segaViewer = {
  ready: viewer.ready,
  config,
  get stats() {
    return { ...viewer.stats };
  },
  get frameCount() {
    return viewer.frameCount;
  },
  get expressionNames() {
    return viewer.names.slice();
  },
  get clipNames() {
    return [...viewer.clips.keys()];
  },
  get clipTime() {
    return viewer.player.time;
  },
  get playing() {
    return viewer.player.playing;
  },
  info: () => viewer.info(),
  setExpression: (name, v) => viewer.setExpression(name, v),
  setExpressions: (obj) => Object.entries(obj).forEach(([k, v]) => viewer.setExpression(k, v)),
  setExpressionVector: (values) => viewer.setExpressionVector(values),
  getExpression: () => Array.from(viewer.expression),
  setHeadPose: (pose) => viewer.setHeadPose(pose),
  getHeadPose: () => Array.from(viewer.headPose),
  runGraphs: (expression, headPose) => viewer.runGraphs(expression, headPose),
  readSplats: (indices, dynamic = false) => viewer.readSplats(indices, dynamic),
  get applyMs() {
    return viewer.avatar ? { ...viewer.avatar.lastApplyMs } : {};
  },
  renderOnce: () => viewer.renderOnce(),
  snapshot: () => viewer.snapshot(),
  playClip: (name, opts) => viewer.playClip(name, opts),
  pauseClip: () => viewer.pauseClip(),
  seekClip: (s) => viewer.seekClip(s),
  reset: () => viewer.reset(),
  orbitCamera: (azimuthDeg, elevationDeg, distanceScale) => viewer.orbitCamera(azimuthDeg, elevationDeg, distanceScale),
  benchGraphs: (n, warmup) => viewer.benchGraphs(n, warmup),
  benchSteps: (n, warmup, opts) => viewer.benchSteps(n, warmup, opts),
  endProfiling: () => viewer.runtime && viewer.runtime.endProfiling(),
  benchFrames: (opts) => viewer.benchFrames(opts),
  loadUrl: (url) => viewer.load(() => openBundleUrl(url), url),
  lastLoad: () => viewer.lastLoad, // promise of the latest load (URL, file input or drop): info or null
};

if (config.bundle) {
  viewer.load(() => openBundleUrl(config.bundle), config.bundle);
} else {
  showMessage("Drop a SEGA avatar bundle (.zip) here, or open the page with ?bundle=URL");
}
