"""`siglip-rins serve` (siglip_rins/serve.py): the HTTP API against `classify` / `load_exported`, bad requests,
concurrency with batching, the CLI, and the page driven in headless Chromium over the DevTools protocol.

One tiny A^2B model folder (random parameters, the shipped 'demo' tokenizer) and one server on 127.0.0.1 (a free
port) serve the whole module.  Chromium: Debian's `chromium` package (`apt-get install -y chromium`); the page
test fails when it is missing.
"""

import base64
import io
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import requests
from PIL import Image

from siglip_rins import serve
from siglip_rins.export import classify_main, export_params, load_exported, param_shapes
from siglip_rins.interop import flatten_params, unflatten_params
from siglip_rins.models import build_model
from siglip_rins.text.tokenizer import get_tokenizer

TOKENIZER = get_tokenizer("demo")
IMAGE_SIZE, TEXT_LEN, MAX_ROUNDS, MAX_PIXELS = (16, 16), 8, 3, 256 * 256
CFG = dict(
  name="two_towers",
  out_dim=(None, 32),
  recursion=dict(signature="A^2B"),
  image=dict(width=32, depth=4, mlp_dim=64, num_heads=2, patch_size=4),
  text=dict(vocab_size=TOKENIZER.vocab_size, width=32, depth=4, mlp_dim=64, num_heads=2),
)
LABELS = ["red circle", "blue square", "green triangle", "ein gelber Stern", "un cercle rouge", "一只猫"]


def png_bytes(seed: int, size=(16, 16)) -> bytes:
  rng = np.random.default_rng(seed)
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def b64(data: bytes) -> str:
  return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  model = build_model(CFG)
  rng = np.random.default_rng(0)
  shapes = flatten_params(param_shapes(model, IMAGE_SIZE, TEXT_LEN))
  flat = {
    k: (rng.normal(size=v.shape) * 0.3 + (1.0 if k.endswith("scale") else 0.0)).astype(np.float32)
    for k, v in shapes.items()
  }
  # A large temperature and no bias spread the probabilities over (0, 1): the page's bars differ visibly.
  flat["t"], flat["b"] = np.array([math.log(20.0)], np.float32), np.array([0.0], np.float32)
  return export_params(unflatten_params(flat), CFG, tmp_path_factory.mktemp("serve") / "model", tokenizer="demo")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
  d = tmp_path_factory.mktemp("index")
  for i in range(5):
    (d / f"img{i}.png").write_bytes(png_bytes(100 + i, (16 + 4 * i, 16)))
  (d / "broken.jpg").write_bytes(b"not an image")
  return d


