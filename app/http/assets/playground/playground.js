// fusion-serve playground: pick a model, give any of image / text / audio, see the calibrated probabilities and
// why (POST /v1/models/{name}/predict?explain=true). No dependencies; charts are plain SVG.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const KEY_STORAGE = "fusion-serve-api-key";
const TOP_K = 3;
const state = { models: [], image: null, audio: null, recorder: null };

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// ---- talking to the service -------------------------------------------------------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function api(path, init = {}) {
  const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    const error = body && body.error;
    throw new ApiError(response.status, (error && (error.message || error)) || `HTTP ${response.status}`);
  }
  return body;
}

function setStatus(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

function explainError(e) {
  if (e.status === 401) return "This service needs an API key: type it in the field above.";
  if (e.status === 403) return "The service does not accept this API key.";
  return e.message;
}

async function loadModels() {
  const select = $("model");
  try {
    const list = await api("v1/models");
    const previous = select.value;
    state.models = list.models;
    select.replaceChildren(...list.models.map((m) => new Option(m.default ? `${m.name} (default)` : m.name, m.name)));
    select.value = list.models.some((m) => m.name === previous) ? previous : list.default;
    applyModel();
    setStatus("");
  } catch (e) {
    state.models = [];
    select.replaceChildren();
    setStatus(explainError(e), true);
  }
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value) || null;
}

function applyModel() {
  const model = currentModel();
  if (!model) return;
  for (const modality of ["image", "text", "audio"]) {
    $(`${modality}-input`).classList.toggle("disabled", !model.modalities.includes(modality));
  }
  $("model-info").textContent = `${model.name} v${model.version}: ${model.description} ` +
    `Labels: ${model.labels.join(", ")}. Inputs: ${model.modalities.join(", ")}. Fusion: ${model.fusion}.`;
}

// ---- inputs ----------------------------------------------------------------------------------------------------

