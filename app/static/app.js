// Draw-a-digit page: Pointer Events canvas, upload / drag-and-drop, one mode that reads what is there.
// The page asks the service once the pen has rested (REST_MS after the last stroke), never mid-digit.
import { describeModel, resetResult, setState, showError, showPrediction, showRead } from "./result.js";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const overlay = $("overlay");
const ctx = pad.getContext("2d");
const octx = overlay.getContext("2d");
const REST_MS = 500;
const READ_PEN = 0.1;
const URLS = { auto: "/read?mode=auto", single: "/predict", several: "/read" };
const TOUCH_ONLY = window.matchMedia("(hover: none) and (pointer: coarse)").matches;
const state = {
  strokes: [],        // each stroke: array of [x, y] in 0..1 canvas units
  current: null,
  mode: "auto",
  image: null,        // an image shown on the canvas: an upload, or a drawing kept across a change of box
  file: null,         // the uploaded file itself, sent again unchanged when the mode changes
  seq: 0,             // request sequence: only the newest answer is shown
  controller: null,
  timer: null,
};

function startText() {
  return state.mode === "several" ? "Write digits in a row to start." : "Draw a digit (or several) to start.";
}

function penWidth() {
  // A share of the box's height (the pen menu), so the default pen suits the box on any screen.
  return Math.max(2, Math.min(pad.width, pad.height) * Number($("pen").value));
}

function resizeCanvases() {
  const rect = pad.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  for (const c of [pad, overlay]) {
    c.width = Math.max(1, Math.round(rect.width * ratio));
    c.height = Math.max(1, Math.round(rect.height * ratio));
  }
  redraw();
}

function redraw() {
  render(ctx, penWidth());
  octx.clearRect(0, 0, overlay.width, overlay.height);
}

function render(c, width) {
  c.fillStyle = "#fff";
  c.fillRect(0, 0, pad.width, pad.height);
  if (state.image) drawFitted(c, state.image);
  c.strokeStyle = "#000";
  c.fillStyle = "#000";
  c.lineCap = "round";
  c.lineJoin = "round";
  c.lineWidth = width;
  for (const s of state.strokes) drawStroke(s, c);
}

function drawStroke(points, c = ctx) {
  if (points.length === 1) {
    const [x, y] = points[0];
    c.beginPath();
    c.arc(x * pad.width, y * pad.height, c.lineWidth / 2, 0, Math.PI * 2);
    c.fill();
    return;
  }
  c.beginPath();
  c.moveTo(points[0][0] * pad.width, points[0][1] * pad.height);
  for (const [x, y] of points.slice(1)) c.lineTo(x * pad.width, y * pad.height);
  c.stroke();
}

function fitted(img) {
  const w0 = img.naturalWidth || img.width, h0 = img.naturalHeight || img.height;
  const scale = Math.min(pad.width / w0, pad.height / h0);
  const w = w0 * scale, h = h0 * scale;
  return { x: (pad.width - w) / 2, y: (pad.height - h) / 2, w, h, scale };
}

function drawFitted(c, img) {
  const f = fitted(img);
  c.drawImage(img, f.x, f.y, f.w, f.h);
}

function point(ev) {
  const rect = pad.getBoundingClientRect();
  return [(ev.clientX - rect.left) / rect.width, (ev.clientY - rect.top) / rect.height];
}

function provisional() {
  // While the pen moves the old answer is dimmed and marked as not yet final.
  clearTimeout(state.timer);
  state.seq += 1;
  if (state.controller) state.controller.abort();
  octx.clearRect(0, 0, overlay.width, overlay.height);  // an older row's boxes do not sit on the new drawing
  $("status").textContent = "Still drawing… the answer comes when you pause.";
  setState("drawing");
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  if (state.file) { state.image = null; state.file = null; redraw(); }
  provisional();
  state.current = [point(ev)];
  drawStroke(state.current);
});

pad.addEventListener("pointermove", (ev) => {
  if (!state.current) return;
  const events = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
  for (const e of events.length ? events : [ev]) state.current.push(point(e));
  const n = state.current.length;
  drawStroke(state.current.slice(Math.max(0, n - events.length - 1)));
});

function endStroke() {
  if (!state.current) return;
  state.strokes.push(state.current);
  state.current = null;
  redraw();
  clearTimeout(state.timer);
  state.timer = setTimeout(sendCanvas, REST_MS);
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  if (state.strokes.length) state.strokes.pop(); else { state.image = null; state.file = null; }
  redraw();
  reread();
});

$("clear").addEventListener("click", () => {
  state.strokes = [];
  state.image = null;
  state.file = null;
  redraw();
  reread();
});

$("pen").addEventListener("change", () => { redraw(); if (state.strokes.length) reread(); });