@pytest.fixture(scope="module")
def server(model_dir, index_dir):
  limits = serve.Limits(max_pixels=MAX_PIXELS, max_body_bytes=4 << 20)
  service = serve.Service(model_dir, index=str(index_dir), max_rounds=MAX_ROUNDS, max_batch=16, limits=limits)
  srv = serve.make_server(service, "127.0.0.1", 0, threads=16)
  thread = threading.Thread(target=srv.run, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{srv.effective_port}"
  for _ in range(100):  # bounded wait for the listening socket
    try:
      if requests.get(url + "/healthz", timeout=2).ok:
        break
    except requests.ConnectionError:
      time.sleep(0.05)
  yield url, service
  srv.close()
  thread.join(timeout=10)
  service.close()


@pytest.fixture(scope="module")
def reference(model_dir):
  return load_exported(model_dir)


def post(url, path, body, **kw):
  return requests.post(url + path, json=body, timeout=60, **kw)


# ----------------------------------------------------------------------------------------------- API
def test_healthz_reports_calibration(server):
  url, _ = server
  h = requests.get(url + "/healthz", timeout=10).json()
  assert h["status"] == "ok" and h["trained_rounds"] == 2 and h["rounds_max"] == MAX_ROUNDS
  assert sorted(h["calibration_ms"]) == ["1", "2", "3"] and all(v > 0 for v in h["calibration_ms"].values())
  assert h["indexed_images"] == 5 and h["image_size"] == list(IMAGE_SIZE)


def test_classify_equals_load_exported_and_cli(server, reference, model_dir, tmp_path):
  url, _ = server
  images = [png_bytes(1), png_bytes(2, (24, 20)), png_bytes(3, (16, 40))]
  paths = []
  for i, data in enumerate(images):
    paths.append(tmp_path / f"x{i}.png")
    paths[-1].write_bytes(data)
  for rounds in (None, 1, 3):
    body = {"images": [b64(d) for d in images], "labels": LABELS}
    if rounds is not None:
      body["rounds"] = rounds
    resp = post(url, "/v1/classify", body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["rounds"] == (rounds or 2) and out["latency_ms"]["calibrated"] > 0
    ref = reference.classify(images, LABELS, rounds=rounds)
    for got, want in zip(out["results"], ref):
      assert [r["label"] for r in got["labels"]] == [label for label, _ in want]
      np.testing.assert_allclose([r["probability"] for r in got["labels"]], [p for _, p in want], atol=1e-6)
    # `siglip-rins classify` prints the same ranking and probabilities (4 decimals).
    cli = io.StringIO()
    assert classify_main(model_dir, LABELS, [str(p) for p in paths], top_k=len(LABELS), rounds=rounds, out=cli) == 0
    lines = [l for l in cli.getvalue().splitlines() if l.startswith("  ")]
    api = [f"  {r['probability']:.4f}  {r['label']}" for res in out["results"] for r in res["labels"]]
    assert lines == api
  # templates and data URLs
  out = post(
    url,
    "/v1/classify",
    {
      "images": ["data:image/png;base64," + b64(images[0])],
      "labels": LABELS,
      "templates": ["a photo of {}", "{}"],
      "top_k": 2,
    },
  ).json()
  want = reference.classify(images[:1], LABELS, templates=["a photo of {}", "{}"], top_k=2)[0]
  assert [(r["label"], round(r["probability"], 6)) for r in out["results"][0]["labels"]] == [
    (label, round(p, 6)) for label, p in want
  ]


def test_anytime_latency_budget_picks_r(server):
  url, service = server
  body = {"images": [b64(png_bytes(5))], "labels": LABELS[:2]}
  out = post(url, "/v1/classify", dict(body, latency_ms=1e6)).json()
  assert out["rounds"] == MAX_ROUNDS and out["latency_ms"]["fits"] is True
  out = post(url, "/v1/classify", dict(body, latency_ms=1e-6)).json()
  assert out["rounds"] == 1 and out["latency_ms"]["fits"] is False
  cal = service.calibration_ms
  budget = sorted(cal.values())[1]  # fits at least one r, not necessarily all
  out = post(url, "/v1/classify", dict(body, latency_ms=budget)).json()
  assert out["rounds"] == max(r for r, ms in cal.items() if ms <= budget)
  assert out["latency_ms"]["calibrated"] == cal[out["rounds"]] <= budget


def test_embed_and_retrieve(server, reference, index_dir):
  url, _ = server
  out = post(url, "/v1/embed", {"texts": LABELS, "rounds": 3}).json()
  np.testing.assert_allclose(out["embeddings"], reference.encode_texts(LABELS, rounds=3), atol=1e-6)
  img = png_bytes(9, (30, 30))
  out = post(url, "/v1/embed", {"images": [b64(img)]}).json()
  np.testing.assert_allclose(out["embeddings"], reference.encode_images([img]), atol=1e-6)
  assert out["dim"] == 32
  # image query: an indexed image finds itself first; text query: ranked as load_exported ranks the folder
  query = (index_dir / "img3.png").read_bytes()
  for rounds in (None, 1):
    res = post(url, "/v1/retrieve", {"image": b64(query), "top_k": 3, **({"rounds": rounds} if rounds else {})})
    got = res.json()["results"]
    assert pathlib.Path(got[0]["path"]).name == "img3.png" and got[0]["cosine"] == pytest.approx(1.0, abs=1e-5)
  got = post(url, "/v1/retrieve", {"query": "red circle"}).json()["results"]
  paths = sorted(index_dir.glob("img*.png"))
  cos = reference.encode_images([p.read_bytes() for p in paths]) @ reference.encode_texts(["red circle"])[0]
  assert [pathlib.Path(r["path"]).name for r in got] == [paths[i].name for i in np.argsort(-cos, kind="stable")]


def test_bad_requests_are_4xx_and_the_server_keeps_serving(server):
  url, _ = server
  good = b64(png_bytes(1))
  huge = io.BytesIO()
  Image.new("RGB", (4000, 3000)).save(huge, format="PNG")  # 12 MP: small as PNG, far over the pixel limit
  cases = {
    "non-image bytes": ({"images": [b64(b"hello, not an image")], "labels": ["a"]}, 400, "not a recognised image"),
    "bad base64": ({"images": ["@@@"], "labels": ["a"]}, 400, "base64"),
    "huge image": ({"images": [b64(huge.getvalue())], "labels": ["a"]}, 413, "pixels"),
    "empty labels": ({"images": [good], "labels": []}, 400, "labels"),
    "blank label": ({"images": [good], "labels": ["  "]}, 400, "labels"),
    "10k labels": ({"images": [good], "labels": [f"l{i}" for i in range(10_000)]}, 413, "limit"),
    "labels not a list": ({"images": [good], "labels": "a,b"}, 400, "labels"),
    "no images": ({"labels": ["a"]}, 400, "images"),
    "rounds too big": ({"images": [good], "labels": ["a"], "rounds": 99}, 400, "rounds"),
    "rounds not int": ({"images": [good], "labels": ["a"], "rounds": "2"}, 400, "rounds"),
    "both rounds and budget": ({"images": [good], "labels": ["a"], "rounds": 1, "latency_ms": 5}, 400, "at most one"),
    "bad budget": ({"images": [good], "labels": ["a"], "latency_ms": -1}, 400, "latency_ms"),
    "bad template": ({"images": [good], "labels": ["a"], "templates": ["no braces"]}, 400, "template"),
    "unknown field": ({"images": [good], "labels": ["a"], "colour": 1}, 400, "unknown"),
  }
  for name, (body, status, needle) in cases.items():
    resp = post(url, "/v1/classify", body)
    assert resp.status_code == status, (name, resp.status_code, resp.text[:200])
    assert needle in resp.json()["error"], (name, resp.json())
  raw = {
    "not JSON": (b"{images: [", 400),
    "JSON list": (b"[1, 2]", 400),
    "empty body": (b"", 400),
    "invalid UTF-8": (b'{"labels": ["\xff"]}', 400),
    "too large": (b"x" * (5 << 20), 413),
  }
  for name, (data, status) in raw.items():
    resp = requests.post(url + "/v1/classify", data=data, timeout=60)
    assert resp.status_code == status, (name, resp.status_code, resp.text[:200])
    assert "error" in resp.json(), name
  assert post(url, "/v1/embed", {"images": [good], "texts": ["a"]}).status_code == 400
  assert post(url, "/v1/retrieve", {"query": ""}).status_code == 400
  assert requests.get(url + "/v1/classify", timeout=10).status_code == 405
  assert requests.get(url + "/nowhere", timeout=10).status_code == 404
  assert post(url, "/v1/classify", {"images": [good], "labels": ["a"]}).status_code == 200


def test_concurrent_clients_are_batched(server, reference, capsys, record_property):
  """16 clients x 20 requests, no errors; p50 / p99 latency reported."""
  url, service = server
  images = [png_bytes(200 + i) for i in range(4)]
  label_sets = [LABELS[:3], LABELS[2:]]
  batches0, rows0 = service.batcher.batches, service.batcher.rows
  latencies, errors = [], []
  lock = threading.Lock()

  def client(c):
    with requests.Session() as s:
      for i in range(20):
        k = (c + i) % len(images)
        labels = label_sets[(c + i) % 2]
        t0 = time.perf_counter()
        try:
          resp = s.post(
            url + "/v1/classify", json={"images": [b64(images[k])], "labels": labels, "rounds": 2}, timeout=60
          )
          ok = (
            resp.status_code == 200 and resp.json()["results"][0]["labels"][0]["label"] == expected[(k, tuple(labels))]
          )
        except Exception as e:  # noqa: BLE001 - counted as an error
          ok, resp = False, e
        with lock:
          latencies.append(time.perf_counter() - t0)
          if not ok:
            errors.append(str(resp)[:200])

  expected = {
    (k, tuple(ls)): reference.classify([images[k]], ls, rounds=2)[0][0][0] for k in range(4) for ls in label_sets
  }
  threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
  t0 = time.perf_counter()
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  wall = time.perf_counter() - t0
  assert not errors, errors[:5]
  assert len(latencies) == 320
  ms = np.array(latencies) * 1e3
  batches, rows = service.batcher.batches - batches0, service.batcher.rows - rows0
  report = (
    f"serve concurrency: 16 clients x 20 requests in {wall:.1f} s ({320 / wall:.0f} req/s); latency p50 "
    f"{np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms; {rows} rows in {batches} model batches"
  )
  with capsys.disabled():  # shown in the test output even when pytest captures it
    print("\n" + report, flush=True)
  record_property("latency_p50_ms", float(np.percentile(ms, 50)))
  record_property("latency_p99_ms", float(np.percentile(ms, 99)))
  assert batches < 320  # image encodes of concurrent requests were grouped (label embeddings are cached)


def test_cli_serve_subprocess(model_dir):
  """`siglip-rins serve` starts, reports its port, answers, and stops on SIGINT."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  proc = subprocess.Popen(
    [sys.executable, "-m", "siglip_rins.cli", "serve", "--model", str(model_dir), "--port", "0", "--max-rounds", "2"],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    env=env,
  )
  try:
    url, seen = None, []
    deadline = time.time() + 120
    while time.time() < deadline and url is None:
      line = proc.stdout.readline()
      if not line:
        break
      seen.append(line)
      m = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)/", line)
      url = m and m.group(1)
    assert url, "".join(seen)[-2000:]
    h = requests.get(url + "/healthz", timeout=10).json()
    assert h["rounds_max"] == 2 and set(h["calibration_ms"]) == {"1", "2"}
    resp = post(url, "/v1/classify", {"images": [b64(png_bytes(1))], "labels": ["a", "b"], "rounds": 2})
    assert resp.status_code == 200 and len(resp.json()["results"][0]["labels"]) == 2
  finally:
    proc.send_signal(2)
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


# ---------------------------------------------------------------------------------------------- page
class DevTools:
  """A tiny Chrome DevTools Protocol client over `--remote-debugging-pipe` (fd 3: commands in, fd 4: replies
  out, NUL-separated JSON); no websocket library needed."""

  def __init__(self, chromium: str, profile: str):
    to_child_r, self._w = os.pipe()
    self._r, from_child_w = os.pipe()
    # A shell moves the pipes (given as stdin / stdout) to the fds 3 and 4 that Chromium reads and writes.
    self.proc = subprocess.Popen(
      [
        "sh",
        "-c",
        'exec "$@" 3<&0 4>&1 </dev/null >/dev/null',
        "sh",
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--remote-debugging-pipe",
        f"--user-data-dir={profile}",
        "--window-size=1000,1000",
        "about:blank",
      ],
      stdin=to_child_r,
      stdout=from_child_w,
      stderr=subprocess.DEVNULL,
    )
    os.close(to_child_r)
    os.close(from_child_w)
    self._buf = b""
    self._id = 0
    self.session = None

  def call(self, method: str, timeout: float = 30.0, **params):
    self._id += 1
    msg = {"id": self._id, "method": method, "params": params}
    if self.session and not method.startswith("Target."):
      msg["sessionId"] = self.session
    os.write(self._w, json.dumps(msg).encode() + b"\0")
    deadline = time.time() + timeout
    while time.time() < deadline:
      while b"\0" in self._buf:
        raw, self._buf = self._buf.split(b"\0", 1)
        reply = json.loads(raw)
        if reply.get("id") == self._id:
          if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
          return reply.get("result", {})
      import select

      ready, _, _ = select.select([self._r], [], [], 1.0)
      if ready:
        chunk = os.read(self._r, 1 << 20)
        if not chunk:
          raise RuntimeError("chromium closed the DevTools pipe")
        self._buf += chunk
    raise TimeoutError(f"{method}: no reply in {timeout} s")

  def open(self, url: str) -> None:
    target = self.call("Target.createTarget", url="about:blank")["targetId"]
    self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    self.call("Emulation.setDeviceMetricsOverride", width=1000, height=1000, deviceScaleFactor=1, mobile=False)
    self.call("Page.enable")
    self.call("Page.navigate", url=url)

  def js(self, expression: str):
    out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in out:
      raise RuntimeError(f"{expression}: {out['exceptionDetails']}")
    return out["result"].get("value")

  def wait_for(self, expression: str, timeout: float = 30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
      try:
        value = self.js(expression)
      except RuntimeError:  # page still loading
        value = None
      if value:
        return value
      time.sleep(0.1)
    raise TimeoutError(f"page: {expression} not true after {timeout} s")

  def click(self, selector: str) -> None:
    r = self.js(
      f"(() => {{ const b = document.querySelector({json.dumps(selector)}).getBoundingClientRect(); "
      "return [b.x + b.width / 2, b.y + b.height / 2]; })()"
    )
    for kind in ("mousePressed", "mouseReleased"):
      self.call("Input.dispatchMouseEvent", type=kind, x=r[0], y=r[1], button="left", clickCount=1)

  def close(self) -> None:
    try:
      self.call("Browser.close", timeout=5)
    except Exception:  # noqa: BLE001 - fall through to kill
      pass
    try:
      self.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
    os.close(self._w)
    os.close(self._r)


def test_page_classifies_in_headless_chromium(server, reference, tmp_path):
  """Drives GET / like a user: choose an image file, type labels (three scripts), move the slider to r = 3,
  click Classify; the ranked probabilities on the page and in a screenshot match load_exported.classify."""
  chromium = shutil.which("chromium") or shutil.which("chromium-browser")
  assert chromium, "headless Chromium is needed for the page test: apt-get install -y chromium"
  url, _ = server
  image = tmp_path / "photo.png"
  image.write_bytes(png_bytes(7, (20, 20)))
  labels = ["red circle", "ein blaues Quadrat", "一只猫", "un triangle vert"]
  with tempfile.TemporaryDirectory() as profile:
    cdp = DevTools(chromium, profile)
    try:
      cdp.open(url + "/")
      cdp.wait_for("document.getElementById('cal') && document.getElementById('cal').textContent.length > 0")
      root = cdp.call("DOM.getDocument")["root"]["nodeId"]
      node = cdp.call("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
      cdp.call("DOM.setFileInputFiles", files=[str(image)], nodeId=node)
      cdp.wait_for("document.querySelectorAll('#thumbs img').length === 1")
      cdp.click("#labels")
      cdp.call("Input.insertText", text="\n".join(labels))
      cdp.js(
        "(() => { const s = document.getElementById('rounds'); s.value = 3; s.dispatchEvent(new Event('input')); })()"
      )
      assert cdp.js("document.getElementById('rval').textContent") == "3"
      cdp.click("#go")
      state = cdp.wait_for(
        "['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state", timeout=60
      )
      assert state == "done", cdp.js("document.getElementById('error').textContent")
      rows = cdp.js(
        "[...document.querySelectorAll('.rank')].map(r => { const t = r.querySelector('.track').getBoundingClientRect();"
        " const b = r.querySelector('.bar').getBoundingClientRect(); return {label: r.querySelector('.label')"
        ".textContent, prob: Number(r.querySelector('.prob').textContent), track: [t.x, t.y, t.width, t.height],"
        " bar: b.width}; })"
      )
      info = cdp.js("document.getElementById('info').textContent")
      shot = base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"])
      # URL parameters run the same path without clicks (labels, r, an image as a data URL, run=1)
      from urllib.parse import urlencode

      query = urlencode(
        {"labels": ",".join(labels), "rounds": 1, "image": "data:image/png;base64," + b64(image.read_bytes()), "run": 1}
      )
      cdp.call("Page.navigate", url=f"{url}/?{query}")
      cdp.wait_for("location.search.includes('run=1') && document.body.dataset.state === 'done'", timeout=60)
      auto = cdp.js("[...document.querySelectorAll('.rank')].map(r => r.querySelector('.label').textContent)")
      auto_info = cdp.js("document.getElementById('info').textContent")
    finally:
      cdp.close()
  want1 = reference.classify([image.read_bytes()], labels, rounds=1)[0]
  assert auto == [label for label, _ in want1] and auto_info.startswith("r = 1 "), (auto, auto_info)
  want = reference.classify([image.read_bytes()], labels, rounds=3)[0]
  assert [r["label"] for r in rows] == [label for label, _ in want]
  np.testing.assert_allclose([r["prob"] for r in rows], [p for _, p in want], atol=1e-4)
  assert re.search(r"r = 3 .* calibrated latency \d+\.\d ms .* this request \d+\.\d ms", info), info
  (tmp_path / "page.png").write_bytes(shot)
  # The screenshot shows the ranking: in each row's track, the bar's painted width is its probability.
  pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(int)
  bar_rgb = np.array([0x1F, 0x6F, 0xEB])
  painted = []
  for r in rows:
    x, y, w, h = r["track"]
    band = pixels[int(y + h / 2), int(x) : int(x + w)]
    painted.append(int((np.abs(band - bar_rgb).sum(axis=-1) < 40).sum()))
    assert abs(painted[-1] - r["prob"] * w) <= 3, (r, painted[-1])
  assert painted == sorted(painted, reverse=True) and painted[0] > painted[-1] + 5, painted
