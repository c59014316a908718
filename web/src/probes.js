// Test probes and benchmarks (tests/test_web_viewer.py, bench/bench_web.py, scripts/make_viewer_screenshots.py).
//
// Loaded only on demand, as its own chunk: main.js imports this module dynamically when the page is
// opened with ?probes=1, when segaViewer.probes() is called, or on the first call of one of the
// methods below through window.segaViewer. Keep it free of static imports of the viewer's modules or
// of three / Spark / onnxruntime-web: anything it shares with main.js would be split out of viewer.js
// into a shared chunk. It works on the Viewer object only.

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The probe functions bound to a Viewer (viewer.js). */
export function makeProbes(viewer) {
  /** Apply pending inputs, draw, wait for the sort, draw again (the rAF loop holds still meanwhile). */
  async function renderOnce() {
    return viewer.withLoopPaused(async () => {
      await viewer.flushUpdate();
      await viewer.renderSettled();
      return { ...viewer.stats };
    });
  }

  /** PNG data URL of the canvas after the current state has been drawn (and sorted). */
  async function snapshot() {
    return viewer.withLoopPaused(async () => {
      await viewer.flushUpdate();
      await viewer.renderSettled();
      viewer.stage.redraw();
      return viewer.stage.canvas.toDataURL("image/png");
    });
  }

  /** Run the frame graphs for given inputs (does not touch the avatar) -> {name: {dims, data: number[]}}. */
  async function runGraphs(expression, headPose) {
    if (!viewer.runtime) throw new Error("no ONNX runtime (animate=0 or no bundle)");
    const out = await viewer.runtime.run({ expression: Float32Array.from(expression), head_pose: Float32Array.from(headPose) });
    const plain = {};
    for (const [k, v] of Object.entries(out)) plain[k] = { dims: v.dims, data: Array.from(v.data) };
    return plain;
  }

  /**
   * The splats as Spark holds them now (after any pending update), for tests: splat indices ->
   * [{center [3], scales [3] (linear std devs), quaternion [x, y, z, w], color [3], opacity}] in canonical
   * head space (the object matrix is not applied). dynamic=true: the indices are dynamic indices 0..D-1.
   */
  async function readSplats(indices, dynamic = false) {
    const avatar = viewer.avatar;
    if (!avatar) throw new Error("no bundle loaded");
    await viewer.flushUpdate();
    const packed = avatar.mesh.packedSplats;
    return Array.from(indices, (k) => {
      const i = dynamic ? avatar.dynToSplat[k] : k;
      if (!(i >= 0 && i < avatar.numSplats)) throw new Error(`no splat ${k}`);
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
   * Like benchGraphs, also per step -> {total: ms[], steps: {graph: ms[]}, graphOptimizationLevel}.
   * graphOptimizationLevel: time sessions created with that ORT level instead of the viewer's own
   * (made once per level and kept for later calls, so levels can be interleaved in one page).
   */
  async function benchSteps(n = 50, warmup = 5, { graphOptimizationLevel = null } = {}) {
    const rt = await viewer.runtimeFor(graphOptimizationLevel);
    return viewer.withLoopPaused(async () => {
      await viewer.stage.waitSorted();
      const e = viewer.names.length;
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
   * Timings of the graph steps alone: n runs with random inputs (after warmup runs) -> ms per run.
   * The rAF loop is paused and Spark's background sort is let finish first, so that drawing (which is
   * slow with software WebGL and shares the CPU) does not land in the figures.
   */
  async function benchGraphs(n = 50, warmup = 5) {
    return (await benchSteps(n, warmup)).total;
  }

  /**
   * Frame timings with the rAF loop paused. Per frame: (animate) the next frame of a clip (or random
   * inputs) -> graphs -> splat update; (orbit) a 1-degree camera turn; one draw (Spark regenerates its
   * splat buffer when the splats changed and sorts in the background, as in the live loop); then one
   * pixel is read back so the GPU work is finished. returns {frameMs, onnxMs, updateMs, drawMs} arrays.
   */
  async function benchFrames({ n = 30, warmup = 3, animate = true, orbit = true, clip = "talk" } = {}) {
    viewer.paused = true;
    const gl = viewer.stage.renderer.getContext();
    const px = new Uint8Array(4);
    const player = viewer.player;
    const c = player.clips.get(clip) || player.clips.values().next().value;
    const res = { frameMs: [], onnxMs: [], updateMs: [], drawMs: [] };
    const angle = (2 * Math.PI) / 360;
    try {
      await viewer.renderSettled();
      for (let i = 0; i < n + warmup; i++) {
        await sleep(0); // let Spark's background sort (worker messages) progress, as between real frames
        const t0 = now();
        if (animate && viewer.runtime) {
          if (c) {
            player.clip = c;
            player.time = (i / c.fps) % c.duration;
            player.applyFrame();
          } else {
            viewer.expression.set(Float32Array.from({ length: viewer.names.length }, () => Math.random()));
            viewer.dirty = true;
          }
          await viewer.flushUpdate();
        }
        if (orbit) viewer.stage.turn(angle);
        const t1 = now();
        viewer.render();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
        const t2 = now();
        if (i >= warmup) {
          res.frameMs.push(t2 - t0);
          res.drawMs.push(t2 - t1);
          res.onnxMs.push(animate ? viewer.stats.lastOnnxMs : 0);
          res.updateMs.push(animate ? viewer.stats.lastUpdateMs : 0);
        }
      }
    } finally {
      viewer.setCameraFromManifest();
      viewer.paused = false;
    }
    return res;
  }

  return { renderOnce, snapshot, runGraphs, readSplats, benchGraphs, benchSteps, benchFrames };
}
