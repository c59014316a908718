#!/usr/bin/env node
// Validate a glTF 2.0 asset (.glb or .gltf) with the Khronos glTF-Validator and print its JSON report.
//
// Why a script here: the Python tests and the export pipeline check every GLB we write against the
// reference validator, which only ships for Dart/JS. It lives under web/ so the bare import resolves
// to web/node_modules (install with `npm ci --prefix web`). No network: external resources of a
// .gltf are read from disk next to the file; a .glb we write has none.
//
// Usage: node web/tools/validate_gltf.mjs FILE [--max-issues N]
// Prints the report (JSON) on stdout. Exit status: 0 no errors, 1 the asset has errors,
// 2 bad arguments or the file could not be read/parsed at all.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { validateBytes, version } from "gltf-validator";

const USAGE = "usage: node validate_gltf.mjs FILE [--max-issues N]";
const DEFAULT_MAX_ISSUES = 0; // 0 = unlimited

function parseArgs(argv) {
  const args = { file: null, maxIssues: DEFAULT_MAX_ISSUES };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--max-issues") {
      args.maxIssues = Number.parseInt(argv[++i], 10);
      if (!Number.isInteger(args.maxIssues) || args.maxIssues < 0) throw new Error(USAGE);
    } else if (args.file === null) {
      args.file = argv[i];
    } else {
      throw new Error(USAGE);
    }
  }
  if (args.file === null) throw new Error(USAGE);
  return args;
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(err.message);
    return 2;
  }
  const fullpath = path.resolve(args.file);
  let bytes;
  try {
    bytes = new Uint8Array(await readFile(fullpath));
  } catch (err) {
    console.error(`cannot read ${fullpath}: ${err.message}`);
    return 2;
  }
  let report;
  try {
    report = await validateBytes(bytes, {
      uri: path.basename(fullpath),
      maxIssues: args.maxIssues,
      writeTimestamp: false,
      externalResourceFunction: async (uri) => {
        const target = path.resolve(path.dirname(fullpath), decodeURIComponent(uri));
        return new Uint8Array(await readFile(target));
      },
    });
  } catch (err) {
    console.error(`glTF-Validator ${version()} could not validate ${fullpath}: ${err}`);
    return 2;
  }
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  return report.issues.numErrors > 0 ? 1 : 0;
}

process.exitCode = await main();
