// qcbed app: the page side of qcbed.gui.server (plain JavaScript, no build step).
// Coordinates: display pixels (row, col) as in docs/conventions.md; the SVG overlays
// use x = col, y = row over the view extent sent by /api/info.
"use strict";

const $ = (s, el = document) => el.querySelector(s);
const $$ = (s, el = document) => Array.from(el.querySelectorAll(s));
const SVGNS = "http://www.w3.org/2000/svg";

const app = {
  info: null, st: null, sel: 0, cmap: "gray", tool: "pan",
  zoom: { s: 1, tx: 0, ty: 0 }, version: -1, roiSel: -1, profile: null,
  sending: false, pending: null, dragging: false, jobRecords: 0, resultsShown: null,
};

// ------------------------------------------------------------------ helpers
async function api(path, body) {
  const opt = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch("/api/" + path, opt);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.add("hidden"), 6000);
}
const hklText = (h) => h.map((v) => (v < 0 ? "\u0305" + -v : String(v))).join("");
const hklLabel = (h) => "(" + h.join(" ") + ")";
const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : Number(v).toPrecision(d));
function el(tag, attrs = {}, parent = null, ns = null) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  if (parent) parent.appendChild(e);
  return e;
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    app.info = await api("info");
  } catch (e) { toast("cannot reach the qcbed server: " + e.message); return; }
  const I = app.info;
  $("#title").textContent = I.title;
  document.title = "qcbed — " + I.title;
  if (!I.can_refine) $("#tab-refine").disabled = true;
  if (!I.can_roi) { $("#tool-roi").disabled = true; $("#g-export").classList.add("hidden"); }
  if (!I.has_simulation) { $("#g-params").classList.add("hidden"); $("#g-ug").classList.add("hidden"); }
  // one dataset without the other: only the panels that have something to show
  const shown = ["exp", "sim", "diff"].filter((k) => (k !== "exp" || I.has_experiment) &&
    (k !== "sim" || I.has_simulation) && (k !== "diff" || (I.has_experiment && I.has_simulation)));
  for (const f of $$(".panel")) f.classList.toggle("hidden", !shown.includes(f.dataset.kind));
  $(".panels").style.gridTemplateColumns = `repeat(${shown.length}, minmax(0, ${shown.length === 1 ? "560px" : "1fr"}))`;
  if (!(I.has_experiment && I.has_simulation)) { $("#zncc-card").classList.add("hidden"); for (const r of $$(".sidebar .group .row.small")) if (r.textContent.includes("ZNCC")) r.classList.add("hidden"); }
  if (I.mode === "cbed") $("#roi-step").value = 1;
  const ext = I.extent, W = ext[3] - ext[2], H = ext[1] - ext[0];
  for (const vp of $$(".viewport")) vp.style.aspectRatio = `${W} / ${H}`;
  for (const svg of $$("svg.overlay")) {
    svg.setAttribute("viewBox", `${ext[2]} ${ext[0]} ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "none");
  }
  const sel = $("#refl");
  I.hkl.forEach((h, i) => el("option", { value: i, text: hklLabel(h) }, sel));
  app.sel = I.hkl.length > 1 && I.hkl[0].every((v) => v === 0) && I.mode === "lacbed" ? 0 : Math.min(1, I.hkl.length - 1);
  sel.value = app.sel;
  sel.addEventListener("change", () => select(+sel.value));
  app.st = await api("state");
  buildParams();
  buildGallery();
  bindTools();
  bindRefine();
  $("#plan").textContent = planText(I.plan);
  applyState(app.st, true);
  if (I.results_dir) loadResults();
  const q = new URLSearchParams(location.search);
  if (q.get("embed")) document.body.classList.add("embed");
  if (q.get("tab")) { const b = $(`nav button[data-tab="${q.get("tab")}"]`); if (b && !b.disabled) b.click(); }
  setInterval(poll, 400);
}

function planText(plan) {
  const c = plan.coarse.length ? "coarse: " + plan.coarse.join(", ") : "no coarse steps";
  const f = plan.fine.map((s) => `${s.name} (${s.refine.join(", ")})`).join("; ");
  return c + (f ? " · fine: " + f : "");
}

// ------------------------------------------------------------------ parameters
function paramDefs() {
  const I = app.info, p = app.st.params, tr = I.tilt_range;
  const defs = [
    { key: "thickness", label: "thickness (Å)", min: Math.max(10, p.thickness * 0.5), max: p.thickness * 1.5, step: 1 },
    { key: "tilt0.0", label: "tilt k<sub>x</sub> (Å⁻¹)", min: p.tilt0[0] - tr, max: p.tilt0[0] + tr, step: tr / 500 },
    { key: "tilt0.1", label: "tilt k<sub>y</sub> (Å⁻¹)", min: p.tilt0[1] - tr, max: p.tilt0[1] + tr, step: tr / 500 },
  ];
  if (I.has_experiment) {
    defs.push({ key: "rotation", label: "rotation (°)", min: p.rotation - 15, max: p.rotation + 15, step: 0.05 });
    defs.push({ key: "pixel_size", label: "pixel size (Å⁻¹/px)", min: p.pixel_size * 0.85, max: p.pixel_size * 1.15, step: p.pixel_size / 2000 });
  }
  return defs;
}
function getParam(key) {
  const p = app.st.params;
  if (key.startsWith("tilt0.")) return p.tilt0[+key.slice(6)];
  if (key.startsWith("ug:")) return p.ug[key.slice(3)];
  return p[key];
}
function changeFor(key, v) {
  const p = app.st.params;
  if (key.startsWith("tilt0.")) { const t = p.tilt0.slice(); t[+key.slice(6)] = v; return { tilt0: t }; }
  if (key.startsWith("ug:")) return { ug: { [key.slice(3)]: v } };
  return { [key]: v };
}
function paramControl(def, parent) {
  const d = el("div", { class: "param", "data-key": def.key }, parent);
  const top = el("div", { class: "top" }, d);
  const lab = el("label", {}, top); lab.innerHTML = def.label;
  const num = el("input", { type: "number", step: "any" }, top);
  const rng = el("input", { type: "range", min: def.min, max: def.max, step: def.step }, d);
  const v = getParam(def.key);
  num.value = +v.toPrecision(7); rng.value = v;
  rng.addEventListener("input", () => { num.value = +(+rng.value).toPrecision(7); send(changeFor(def.key, +rng.value)); });
  num.addEventListener("change", () => {
    const x = +num.value;
    if (!isFinite(x)) return;
    if (x < +rng.min) rng.min = x; if (x > +rng.max) rng.max = x;
    rng.value = x; send(changeFor(def.key, x));
  });
  rng.addEventListener("pointerdown", () => (app.dragging = true));
  rng.addEventListener("pointerup", () => (app.dragging = false));
}
function buildParams() {
  const box = $("#params"); box.innerHTML = "";
  for (const d of paramDefs()) paramControl(d, box);
  const ub = $("#ug"); ub.innerHTML = "";
  const names = Object.keys(app.st.params.ug);
  if (!names.length) $("#g-ug").classList.add("hidden");
  for (const n of names) {
    const iam = app.info.ug_iam[n], span = Math.max(Math.abs(iam) * 0.2, 2e-4);
    paramControl({ key: "ug:" + n, label: n + ` <span class="muted">IAM ${fmt(iam, 4)}</span>`,
      min: iam - span, max: iam + span, step: span / 500 }, ub);
  }
}
function syncParams() {
  for (const d of $$(".param")) {
    const key = d.dataset.key, v = getParam(key);
    if (v === undefined || d.contains(document.activeElement) && app.dragging) continue;
    const num = $("input[type=number]", d), rng = $("input[type=range]", d);
    if (document.activeElement !== num) num.value = +Number(v).toPrecision(7);
    if (!app.dragging) rng.value = v;
  }
}
// one request in flight; the newest change waits and is merged
function send(change) {
  app.pending = Object.assign(app.pending || {}, change);
  if (change.ug && app.pending.ug) app.pending.ug = Object.assign({}, app.pending.ug, change.ug);
  if (!app.sending) flush();
}
async function flush() {
  if (!app.pending) return;
  const body = app.pending; app.pending = null; app.sending = true;
  try {
    const st = await api("params", body);
    applyState(st);
  } catch (e) { toast(e.message); }
  app.sending = false;
  if (app.pending) flush();
}

// ------------------------------------------------------------------ state → page
function applyState(st, force = false) {
  const prevV = app.version;
  app.st = st;
  if (force || st.version !== prevV) {
    app.version = st.version;
    refreshImages();
    updateZncc();
  }
  syncParams();
  const b = $("#badge");
  const t = st.timings || {};
  b.textContent = (st.level === "full" ? "full " : "preview ") + st.shape.join("×") +
    (st.full_pending ? " · computing full grid…" : "") +
    (t.update_s !== undefined ? ` · ${(t.update_s * 1000).toFixed(0)} ms` : "");
  b.classList.toggle("preview", st.level !== "full");
  if (!app.roiDrag) { app.regions = JSON.parse(JSON.stringify(st.regions)); drawOverlays(); }
  roiInfo();
  if (st.last_export) $("#export-msg").textContent = "written: " + st.last_export;
  if (st.job) showJob(st.job);
  if (st.results_dir && app.resultsShown !== st.results_dir + (st.job ? st.job.state : "")) loadResults();
}
async function poll() {
  if (app.sending) return;
  try { applyState(await api("state")); } catch (e) { /* server gone: keep the page */ }
}
function imgUrl(kind) {
  return `/api/image?i=${app.sel}&kind=${kind}&cmap=${app.cmap}&v=${app.version}`;
}
function refreshImages() {
  const smooth = app.st.level !== "full";
  for (const kind of ["exp", "sim", "diff"]) {
    const img = $("#img-" + kind);
    const pending = new Image();
    pending.onload = () => { img.src = pending.src; img.classList.toggle("smooth", smooth); img.dataset.version = app.version; };
    pending.src = imgUrl(kind);
  }
  $("#run-sim").src = imgUrl("sim");
  $("#run-diff").src = imgUrl("diff");
  for (const s of $$(".hkl")) s.textContent = hklLabel(app.info.hkl[app.sel]);
  const sc = app.st.scale[app.sel];
  $("#scale").textContent = app.info.has_experiment && sc !== null ? `× ${fmt(sc, 3)} + bg` : "";
  if (app.profile) loadProfile();
}
function updateZncc() {
  const z = app.st.zncc, zr = app.st.zncc_roi;
  $("#z-view").textContent = fmt(z[app.sel], 4);
  $("#z-roi").textContent = fmt(zr[app.sel], 4);
  const tb = $("#zncc tbody"); tb.innerHTML = "";
  app.info.hkl.forEach((h, i) => {
    const tr = el("tr", { "data-i": i }, tb);
    if (i === app.sel) tr.classList.add("sel");
    el("td", { text: hklLabel(h) }, tr);
    el("td", { text: z[i] === null ? "–" : z[i].toFixed(4) }, tr);
    el("td", { text: zr[i] === null ? "–" : zr[i].toFixed(4) }, tr);
    const td = el("td", { style: "width:80px" }, tr);
    el("div", { class: "bar", style: `width:${Math.max(0, (z[i] || 0) * 100)}%` }, td);
    tr.addEventListener("click", () => select(i));
  });
}
function select(i) {
  app.sel = i;
  $("#refl").value = i;
  for (const f of $$(".gallery figure")) f.classList.toggle("sel", +f.dataset.i === i);
  refreshImages();
  updateZncc();
}
function buildGallery() {
  const g = $("#gallery"); g.innerHTML = "";
  app.info.hkl.forEach((h, i) => {
    const f = el("figure", { "data-i": i, title: hklLabel(h) }, g);
    el("img", { src: `/api/thumb?i=${i}&cmap=${app.cmap}`, alt: hklLabel(h), loading: "lazy" }, f);
    el("figcaption", { text: hklLabel(h) }, f);
    f.addEventListener("click", () => select(i));
    if (i === app.sel) f.classList.add("sel");
  });
}

// ------------------------------------------------------------------ zoom, tools
function applyZoom() {
  const z = app.zoom;
  for (const s of $$(".stage")) s.style.transform = `translate(${z.tx}px, ${z.ty}px) scale(${z.s})`;
  drawOverlays();
}
function displayCoords(ev, vp) {
  // display (row, col) under the pointer, through the zoomed stage
  const r = $(".stage", vp).getBoundingClientRect(), e = app.info.extent;
  const fx = (ev.clientX - r.left) / r.width, fy = (ev.clientY - r.top) / r.height;
  return [e[0] + fy * (e[1] - e[0]), e[2] + fx * (e[3] - e[2])];
}
function bindTools() {
  for (const b of $$("#tool button")) b.addEventListener("click", () => setTool(b.dataset.tool));
  $("#zoom-reset").addEventListener("click", () => { app.zoom = { s: 1, tx: 0, ty: 0 }; applyZoom(); });
  $("#cmap").addEventListener("change", () => { app.cmap = $("#cmap").value; refreshImages(); buildGallery(); });
  $("#roi-delete").addEventListener("click", () => {
    if (app.roiSel < 0 || !app.regions.length) return;
    if (app.regions.length === 1) { toast("a project needs at least one region"); return; }
    app.regions.splice(app.roiSel, 1); app.roiSel = -1; saveRegions();
  });
  $("#roi-step").addEventListener("change", () => {
    if (app.roiSel >= 0) { resample(app.regions[app.roiSel]); saveRegions(); }
  });
  $("#export").addEventListener("click", exportProject);
  for (const vp of $$(".viewport")) {
    vp.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = vp.getBoundingClientRect(), mx = ev.clientX - r.left, my = ev.clientY - r.top;
      const z = app.zoom, f = Math.exp(-ev.deltaY * 0.0015), s = Math.min(40, Math.max(1, z.s * f));
      const k = s / z.s;
      z.tx = mx - (mx - z.tx) * k; z.ty = my - (my - z.ty) * k; z.s = s;
      if (s === 1) { z.tx = 0; z.ty = 0; }
      applyZoom();
    }, { passive: false });
    vp.addEventListener("pointerdown", (ev) => pointerDown(ev, vp));
  }
}
function setTool(t) {
  app.tool = t;
  for (const b of $$("#tool button")) b.classList.toggle("active", b.dataset.tool === t);
  for (const vp of $$(".viewport")) vp.className = "viewport tool-" + t;
  $("#roi-controls").classList.toggle("hidden", t !== "roi");
  drawOverlays();
}
function pointerDown(ev, vp) {
  ev.preventDefault();
  vp.setPointerCapture(ev.pointerId);
  const p0 = displayCoords(ev, vp), z0 = { ...app.zoom }, x0 = ev.clientX, y0 = ev.clientY;
  let move, up;
  if (app.tool === "pan") {
    move = (e) => { app.zoom.tx = z0.tx + e.clientX - x0; app.zoom.ty = z0.ty + e.clientY - y0; applyZoom(); };
  } else if (app.tool === "profile") {
    app.profile = [p0, p0];
    move = (e) => { app.profile[1] = displayCoords(e, vp); drawOverlays(); };
    up = () => loadProfile();
  } else {
    [move, up] = roiDrag(p0, vp);
  }
  const onMove = (e) => move && move(e);
  const onUp = (e) => {
    vp.removeEventListener("pointermove", onMove); vp.removeEventListener("pointerup", onUp);
    if (up) up(e);
  };
  vp.addEventListener("pointermove", onMove);
  vp.addEventListener("pointerup", onUp);
}

// ------------------------------------------------------------------ ROI
const sub = (a, b) => [a[0] - b[0], a[1] - b[1]];
const add = (a, b) => [a[0] + b[0], a[1] + b[1]];
function fourth(c) { return add(c[1], sub(c[2], c[0])); }
function inside(p, c) {
  const e1 = sub(c[1], c[0]), e2 = sub(c[2], c[0]), d = sub(p, c[0]);
  const det = e1[0] * e2[1] - e1[1] * e2[0];
  const u = (d[0] * e2[1] - d[1] * e2[0]) / det, v = (e1[0] * d[1] - e1[1] * d[0]) / det;
  return u >= 0 && u <= 1 && v >= 0 && v <= 1;
}
function resample(r) {
  const step = Math.max(0.25, +$("#roi-step").value || 1), c = r.corners;
  const l12 = Math.hypot(...sub(c[1], c[0])), l13 = Math.hypot(...sub(c[2], c[0]));
  r.samples = [Math.max(2, Math.round(l12 / step) + 1), Math.max(2, Math.round(l13 / step) + 1)];
}
function roiDrag(p0, vp) {
  const regs = app.regions, tol = 6 * (app.info.extent[1] - app.info.extent[0]) / vp.clientHeight / app.zoom.s;
  // a corner handle of the selected region?
  for (let k = 0; k < regs.length; k++) {
    const c = regs[k].corners;
    for (let j = 0; j < 3; j++) {
      if (Math.hypot(...sub(p0, c[j])) < tol) {
        app.roiSel = k; app.roiDrag = true;
        const move = (e) => {
          const p = displayCoords(e, vp);
          c[j] = p;
          resample(regs[k]); drawOverlays();
        };
        return [move, () => { app.roiDrag = false; saveRegions(); }];
      }
    }
  }
  for (let k = regs.length - 1; k >= 0; k--) {
    if (inside(p0, regs[k].corners)) {
      app.roiSel = k; app.roiDrag = true;
      const start = regs[k].corners.map((c) => c.slice());
      const move = (e) => {
        const d = sub(displayCoords(e, vp), p0);
        regs[k].corners = start.map((c) => add(c, d)); drawOverlays();
      };
      return [move, () => { app.roiDrag = false; saveRegions(); }];
    }
  }
  // draw a new axis-aligned rectangle: corner 1 top-left, 2 top-right, 3 bottom-left
  const r = { corners: [p0, p0, p0], samples: [2, 2] };
  regs.push(r); app.roiSel = regs.length - 1; app.roiDrag = true;
  const move = (e) => {
    const p = displayCoords(e, vp);
    const r0 = Math.min(p0[0], p[0]), r1 = Math.max(p0[0], p[0]);
    const c0 = Math.min(p0[1], p[1]), c1 = Math.max(p0[1], p[1]);
    r.corners = [[r0, c0], [r0, c1], [r1, c0]];
    resample(r); drawOverlays();
  };
  const up = () => {
    app.roiDrag = false;
    const c = r.corners;
    if (Math.hypot(...sub(c[1], c[0])) < 1 || Math.hypot(...sub(c[2], c[0])) < 1) {
      regs.pop(); app.roiSel = -1; drawOverlays(); return;
    }
    saveRegions();
  };
  return [move, up];
}
async function saveRegions() {
  const regions = app.regions.map((r) => ({
    corners: r.corners.map((c) => [+c[0].toFixed(3), +c[1].toFixed(3)]), samples: r.samples }));
  try {
    const res = await api("roi", { regions });
    $("#roi-info").textContent = `${regions.length} region(s), ${res.n_points} points, ${res.n_valid} valid samples`;
    app.version = -1; poll();
  } catch (e) { toast(e.message); }
}
function roiInfo() {
  if (!app.regions) return;
  const n = app.regions.reduce((a, r) => a + r.samples[0] * r.samples[1], 0);
  if (!$("#roi-info").textContent.includes("valid")) $("#roi-info").textContent = `${app.regions.length} region(s), ${n} points`;
}
function drawOverlays() {
  const unit = (app.info.extent[1] - app.info.extent[0]) / ($(".viewport").clientHeight || 300) / app.zoom.s;
  for (const svg of $$("svg.overlay")) {
    svg.innerHTML = "";
    (app.regions || []).forEach((r, k) => {
      const c = r.corners, c4 = fourth(c), selc = k === app.roiSel;
      const pts = [c[0], c[1], c4, c[2]].map((p) => `${p[1]},${p[0]}`).join(" ");
      el("polygon", { points: pts, fill: "rgba(245,158,11,0.08)", stroke: "#f59e0b",
        "stroke-width": (selc ? 2.2 : 1.4) * unit, class: "roi" }, svg, SVGNS);
      // sample points (thinned to ≤ 1600 drawn)
      const [n12, n13] = r.samples, thin = Math.max(1, Math.ceil(Math.sqrt(n12 * n13 / 1600)));
      const e1 = sub(c[1], c[0]), e2 = sub(c[2], c[0]);
      const g = el("g", { fill: "#f59e0b", class: "samples" }, svg, SVGNS);
      for (let j = 0; j < n13; j += thin) for (let i = 0; i < n12; i += thin) {
        const y = c[0][0] + e1[0] * i / (n12 - 1) + e2[0] * j / (n13 - 1);
        const x = c[0][1] + e1[1] * i / (n12 - 1) + e2[1] * j / (n13 - 1);
        el("circle", { cx: x, cy: y, r: 0.9 * unit }, g, SVGNS);
      }
      if (app.tool === "roi") for (const p of c) el("circle", { cx: p[1], cy: p[0], r: 4 * unit,
        fill: "#fff", stroke: "#f59e0b", "stroke-width": 1.5 * unit, class: "handle" }, svg, SVGNS);
    });
    if (app.profile) {
      const [a, b] = app.profile;
      el("line", { x1: a[1], y1: a[0], x2: b[1], y2: b[0], stroke: "#10b981", "stroke-width": 2 * unit }, svg, SVGNS);
    }
  }
}

// ------------------------------------------------------------------ profile
async function loadProfile() {
  const [a, b] = app.profile;
  if (Math.hypot(a[0] - b[0], a[1] - b[1]) < 0.5) return;
  try {
    const d = await api(`profile?i=${app.sel}&r0=${a[0]}&c0=${a[1]}&r1=${b[0]}&c1=${b[1]}`);
    plotLines($("#profile"), d.s, [["experiment", d.experiment, "#1f2933"], ["simulation", d.simulation, "#2563eb"]],
      "distance (display px)");
    $("#profile-hint").textContent = `${hklLabel(app.info.hkl[app.sel])}: from (${a.map((v) => v.toFixed(1))}) to (${b.map((v) => v.toFixed(1))})`;
  } catch (e) { toast(e.message); }
}
function plotLines(svg, x, series, xlabel, logy = false) {
  svg.innerHTML = "";
  const vb = svg.viewBox.baseVal, W = vb.width, H = vb.height, L = 52, R = 10, T = 10, B = 28;
  const tf = (v) => (logy ? Math.log10(Math.max(v, 1e-300)) : v);
  const ys = series.flatMap((s) => (s[1] || []).filter((v) => v !== null).map(tf));
  if (!ys.length || x.length < 2) return;
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 === y0) { y0 -= 1; y1 += 1; }
  const x0 = Math.min(...x), x1 = Math.max(...x) || 1;
  const px = (v) => L + (v - x0) / (x1 - x0 || 1) * (W - L - R);
  const py = (v) => T + (1 - (tf(v) - y0) / (y1 - y0)) * (H - T - B);
  el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#dde1e6" }, svg, SVGNS);
  const lab = (v) => (logy ? Number(10 ** v).toPrecision(3) : Number(v).toPrecision(3));
  el("text", { x: L - 4, y: T + 8, "text-anchor": "end", "font-size": 10, fill: "#6b7684", text: lab(y1) }, svg, SVGNS);
  el("text", { x: L - 4, y: H - B, "text-anchor": "end", "font-size": 10, fill: "#6b7684", text: lab(y0) }, svg, SVGNS);
  el("text", { x: L, y: H - 8, "font-size": 10, fill: "#6b7684", text: Number(x0).toPrecision(3) }, svg, SVGNS);
  el("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 10, fill: "#6b7684", text: Number(x1).toPrecision(3) }, svg, SVGNS);
  el("text", { x: (W + L) / 2, y: H - 8, "text-anchor": "middle", "font-size": 10, fill: "#6b7684", text: xlabel }, svg, SVGNS);
  series.forEach(([name, ysr, col], k) => {
    if (!ysr) return;
    let d = "", pen = false;
    ysr.forEach((v, i) => {
      if (v === null) { pen = false; return; }
      d += (pen ? "L" : "M") + px(x[i]).toFixed(1) + "," + py(v).toFixed(1); pen = true;
    });
    el("path", { d, fill: "none", stroke: col, "stroke-width": 1.6 }, svg, SVGNS);
    el("text", { x: W - R - 6, y: T + 14 + k * 14, "text-anchor": "end", "font-size": 11, fill: col, text: name }, svg, SVGNS);
  });
}

// ------------------------------------------------------------------ export
async function exportProject() {
  try {
    const r = await api("export", { path: $("#export-path").value.trim() || null });
    $("#export-msg").textContent = "written: " + r.path;
  } catch (e) { toast(e.message); $("#export-msg").textContent = e.message; }
}

// ------------------------------------------------------------------ refine
function bindRefine() {
  const go = (what) => async () => {
    const mi = $("#max-iter").value;
    try { showJob(await api("refine", { what, max_iter: mi ? +mi : null })); } catch (e) { toast(e.message); }
  };
  $("#run-coarse").addEventListener("click", go("coarse"));
  $("#run-fine").addEventListener("click", go("fine"));
  $("#run-plan").addEventListener("click", go("plan"));
  $("#run-stop").addEventListener("click", async () => { try { showJob(await api("stop", {})); } catch (e) { toast(e.message); } });
  $("#run-resume").addEventListener("click", async () => { try { showJob(await api("resume", {})); } catch (e) { toast(e.message); } });
  for (const b of $$("nav button")) b.addEventListener("click", () => {
    for (const x of $$("nav button")) x.classList.toggle("active", x === b);
    for (const t of $$(".tab")) t.classList.toggle("active", t.id === b.dataset.tab);
    if (b.dataset.tab === "explore") drawOverlays();
  });
  showJob({ state: "idle", records: [], log: [] });
}
function showJob(job) {
  const running = job.state === "running" || job.state === "stopping";
  $("#run-state").textContent = job.state + (job.what ? ` (${job.what})` : "") + (job.elapsed_s ? ` · ${job.elapsed_s.toFixed(1)} s` : "");
  $("#run-state").dataset.state = job.state;
  for (const id of ["#run-coarse", "#run-fine", "#run-plan"]) $(id).disabled = running;
  $("#run-stop").disabled = !running;
  $("#run-resume").disabled = !(job.state === "stopped" || job.state === "failed");
  $("#run-out").textContent = job.out_dir ? "output: " + job.out_dir : "";
  $("#run-log").textContent = (job.log || []).join("\n");
  $("#run-summary").textContent = job.summary || (job.error ? "error: " + job.error : "–");
  const recs = job.records || [];
  if (recs.length !== app.jobRecords) {
    app.jobRecords = recs.length;
    plotLines($("#chi2"), recs.map((_, i) => i + 1), [["χ² (GOF)", recs.map((r) => r.gof), "#2563eb"]], "iteration", true);
    const last = recs[recs.length - 1] || {}, t = $("#run-params"); t.innerHTML = "";
    for (const [k, v] of Object.entries(last)) {
      if (["time_s", "stage", "step"].includes(k)) continue;
      const tr = el("tr", {}, t);
      el("td", { text: k }, tr); el("td", { text: typeof v === "number" ? fmt(v, 7) : v }, tr);
    }
  }
}

// ------------------------------------------------------------------ results
async function loadResults() {
  let d;
  try { d = await api("results"); } catch (e) { return; }
  app.resultsShown = app.st.results_dir + (app.st.job ? app.st.job.state : "");
  const r = d.result;
  $("#res-head").innerHTML = "";
  const head = $("#res-head");
  el("div", { text: `${r.project} · ${r.crystal.space_group} · ${r.voltage_kv} kV · ${r.message}` }, head);
  el("div", { text: `GOF (${r.gof.metric}) = ${fmt(r.gof.value, 5)} · reduced χ² = ${fmt(r.chi2, 5)} · dof = ${r.dof} · R = ${fmt(r.r_factor, 4)} · ${fmt(r.elapsed_s, 3)} s` }, head);
  const a = el("div", { class: "small muted", text: "folder: " + d.folder + (d.report ? " · report: " + d.report : "") }, head);
  void a;
  const t = $("#res-params"); t.innerHTML = "";
  const hr = el("tr", {}, t);
  for (const h of ["parameter", "value", "esd", "unit", "refined", "true"]) el("th", { text: h }, hr);
  for (const p of r.parameters) {
    const tr = el("tr", {}, t);
    for (const v of [p.name, fmt(p.value, 7), p.esd === null ? "–" : fmt(p.esd, 2), p.unit, p.refined ? "yes" : "", p.true === null || p.true === undefined ? "" : fmt(p.true, 7)]) el("td", { text: v }, tr);
  }
  const sf = $("#res-sf"); sf.innerHTML = "";
  const sh = el("tr", {}, sf);
  for (const h of ["hkl", "g (Å⁻¹)", "U (Å⁻²)", "esd", "U′ (Å⁻²)", "esd", "refined"]) el("th", { text: h }, sh);
  for (const s of r.structure_factors) {
    const tr = el("tr", {}, sf);
    for (const v of [hklLabel(s.hkl), fmt(s.g, 4), fmt(s.U, 6), s.U_esd === null ? "–" : fmt(s.U_esd, 2), fmt(s.U_abs, 5), s.U_abs_esd === null ? "–" : fmt(s.U_abs_esd, 2), (s.refined || []).join(", ")]) el("td", { text: v }, tr);
  }
  const c = $("#res-corr"); c.innerHTML = "";
  const names = r.correlation.names, m = r.correlation.matrix;
  if (names.length) {
    const tb = el("table", { class: "corr" }, c), h = el("tr", {}, tb);
    el("th", {}, h);
    names.forEach((n, j) => el("th", { text: String(j + 1), title: n }, h));
    names.forEach((n, i) => {
      const tr = el("tr", {}, tb);
      el("th", { text: `${i + 1} ${n}` }, tr);
      m[i].forEach((v) => {
        const a2 = Math.min(1, Math.abs(v || 0)), col = v >= 0 ? `rgba(37,99,235,${a2})` : `rgba(194,65,12,${a2})`;
        el("td", { text: fmt(v, 2), style: `background:${col};color:${a2 > 0.55 ? "#fff" : "#1f2933"}` }, tr);
      });
    });
  } else el("div", { class: "muted", text: "no refined parameters" }, c);
  const figs = $("#res-figs"); figs.innerHTML = "";
  for (const name of d.figures) {
    const f = el("figure", {}, figs);
    el("img", { src: `/api/figure?name=${encodeURIComponent(name)}&t=${Date.now()}`, alt: name }, f);
    el("figcaption", { text: name }, f);
  }
}

start();
