// The per-frame ONNX steps of a bundle, run with onnxruntime-web (wasm backend).
//
// Contract (manifest.frame): a name table is seeded with the frame inputs (expression [1, E],
// head_pose [1, 6], ...); each step maps *graph input names* to table names (step.inputs), runs its
// graph and adds its outputs (step.outputs, graph output names) to the table. The viewer then reads
// manifest.frame.outputs from the table. Nothing here knows what the graphs compute.

import * as ort from "onnxruntime-web/wasm";
import { BundleError } from "./bundle.js";

let envConfigured = false;

/** onnxruntime-web session option graphOptimizationLevel values (page parameter graphopt=). */
export const GRAPH_OPT_LEVELS = ["all", "extended", "basic", "disabled"];

/** Configure ORT once: wasm files served beside the page (ort/), thread count. */
export function configureOrt(numThreads) {
  if (envConfigured) return ort.env.wasm.numThreads;
  envConfigured = true;
  const base = new URL("ort/", document.baseURI);
  ort.env.wasm.wasmPaths = {
    mjs: new URL("ort-wasm-simd-threaded.mjs", base).href,
    wasm: new URL("ort-wasm-simd-threaded.wasm", base).href,
  };
  // More than one thread needs SharedArrayBuffer, i.e. a cross-origin isolated page (COOP + COEP headers).
  ort.env.wasm.numThreads = crossOriginIsolated ? Math.max(1, numThreads) : 1;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = "error";
  return ort.env.wasm.numThreads;
}

function numel(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

export class FrameRuntime {
  /** Build sessions for every step graph of the bundle (bytes read through bundle.bytes, i.e. hash-checked). */
  static async create(bundle, { graphOptimizationLevel = "all", enableProfiling = false } = {}) {
    if (!GRAPH_OPT_LEVELS.includes(graphOptimizationLevel)) throw new BundleError(`graphOptimizationLevel ${graphOptimizationLevel}: expected one of ${GRAPH_OPT_LEVELS.join(", ")}`);
    const frame = bundle.manifest.frame;
    const sessions = [];
    for (const step of frame.steps) {
      const bytes = await bundle.bytes(step.graph);
      let session;
      try {
        session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel, enableProfiling });
      } catch (err) {
        throw new BundleError(`${step.graph}: onnxruntime-web cannot load it (${err.message || err})`);
      }
      for (const name of Object.keys(step.inputs)) {
        if (!session.inputNames.includes(name)) throw new BundleError(`${step.graph}: has no input ${name} (inputs: ${session.inputNames.join(", ")})`);
      }
      for (const name of step.outputs) {
        if (!session.outputNames.includes(name)) throw new BundleError(`${step.graph}: has no output ${name} (outputs: ${session.outputNames.join(", ")})`);
      }
      sessions.push({ step, session });
    }
    const rt = new FrameRuntime(frame, sessions);
    rt.graphOptimizationLevel = graphOptimizationLevel;
    return rt;
  }

  constructor(frame, sessions) {
    this.frame = frame;
    this.sessions = sessions;
    this.lastStepMs = sessions.map(() => 0); // wall time of each step in the latest run()
    this.inputShapes = {};
    for (const [name, spec] of Object.entries(frame.inputs)) {
      if ((spec.dtype || "float32") !== "float32") throw new BundleError(`frame input ${name}: dtype ${spec.dtype} is not supported (float32 only)`);
      this.inputShapes[name] = spec.shape;
    }
  }

  /**
   * Run all steps. values: {input name: Float32Array} (missing inputs are zeros).
   * returns {tensor name: {data: Float32Array, dims: number[]}} for every table entry.
   */
  async run(values) {
    const table = {};
    for (const [name, shape] of Object.entries(this.inputShapes)) {
      const n = numel(shape);
      let data = values[name];
      if (!data) data = new Float32Array(n);
      else if (data.length !== n) throw new BundleError(`frame input ${name}: got ${data.length} values, the bundle wants shape ${JSON.stringify(shape)}`);
      table[name] = new ort.Tensor("float32", Float32Array.from(data), shape);
    }
    for (let k = 0; k < this.sessions.length; k++) {
      const { step, session } = this.sessions[k];
      const t0 = performance.now();
      const feeds = {};
      for (const [graphName, tensorName] of Object.entries(step.inputs)) {
        const t = table[tensorName];
        if (!t) throw new BundleError(`${step.graph}: input ${graphName} wants tensor ${tensorName}, which no earlier step produced`);
        feeds[graphName] = t;
      }
      const results = await session.run(feeds, step.outputs);
      for (const name of step.outputs) table[name] = results[name];
      this.lastStepMs[k] = performance.now() - t0;
    }
    const out = {};
    for (const [name, t] of Object.entries(table)) {
      if (t.type !== "float32") throw new BundleError(`tensor ${name} has type ${t.type}; the viewer reads float32 outputs only`);
      out[name] = { data: t.data, dims: Array.from(t.dims) };
    }
    return out;
  }

  /** End ORT profiling (sessions created with enableProfiling): onnxruntime-web prints the events to the console. */
  async endProfiling() {
    for (const { session } of this.sessions) await session.endProfiling();
  }

  async release() {
    for (const { session } of this.sessions) {
      try {
        await session.release();
      } catch (err) {
        console.warn("session release failed", err);
      }
    }
    this.sessions = [];
  }
}
