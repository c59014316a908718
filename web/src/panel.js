// The page's controls (static/index.html): the side panel (expression and head-pose sliders, clip
// controls, reset, screenshot, "Open .zip"), drag-and-drop of a bundle .zip, the stats line and the
// message box. It drives the viewer through its methods and follows it through its events.

import { openBundleZip } from "./bundle.js";
import { axisAngleToEulerDeg, eulerDegToAxisAngle } from "./avatar.js";

const POSE_RANGE_DEG = 45;
const STATS_EVERY_MS = 250;

const $ = (id) => document.getElementById(id);

export class Panel {
  /** @param viewer the Viewer (viewer.js) */
  constructor(viewer) {
    this.viewer = viewer;
    this.config = viewer.config;
    this.sliders = null; // expression name -> {input, out}, made per bundle
    this.statsShownAt = 0;
    viewer.on("message", (text, isError = false) => (text === null ? this.hideMessage() : this.showMessage(text, isError)));
    viewer.on("bundle", () => this.buildUi());
    viewer.on("inputs", ({ expression, pose }) => {
      if (expression === true) this.syncAllSliders();
      else if (expression) this.syncSlider(expression);
      if (pose) this.syncPoseSliders();
    });
    viewer.on("clip", () => this.syncClipUi());
    viewer.on("frame", (t) => {
      if (t - this.statsShownAt > STATS_EVERY_MS) {
        this.statsShownAt = t;
        this.showStats();
      }
    });
    this.bindStaticUi();
  }

  showMessage(text, isError = false) {
    const el = $("message");
    el.textContent = text;
    el.classList.toggle("error", isError);
    el.hidden = false;
  }

  hideMessage() {
    $("message").hidden = true;
  }

