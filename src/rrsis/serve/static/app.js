// The rrsis page: open an image, send expressions to /api/predict, draw the masks on a map.
// A georeferenced image is drawn on Leaflet's Web Mercator map (the server warps it there);
// any other image on a flat pixel grid (L.CRS.Simple, one unit per pixel, rows downwards).
"use strict";

const PALETTE = [
  [230, 25, 75], [0, 130, 200], [60, 180, 75], [255, 200, 0],
  [145, 30, 180], [245, 130, 48], [70, 220, 220], [240, 50, 230],
];
const $ = (id) => document.getElementById(id);
const state = { source: null, view: null, map: null, bounds: null, layers: [], busy: false };
window.rrsis = state; // for scripts and tests that drive the page

function setState(name) { document.body.dataset.state = name; }

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
  if (message) setState("error");
}

async function call(path, body) {
  const response = await fetch(path, body ? { method: "POST", body } : {});
  let payload;
  try { payload = await response.json(); } catch (err) { payload = { error: response.statusText }; }
  if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  return payload;
}

function sourceForm() {
  const form = new FormData();
  if (state.source.file) form.append("image", state.source.file, state.source.file.name);
  else form.append("sample", state.source.sample);
  return form;
}

function busy(text) {
  state.busy = Boolean(text);
  $("progress").hidden = !text;
  $("run").disabled = Boolean(text) || !state.source;
  if (!text) return;
  const start = performance.now();
  const tick = () => {
    if (!state.busy) return;
    $("progress-text").textContent = `${text} ${((performance.now() - start) / 1000).toFixed(1)} s`;
    requestAnimationFrame(tick);
  };
  tick();
  setState("busy");
}

// ------------------------------------------------------------------ the image and its map
function newMap(view) {
  if (state.map) state.map.remove();
  state.layers = [];
  const geo = Boolean(view.map);
  const map = L.map("map", geo ? { zoomSnap: 0.25 } : { crs: L.CRS.Simple, minZoom: -6, zoomSnap: 0.25 });
  state.bounds = geo ? L.latLngBounds(view.map.bounds) : L.latLngBounds([[-view.height, 0], [0, view.width]]);
  const picture = geo ? view.map.png : view.preview_png;
  L.imageOverlay(`data:image/png;base64,${picture}`, state.bounds, { className: "rrsis-base" }).addTo(map);
  map.fitBounds(state.bounds);
  map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
  map.on("mousemove", (event) => { $("coords").textContent = describePoint(event.latlng, view); });
  map.on("mouseout", () => { $("coords").textContent = "move the cursor over the image"; });
  state.map = map;
}

function bilinear(grid, u, v) {
  // grid: rows from south to north, columns from west to east; u, v in [0, 1].
  const n = grid.length - 1;
  const x = Math.min(Math.max(u, 0), 1) * n, y = Math.min(Math.max(v, 0), 1) * n;
  const i = Math.min(Math.floor(x), n - 1), j = Math.min(Math.floor(y), n - 1);
  const fx = x - i, fy = y - j;
  return (grid[j][i] * (1 - fx) + grid[j][i + 1] * fx) * (1 - fy)
    + (grid[j + 1][i] * (1 - fx) + grid[j + 1][i + 1] * fx) * fy;
}

function describePoint(latlng, view) {
  if (!view.map) {
    $("coords").dataset.values = JSON.stringify({ col: latlng.lng, row: -latlng.lat });
    return `pixel col ${latlng.lng.toFixed(1)}, row ${(-latlng.lat).toFixed(1)}`;
  }
  const grid = view.map.lattice;
  const u = (latlng.lng - grid.lon[0]) / (grid.lon[1] - grid.lon[0]);
  const v = (latlng.lat - grid.lat[0]) / (grid.lat[1] - grid.lat[0]);
  const x = bilinear(grid.x, u, v), y = bilinear(grid.y, u, v);
  const [a, b, c, d, e, f] = view.transform;
  const det = a * e - b * d;
  const col = (e * (x - c) - b * (y - f)) / det, row = (-d * (x - c) + a * (y - f)) / det;
  $("coords").dataset.values = JSON.stringify({ x, y, lon: latlng.lng, lat: latlng.lat, col, row });
  return `${view.crs} x ${x.toFixed(2)}, y ${y.toFixed(2)}  ·  lon ${latlng.lng.toFixed(6)}, `
    + `lat ${latlng.lat.toFixed(6)}  ·  pixel col ${col.toFixed(1)}, row ${row.toFixed(1)}`;
}

async function openSource(source) {
  state.source = source;
  state.view = null;
  showError("");
  $("results").hidden = true;
  busy("reading the image…");
  try {
    const view = await call("/api/image", sourceForm());
    state.view = view;
    newMap(view);
    $("image-info").textContent = `${view.name}: ${view.width}×${view.height} px`
      + (view.georeferenced ? `, ${view.crs}` : ", not georeferenced");
    setState("image");
  } catch (err) {
    state.source = null;
    showError(err.message);
  } finally {
    busy("");
  }
}