function setImage(file) {
  state.image = file || null;
  const preview = $("image-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  $("drop-hint").hidden = !!file;
  if (file) preview.src = URL.createObjectURL(file);
  else preview.removeAttribute("src");
}

function setAudio(blob, name, note) {
  state.audio = blob ? { blob, name } : null;
  const preview = $("audio-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !blob;
  if (blob) preview.src = URL.createObjectURL(blob);
  else preview.removeAttribute("src");
  $("audio-status").textContent = blob ? note || name : "No audio.";
}

// A recording (WebM/Opus from Chromium, Ogg/Opus from Firefox, MP4/AAC from Safari) decoded by the browser itself,
// mixed down to mono and written as 16-bit PCM WAV: a format every deployment of the service decodes.
async function toWav(blob) {
  const context = new (window.AudioContext || window.webkitAudioContext)();
  try {
    const buffer = await context.decodeAudioData(await blob.arrayBuffer());
    const mono = new Float32Array(buffer.length);
    for (let c = 0; c < buffer.numberOfChannels; c++) {
      const channel = buffer.getChannelData(c);
      for (let i = 0; i < buffer.length; i++) mono[i] += channel[i] / buffer.numberOfChannels;
    }
    return { wav: encodeWav(mono, buffer.sampleRate), seconds: buffer.duration };
  } finally {
    context.close();
  }
}

function encodeWav(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([view], { type: "audio/wav" });
}

async function startRecording() {
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $("audio-status").textContent = "This browser cannot record here (it needs https or localhost); pick a file.";
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    $("audio-status").textContent = `No microphone: ${e.message}`;
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  const started = performance.now();
  const ticker = setInterval(() => {
    $("audio-status").textContent = `Recording… ${((performance.now() - started) / 1000).toFixed(1)} s`;
  }, 100);
  recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
  recorder.onstop = async () => {
    clearInterval(ticker);
    stream.getTracks().forEach((t) => t.stop());
    $("record").classList.remove("recording");
    $("record").disabled = false;
    try {
      const { wav, seconds } = await toWav(new Blob(chunks, { type: recorder.mimeType }));
      setAudio(wav, "recording.wav", `Recorded ${seconds.toFixed(1)} s (sent as WAV).`);
    } catch (e) {
      setAudio(null);
      $("audio-status").textContent = `Could not read the recording: ${e.message}`;
    }
  };
  state.recorder = recorder;
  recorder.start();
  $("record").classList.add("recording");
  $("record").disabled = true;
  $("stop").disabled = false;
}

function stopRecording() {
  if (state.recorder && state.recorder.state !== "inactive") state.recorder.stop();
  state.recorder = null;
  $("stop").disabled = true;
}

// ---- predicting ------------------------------------------------------------------------------------------------

async function predict() {
  const model = currentModel();
  if (!model) { await loadModels(); return; }
  const form = new FormData();
  const text = $("text").value;
  if (state.image && model.modalities.includes("image")) form.append("image", state.image, state.image.name || "image");
  if (text.trim() && model.modalities.includes("text")) form.append("text", text);
  if (state.audio && model.modalities.includes("audio")) form.append("audio", state.audio.blob, state.audio.name);
  if (![...form.keys()].length) { setStatus("Give at least one input.", true); return; }
  $("predict").disabled = true;
  setStatus("Predicting…");
  try {
    const path = `v1/models/${encodeURIComponent(model.name)}/predict?explain=true&top_k=${Math.min(TOP_K, model.labels.length)}`;
    const body = await api(path, { method: "POST", body: form });
    render(model, body);
    setStatus(`Answered in ${body.timing.total_ms.toFixed(1)} ms.`);
  } catch (e) {
    setStatus(explainError(e), true);
  } finally {
    $("predict").disabled = false;
  }
}

// ---- results ---------------------------------------------------------------------------------------------------

const fmt = (x) => x.toFixed(3);

function svgElement(name, attributes, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// One row per label, bar length proportional to its probability (the full width is 1).
function probabilityChart(labels, probabilities, topLabel) {
  const row = 22, left = 90, width = 420, right = 60;
  const svg = svgElement("svg", { viewBox: `0 0 ${left + width + right} ${labels.length * row + 4}`, role: "img",
                                  "aria-label": "Probability of each label" });
  labels.forEach((label, i) => {
    const p = probabilities[label], y = i * row + 2;
    svg.append(svgElement("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, label));
    svg.append(svgElement("rect", { class: label === topLabel ? "bar top" : "bar", x: left, y: y + 3,
                                    width: (p * width).toFixed(2), height: row - 6, "data-label": label,
                                    "data-value": String(p) }));
    svg.append(svgElement("text", { x: left + p * width + 6, y: y + 14 }, fmt(p)));
  });
  svg.append(svgElement("line", { class: "axis", x1: left, x2: left, y1: 0, y2: labels.length * row + 4 }));
  return svg;
}

// For each explained label, one diverging bar per sent input around a zero line: its Shapley value.
function attributionChart(explanation, top) {
  const row = 20, head = 24, left = 90, half = 210, right = 60;
  const modalities = Object.keys(explanation.modalities);
  const values = top.flatMap((t) => modalities.map((m) => explanation.attributions[t.label][m]));
  const scale = half / Math.max(1e-9, ...values.map(Math.abs));
  const zero = left + half;
  const height = top.length * (head + modalities.length * row) + 4;
  const svg = svgElement("svg", { viewBox: `0 0 ${left + 2 * half + right} ${height}`, role: "img",
                                  "aria-label": "Each input's contribution to each top label" });
  let y = 2;
  for (const t of top) {
    const shares = explanation.attributions[t.label];
    svg.append(svgElement("text", { class: "group", x: 0, y: y + 16 },
      `label ${t.label}: p = ${fmt(t.probability)} = ${fmt(explanation.baseline)} + ${modalities
        .map((m) => fmt(shares[m])).join(" + ").replaceAll("+ -", "− ")}`));
    y += head;
    for (const m of modalities) {
      const v = shares[m], length = Math.abs(v) * scale;
      svg.append(svgElement("text", { x: left - 8, y: y + 14, "text-anchor": "end" }, m));
      svg.append(svgElement("rect", { class: v >= 0 ? "bar pos" : "bar neg", x: (v >= 0 ? zero : zero - length).toFixed(2),
                                      y: y + 3, width: length.toFixed(2), height: row - 6, "data-label": t.label,
                                      "data-modality": m, "data-value": String(v) }));
      svg.append(svgElement("text", { x: v >= 0 ? zero + length + 6 : zero - length - 6, y: y + 14,
                                      "text-anchor": v >= 0 ? "start" : "end" }, (v >= 0 ? "+" : "") + fmt(v)));
      y += row;
    }
    svg.append(svgElement("line", { class: "axis", x1: zero, x2: zero, y1: y - modalities.length * row, y2: y }));
  }
  return svg;
}

function render(model, body) {
  const e = body.explanation;
  const answer = body.top[0];
  $("results").hidden = false;
  $("answer").innerHTML = "";
  $("answer").append("Answer: ", Object.assign(document.createElement("b"), { textContent: answer.label }),
                     ` (p = ${fmt(answer.probability)}) from ${body.modalities.join(" + ")}`);
  $("answer").dataset.label = answer.label;
  const verdict = $("verdict");
  const own = Object.entries(e.modalities);
  if (e.conflict) {
    verdict.className = "conflict";
    verdict.textContent = "Conflict: " + e.conflicting.map((m) =>
      `${m} alone says ${e.modalities[m].label} (p = ${fmt(e.modalities[m].probability)})`).join("; ") +
      `, but the answer is ${answer.label}.`;
  } else if (e.agreement) {
    verdict.className = "agree";
    verdict.textContent = own.length > 1 ? `Every input alone agrees on ${own[0][1].label}.` :
      `One input: ${own[0][0]}.`;
  } else {
    verdict.className = "";
    verdict.textContent = "The inputs alone disagree (" + own.map(([m, a]) => `${m}: ${a.label}`).join(", ") +
      "); none confidently contradicts the answer.";
  }
  verdict.dataset.conflict = String(e.conflict);
  $("probabilities").replaceChildren(probabilityChart(model.labels, body.probabilities, answer.label));
  $("attributions").replaceChildren(attributionChart(e, body.top));
  const rows = own.map(([m, a]) => {
    const tr = document.createElement("tr");
    tr.className = e.conflicting.includes(m) ? "conflict" : "";
    tr.dataset.modality = m;
    for (const cell of [m, a.label, fmt(a.probability), e.conflicting.includes(m) ? "conflict" : ""]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: cell }));
    }
    return tr;
  });
  const header = document.createElement("tr");
  for (const h of ["input", "its answer", "probability", ""]) header.append(Object.assign(document.createElement("th"), { textContent: h }));
  $("alone").replaceChildren(header, ...rows);
  $("fusion").textContent = describeFusion(e.fusion);
  $("raw").textContent = JSON.stringify(body, null, 2);
}

function describeFusion(fusion) {
  const list = (o) => Object.entries(o).map(([m, v]) => `${m} ${fmt(v)}`).join(", ");
  if (fusion.weights) return `Fusion (${fusion.type}): weights ${list(fusion.weights)}.`;
  if (fusion.gates) return `Fusion (${fusion.type}): gates ${list(fusion.gates)}.`;
  if (fusion.attention) {
    return `Fusion (${fusion.type}): [CLS] attention to ` +
      fusion.attention.map((layer, i) => `${list(layer)} (layer ${i + 1})`).join("; ") + ".";
  }
  return `Fusion (${fusion.type}): no internals to show for this type.`;
}

// ---- wiring ----------------------------------------------------------------------------------------------------

function init() {
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => { sessionStorage.setItem(KEY_STORAGE, key.value.trim()); loadModels(); });
  $("model").addEventListener("change", applyModel);
  const drop = $("drop");
  drop.addEventListener("click", () => $("image-file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("image-file").click(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) setImage(e.dataTransfer.files[0]);
  });
  $("image-file").addEventListener("change", (e) => setImage(e.target.files[0]));
  $("audio-file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setAudio(file, file.name, `${file.name} (${(file.size / 1024).toFixed(0)} KiB)`);
  });
  $("record").addEventListener("click", startRecording);
  $("stop").addEventListener("click", stopRecording);
  for (const button of document.querySelectorAll("[data-clear]")) {
    button.addEventListener("click", () => {
      if (button.dataset.clear === "image") { setImage(null); $("image-file").value = ""; }
      else { setAudio(null); $("audio-file").value = ""; }
    });
  }
  $("predict").addEventListener("click", predict);
  loadModels();
}

document.addEventListener("DOMContentLoaded", init);