  bindStaticUi() {
    const { viewer } = this;
    const player = viewer.player;
    const panel = $("panel");
    const setPanel = (open) => {
      panel.classList.toggle("collapsed", !open);
      document.body.classList.toggle("panel-open", open);
      viewer.resize();
    };
    setPanel(this.config.panel);
    $("toggle-panel").addEventListener("click", () => setPanel(panel.classList.contains("collapsed")));
    $("reset").addEventListener("click", () => viewer.avatar && viewer.reset());
    $("screenshot").addEventListener("click", () => this.downloadScreenshot());
    $("open-file").addEventListener("change", (ev) => {
      const file = ev.target.files && ev.target.files[0];
      if (file) this.loadFile(file);
      ev.target.value = "";
    });
    $("clip-play").addEventListener("click", () => {
      const name = $("clip-select").value;
      if (!name) return;
      if (player.playing) player.pause();
      else player.play(name, { loop: $("clip-loop").checked });
    });
    $("clip-select").addEventListener("change", () => {
      const name = $("clip-select").value;
      if (!name) return;
      const wasPlaying = player.playing;
      player.select(name);
      if (wasPlaying) player.play(name, { loop: $("clip-loop").checked });
      else player.seek(0);
    });
    $("clip-loop").addEventListener("change", () => (player.loop = $("clip-loop").checked));
    $("clip-scrub").addEventListener("input", () => {
      const name = $("clip-select").value;
      if (!name) return;
      player.clip = player.clips.get(name);
      player.playing = false;
      player.seek(Number($("clip-scrub").value) * player.clip.duration);
    });
    for (const axis of ["yaw", "pitch", "roll"]) {
      $(`pose-${axis}`).addEventListener("input", () => {
        if (player.playing) player.pause();
        const r = eulerDegToAxisAngle(Number($("pose-yaw").value), Number($("pose-pitch").value), Number($("pose-roll").value));
        viewer.setHeadPose([r[0], r[1], r[2], viewer.headPose[3], viewer.headPose[4], viewer.headPose[5]], true);
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
      this.showMessage(`${file.name}: drop a SEGA bundle .zip`, true);
      return;
    }
    await this.viewer.load(async () => openBundleZip(new Uint8Array(await file.arrayBuffer()), file.name), file.name);
  }

  /** The controls of a newly loaded bundle: its expression sliders and clips. */
  buildUi() {
    const { viewer, config } = this;
    const m = viewer.bundle.manifest;
    const names = viewer.names;
    $("bundle-info").textContent = `${viewer.bundle.label} — ${viewer.avatar.numSplats} splats (${viewer.avatar.numDynamic} dynamic), ${names.length} expressions`;
    // Expression sliders, grouped as the manifest says (names in no group go to "other").
    const box = $("expressions");
    box.replaceChildren();
    const groups = Object.entries((m.expressions && m.expressions.groups) || {});
    const grouped = new Set(groups.flatMap(([, g]) => g));
    const other = names.filter((n) => !grouped.has(n));
    if (other.length) groups.push(["other", other]);
    this.sliders = new Map();
    for (const [group, members] of groups) {
      const details = document.createElement("details");
      details.open = groups.length <= 2 || group === "jaw" || group === "mouth";
      const summary = document.createElement("summary");
      summary.textContent = `${group} (${members.length})`;
      details.append(summary);
      for (const name of members) {
        if (!names.includes(name)) continue;
        details.append(this.expressionSlider(name));
      }
      box.append(details);
    }
    // Clips.
    const select = $("clip-select");
    select.replaceChildren();
    for (const name of viewer.player.clips.keys()) select.append(new Option(name, name));
    $("clip-section").hidden = !viewer.player.clips.size;
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

  /** One labelled expression slider (a <label class="slider"> row); registered in this.sliders. */
  expressionSlider(name) {
    const { viewer } = this;
    const row = document.createElement("label");
    row.className = "slider";
    const span = document.createElement("span");
    span.textContent = name;
    span.title = name; // the full name on hover, should a long one still be cut
    const input = document.createElement("input");
    const [lo, hi] = viewer.range;
    Object.assign(input, { type: "range", min: String(lo), max: String(hi), step: String((hi - lo) / 100), value: "0", id: `expr-${name}` });
    input.dataset.name = name;
    const out = document.createElement("output");
    out.textContent = "0.00";
    input.addEventListener("input", () => {
      if (viewer.player.playing) viewer.player.pause();
      viewer.setExpression(name, Number(input.value), true);
      out.textContent = Number(input.value).toFixed(2);
    });
    row.append(span, input, out);
    this.sliders.set(name, { input, out });
    return row;
  }

  syncSlider(name) {
    const s = this.sliders && this.sliders.get(name);
    if (!s) return;
    const v = this.viewer.expression[this.viewer.names.indexOf(name)];
    s.input.value = String(v);
    s.out.textContent = v.toFixed(2);
  }

  syncAllSliders() {
    if (!this.sliders) return;
    for (const name of this.sliders.keys()) this.syncSlider(name);
  }

  syncPoseSliders() {
    const [yaw, pitch, roll] = axisAngleToEulerDeg(this.viewer.headPose);
    $("pose-yaw").value = String(yaw);
    $("pose-pitch").value = String(pitch);
    $("pose-roll").value = String(roll);
    this.syncPoseLabels();
  }

  syncPoseLabels() {
    for (const axis of ["yaw", "pitch", "roll"]) $(`pose-${axis}-out`).textContent = `${Number($(`pose-${axis}`).value).toFixed(1)}°`;
  }

  syncClipUi() {
    const p = this.viewer.player;
    $("clip-play").textContent = p.playing ? "Pause" : "Play";
    if (p.clip) {
      $("clip-select").value = p.clip.name;
      $("clip-scrub").value = String(p.clip.duration ? p.time / p.clip.duration : 0);
      $("clip-time").textContent = `${p.time.toFixed(2)} / ${p.clip.duration.toFixed(2)} s`;
    }
  }

  showStats() {
    const s = this.viewer.stats;
    const animate = this.config.animate;
    const anim = animate ? `ONNX ${s.onnxMs.toFixed(2)} ms · splat update ${s.updateMs.toFixed(2)} ms · ` : "static (no animation) · ";
    $("stats").textContent = `${anim}render ${s.renderMs.toFixed(2)} ms · frame ${s.frameMs.toFixed(1)} ms (${s.fps.toFixed(0)} fps) · ${s.splats} splats, ${s.dynamic} dynamic · ${animate ? `${s.threads} thread(s)` : ""}`;
  }

  downloadScreenshot() {
    const { viewer } = this;
    if (!viewer.avatar) return;
    viewer.stage.redraw(); // read back in the same task: no preserveDrawingBuffer needed
    viewer.stage.canvas.toBlob((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `sega-${new Date().toISOString().replace(/[:.]/g, "-")}.png`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, "image/png");
  }
}
