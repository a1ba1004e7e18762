"""The single self-contained page `siglip-rins serve` answers on `GET /` (inline HTML, CSS and JS; no CDN).

Drop (or choose) images, type labels (one per line or comma-separated, any language the tokenizer covers), pick r
with the slider (or an anytime latency budget), press Classify: per image the labels ranked with their
probabilities, and the r that ran with its calibrated latency and the request's round trip.

URL parameters run it without clicks: `?labels=cat,dog&rounds=2&image=<data URL or same-origin URL>&run=1`.
`document.body.dataset.state` is 'idle', 'running', 'done' or 'error' (for scripts driving the page).
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>siglip_rins &middot; RINS zero-shot classification</title>
<style>
  :root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #1f6feb; --bar: #1f6feb; --bg: #ffffff; }
  * { box-sizing: border-box; }
  body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; color: var(--fg);
         background: var(--bg); margin: 0; padding: 18px 24px; max-width: 980px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin: 0 0 14px; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
  #drop { border: 2px dashed var(--line); border-radius: 8px; padding: 18px; text-align: center; color: var(--muted);
          min-height: 120px; cursor: pointer; }
  #drop.over { border-color: var(--accent); background: #f0f6ff; }
  #thumbs img { max-height: 64px; margin: 6px 4px 0; border: 1px solid var(--line); border-radius: 4px; }
  textarea { width: 100%; min-height: 120px; font: inherit; padding: 8px; border: 1px solid var(--line);
             border-radius: 6px; }
  .row { display: flex; align-items: center; gap: 10px; margin: 12px 0; flex-wrap: wrap; }
  button { font: inherit; padding: 7px 18px; border-radius: 6px; border: 1px solid var(--accent);
           background: var(--accent); color: white; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  #info { color: var(--muted); }
  #error { color: #cf222e; white-space: pre-wrap; }
  .result { display: flex; gap: 14px; border-top: 1px solid var(--line); padding: 10px 0; }
  .result img { width: 96px; height: 96px; object-fit: contain; border: 1px solid var(--line); border-radius: 4px; }
  .ranks { flex: 1; }
  .rank { display: grid; grid-template-columns: 28px 180px 1fr 64px; align-items: center; gap: 8px; height: 24px; }
  .rank .label { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .track { background: #eaeef2; height: 14px; border-radius: 3px; position: relative; }
  .bar { background: var(--bar); height: 14px; border-radius: 3px; }
  .prob { text-align: right; font-variant-numeric: tabular-nums; }
  table.cal { border-collapse: collapse; font-size: 13px; color: var(--muted); }
  table.cal td { padding: 0 8px 0 0; }
</style>
</head>
<body data-state="idle">
<h1>RINS zero-shot classification</h1>
<p class="sub">SigLIP with Recursive Inference Scaling: more rounds of the recursive block (A<sup>r</sup>B) for more
compute at inference. Probabilities are sigmoid scores; each is the model's belief that the label matches.</p>
<div class="grid">
  <div>
    <div id="drop" tabindex="0">Drop images here or click to choose
      <input id="files" type="file" accept="image/*" multiple hidden>
      <div id="thumbs"></div>
    </div>
  </div>
  <div>
    <label for="labels">Labels (one per line or comma-separated)</label>
    <textarea id="labels" placeholder="a red circle&#10;ein blaues Quadrat&#10;un triangle vert"></textarea>
  </div>
</div>
<div class="row">
  <label for="rounds">rounds r = <b id="rval">?</b></label>
  <input id="rounds" type="range" min="1" max="4" step="1" value="1">
  <label><input id="anytime" type="checkbox"> anytime: latency budget</label>
  <input id="budget" type="number" min="1" value="50" style="width:80px"> ms
  <button id="go">Classify</button>
</div>
<div class="row"><span id="info"></span></div>
<div id="error"></div>
<div id="results"></div>
<p class="sub" id="calwrap">Calibrated latency per r (1 image, 8 labels): <span id="cal"></span></p>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let images = [];  // {name, url (data URL)}
let health = null;

function setState(s) { document.body.dataset.state = s; }
function labelsOf(text) {
  const parts = text.includes("\n") ? text.split("\n") : text.split(",");
  return parts.map((s) => s.trim()).filter((s) => s.length);
}
function fileToDataURL(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onload = () => resolve(fr.result);
    fr.onerror = () => reject(fr.error);
    fr.readAsDataURL(file);
  });
}
function showThumbs() {
  const t = $("thumbs");
  t.textContent = "";
  for (const im of images) { const el = document.createElement("img"); el.src = im.url; el.title = im.name; t.appendChild(el); }
}
async function addFiles(files) {
  for (const f of files) {
    if (!f.type.startsWith("image/")) continue;
    images.push({ name: f.name, url: await fileToDataURL(f) });
  }
  showThumbs();
}
$("drop").addEventListener("click", () => $("files").click());
$("files").addEventListener("change", (e) => addFiles(e.target.files));
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => { e.preventDefault(); $("drop").classList.remove("over"); addFiles(e.dataTransfer.files); });
$("rounds").addEventListener("input", () => { $("rval").textContent = $("rounds").value; });

function fmtMs(x) { return x == null ? "?" : x.toFixed(1) + " ms"; }
function render(out, labels) {
  const res = $("results");
  res.textContent = "";
  out.results.forEach((r, i) => {
    const div = document.createElement("div"); div.className = "result";
    const img = document.createElement("img"); img.src = images[i].url; div.appendChild(img);
    const ranks = document.createElement("div"); ranks.className = "ranks";
    r.labels.forEach((l, k) => {
      const row = document.createElement("div"); row.className = "rank";
      const n = document.createElement("span"); n.textContent = (k + 1) + ".";
      const lab = document.createElement("span"); lab.className = "label"; lab.textContent = l.label; lab.title = l.label;
      const track = document.createElement("div"); track.className = "track";
      const bar = document.createElement("div"); bar.className = "bar";
      bar.style.width = (100 * l.probability).toFixed(2) + "%"; track.appendChild(bar);
      const p = document.createElement("span"); p.className = "prob"; p.textContent = l.probability.toFixed(4);
      row.append(n, lab, track, p); ranks.appendChild(row);
    });
    div.appendChild(ranks); res.appendChild(div);
  });
  const lat = out.latency_ms || {};
  let how = "r = " + out.rounds;
  if (lat.budget != null) how += " (anytime, budget " + lat.budget + " ms" + (lat.fits ? "" : ", none fits: r = 1") + ")";
  $("info").textContent = how + " \u00b7 calibrated latency " + fmtMs(lat.calibrated) + " \u00b7 this request " + fmtMs(out.elapsed_ms);
}

async function classify() {
  $("error").textContent = "";
  const labels = labelsOf($("labels").value);
  if (!images.length) { $("error").textContent = "Drop at least one image."; setState("error"); return; }
  if (!labels.length) { $("error").textContent = "Type at least one label."; setState("error"); return; }
  const body = { images: images.map((im) => im.url), labels };
  if ($("anytime").checked) body.latency_ms = Number($("budget").value); else body.rounds = Number($("rounds").value);
  setState("running"); $("go").disabled = true;
  try {
    const resp = await fetch("/v1/classify", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const out = await resp.json();
    if (!resp.ok) throw new Error(out.error || ("HTTP " + resp.status));
    render(out, labels);
    setState("done");
  } catch (e) {
    $("error").textContent = String(e.message || e); setState("error");
  } finally { $("go").disabled = false; }
}
$("go").addEventListener("click", classify);

async function init() {
  try {
    health = await (await fetch("/healthz")).json();
    $("rounds").max = health.rounds_max; $("rounds").value = health.trained_rounds;
    $("cal").textContent = Object.entries(health.calibration_ms).map(([r, ms]) => "r=" + r + ": " + ms.toFixed(1) + " ms").join(", ");
  } catch (e) { $("error").textContent = "cannot reach the server: " + e; }
  $("rval").textContent = $("rounds").value;
  const q = new URLSearchParams(location.search);
  if (q.get("labels")) $("labels").value = q.get("labels");
  if (q.get("rounds")) { $("rounds").value = q.get("rounds"); $("rval").textContent = $("rounds").value; }
  if (q.get("image")) {
    const blob = await (await fetch(q.get("image"))).blob();
    images.push({ name: "image", url: await fileToDataURL(blob) }); showThumbs();
  }
  if (q.get("run") === "1") await classify();
}
init();
</script>
</body>
</html>
"""
