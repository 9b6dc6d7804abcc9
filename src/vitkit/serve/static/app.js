// vitkit serve's page: plain JS, no dependencies. It asks /v1/model which endpoints are live, shows their
// panels, and sends the chosen image to each; the controls re-ask one endpoint. `document.body.dataset`
// records progress (state, done) so a headless browser can wait for results.
"use strict";

const $ = (id) => document.getElementById(id);
// latest: endpoint → the number of its newest request; an older answer arriving later is dropped, so
// changing an option twice quickly (method, then head) never ends on the first choice's result
const state = { file: null, info: null, pending: 0, done: new Set(), latest: {} };

function fmtParams(n) {
  if (typeof n !== "number") return "?";
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " B";
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " K";
  return String(n);
}

function fmtNumber(x) {
  return Math.abs(x) >= 1000 || (Math.abs(x) < 0.01 && x !== 0) ? x.toExponential(2) : x.toPrecision(3);
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function option(value, text) {
  const el = document.createElement("option");
  el.value = String(value);
  el.textContent = text;
  return el;
}

function fact(name, value) {
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  $("model-card").append(dt, dd);
}

function pngUrl(b64) {
  return "data:image/png;base64," + b64;
}

function showImage(id, b64) {
  const img = $(id);
  img.src = pngUrl(b64);
  img.hidden = false;
}

function renderModel(info) {
  const size = Array.isArray(info.image_size) ? info.image_size.join("×") : info.image_size;
  fact("model", info.what || info.name || "?");
  fact("checkpoint", info.checkpoint ? info.checkpoint.split("/").slice(-3).join("/") : "(in memory)");
  fact("params", fmtParams(info.parameters));
  fact("input", size ? size + " px" : "?");
  fact("device", info.device || "?");
  fact("dtype", info.dtype || "?");
  for (const endpoint of info.endpoints) $(endpoint + "-panel").hidden = false;
  const enc = info.encoder;
  if (enc) {
    for (let i = 0; i < enc.depth; i++) $("layer").append(option(i, "layer " + i));
    $("layer").value = String(enc.depth - 1);
    $("head").append(option("", "mean of heads"));
    for (let h = 0; h < enc.num_heads; h++) $("head").append(option(h, "head " + h));
  }
}

function optionsFor(endpoint) {
  if (endpoint === "classify") return { top_k: $("top-k").value };
  if (endpoint === "attention") {
    const cls = $("method").value === "cls";
    const opts = { method: $("method").value };
    if (cls) opts.layer = $("layer").value;
    if (cls && $("head").value !== "") opts.head = $("head").value;
    return opts;
  }
  if (endpoint === "reconstruct") return { mask_ratio: $("mask-ratio").value, seed: $("seed").value || "0" };
  return {};
}

async function ask(endpoint) {
  if (!state.file) return;
  const form = new FormData();
  form.append("image", state.file);
  for (const [k, v] of Object.entries(optionsFor(endpoint))) form.append(k, v);
  const ticket = (state.latest[endpoint] = (state.latest[endpoint] || 0) + 1);
  const stale = () => ticket !== state.latest[endpoint];
  state.pending += 1;
  document.body.dataset.state = "busy";
  setStatus("running " + endpoint + "…");
  try {
    const response = await fetch("/v1/" + endpoint, { method: "POST", body: form });
    const body = await response.json();
    if (stale()) return;  // a newer request for this endpoint is on its way: its answer is shown
    if (!response.ok) throw new Error(body.error || response.statusText);
    RENDER[endpoint](body);
    $(endpoint + "-latency").textContent = body.latency_ms.toFixed(1) + " ms";
    state.done.add(endpoint);
    setStatus("done");
  } catch (err) {
    if (!stale()) setStatus(endpoint + ": " + err.message, true);
  } finally {
    state.pending -= 1;
    document.body.dataset.done = Array.from(state.done).sort().join(" ");
    if (state.pending === 0) document.body.dataset.state = "idle";
  }
}

const RENDER = {
  classify(body) {
    const list = $("bars");
    list.replaceChildren();
    for (const p of body.predictions) {
      const li = document.createElement("li");
      const name = document.createElement("span");
      const track = document.createElement("span");
      const bar = document.createElement("span");
      const pct = document.createElement("span");
      name.className = "bar-label";
      name.textContent = p.label;
      track.className = "bar-track";
      bar.className = "bar";
      bar.style.width = (100 * p.score).toFixed(2) + "%";
      pct.className = "bar-score";
      pct.textContent = (100 * p.score).toFixed(1) + "%";
      track.append(bar);
      li.append(name, track, pct);
      list.append(li);
    }
  },
  attention(body) {
    showImage("attention-overlay", body.overlay);
    const o = body.options;
    const what = o.method === "rollout" ? "attention rollout through every layer"
      : "[CLS] attention, layer " + o.layer + ", " + (o.head === null ? "mean of heads" : "head " + o.head);
    $("attention-caption").textContent = what + " · patch grid " + body.grid.join("×");
  },
  reconstruct(body) {
    const titles = { original: "original", masked: "masked input", reconstruction: "reconstruction",
      reconstruction_visible: "reconstruction + visible patches" };
    const box = $("reconstruction");
    box.replaceChildren();
    for (const [key, title] of Object.entries(titles)) {
      const fig = document.createElement("figure");
      const img = document.createElement("img");
      const cap = document.createElement("figcaption");
      img.src = pngUrl(body[key]);
      img.alt = title;
      img.className = "result";
      cap.textContent = title;
      fig.append(img, cap);
      box.append(fig);
    }
    $("reconstruct-loss").textContent = "loss " + fmtNumber(body.loss);
  },
  depth(body) {
    showImage("depth-image", body.image);
    const legend = body.legend;
    $("depth-gradient").style.background = "linear-gradient(to right, " + legend.colors.join(", ") + ")";
    $("depth-min").textContent = fmtNumber(legend.min);
    $("depth-max").textContent = fmtNumber(legend.max);
    $("depth-label").textContent = legend.label + (legend.label === "depth" ? " (near is bright)" : "");
    $("depth-legend").hidden = false;
  },
  segment(body) {
    showImage("segment-overlay", body.overlay);
    const list = $("segment-legend");
    list.replaceChildren();
    for (const c of body.classes) {
      const li = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = c.color;
      li.append(swatch, document.createTextNode(c.name + " · " + (100 * c.fraction).toFixed(1) + "%"));
      list.append(li);
    }
  },
};

function choose(file) {
  if (!file) return;
  state.file = file;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").hidden = true;
  for (const endpoint of state.info.endpoints) ask(endpoint);
}

function wire() {
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  $("top-k").addEventListener("change", () => ask("classify"));
  $("method").addEventListener("change", () => {
    const cls = $("method").value === "cls";
    $("layer").disabled = !cls;
    $("head").disabled = !cls;
    ask("attention");
  });
  $("layer").addEventListener("change", () => ask("attention"));
  $("head").addEventListener("change", () => ask("attention"));
  $("mask-ratio").addEventListener("input", () => { $("mask-ratio-value").textContent = $("mask-ratio").value; });
  $("mask-ratio").addEventListener("change", () => ask("reconstruct"));
  $("seed").addEventListener("change", () => ask("reconstruct"));
}

async function start() {
  wire();
  try {
    const response = await fetch("/v1/model");
    state.info = await response.json();
    renderModel(state.info);
    document.body.dataset.state = "ready";
    setStatus("ready: choose an image");
  } catch (err) {
    setStatus("cannot reach the server: " + err.message, true);
  }
}

start();
