// Clip playback: the bundle's clips (prepared by bundle.js), the play head, and the frame it puts into
// the viewer's inputs (expression vector and head pose, linearly interpolated between clip frames).
//
// The player changes the viewer's inputs and marks them dirty; the viewer's frame loop calls advance()
// and runs the graphs. UI code listens to the viewer's "inputs" and "clip" events.

import { BundleError, prepareClip } from "./bundle.js";

/**
 * The manifest's clips, prepared for playback -> Map name -> clip. A clip that cannot be read is
 * skipped with a warning, except for a SHA-256 mismatch, which stops loading.
 */
export async function loadClips(bundle) {
  const m = bundle.manifest;
  const clips = new Map();
  for (const rel of m.clips || []) {
    try {
      const clip = prepareClip(await bundle.json(rel), m.expressions.names, rel);
      clips.set(clip.name, clip);
    } catch (err) {
      if (err instanceof BundleError && /SHA-256/.test(err.message)) throw err;
      console.warn(`clip ${rel} skipped: ${err.message}`);
    }
  }
  return clips;
}

export class ClipPlayer {
  /** @param viewer the Viewer whose expression / headPose the clip drives */
  constructor(viewer) {
    this.viewer = viewer;
    this.clips = new Map(); // name -> prepared clip {name, fps, count, duration, frames, pose}
    this.clip = null;
    this.playing = false;
    this.loop = true;
    this.time = 0; // seconds into the clip
    this.last = 0; // rAF time of the previous advance (0: none; the next advance does not move)
  }

  /** New bundle: its clips, nothing selected, stopped at 0. */
  setClips(clips) {
    this.clips = clips;
    this.clip = null;
    this.playing = false;
    this.loop = true;
    this.time = 0;
    this.last = 0;
  }

  get names() {
    return [...this.clips.keys()];
  }

  play(name, { loop = true, from = null } = {}) {
    const clip = this.clips.get(name);
    if (!clip) throw new Error(`unknown clip ${name} (have ${this.names.join(", ")})`);
    if (this.clip !== clip) this.time = 0;
    this.clip = clip;
    this.loop = loop;
    if (from !== null) this.time = from;
    if (this.time >= clip.duration) this.time = 0;
    this.playing = true;
    this.last = 0;
    this.changed();
  }

  pause() {
    this.playing = false;
    this.changed();
  }

  stop() {
    this.playing = false;
    this.time = 0;
    this.changed();
  }

  /** Select a clip (by name) without playing it; the play head goes to 0. */
  select(name) {
    this.clip = this.clips.get(name);
    this.time = 0;
  }

  seek(seconds) {
    if (!this.clip) return;
    this.time = Math.min(Math.max(0, seconds), this.clip.duration);
    this.applyFrame();
    this.changed();
  }

  /** Frame loop step at rAF time t (ms): move the play head, apply the frame. */
  advance(t) {
    if (!this.playing || !this.clip) return;
    if (this.last) this.time += (t - this.last) / 1000;
    this.last = t;
    if (this.time >= this.clip.duration) {
      if (this.loop) this.time %= this.clip.duration;
      else {
        this.time = this.clip.duration;
        this.playing = false;
      }
    }
    this.applyFrame();
    this.changed();
  }

  /** Linear interpolation between the two clip frames around this.time, into the viewer's inputs. */
  applyFrame() {
    const { clip, time, viewer } = this;
    const e = viewer.names.length;
    const f = Math.min(clip.count - 1, Math.max(0, time * clip.fps));
    const i0 = Math.floor(f);
    const i1 = Math.min(clip.count - 1, i0 + 1);
    const a = f - i0;
    for (let j = 0; j < e; j++) viewer.expression[j] = (1 - a) * clip.frames[i0 * e + j] + a * clip.frames[i1 * e + j];
    for (let j = 0; j < 6; j++) viewer.headPose[j] = (1 - a) * clip.pose[i0 * 6 + j] + a * clip.pose[i1 * 6 + j];
    viewer.inputsChanged({ expression: true, pose: true });
  }

  changed() {
    this.viewer.emit("clip", this);
  }
}
