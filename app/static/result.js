// Showing answers: one digit (bars, what the model saw), a row (one button per digit), errors, corrections.
// The result panel's data-state tells what is on screen: idle, drawing, reading, done or error.
const $ = (id) => document.getElementById(id);
// POST /feedback takes "not_a_digit" as well as 0-9: the "Not a digit" button is offered beside the digits.
const NOT_A_DIGIT = true;
const REASONS = { blank: "the box is empty", "too small": "the mark is too small to read", "a dot": "it is only a dot" };
// A mark the model's not-a-digit check refused: said in words, and no digit guess is shown as the answer.
const NOT_DIGIT_REASON = "not_a_digit";
const NOT_DIGIT_TEXT = "That doesn't look like a digit";

function refusedAsNotDigit(d) {
  return d.status === "no_digit" && d.reason === NOT_DIGIT_REASON;
}

let target = null;  // what a correction applies to: {prediction_id, digit, item}
const chosen = new Map();  // prediction_id -> the correction saved for it, marked again when it is chosen again

export function setState(value) {
  $("result").dataset.state = value;
}

function pct(p) {
  return `${(p * 100).toFixed(p > 0.995 && p < 1 ? 1 : 0)} %`;
}

function runnerUp(probabilities, digit) {
  let best = null;
  probabilities.forEach((p, d) => { if (d !== digit && (best === null || p > probabilities[best])) best = d; });
  return best;
}

export function resetResult(text) {
  $("error").hidden = true;
  $("result").hidden = false;
  $("result").className = "";
  $("digit").textContent = "–";
  $("status").textContent = text;
  $("top3").replaceChildren();
  $("digits").replaceChildren();
  $("digits").hidden = true;
  $("seen-figure").hidden = true;
  setTarget(null);
  setState("idle");
}

export function showError(text) {
  // An error replaces the answer: nothing of an older answer stays on screen beside it.
  resetResult("");
  $("result").hidden = true;
  $("error").textContent = text;
  $("error").hidden = false;
  setState("error");
}

export function showPrediction(data) {
  resetResult("");
  const sure = data.status === "ok";
  $("result").className = data.status === "no_digit" ? "none" : (sure ? "sure" : "unsure");
  if (refusedAsNotDigit(data)) {
    $("status").textContent = `${NOT_DIGIT_TEXT} (reason: it is unlike the digits the model knows). `
      + "If it is one, choose the right digit below.";
  } else if (data.status === "no_digit") {
    $("status").textContent = `No digit found: ${REASONS[data.reason] || data.reason || "nothing to read"}.`;
  } else if (sure) {
    $("digit").textContent = String(data.digit);
    $("status").textContent = `Sure: ${data.digit} (${pct(data.confidence)})`;
  } else {
    const other = runnerUp(data.probabilities, data.digit);
    $("digit").textContent = `${data.digit}?`;
    $("status").textContent = `Maybe ${data.digit} — or ${other}? (${pct(data.confidence)})`;
  }
  const top = data.probabilities.map((p, d) => [d, p]).sort((a, b) => b[1] - a[1]).slice(0, 3);
  $("top3").replaceChildren(...(data.status === "no_digit" ? [] : top.map(([d, p]) => barItem(d, p))));
  $("seen-figure").hidden = !data.input_image;
  if (data.input_image) $("seen").src = data.input_image;
  if (data.digit !== null || refusedAsNotDigit(data)) {
    setTarget({ prediction_id: data.prediction_id, digit: data.digit, item: null });
  }
  setState("done");
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
  const share = document.createElement("span");
  share.className = "pct";
  share.textContent = `${(p * 100).toFixed(0)}%`;
  li.append(label, bar, share);
  return li;
}

function markText(d) {
  if (d.status === "no_digit") return "?";
  return d.status === "ok" ? String(d.digit) : `${d.digit}?`;
}

