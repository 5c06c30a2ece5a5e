// Draw-a-digit page: Pointer Events canvas, upload / drag-and-drop, /predict and /read, feedback.
"use strict";

const $ = (id) => document.getElementById(id);
const pad = $("pad");
const overlay = $("overlay");
const ctx = pad.getContext("2d");
const octx = overlay.getContext("2d");
const state = {
  strokes: [],        // each stroke: array of [x, y] in 0..1 canvas units
  current: null,
  mode: "single",
  image: null,        // an uploaded image shown on the canvas (drawn strokes are then cleared)
  seq: 0,             // request sequence: only the newest answer is shown
  controller: null,
  last: null,         // last single-digit answer (for feedback)
};

function strokeWidth() {
  // About 7 % of the digit's height: close to MNIST's stroke after scaling to 20 px.
  const h = state.mode === "several" ? pad.height : Math.min(pad.width, pad.height);
  return Math.max(2, h * 0.07);
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
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (state.image) drawFitted(state.image);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = strokeWidth();
  for (const s of state.strokes) drawStroke(s);
  octx.clearRect(0, 0, overlay.width, overlay.height);
}

function drawStroke(points) {
  if (points.length === 1) {
    const [x, y] = points[0];
    ctx.beginPath();
    ctx.arc(x * pad.width, y * pad.height, ctx.lineWidth / 2, 0, Math.PI * 2);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(points[0][0] * pad.width, points[0][1] * pad.height);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x * pad.width, y * pad.height);
  ctx.stroke();
}

function fitted(img) {
  const scale = Math.min(pad.width / img.naturalWidth, pad.height / img.naturalHeight);
  const w = img.naturalWidth * scale, h = img.naturalHeight * scale;
  return { x: (pad.width - w) / 2, y: (pad.height - h) / 2, w, h, scale };
}

function drawFitted(img) {
  const f = fitted(img);
  ctx.drawImage(img, f.x, f.y, f.w, f.h);
}

function point(ev) {
  const rect = pad.getBoundingClientRect();
  return [(ev.clientX - rect.left) / rect.width, (ev.clientY - rect.top) / rect.height];
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  if (state.image) { state.image = null; state.file = null; redraw(); }
  state.current = [point(ev)];
  redraw();
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
  sendCanvas();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  if (state.image && !state.strokes.length) state.image = null;
  state.strokes.pop();
  redraw();
  if (state.strokes.length || state.image) sendCanvas(); else resetResult();
});

$("clear").addEventListener("click", () => {
  state.strokes = [];
  state.image = null;
  redraw();
  resetResult();
});

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => {
    state.mode = radio.value;
    pad.parentElement.classList.toggle("wide", state.mode === "several");
    pad.setAttribute("aria-label", state.mode === "several"
      ? "Drawing area: write several digits in a row" : "Drawing area: draw a digit with mouse, finger or pen");
    state.strokes = [];
    state.image = null;
    resizeCanvases();
    resetResult();
  });
}

function resetResult() {
  state.seq += 1;
  state.last = null;
  $("digit").textContent = "–";
  $("status").textContent = state.mode === "several" ? "Write digits in a row to start." : "Draw a digit to start.";
  $("top3").replaceChildren();
  $("digits").replaceChildren();
  $("digits").hidden = true;
  $("seen-figure").hidden = true;
  $("feedback").hidden = true;
  $("error").hidden = true;
  octx.clearRect(0, 0, overlay.width, overlay.height);
}

function sendCanvas() {
  pad.toBlob((blob) => { if (blob) send(blob, "drawing.png"); }, "image/png");
}

