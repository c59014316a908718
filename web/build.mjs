#!/usr/bin/env node
// Build the web viewer into web/dist/ (git-ignored): `npm run build --prefix web`.
//
// dist/index.html, dist/viewer.css      page and style (from static/)
// dist/viewer.js (+ .map)               src/main.js bundled by esbuild with three, Spark, fflate and
//                                       onnxruntime-web (its "extern wasm" build: the wasm glue is loaded
//                                       from ort/ at run time rather than inlined)
// dist/chunks/probes-HASH.js (+ .map)   src/probes.js, the test / benchmark probes: imported dynamically
//                                       by viewer.js only when asked for (code splitting, ES modules)
// dist/chunks/chunk-HASH.js (+ .map)    esbuild's shared runtime helper (a few hundred bytes; esbuild
//                                       emits it whenever it splits, evanw/esbuild#1747)
// dist/ort/ort-wasm-simd-threaded.{mjs,wasm}  onnxruntime-web's wasm runtime, served beside the page
// Nothing is fetched from a CDN: the page only requests files from its own origin.
import { build } from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "dist");
const ortDist = path.join(here, "node_modules", "onnxruntime-web", "dist");
const ORT_FILES = ["ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"];

await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, "ort"), { recursive: true });
await build({
  entryPoints: [{ in: path.join(here, "src", "main.js"), out: "viewer" }],
  outdir: dist,
  bundle: true,
  format: "esm", // needed by splitting
  splitting: true, // the dynamic import("./probes.js") becomes its own file
  chunkNames: "chunks/[name]-[hash]",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  // onnxruntime-web's package exports pick the build that loads ort-wasm-simd-threaded.mjs from
  // env.wasm.wasmPaths under this condition (the default build inlines it, which breaks its worker
  // threads once bundled into viewer.js).
  conditions: ["onnxruntime-web-use-extern-wasm"],
  logLevel: "warning",
  legalComments: "linked",
});
for (const f of ["index.html", "viewer.css"]) await copyFile(path.join(here, "static", f), path.join(dist, f));
for (const f of ORT_FILES) await copyFile(path.join(ortDist, f), path.join(dist, "ort", f));
console.log(`built ${path.relative(process.cwd(), dist) || dist}`);
