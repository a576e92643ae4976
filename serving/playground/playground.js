// The playground's behaviour: plain JavaScript, no build step, talking to this server's own
// endpoints (/models, /classify_image, /classify_text, /generate_stream, /render_midi, /metrics, /devices).
"use strict";

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// A readable message for a failed call: the server's {"error": "..."} when it sent one.
async function errorOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "string") return `${response.status}: ${body.error}`;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}${text ? ": " + text.slice(0, 300) : ""}`;
}

function showError(target, message) {
  target.replaceChildren(el("p", { class: "error", role: "alert" }, message));
}

async function call(path, init) {
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, init);
  } catch (exc) {
    throw new Error(`the server did not answer (${exc.message})`);
  }
  if (!response.ok) throw new Error(await errorOf(response));
  return { response, ms: performance.now() - started };
}

async function postJSON(path, body) {
  const { response, ms } = await call(path, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return { body: await response.json(), ms };
}

// Probability bars: one row per [label, probability].
function bars(rows) {
  const list = el("div", { class: "bars" });
  for (const [label, p] of rows) {
    const pct = (100 * p).toFixed(1);
    list.append(el("div", { class: "bar-row" },
      el("span", { class: "bar-label" }, label),
      el("span", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100",
                   "aria-valuenow": pct, "aria-label": label },
        el("span", { class: "bar-fill", style: `width:${pct}%` })),
      el("span", { class: "bar-value" }, `${pct}%`)));
  }
  return list;
}

function meta(parts) {
  return el("p", { class: "meta" }, parts.filter(Boolean).join(" · "));
}

let served = [];

async function loadModels() {
  const { body } = await postJSON("/models", {});
  served = body.models;
  return served;
}

// ------------------------------------------------------------------ images

const pad = $("pad");
const ink = pad.getContext("2d");

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
}

function setUpPad() {
  clearPad();
  let drawing = false;
  const at = (event) => {
    const box = pad.getBoundingClientRect();
    return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
  };
  // Pointer events: mouse, touch and pen alike (touch-action: none in the CSS keeps the page still).
  pad.addEventListener("pointerdown", (event) => {
    if (!drawingFits()) return;  // a photo model: the pad only shows the uploaded picture
    drawing = true;
    pad.setPointerCapture(event.pointerId);
    ink.strokeStyle = "#000";
    ink.lineWidth = 18;
    ink.lineCap = ink.lineJoin = "round";
    ink.beginPath();
    ink.moveTo(...at(event));
    ink.lineTo(...at(event));
    ink.stroke();
  });
  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    ink.lineTo(...at(event));
    ink.stroke();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    classifyDrawing();
  };
  pad.addEventListener("pointerup", finish);
  pad.addEventListener("pointercancel", finish);
}

// The served image model's input: its size, channels and whether drawn input fits (its manifest
// lays drawings out, as digits-cnn's does). /models says it; the pad is a drawing pad only then.
function imageInfo() {
  const m = served.find((x) => x.name === $("image-model").value);
  return (m && m.image) || { height: 28, width: 28, channels: 1, drawing: true };
}

function drawingFits() {
  return imageInfo().drawing;
}

function applyImageModel() {
  const info = imageInfo();
  const drawing = info.drawing;
  $("digits-title").textContent = drawing ? "Draw a digit" : "Classify an image";
  $("image-hint").textContent = drawing
    ? "Draw with the mouse, a finger or a pen, or upload a photo. The server lays a drawing out as MNIST " +
      "was made (cropped to the ink, fitted in 20x20, centred by mass)."
    : `Upload a photo: the server resizes it whole to ${info.width}x${info.height} ` +
      `${info.channels === 3 ? "RGB" : "grey"}, as the model was trained. (This model was not trained on drawings.)`;
  for (const id of ["classify-drawing", "clear-pad"]) $(id).style.display = drawing ? "" : "none";
  pad.setAttribute("aria-label", drawing ? "drawing pad: draw one digit" : "the uploaded photo");
  const seen = $("seen");
  seen.width = info.width;
  seen.height = info.height;
  $("seen-caption").textContent = `what the model sees (${info.width}x${info.height})`;
  clearPad();
}

function showSeen(pixels) {
  const seen = $("seen");
  const rows = pixels.length, cols = pixels[0].length;
  seen.width = cols;
  seen.height = rows;
  const context = seen.getContext("2d");
  const image = context.createImageData(cols, rows);
  pixels.flat().forEach((v, i) => {
    image.data.set(Array.isArray(v) ? [v[0], v[1], v[2], 255] : [v, v, v, 255], 4 * i);  // RGB or grey
  });
  context.putImageData(image, 0, 0);
}

async function classifyBlob(blob, name) {
  const target = $("image-result");
  const model = $("image-model").value;
  if (!model) return showError(target, "no image model is served here");
  const form = new FormData();
  form.append("images", blob, name);
  form.append("model", model);
  form.append("top_k", "3");
  form.append("return_input", "true");
  target.setAttribute("aria-busy", "true");
  try {
    const { response, ms } = await call("/classify_image", { method: "POST", body: form });
    const body = await response.json();
    const prediction = body.predictions[0];
    if (prediction.input) showSeen(prediction.input);
    target.replaceChildren(
      el("p", { class: "answer" }, el("span", { class: "big", "data-testid": "image-label" }, prediction.label)),
      bars(prediction.top_k.map((s) => [s.label, s.probability])),
      meta([`${ms.toFixed(0)} ms`, body.model, `variant ${body.variant}`, `version ${body.version}`]));
  } catch (exc) {
    showError(target, exc.message);
  } finally {
    target.removeAttribute("aria-busy");
  }
}

function classifyDrawing() {
  pad.toBlob((blob) => classifyBlob(blob, "drawing.png"), "image/png");
}

function uploadChosen(event) {
  const file = event.target.files[0];
  if (!file) return;
  const picture = new Image();
  const url = URL.createObjectURL(file);
  picture.onload = () => {  // show the photo on the pad, fitted, then send the file itself
    clearPad();
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const w = picture.width * scale, h = picture.height * scale;
    ink.drawImage(picture, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    URL.revokeObjectURL(url);
  };
  picture.onerror = () => URL.revokeObjectURL(url);
  picture.src = url;
  classifyBlob(file, file.name);
  event.target.value = "";
}

// ------------------------------------------------------------------ text

async function classifyText() {
  const target = $("text-result");
  const text = $("text-input").value;
  const models = served.filter((m) => m.task === "text-classification");
  if (!models.length) return showError(target, "no text model is served here");
  target.setAttribute("aria-busy", "true");
  const answers = await Promise.all(models.map(async (m) => {
    try {
      const { body, ms } = await postJSON("/classify_text", { model: m.name, text });
      const p = body.predictions[0];
      const sorted = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
      return el("div", { class: "card", "data-model": m.name },
        el("h3", {}, m.name),
        el("p", { class: "answer" }, el("span", { class: "big", "data-testid": `text-label-${m.name}` }, p.label)),
        bars(sorted),
        meta([`${p.tokens} tokens`, p.truncated ? "truncated to the model's length" : "not truncated",
              `${ms.toFixed(0)} ms`, `variant ${body.variant}`, `version ${body.version}`]));
    } catch (exc) {
      return el("div", { class: "card" }, el("h3", {}, m.name), el("p", { class: "error", role: "alert" }, exc.message));
    }
  }));
  target.replaceChildren(...answers);
  target.removeAttribute("aria-busy");
}

// ------------------------------------------------------------------ tunes

let tune = null;      // the last finished tune (ABC)
let sheet = null;     // abcjs's parsed tune, for playback
let player = null;    // { context, stop }

function abcjsReady() {
  return typeof window.ABCJS !== "undefined" && typeof window.ABCJS.renderAbc === "function";
}

// The stream is Server-Sent Events over a POST: read it with fetch, split on blank lines.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      yield { name, data: data ? JSON.parse(data) : {} };
    }
  }
}

function numberOf(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function generate() {
  const status = $("tune-status"), text = $("tune-text");
  stopPlaying();
  tune = sheet = null;
  ["play", "midi"].forEach((id) => { $(id).disabled = true; });
  $("generate").disabled = true;
  text.textContent = "";
  $("sheet").replaceChildren();
  status.textContent = "writing…";
  const body = { prompt: $("tune-prompt").value, temperature: numberOf("tune-temperature"),
                 top_p: numberOf("tune-top-p"), seed: numberOf("tune-seed") };
  try {
    const started = performance.now();
    const { response } = await call("/generate_stream", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    let info = {};
    for await (const event of events(response)) {
      if (event.name === "start") info = event.data;
      else if (event.name === "piece") text.textContent += event.data.text;
      else if (event.name === "error") throw new Error(event.data.error);
      else if (event.name === "end") {
        tune = event.data.tune;
        text.textContent = tune;
        status.textContent = [`${event.data.generated_chars} characters in ${((performance.now() - started) / 1000).toFixed(1)} s`,
                              `stopped: ${event.data.stop_reason}`, `seed ${info.seed}`, info.model,
                              `variant ${info.variant}`, `version ${info.version}`].join(" · ");
      }
    }
    if (tune === null) throw new Error("the stream ended before the tune did");
    renderSheet();
    $("midi").disabled = false;
  } catch (exc) {
    showError(status, exc.message);
  } finally {
    $("generate").disabled = false;
  }
}

function renderSheet() {
  const target = $("sheet");
  if (!abcjsReady()) {
    target.replaceChildren(el("p", { class: "error", role: "alert" },
      "Sheet music and playback need abcjs, which is not installed on this server (run `make playground`). " +
      "The tune above is plain ABC; Download MIDI still works."));
    return;
  }
  // a fresh element each time: abcjs styles the element it draws into (size, padding)
  const paper = el("div");
  target.replaceChildren(paper);
  const rendered = window.ABCJS.renderAbc(paper, tune, { responsive: "resize", add_classes: true });
  sheet = rendered[0];
  const warnings = sheet && sheet.warnings ? sheet.warnings.length : 0;
  if (warnings) target.append(el("p", { class: "meta" }, `abcjs: ${warnings} notation warnings`));
  $("play").disabled = !sheet;
}

// Playback with the browser's own oscillators: abcjs's synthesizer would fetch sound fonts
// from the internet, so only its note timings are used (setUpAudio), not its sounds.
function play() {
  if (!sheet) return;
  stopPlaying();
  const Context = window.AudioContext || window.webkitAudioContext;
  if (!Context) return showError($("tune-status"), "this browser has no Web Audio: use Download MIDI");
  let audio;
  try {
    audio = sheet.setUpAudio({});
  } catch (exc) {  // abcjs parsed the notes but cannot time this tune (e.g. muddled repeats)
    return showError($("tune-status"), `this tune cannot be played here (abcjs: ${exc.message}); Download MIDI may still work`);
  }
  const context = new Context();
  const secondsPerWhole = 240 / (audio.tempo || 120);  // abcjs times notes in whole notes
  const start = context.currentTime + 0.1;
  let end = start;
  for (const track of audio.tracks) {
    for (const note of track) {
      if (note.cmd !== "note" || note.pitch === undefined) continue;
      const t0 = start + note.start * secondsPerWhole, t1 = t0 + Math.max(note.duration * secondsPerWhole, 0.05);
      const osc = context.createOscillator(), gain = context.createGain();
      osc.type = "triangle";
      osc.frequency.value = 440 * Math.pow(2, (note.pitch - 69) / 12);
      gain.gain.setValueAtTime(0, t0);
      gain.gain.linearRampToValueAtTime(0.25 * (note.volume || 80) / 127, t0 + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.001, t1);
      osc.connect(gain).connect(context.destination);
      osc.start(t0);
      osc.stop(t1 + 0.02);
      end = Math.max(end, t1);
    }
  }
  const timer = setTimeout(stopPlaying, (end - context.currentTime + 0.3) * 1000);
  player = { stop: () => { clearTimeout(timer); context.close(); } };
  $("stop").disabled = false;
  $("tune-status").dataset.playing = "true";
}

function stopPlaying() {
  if (player) player.stop();
  player = null;
  $("stop").disabled = true;
  delete $("tune-status").dataset.playing;
}

async function downloadMidi() {
  if (!tune) return;
  try {
    const { response } = await call("/render_midi", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ abc: tune }) });
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: "tune.mid" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (exc) {
    showError($("tune-status"), exc.message);
  }
}

// ------------------------------------------------------------------ models and latency

function fillModels(models) {
  const rows = models.map((m) => {
    const accuracy = Object.entries(m.accuracy || {})
      .map(([variant, acc]) => `${variant} ${acc === null || acc === undefined ? "–" : (100 * acc).toFixed(2) + "%"}`)
      .join(", ");
    return el("tr", {}, el("td", {}, m.name), el("td", {}, m.task), el("td", {}, m.variant),
      el("td", {}, m.provider), el("td", {}, m.version), el("td", {}, accuracy || "–"));
  });
  $("model-table").tBodies[0].replaceChildren(...rows);
  const images = models.filter((m) => m.task === "image-classification");
  $("image-model").replaceChildren(...images.map((m) => el("option", { value: m.name }, m.name)));
  applyImageModel();
}

// Prometheus text -> per endpoint: requests, mean seconds, responses >= 400.
// The model endpoints only (not the page's files, probes or /metrics itself).
const API = /^\/(classify|classify_image|classify_text|generate|generate_stream|render_midi|models|v2\/.*)$/;
function parseMetrics(text) {
  const endpoints = {};
  const entry = (name) => (endpoints[name] ||= { count: 0, sum: 0, errors: 0 });
  for (const line of text.split("\n")) {
    const match = /^bentoml_service_request_duration_seconds_(sum|count)\{([^}]*)\}\s+([0-9.eE+-]+)/.exec(line);
    if (!match) continue;
    const labels = Object.fromEntries([...match[2].matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    const endpoint = labels.endpoint;
    if (!endpoint || !API.test(endpoint)) continue;
    const value = Number(match[3]), item = entry(endpoint);
    if (match[1] === "sum") item.sum += value;
    else {
      item.count += value;
      if (Number(labels.http_response_code) >= 400) item.errors += value;
    }
  }
  return endpoints;
}

async function refreshLatency() {
  try {
    const { response } = await call("/metrics", {});
    const endpoints = parseMetrics(await response.text());
    const rows = Object.entries(endpoints).filter(([, v]) => v.count > 0).sort().map(([name, v]) =>
      el("tr", {}, el("td", {}, name), el("td", {}, String(v.count)),
        el("td", {}, `${(1000 * v.sum / v.count).toFixed(1)} ms`), el("td", {}, String(v.errors))));
    $("latency-table").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: "4" }, "no requests yet"))]));
    $("models-status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (exc) {
    showError($("models-status"), `latency: ${exc.message}`);
  }
}

// ------------------------------------------------------------------ edge devices (GET /devices)

function ago(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

async function refreshFleet() {
  try {
    const { response } = await call("/devices", {});
    const body = await response.json();
    const rows = body.devices.map((d) => el("tr", {},
      el("td", {}, d.device_id), el("td", {}, d.model || ""), el("td", {}, d.version ? `v${d.version}` : "none"),
      el("td", {}, d.channel || ""),
      el("td", { class: d.health === "ok" ? "" : "error" }, d.health || "unknown"),
      el("td", {}, d.arch || ""), el("td", {}, d.onnxruntime || ""),
      el("td", {}, d.p50_ms != null ? `${d.p50_ms.toFixed(2)} ms` : ""),
      el("td", {}, ago(body.now_unix - d.received_unix)),
      el("td", { class: d.last_error ? "error" : "" }, d.last_error || (d.event || "").replace(/^\S+ /, ""))));
    $("fleet-table").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: "10" }, "no device has reported yet"))]));
    const channels = Object.entries(body.channels).map(([channel, models]) =>
      `${channel}: ${Object.entries(models).map(([m, v]) => `${m} v${v}`).join(", ")}`);
    $("fleet-channels").textContent = channels.length ? `channels — ${channels.join(" · ")}` : "nothing published yet";
    $("fleet-status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (exc) {
    showError($("fleet-status"), `fleet: ${exc.message}`);
  }
}

// ------------------------------------------------------------------ start

async function start() {
  setUpPad();
  $("clear-pad").addEventListener("click", () => { clearPad(); $("image-result").replaceChildren(); });
  $("classify-drawing").addEventListener("click", classifyDrawing);
  $("upload").addEventListener("change", uploadChosen);
  $("image-model").addEventListener("change", () => { applyImageModel(); $("image-result").replaceChildren(); });
  $("classify-text").addEventListener("click", classifyText);
  $("generate").addEventListener("click", generate);
  $("play").addEventListener("click", play);
  $("stop").addEventListener("click", stopPlaying);
  $("midi").addEventListener("click", downloadMidi);
  if (!abcjsReady()) {
    $("sheet").replaceChildren(el("p", { class: "error", role: "alert" },
      "abcjs is not installed on this server (run `make playground`): tunes show as ABC text, without sheet music or playback."));
  }
  try {
    fillModels(await loadModels());
  } catch (exc) {
    showError($("models-status"), `could not list the served models: ${exc.message}`);
  }
  const has = (task) => served.some((m) => m.task === task);
  for (const [id, task] of [["digits", "image-classification"], ["text", "text-classification"], ["tunes", "text-generation"]]) {
    if (served.length && !has(task)) {
      $(id).querySelector("h2").after(el("p", { class: "error" }, `this server serves no ${task} model (see Models below)`));
    }
  }
  refreshLatency();
  setInterval(refreshLatency, 5000);
  refreshFleet();
  setInterval(refreshFleet, 10000);
  document.body.dataset.ready = "true";
}

start();
