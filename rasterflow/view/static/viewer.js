// The rasterflow map: layers of one URI (/api/layers), raster tiles drawn by the server with the
// bands, time slice and colour limits chosen here, polygons as GeoJSON or vector tiles.
/* global maplibregl */  // vendor/maplibre-gl/maplibre-gl.js, loaded by index.html

const LABEL_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const statusLine = document.getElementById("status");
const panel = document.getElementById("layers");
const uris = new URLSearchParams(location.search).getAll("uri");

const map = new maplibregl.Map({
  container: "map",
  style: { version: 8, sources: {}, layers: [] },
  center: [0, 0], zoom: 1, fadeDuration: 0, attributionControl: { compact: true },
});
map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
map.addControl(new maplibregl.ScaleControl({ maxWidth: 140, unit: "metric" }), "bottom-right");

function say(text, error = false) {
  statusLine.textContent = text;
  statusLine.className = error ? "error" : "";
}

function element(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function row(label, ...controls) {
  return element("div", { className: "row" }, element("label", { textContent: label }), ...controls);
}

function fmt(value) {
  const abs = Math.abs(value);
  return abs !== 0 && (abs < 0.01 || abs >= 1e5) ? value.toExponential(2) : String(+value.toFixed(3));
}

// ------------------------------------------------------------------ raster layers

function defaultChannels(layer) {
  const names = layer.bands.map((b) => b.name.toLowerCase().split(":").pop());
  const rgb = ["red", "green", "blue"].map((n) => names.indexOf(n));
  if (rgb.every((i) => i >= 0)) return rgb;
  if (layer.bands.length >= 3 && layer.bands.every((b) => b.kind === "values")) return [0, 1, 2];
  return [0];
}

function tileUrl(layer, state) {
  const limits = state.channels.map((c) => state.limits[c].join(",")).join(",");
  const query = `time=${state.time}&bands=${state.channels.join(",")}&limits=${limits}`;
  return `${location.origin}${layer.tiles}?${query}`;
}

function rasterLegend(layer, state) {
  const box = element("div", { className: "legend" });
  if (state.channels.length === 3) {
    ["#d62728", "#2ca02c", "#1f77b4"].forEach((colour, i) => {
      const band = layer.bands[state.channels[i]];
      const [low, high] = state.limits[state.channels[i]];
      box.append(element("div", { className: "note" },
        element("span", { className: "swatch", style: `background:${colour}` }),
        `${"RGB"[i]}: ${band.name}  ${fmt(low)} – ${fmt(high)}`));
    });
    return box;
  }
  const band = layer.bands[state.channels[0]];
  if (band.kind === "classes") {
    const list = element("div", { className: "classes" });
    band.classes.forEach((value, i) => list.append(element("div", {},
      element("span", { className: "swatch", style: `background:${band.colours[i]}` }), `${band.name} = ${value}`)));
    box.append(list);
    return box;
  }
  const [low, high] = state.limits[state.channels[0]];
  const ramp = layer.ramps[band.kind];
  box.append(
    element("div", { className: "note", textContent: band.kind === "probability" ? `${band.name} probability` : band.name }),
    element("div", { className: "ramp", style: `background:linear-gradient(to right, ${ramp.join(",")})` }),
    element("div", { className: "ramp-labels" },
      element("span", { textContent: fmt(low) }), element("span", { textContent: fmt(high) })));
  return box;
}

function addRaster(layer, before) {
  const state = {
    time: 0, channels: defaultChannels(layer), opacity: 1,
    limits: layer.bands.map((b) => [b.low, b.high]),
  };
  map.addSource(layer.id, {
    type: "raster", tiles: [tileUrl(layer, state)], tileSize: 256, bounds: layer.bounds,
    minzoom: layer.minzoom, maxzoom: layer.maxzoom,
  });
  map.addLayer({ id: layer.id, type: "raster", source: layer.id, paint: { "raster-opacity": 1,
    "raster-resampling": "nearest" } }, before);

  const box = element("section", { className: "layer" });
  const refresh = () => { map.getSource(layer.id).setTiles([tileUrl(layer, state)]); draw(); };
  const draw = () => {
    const visible = element("input", { type: "checkbox", checked: true });
    visible.checked = map.getLayoutProperty(layer.id, "visibility") !== "none";
    visible.onchange = () => map.setLayoutProperty(layer.id, "visibility", visible.checked ? "visible" : "none");
    box.replaceChildren(element("h2", { title: layer.uri }, visible, " ", layer.title));

    const mode = element("select", {},
      ...(layer.bands.length >= 3 ? [element("option", { value: "rgb", textContent: "RGB" })] : []),
      element("option", { value: "one", textContent: "one band" }));
    mode.value = state.channels.length === 3 ? "rgb" : "one";
    mode.onchange = () => {
      state.channels = mode.value === "rgb" ? defaultChannels(layer).concat([0, 1, 2]).slice(0, 3) : [state.channels[0]];
      if (mode.value === "rgb" && new Set(state.channels).size < 3) state.channels = [0, 1, 2];
      refresh();
    };
    box.append(row("bands", mode));
    state.channels.forEach((band, i) => {
      const pick = element("select", {}, ...layer.bands.map((b, n) => element("option", { value: n, textContent: b.name })));
      pick.value = band;
      pick.onchange = () => { state.channels[i] = +pick.value; refresh(); };
      const [low, high] = state.limits[band].map((v) => element("input", { type: "number", value: fmt(v), step: "any" }));
      const setLimits = () => { state.limits[band] = [+low.value, +high.value]; refresh(); };
      low.onchange = setLimits; high.onchange = setLimits;
      box.append(row(state.channels.length === 3 ? "RGB"[i] : "band", pick, low, high));
    });
    const kinds = new Set(state.channels.map((c) => layer.bands[c].kind));
    const source = kinds.has("probability") ? "probabilities, drawn 0–1"
      : kinds.has("classes") ? "one colour per class"
        : `colour limits from ${layer.limits_from === "statistics"
          ? "the stored band statistics (2–98 %)" : "a sample of the store (2–98 %)"}`;
    box.append(element("div", { className: "note", textContent: source }));
    if (layer.times.length > 1) {
      const slider = element("input", { type: "range", min: 0, max: layer.times.length - 1, step: 1, value: state.time });
      const label = element("span", { textContent: layer.times[state.time] });
      slider.oninput = () => { label.textContent = layer.times[+slider.value]; };
      slider.onchange = () => { state.time = +slider.value; refresh(); };
      box.append(row("time", slider, label));
    } else {
      box.append(row("time", element("span", { textContent: layer.times[0] })));
    }
    const opacity = element("input", { type: "range", min: 0, max: 1, step: 0.05, value: state.opacity });
    opacity.oninput = () => { state.opacity = +opacity.value; map.setPaintProperty(layer.id, "raster-opacity", state.opacity); };
    box.append(row("opacity", opacity), rasterLegend(layer, state));
    box.append(element("div", { className: "note", textContent:
      `${layer.levels} level${layer.levels > 1 ? "s" : ""}, zoom ${layer.minzoom}–${layer.maxzoom}, ${layer.dtype}` }));
  };
  draw();
  return box;
}

// ------------------------------------------------------------------ polygon layers

function addVector(layer) {
  const source = layer.format === "geojson"
    ? { type: "geojson", data: `${location.origin}${layer.data}` }
    : { type: "vector", tiles: [`${location.origin}${layer.data}`], minzoom: 0, maxzoom: 14, bounds: layer.bounds };
  map.addSource(layer.id, source);
  const sourceLayer = layer.format === "geojson" ? {} : { "source-layer": "polygons" };
  const labels = layer.labels.length ? layer.labels : ["polygons"];
  const colour = labels.length > 1
    ? ["match", ["to-string", ["get", "label"]], ...labels.flatMap((l, i) => [l, LABEL_COLOURS[i % LABEL_COLOURS.length]]), "#555"]
    : LABEL_COLOURS[0];
  map.addLayer({ id: `${layer.id}-fill`, type: "fill", source: layer.id, ...sourceLayer,
    paint: { "fill-color": colour, "fill-opacity": 0.45 } });
  map.addLayer({ id: `${layer.id}-line`, type: "line", source: layer.id, ...sourceLayer,
    paint: { "line-color": colour, "line-width": 1.5 } });

  const visible = element("input", { type: "checkbox", checked: true });
  visible.onchange = () => ["fill", "line"].forEach((k) =>
    map.setLayoutProperty(`${layer.id}-${k}`, "visibility", visible.checked ? "visible" : "none"));
  const opacity = element("input", { type: "range", min: 0, max: 1, step: 0.05, value: 0.45 });
  opacity.oninput = () => map.setPaintProperty(`${layer.id}-fill`, "fill-opacity", +opacity.value);
  const legend = element("div", { className: "legend classes" }, ...labels.map((l, i) => element("div", {},
    element("span", { className: "swatch", style: `background:${LABEL_COLOURS[i % LABEL_COLOURS.length]}` }), l)));
  return element("section", { className: "layer" },
    element("h2", { title: layer.uri }, visible, " ", layer.title),
    element("div", { className: "note", textContent:
      `${layer.polygons} polygon${layer.polygons === 1 ? "" : "s"}, ${layer.format === "geojson" ? "GeoJSON" : "vector tiles"}` }),
    row("opacity", opacity), legend);
}

// ------------------------------------------------------------------ start

function union(boxes) {
  return boxes.reduce((a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])]);
}

