// The sfclip explorer page: plain DOM and fetch, no framework, no external assets.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, row: null, maxUpload: 20 * 1024 * 1024 };

function show(id, text) {
  const el = $(id);
  el.textContent = text || "";
  el.hidden = !text;
}

// POST a form to the API; resolves to the JSON answer, or throws an Error whose message is for the page.
async function post(path, fields, withImage) {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  if (withImage) {
    if (state.file) form.append("file", state.file, state.file.name);
    else if (state.row !== null) form.append("row", String(state.row));
    else throw new Error("choose an image first: upload one, or pick a search result");
  }
  return request(path, { method: "POST", body: form });
}

async function request(path, options) {
  let resp;
  try {
    resp = await fetch(path, options);
  } catch (e) {
    throw new Error("the server did not answer (is sfclip serve still running?)");
  }
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (!resp.ok || data === null) {
    throw new Error((data && data.error) || `the server answered ${resp.status} ${resp.statusText}`);
  }
  return data;
}

async function busy(button, msgId, work) {
  show(msgId, "");
  button.disabled = true;
  try { await work(); } catch (e) { show(msgId, e.message); } finally { button.disabled = false; }
}

function resultCard(r) {
  const card = document.createElement("div");
  card.className = "result";
  card.dataset.row = r.row;
  if (r.image) {
    const img = document.createElement("img");
    img.src = `/api/thumb/${r.row}`;
    img.alt = r.caption || r.key;
    img.loading = "lazy";
    card.appendChild(img);
    card.title = "use this image";
    card.addEventListener("click", () => chooseRow(r));
  }
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = `#${r.rank}  ${r.score.toFixed(3)}`;
  const caption = document.createElement("div");
  caption.className = "caption";
  caption.textContent = r.caption || r.key;
  card.append(score, caption);
  return card;
}

function fillResults(id, results) {
  const box = $(id);
  box.replaceChildren(...results.map(resultCard));
}

function chooseRow(r) {
  state.file = null;
  state.row = r.row;
  $("upload").value = "";
  $("current-image").src = `/api/thumb/${r.row}`;
  $("current-name").textContent = `index row ${r.row} (${r.key})${r.caption ? ": " + r.caption : ""}`;
  $("current").hidden = false;
  show("image-msg", "");
}

function chooseFile(file) {
  if (!file) return;
  if (file.size > state.maxUpload) {
    show("image-msg", `the file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ` +
      `${(state.maxUpload / 1048576).toFixed(1)} MB (sfclip serve --max-upload-mb)`);
    $("upload").value = "";
    return;
  }
  state.file = file;
  state.row = null;
  show("image-msg", "");
  $("current-image").src = URL.createObjectURL(file);
  $("current-name").textContent = file.name;
  $("current").hidden = false;
}

async function loadInfo() {
  try {
    const info = await request("/api/info");
    state.maxUpload = info.max_upload_bytes;
    $("templates").value = info.default_template;
    $("k").max = info.max_k;
    let text = `checkpoint ${info.checkpoint || "?"} (${info.model || "model"}, ${info.image_size} px)`;
    if (info.index) text += ` · index ${info.index.folder}: ${info.index.rows} ${info.index.kind}s`;
    $("info").textContent = text;
    if (info.index) $("search-note").textContent = info.index.backend;
    show("index-msg", info.index_error);
  } catch (e) {
    show("index-msg", e.message);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo();
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy($("search-btn"), "search-msg", async () => {
      $("results").replaceChildren();
      const data = await post("/api/search", { query: $("query").value, k: $("k").value }, false);
      $("search-note").textContent = data.backend;
      fillResults("results", data.results);
    });
  });
  $("upload").addEventListener("change", (ev) => chooseFile(ev.target.files[0]));
  $("zeroshot-btn").addEventListener("click", () => busy($("zeroshot-btn"), "zeroshot-msg", async () => {
    const data = await post("/api/zeroshot", { classes: $("classes").value, templates: $("templates").value }, true);
    const rows = data.labels.map((l) => {
      const tr = document.createElement("tr");
      const name = document.createElement("td");
      name.className = "label";
      name.textContent = l.label;
      const prob = document.createElement("td");
      prob.className = "prob";
      prob.textContent = `${(100 * l.prob).toFixed(1)}%`;
      const barCell = document.createElement("td");
      barCell.className = "bar-cell";
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${(100 * l.prob).toFixed(1)}%`;
      barCell.appendChild(bar);
      tr.append(name, prob, barCell);
      return tr;
    });
    $("zeroshot-results").tBodies[0].replaceChildren(...rows);
  }));
  $("heatmap-btn").addEventListener("click", () => busy($("heatmap-btn"), "heatmap-msg", async () => {
    const data = await post("/api/heatmap", { prompt: $("prompt").value, readout: $("readout").value }, true);
    $("heatmap-img").src = data.overlay;
    $("heatmap-scale").src = data.scale;
    $("heatmap-min").textContent = data.min.toFixed(3);
    $("heatmap-max").textContent = data.max.toFixed(3);
    $("heatmap").hidden = false;
  }));
  $("similar-btn").addEventListener("click", () => busy($("similar-btn"), "similar-msg", async () => {
    const data = await post("/api/similar", { k: $("k").value }, true);
    fillResults("similar-results", data.results);
  }));
});
