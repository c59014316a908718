// SEGA web viewer: a drivable Gaussian head avatar bundle, animated in the browser. Entry point
// (bundled to dist/viewer.js): reads the page's settings, puts the viewer (viewer.js), its clip player
// (player.js) and the control panel (panel.js) together, and installs window.segaViewer.
//
// URL parameters:
//   bundle=URL   folder ("/bundle/") or .zip URL of a SEGA bundle (or drop a .zip on the page)
//   threads=N    onnxruntime-web wasm threads (default: min(4, cores) when cross-origin isolated, else 1)
//   animate=0    draw static.ply only: no ONNX sessions, no per-frame updates (benchmark baseline)
//   graphopt=L  onnxruntime-web graphOptimizationLevel: all (default), extended, basic, disabled
//   ortprofile=1 onnxruntime-web per-node profiling (segaViewer.endProfiling() prints it)
//   panel=0|1    start with the control panel collapsed / open (default: open if the window is >= 720 px wide)
//   bg=RRGGBB    background colour (default 1e2127)
//   probes=1     load the test / benchmark probes (probes.js, a separate chunk) at start-up
//   play=NAME|1  once the bundle is loaded, play clip NAME (1: the bundle's first clip) in a loop
//   label=TEXT   what the panel calls the bundle (default: its URL path or file name)
//
// Test/automation hook: window.segaViewer (see README.md). An embedding page (the viewer in an
// iframe) drives it with postMessage (embed.js; the app's expression sliders use it).

import { openBundleUrl } from "./bundle.js";
import { GRAPH_OPT_LEVELS } from "./runtime.js";
import { Viewer } from "./viewer.js";
import { Panel } from "./panel.js";
import { listenToParent, startClip } from "./embed.js";

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
  probes: params.get("probes") === "1",
  play: params.get("play"),
  label: params.get("label"),
};

const viewer = new Viewer(document.getElementById("view"), config);
const panel = new Panel(viewer);

// Test / benchmark probes: a separate chunk, fetched the first time they are asked for.
const PROBES = ["renderOnce", "snapshot", "runGraphs", "readSplats", "benchGraphs", "benchSteps", "benchFrames"];
let probes = null;
function loadProbes() {
  if (!probes) {
    probes = import("./probes.js").then((m) => m.makeProbes(viewer));
    probes.catch(() => (probes = null)); // a failed fetch may be retried
  }
  return probes;
}

const player = viewer.player;
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
    return player.names;
  },
  get clipTime() {
    return player.time;
  },
  get playing() {
    return player.playing;
  },
  info: () => viewer.info(),
  setExpression: (name, v) => viewer.setExpression(name, v),
  setExpressions: (obj) => Object.entries(obj).forEach(([k, v]) => viewer.setExpression(k, v)),
  setExpressionVector: (values) => viewer.setExpressionVector(values),
  getExpression: () => Array.from(viewer.expression),
  setHeadPose: (pose) => viewer.setHeadPose(pose),
  getHeadPose: () => Array.from(viewer.headPose),
  get applyMs() {
    return viewer.avatar ? { ...viewer.avatar.lastApplyMs } : {};
  },
  playClip: (name, opts) => player.play(name, opts),
  pauseClip: () => player.pause(),
  seekClip: (s) => player.seek(s),
  reset: () => viewer.reset(),
  orbitCamera: (azimuthDeg, elevationDeg, distanceScale) => viewer.orbitCamera(azimuthDeg, elevationDeg, distanceScale),
  endProfiling: () => viewer.runtime && viewer.runtime.endProfiling(),
  loadUrl: (url) => viewer.load(() => openBundleUrl(url), url),
  lastLoad: () => viewer.lastLoad, // promise of the latest load (URL, file input or drop): info or null
  /** Load the probes chunk -> {renderOnce, snapshot, runGraphs, readSplats, benchGraphs, benchSteps, benchFrames}. */
  probes: () => loadProbes(),
};
// The probes are also reachable as segaViewer.<name>(...): async, they load the chunk on first use.
for (const name of PROBES) window.segaViewer[name] = async (...args) => (await loadProbes())[name](...args);

if (config.probes) loadProbes();
listenToParent(viewer);
if (config.bundle) {
  viewer.load(() => openBundleUrl(config.bundle, config.label), config.label || config.bundle).then(() => startClip(viewer, config.play));
} else {
  panel.showMessage("Drop a SEGA avatar bundle (.zip) here, or open the page with ?bundle=URL");
}
