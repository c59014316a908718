// The viewer inside another page: start a clip by itself (?play=) and take inputs from the embedding
// page through postMessage. The Gradio app embeds the viewer in an iframe and sends its expression
// sliders here, so both sets of controls show the same face.
//
// Messages (an object with a "sega" field), accepted only from the parent window:
//   {sega: "set", expressions: {name: value, ...}, yawDeg, pitchDeg, rollDeg}
//       pause any clip, set the named expressions (unknown names are ignored) and, when any of the
//       angles is given, the head's rotation (degrees; the translation is kept)
//   {sega: "play", clip: NAME | true}   play clip NAME (true: the first clip) in a loop
//   {sega: "pause"}                      pause the clip
// Values outside the bundle's expression range are clamped (Viewer.setExpression).

import { axisAngleToEulerDeg, eulerDegToAxisAngle } from "./avatar.js";

/** Play the clip the page asked for (?play=NAME, or 1 for the first) once a bundle is loaded. */
export function startClip(viewer, play) {
  if (!play || play === "0" || !viewer.avatar) return false;
  const names = viewer.player.names;
  const name = play === "1" ? names[0] : play;
  if (!name || !names.includes(name)) {
    console.warn(`SEGA viewer: no clip ${play} to play (have ${names.join(", ") || "none"})`);
    return false;
  }
  viewer.player.play(name, { loop: true });
  return true;
}

/** Apply one message's inputs (see the header); returns what it did, for tests. */
export function applyMessage(viewer, data) {
  if (!data || typeof data !== "object" || !viewer.avatar) return null;
  const player = viewer.player;
  if (data.sega === "play") return startClip(viewer, data.clip === true ? "1" : String(data.clip)) ? "play" : null;
  if (data.sega === "pause") {
    player.pause();
    return "pause";
  }
  if (data.sega !== "set") return null;
  if (player.playing) player.pause();
  for (const [name, value] of Object.entries(data.expressions || {})) {
    if (viewer.names.includes(name) && Number.isFinite(Number(value))) viewer.setExpression(name, Number(value));
  }
  const given = (a) => a !== null && a !== undefined && a !== "" && Number.isFinite(Number(a));
  const angles = ["yawDeg", "pitchDeg", "rollDeg"].map((k) => data[k]);
  if (angles.some(given)) {
    const now = axisAngleToEulerDeg(viewer.headPose);
    const [y, p, r] = angles.map((a, i) => (given(a) ? Number(a) : now[i]));
    const rot = eulerDegToAxisAngle(y, p, r);
    const t = viewer.headPose;
    viewer.setHeadPose([rot[0], rot[1], rot[2], t[3], t[4], t[5]]);
  }
  return "set";
}

/** Take "sega" messages from the embedding page (only from window.parent, never from other frames). */
export function listenToParent(viewer) {
  if (window.parent === window) return;
  window.addEventListener("message", (ev) => {
    if (ev.source !== window.parent || !ev.data || typeof ev.data.sega !== "string") return;
    try {
      applyMessage(viewer, ev.data);
    } catch (err) {
      console.warn("SEGA viewer: message ignored:", err && err.message ? err.message : err);
    }
  });
}