// ------------------------------------------------------------------ masks and the legend
function colouredMask(base64, colour) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => {
      const canvas = document.createElement("canvas");
      canvas.width = img.width; canvas.height = img.height;
      const ctx = canvas.getContext("2d");
      ctx.drawImage(img, 0, 0);
      const data = ctx.getImageData(0, 0, img.width, img.height);
      for (let k = 0; k < data.data.length; k += 4) {
        const on = data.data[k] > 127;
        data.data[k] = colour[0]; data.data[k + 1] = colour[1]; data.data[k + 2] = colour[2];
        data.data[k + 3] = on ? 255 : 0;
      }
      ctx.putImageData(data, 0, 0);
      resolve(canvas.toDataURL("image/png"));
    };
    img.onerror = () => reject(new Error("cannot draw the mask"));
    img.src = `data:image/png;base64,${base64}`;
  });
}

function downloadLink(text, name, blob) {
  const link = document.createElement("a");
  link.textContent = text;
  link.download = name;
  link.href = URL.createObjectURL(blob);
  return link;
}

function bytes(base64, type) {
  const raw = atob(base64);
  const out = new Uint8Array(raw.length);
  for (let k = 0; k < raw.length; k++) out[k] = raw.charCodeAt(k);
  return new Blob([out], { type });
}

async function showResults(answer) {
  for (const layer of state.layers) { layer.mask.remove(); layer.polygons.remove(); }
  state.layers = [];
  const geo = Boolean(state.view.map);
  const opacity = Number($("opacity").value);
  const legend = $("legend");
  legend.replaceChildren();
  for (const [index, result] of answer.results.entries()) {
    const colour = PALETTE[index % PALETTE.length];
    const css = `rgb(${colour.join(",")})`;
    const url = await colouredMask(geo ? result.map_mask_png : result.mask_png, colour);
    const mask = L.imageOverlay(url, state.bounds, { opacity, className: "rrsis-mask" }).addTo(state.map);
    const polygons = L.geoJSON(result.polygons, {
      style: { color: css, weight: 1.5, fill: false },
      coordsToLatLng: geo ? undefined : (c) => L.latLng(-c[1], c[0]),
    }).addTo(state.map);
    state.layers.push({ mask, polygons, result });

    const item = document.createElement("li");
    const toggle = document.createElement("input");
    toggle.type = "checkbox"; toggle.checked = true;
    toggle.addEventListener("change", () => {
      for (const layer of [mask, polygons]) {
        if (toggle.checked) layer.addTo(state.map); else layer.remove();
      }
    });
    const label = document.createElement("label");
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = css;
    label.append(toggle, swatch, result.expression);
    const stats = document.createElement("div");
    stats.className = "stats muted";
    const decided = result.decided_by === "network" ? "network alone" : `rules: ${result.decided_by}`;
    stats.append(`${(result.foreground * 100).toFixed(2)} % foreground · `
      + `${(result.seconds * 1000).toFixed(0)} ms · ${decided} · `
      + `${result.polygons.features.length} polygon${result.polygons.features.length === 1 ? "" : "s"}`,
    document.createElement("br"));
    stats.append(downloadLink("mask PNG", `${result.file_stem}.png`, bytes(result.mask_png, "image/png")));
    if (result.mask_geotiff) {
      stats.append(downloadLink("GeoTIFF", `${result.file_stem}.tif`, bytes(result.mask_geotiff, "image/tiff")));
    }
    stats.append(downloadLink("GeoJSON", `${result.file_stem}.geojson`,
      new Blob([JSON.stringify(result.polygons)], { type: "application/geo+json" })));
    item.append(label, stats);
    legend.append(item);
  }
  $("warnings").textContent = answer.warnings.join(" ");
  $("results").hidden = false;
}

async function segment() {
  const expressions = $("expressions").value.split("\n").map((e) => e.trim()).filter(Boolean);
  if (!state.source) return showError("open an image or choose a sample first");
  if (!expressions.length) return showError("type at least one expression");
  showError("");
  const form = sourceForm();
  for (const expression of expressions) form.append("expression", expression);
  if ($("threshold").value !== "") form.append("threshold", $("threshold").value);
  busy(`segmenting ${expressions.length} expression${expressions.length > 1 ? "s" : ""}…`);
  try {
    await showResults(await call("/api/predict", form));
    setState("done");
  } catch (err) {
    showError(err.message);
  } finally {
    busy("");
  }
}

// ------------------------------------------------------------------ wiring
function wire() {
  $("file").addEventListener("change", () => {
    if ($("file").files.length) { $("sample").value = ""; openSource({ file: $("file").files[0] }); }
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    if (e.dataTransfer.files.length) { $("sample").value = ""; openSource({ file: e.dataTransfer.files[0] }); }
  });
  $("sample").addEventListener("change", () => {
    const option = $("sample").selectedOptions[0];
    if (!option.value) return;
    if (!$("expressions").value.trim()) $("expressions").value = option.dataset.expressions;
    openSource({ sample: option.value });
  });
  $("run").addEventListener("click", segment);
  $("expressions").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) segment();
  });
  $("opacity").addEventListener("input", () => {
    for (const layer of state.layers) layer.mask.setOpacity(Number($("opacity").value));
  });
}

async function start() {
  wire();
  try {
    const health = await call("/api/health");
    $("model").textContent = `model ${health.model}`;
    const { samples } = await call("/api/samples");
    for (const sample of samples) {
      const option = document.createElement("option");
      option.value = sample.name; option.textContent = sample.name;
      option.dataset.expressions = sample.expressions.join("\n");
      $("sample").append(option);
    }
    setState("ready");
  } catch (err) {
    showError(`the server does not answer: ${err.message}`);
  }
}

start();
