// Photo mode: a phone photo (the camera, via `capture`) or an image file goes to /read, which finds every
// line of digits. The photo is shown with a box over each digit and the text of each line; choosing a box
// offers the ten digits, and the choice goes to POST /feedback for that digit alone.
const $ = (id) => document.getElementById(id);
const view = { answer: null, target: null, url: null, seq: 0 };

function mark(d) {
  if (d.digit === null) return "?";
  return d.status === "ok" ? String(d.digit) : `${d.digit}?`;
}

function said(d) {
  if (d.digit === null) return "not a digit";
  return `read as ${d.digit}${d.status === "ok" ? "" : ", not sure"}, ${Math.round(d.confidence * 100)}%`;
}

function place(el, box, img) {
  // Boxes are in the photo's own pixels; percentages keep them on the digits at any displayed size.
  const [x, y, w, h] = box;
  const W = img.naturalWidth || 1, H = img.naturalHeight || 1;
  el.style.left = `${(100 * x) / W}%`;
  el.style.top = `${(100 * y) / H}%`;
  el.style.width = `${(100 * w) / W}%`;
  el.style.height = `${(100 * h) / H}%`;
}

function boxButton(d, li, di, img) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `photo-box ${d.status === "ok" ? "sure" : "unsure"}`;
  button.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-label", `Line ${li + 1}, digit ${di + 1}: ${said(d)}`);
  const tag = document.createElement("span");
  tag.className = "photo-tag";
  tag.setAttribute("aria-hidden", "true");
  tag.textContent = mark(d);
  button.append(tag);
  place(button, d.box, img);
  button.addEventListener("click", () => choose({ d, li, di, button, tag }));
  return button;
}

function lineItem(line, li) {
  const item = document.createElement("li");
  const label = document.createElement("span");
  label.className = "muted";
  label.textContent = `Line ${li + 1}: `;
  const text = document.createElement("span");
  text.className = "photo-text";
  text.dataset.line = String(li);
  text.textContent = line.digits.map(mark).join("");
  item.append(label, text);
  return item;
}

function show(answer) {
  const img = $("photo-img");
  view.answer = answer;
  for (const old of $("photo-frame").querySelectorAll(".photo-box")) old.remove();
  const boxes = answer.lines.flatMap((line, li) => line.digits.map((d, di) => boxButton(d, li, di, img)));
  $("photo-frame").append(...boxes);
  $("photo-lines").replaceChildren(...answer.lines.map(lineItem));
  const n = answer.lines.length;
  $("photo-status").textContent = n
    ? `${n} line${n === 1 ? "" : "s"}, ${answer.digits.length} digits. Choose a digit on the photo to correct it.`
    : "No digits found on this photo.";
  $("photo-view").hidden = false;
}

function choose(next) {
  view.target = next;
  for (const b of $("photo-frame").querySelectorAll(".photo-box")) b.setAttribute("aria-pressed", String(b === next.button));
  $("photo-fix").hidden = false;
  $("photo-fix-status").textContent = "";
  $("photo-fix-label").textContent = `Line ${next.li + 1}, digit ${next.di + 1} (${said(next.d)}) is really…`;
  $("photo-fix").querySelector("button").focus();
}

function relabel(target, label) {
  target.tag.textContent = String(label);
  target.button.classList.add("fixed");
  target.button.setAttribute("aria-label", `Line ${target.li + 1}, digit ${target.di + 1}: corrected to ${label}`);
  const line = view.answer.lines[target.li];
  line.digits[target.di] = { ...target.d, digit: label, status: "ok" };
  const text = $("photo-lines").querySelector(`[data-line="${target.li}"]`);
  if (text) text.textContent = line.digits.map(mark).join("");
}

async function sendFix(button) {
  const target = view.target;
  if (!target) return;
  const label = Number(button.dataset.label);
  try {
    const res = await fetch("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prediction_id: target.d.prediction_id, label }),
    });
    const data = await res.json();
    if (target !== view.target) return;
    if (!res.ok) { $("photo-fix-status").textContent = data.detail; return; }
    relabel(target, label);
    $("photo-fix-status").textContent = `Thanks: saved as ${label}.`;
  } catch (err) {
    $("photo-fix-status").textContent = "The correction could not be sent.";
  }
}

function failed(text) {
  $("photo-error").textContent = text;
  $("photo-error").hidden = false;
  $("photo-status").textContent = "";
}

async function read(file) {
  const seq = ++view.seq;
  $("photo-error").hidden = true;
  $("photo-fix").hidden = true;
  $("photo-view").hidden = true;
  view.target = null;
  $("photo-status").textContent = "Reading the photo…";
  const body = new FormData();
  body.append("file", file, file.name || "photo.jpg");
  try {
    const res = await fetch("/read", { method: "POST", body });
    const data = await res.json();
    if (seq !== view.seq) return;
    if (!res.ok) { failed(data.detail || `The request failed (${res.status}).`); return; }
    if (await shown(file, seq) && seq === view.seq) show(data);
  } catch (err) {
    if (seq === view.seq) failed("The service cannot be reached.");
  }
}

function shown(file, seq) {
  // Resolves (true) once the photo is decoded, so that its natural size places the boxes.
  const img = $("photo-img");
  if (view.url) URL.revokeObjectURL(view.url);
  view.url = URL.createObjectURL(file);
  return new Promise((resolve) => {
    img.onload = () => resolve(true);
    img.onerror = () => { if (seq === view.seq) failed("This photo cannot be shown here."); resolve(false); };
    img.src = view.url;
  });
}

$("photo-take").addEventListener("click", () => $("photo-file").click());
$("photo-file").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  if (file) read(file);
});
for (const button of $("photo-fix").querySelectorAll("button")) {
  button.addEventListener("click", () => sendFix(button));
}