export function showRead(data) {
  resetResult("");
  const unsure = data.digits.filter((d) => d.status !== "ok").length;
  $("result").className = data.status === "no_digit" ? "none" : (unsure ? "unsure" : "sure");
  $("digit").textContent = data.digits.map(markText).join("") || "–";
  const n = data.digits.length;
  const refused = data.digits.filter(refusedAsNotDigit).length;
  $("status").textContent = !n ? "No digits found." : (refused === n ? `${n === 1 ? NOT_DIGIT_TEXT
    : "Those don't look like digits"} (reason: unlike the digits the model knows). Choose one to correct it.`
    : `${n} digit${n === 1 ? "" : "s"}` + (refused ? `, ${refused} not like a digit (?)` : "")
    + (unsure > refused ? `, ${unsure - refused} not sure: choose one below to check it.` : ". Choose one to correct it."));
  const items = data.digits.map((d, i) => digitItem(d, i, n));
  $("digits").replaceChildren(...items);
  $("digits").hidden = !items.length;
  setState("done");
}

function digitItem(d, i, n) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  const notDigit = refusedAsNotDigit(d);
  button.className = d.status === "ok" ? "sure" : "unsure";
  button.setAttribute("aria-pressed", "false");
  const where = document.createElement("span");
  where.className = "sr-only";
  where.textContent = `Digit ${i + 1} of ${n}${notDigit ? ", not a digit" : d.status === "ok" ? "" : ", not sure"}: `;
  const img = document.createElement("img");
  img.src = d.input_image;
  img.alt = "";
  const cap = document.createElement("span");
  // A digit the model is not sure of says so in words, as a lone answer does ("Maybe 4 — or 9?").
  const read = d.status === "ok" ? String(d.digit) : `Maybe ${d.digit}?`;
  cap.textContent = notDigit ? "not a digit" : `${read} · ${(d.confidence * 100).toFixed(0)}%`;
  button.append(where, img, cap);
  button.addEventListener("click", () => {
    for (const other of $("digits").querySelectorAll("button")) other.setAttribute("aria-pressed", "false");
    button.setAttribute("aria-pressed", "true");
    setTarget({ prediction_id: d.prediction_id, digit: d.digit, item: cap, index: i, count: n });
  });
  li.append(button);
  return li;
}

function spoken(raw) {
  return raw === "not_a_digit" ? "not a digit" : raw;
}

function markChosen(raw) {
  // The correction saved for the current answer (or digit of a row) is the one pressed; none before one is saved.
  for (const b of document.querySelectorAll("#feedback .digit-buttons button")) b.setAttribute("aria-pressed", String(b.dataset.label === raw));
  if (raw !== undefined && raw !== null) $("feedback-status").textContent = `Saved as ${spoken(raw)}.`;
}

function setTarget(next) {
  target = next;
  $("feedback").hidden = !next;
  $("feedback-status").textContent = "";
  markChosen(next && chosen.get(next.prediction_id));
  document.querySelector(".not-digit").hidden = !NOT_A_DIGIT;
  if (next) {
    const readAs = next.digit === null ? "not a digit" : `read as ${next.digit}`;
    $("feedback-label").textContent = next.count
      ? `Digit ${next.index + 1} of ${next.count} (${readAs}) is really…`
      : (next.digit === null ? "Is it a digit after all? It is…" : "Wrong? The right digit is…");
  }
}

async function sendFeedback(button) {
  if (!target) return;
  const raw = button.dataset.label;
  const label = raw === "not_a_digit" ? raw : Number(raw);
  const current = target;
  try {
    const res = await fetch("/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prediction_id: current.prediction_id, label }),
    });
    const data = await res.json();
    if (current !== target) return;
    if (!res.ok) { $("feedback-status").textContent = data.detail; return; }
    chosen.set(current.prediction_id, raw);
    markChosen(raw);
    $("feedback-status").textContent = `Thanks: saved as ${spoken(raw)}.`;
    if (current.item) current.item.textContent = `${spoken(raw)} ✓ (was ${current.digit ?? "not a digit"})`;
  } catch (err) {
    $("feedback-status").textContent = "The feedback could not be sent.";
  }
}

for (const button of document.querySelectorAll("#feedback .digit-buttons button")) {
  button.addEventListener("click", () => sendFeedback(button));
}

export function describeModel(data) {
  // GET /model says it in words a user understands; the exact version goes in the tooltip.
  return { text: `Model: ${data.summary}`, tooltip: data.details };
}
