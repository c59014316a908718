// What is drawn and how: the three.js renderer, scene and camera, the orbit controls, and Spark's
// renderer (which sorts and draws the splats). The viewer (viewer.js) adds the avatar's SplatMesh to
// the scene and decides when to draw.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { SparkRenderer } from "@sparkjsdev/spark";

const SORT_WAIT_MS = 10000;

const now = () => performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Stage {
  /** @param canvas the page's <canvas>; background a CSS colour */
  constructor(canvas, background) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: false, alpha: false });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(background);
    this.camera = new THREE.PerspectiveCamera(30, 1, 0.01, 100);
    this.camera.position.set(0, 0, 0.6);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.enableDamping = false;
    this.spark = new SparkRenderer({ renderer: this.renderer });
    this.scene.add(this.spark);
    this.resize();
    window.addEventListener("resize", () => this.resize());
  }

  resize() {
    const w = this.canvas.clientWidth || window.innerWidth;
    const h = this.canvas.clientHeight || window.innerHeight;
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / Math.max(1, h);
    this.camera.updateProjectionMatrix();
  }

  /** A bundle manifest's camera ({position, target, up, fov_deg}; null: the defaults), orbiting about its target. */
  setCamera(cam) {
    cam = cam || {};
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
   * Orbit the camera about the target: azimuth degrees about the camera's up axis (+ moves the camera
   * towards +X), elevation degrees up; distanceScale scales the distance to the target.
   */
  orbit(azimuthDeg = 0, elevationDeg = 0, distanceScale = 1) {
    const target = this.controls.target;
    const off = this.camera.position.clone().sub(target);
    const up = this.camera.up.clone().normalize();
    off.applyAxisAngle(up, THREE.MathUtils.degToRad(azimuthDeg));
    const right = new THREE.Vector3().crossVectors(up, off).normalize();
    off.applyAxisAngle(right, -THREE.MathUtils.degToRad(elevationDeg));
    this.camera.position.copy(target).addScaledVector(off, distanceScale);
    this.controls.update();
  }

  /** Turn the camera about the world +Y axis through the target by `rad` (no controls update). */
  turn(rad) {
    const off = this.camera.position.clone().sub(this.controls.target).applyAxisAngle(new THREE.Vector3(0, 1, 0), rad);
    this.camera.position.copy(this.controls.target).add(off);
  }

  /** Update the controls and draw -> ms taken. */
  draw() {
    const t0 = now();
    this.controls.update();
    this.renderer.render(this.scene, this.camera);
    return now() - t0;
  }

  /** Draw once more as it is (to read the canvas back in the same task: no preserveDrawingBuffer needed). */
  redraw() {
    this.renderer.render(this.scene, this.camera);
  }

  /** Wait (up to SORT_WAIT_MS) until Spark's background sort of the current splats is done. */
  async waitSorted() {
    const t0 = now();
    while ((this.spark.sorting || this.spark.sortDirty) && now() - t0 < SORT_WAIT_MS) await sleep(2);
  }
}