async function send(blob, name) {
  const seq = ++state.seq;
  if (state.controller) state.controller.abort();
  state.controller = new AbortController();
  const body = new FormData();
  body.append("file", blob, name);
  const url = state.mode === "several" ? "/read" : "/predict";
  try {
    const res = await fetch(url, { method: "POST", body, signal: state.controller.signal });
    const data = await res.json();
    if (seq !== state.seq) return;
    if (!res.ok) return showError(data.detail || `The request failed (${res.status}).`);
    $("error").hidden = true;
    if (state.mode === "several") showRead(data); else showPrediction(data);
  } catch (err) {
    if (err.name !== "AbortError" && seq === state.seq) showError("The service cannot be reached.");
  }
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

const STATUS_TEXT = {
  ok: (d) => `confidence ${(d.confidence * 100).toFixed(1)} %`,
  uncertain: (d) => `not sure (confidence ${(d.confidence * 100).toFixed(1)} %)`,
  no_digit: (d) => `no digit found${d.reason ? ` (${d.reason})` : ""}`,
};

function showPrediction(data) {
  state.last = data;
  $("digit").textContent = data.digit === null ? "–" : String(data.digit);
  $("status").textContent = STATUS_TEXT[data.status](data);
  const top = data.probabilities.map((p, d) => [d, p]).sort((a, b) => b[1] - a[1]).slice(0, 3);
  $("top3").replaceChildren(...(data.status === "no_digit" ? [] : top.map(([d, p]) => barItem(d, p))));
  $("seen-figure").hidden = !data.input_image;
  if (data.input_image) $("seen").src = data.input_image;
  $("digits").hidden = true;
  $("feedback").hidden = data.digit === null;
  $("feedback-status").textContent = "";
}

function barItem(digit, p) {
  const li = document.createElement("li");
  const label = document.createElement("span");
  label.textContent = String(digit);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", `${digit}: ${(p * 100).toFixed(1)} percent`);
  const fill = document.createElement("span");
  fill.style.width = `${Math.max(0, Math.min(100, p * 100)).toFixed(1)}%`;
  bar.append(fill);
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = `${(p * 100).toFixed(0)}%`;
  li.append(label, bar, pct);
  return li;
}

function showRead(data) {
  state.last = null;
  $("digit").textContent = data.text || "–";
  $("status").textContent = data.status === "no_digit" ? "no digits found"
    : `${data.digits.length} digit${data.digits.length === 1 ? "" : "s"}${data.status === "uncertain" ? ", some not sure" : ""}`;
  $("top3").replaceChildren();
  $("seen-figure").hidden = true;
  $("feedback").hidden = true;
  const items = data.digits.map((d) => {
    const li = document.createElement("li");
    const img = document.createElement("img");
    img.src = d.input_image;
    img.alt = `Digit read as ${d.digit}`;
    const cap = document.createElement("span");
    cap.textContent = `${d.digit} · ${(d.confidence * 100).toFixed(0)}%`;
    li.append(img, cap);
    return li;
  });
  $("digits").replaceChildren(...items);
  $("digits").hidden = !items.length;
  drawBoxes(data.digits);
}

function drawBoxes(digits) {
  octx.clearRect(0, 0, overlay.width, overlay.height);
  // Boxes are in the sent image's pixels: the canvas itself, or the uploaded image fitted into it.
  const f = state.image ? fitted(state.image) : { x: 0, y: 0, scale: 1 };
  octx.lineWidth = Math.max(2, overlay.width / 200);
  octx.font = `${Math.round(overlay.height / 8)}px system-ui, sans-serif`;
  for (const d of digits) {
    const [x, y, w, h] = d.box;
    octx.strokeStyle = d.status === "ok" ? "#1f6feb" : "#d97706";
    octx.strokeRect(f.x + x * f.scale, f.y + y * f.scale, w * f.scale, h * f.scale);
    octx.fillStyle = octx.strokeStyle;
    octx.fillText(String(d.digit), f.x + x * f.scale, Math.max(16, f.y + y * f.scale - 4));
  }
}

for (const button of document.querySelectorAll(".digit-buttons button")) {
  button.addEventListener("click", async () => {
    if (!state.last) return;
    const label = Number(button.dataset.label);
    try {
      const res = await fetch("/feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ prediction_id: state.last.prediction_id, label }),
      });
      const data = await res.json();
      $("feedback-status").textContent = res.ok ? `Thanks: saved as ${label}.` : data.detail;
    } catch (err) {
      $("feedback-status").textContent = "The feedback could not be sent.";
    }
  });
}

function useFile(file) {
  if (!file) return;
  const img = new Image();
  img.onload = () => {
    state.strokes = [];
    state.image = img;
    redraw();
  };
  img.src = URL.createObjectURL(file);
  send(file, file.name || "upload");
}

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
  try {
    const res = await fetch("/model");
    const data = await res.json();
    $("model-info").textContent = res.ok ? `Model: ${data.name}, version ${data.version}` : data.detail;
  } catch (err) {
    $("model-info").textContent = "The service cannot be reached.";
  }
}

window.addEventListener("resize", resizeCanvases);
resizeCanvases();
loadModelInfo();