async function describe(target) {
  const answer = await fetch(`/api/layers?uri=${encodeURIComponent(target)}`);
  const body = await answer.json();
  if (!answer.ok) throw new Error(body.detail || answer.statusText);
  return body;
}

async function open(targets) {
  document.getElementById("uri").value = targets.join(" ");
  say(`opening ${targets.join(", ")} …`);
  const answers = await Promise.all(targets.map(describe));
  const basemap = answers[0].basemap;
  if (basemap) {
    map.addSource("basemap", { type: "raster", tiles: [basemap], tileSize: 256 });
    map.addLayer({ id: "basemap", type: "raster", source: "basemap" });
  }
  const all = answers.flatMap((a) => a.layers);
  const polygons = all.filter((l) => l.kind === "vector");
  polygons.forEach((l) => panel.append(addVector(l)));
  const firstVector = polygons.length ? `${polygons[0].id}-fill` : undefined;
  all.filter((l) => l.kind === "raster").forEach((l) => panel.append(addRaster(l, firstVector)));
  map.fitBounds(union(all.map((l) => l.bounds)), { padding: 40, animate: false });
  say(`${all.length} layer${all.length === 1 ? "" : "s"}`);
  map.once("idle", () => { document.body.dataset.ready = "true"; });
}

document.getElementById("open").onsubmit = (event) => {
  event.preventDefault();
  const targets = document.getElementById("uri").value.trim().split(/\s+/).filter(Boolean);
  if (targets.length) location.search = "?" + targets.map((t) => `uri=${encodeURIComponent(t)}`).join("&");
};

map.on("error", (event) => say(event.error ? event.error.message : "map error", true));
map.on("load", () => {
  if (uris.length) open(uris).catch((error) => say(error.message || String(error), true));
  else say("give the URI of a store, an index or polygons");
});