function keepDrawing(callback) {
  // The box changes shape with the mode: the drawing so far becomes an image fitted into the new box.
  if (!state.strokes.length) { callback(); return; }
  const img = new Image();
  img.onload = () => { state.image = img; state.strokes = []; callback(); };
  img.src = pad.toDataURL("image/png");
}

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    const wasWide = state.mode !== "single";
    state.mode = radio.value;
    const wide = state.mode !== "single";
    const apply = () => {
      pad.parentElement.classList.toggle("wide", wide);
      resizeCanvases();
      reread();
    };
    if (wide !== wasWide) keepDrawing(apply); else apply();
  });
}

function reread() {
  // Read again what is on the canvas (or the uploaded file) in the current mode; nothing is discarded.
  clearTimeout(state.timer);
  octx.clearRect(0, 0, overlay.width, overlay.height);
  if (state.file) send(state.file, state.file.name || "upload");
  else if (state.strokes.length || state.image) sendCanvas();
  else { state.seq += 1; resetResult(startText()); }
}

function readWidth() {
  // The pen as the model should see it: the page's pen, but never thicker than READ_PEN of the drawing's
  // height, so a small digit drawn with a wide pen keeps its loops open (measured: 30 % of the box is then
  // read as well as 100 %). Drawings of a normal size are sent exactly as shown.
  const ys = state.strokes.flat().map(([, y]) => y * pad.height);
  if (!ys.length) return penWidth();
  const height = Math.max(...ys) - Math.min(...ys);
  return Math.max(2, Math.min(penWidth(), READ_PEN * height));
}

function sendCanvas() {
  const width = readWidth();
  let source = pad;
  if (width < penWidth()) {
    source = document.createElement("canvas");
    source.width = pad.width;
    source.height = pad.height;
    render(source.getContext("2d"), width);
  }
  source.toBlob((blob) => { if (blob) send(blob, "drawing.png"); }, "image/png");
}

async function send(blob, name) {
  const seq = ++state.seq;
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  const body = new FormData();
  body.append("file", blob, name);
  setState("reading");
  try {
    const res = await fetch(URLS[state.mode], { method: "POST", body, signal: state.controller.signal });
    const data = await res.json();
    if (seq !== state.seq) return;
    if (!res.ok) { showError(data.detail || `The request failed (${res.status}).`); return; }
    if (state.mode === "several" || data.kind === "row") { showRead(data); drawBoxes(data.digits); } else showPrediction(data);
  } catch (err) {
    if (err.name !== "AbortError" && seq === state.seq) showError("The service cannot be reached.");
  }
}

function drawBoxes(digits) {
  octx.clearRect(0, 0, overlay.width, overlay.height);
  // Boxes are in the sent image's pixels: the canvas itself, or the uploaded image fitted into it.
  const f = state.file && state.image ? fitted(state.image) : { x: 0, y: 0, scale: 1 };
  octx.lineWidth = Math.max(2, overlay.width / 200);
  octx.font = `${Math.round(overlay.height / 8)}px system-ui, sans-serif`;
  for (const d of digits) {
    const [x, y, w, h] = d.box;
    octx.strokeStyle = d.status === "ok" ? "#1f6feb" : "#b45309";
    octx.strokeRect(f.x + x * f.scale, f.y + y * f.scale, w * f.scale, h * f.scale);
    octx.fillStyle = octx.strokeStyle;
    octx.fillText(d.digit === null ? "?" : `${d.digit}${d.status === "ok" ? "" : "?"}`, f.x + x * f.scale, Math.max(16, f.y + y * f.scale - 4));
  }
}

function useFile(file) {
  if (!file) return;
  const img = new Image();
  img.onload = () => { if (state.file === file) { state.image = img; redraw(); } };
  img.onerror = () => { if (state.file === file) { state.image = null; redraw(); } };
  img.src = URL.createObjectURL(file);
  state.strokes = [];
  state.image = null;
  state.file = file;
  redraw();
  send(file, file.name || "upload");
}

$("upload").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (ev) => { useFile(ev.target.files[0]); ev.target.value = ""; });

const zone = $("drop-zone");
zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("dragging"); });
zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
zone.addEventListener("drop", (ev) => {
  ev.preventDefault();
  zone.classList.remove("dragging");
  useFile(ev.dataTransfer.files[0]);
});

async function loadModelInfo() {
  const info = $("model-info");
  try {
    const res = await fetch("/model");
    const data = await res.json();
    if (!res.ok) { info.textContent = data.detail; return; }
    const { text, tooltip } = describeModel(data);
    info.textContent = text;
    info.title = tooltip;
  } catch (err) {
    info.textContent = "The service cannot be reached.";
  }
}

if (TOUCH_ONLY) {
  $("drop-hint").textContent = "Draw above with your finger, or tap Upload image to choose a photo.";
  pad.setAttribute("aria-label", "Drawing area: draw one digit or several in a row with your finger or a pen");
  document.body.classList.add("touch");
}
window.addEventListener("resize", resizeCanvases);
resizeCanvases();
resetResult(startText());
loadModelInfo();
