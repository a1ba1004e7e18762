"""`siglip-rins serve`: an HTTP server for an exported model, with per-request recursion rounds.

    siglip-rins serve --model MODEL_DIR [--host 127.0.0.1] [--port 8080] [--index IMAGE_FOLDER] [--max-rounds 4]

Built on Werkzeug (request parsing, routing, errors) served by Waitress (a production WSGI server, threads).

Endpoints (JSON in and out; every error is a 4xx/5xx with `{"error": "..."}`, the server itself never stops):
  GET  /            a self-contained page (inline HTML/JS/CSS, no network beyond this server): drop images,
                    type labels, pick r with a slider, see ranked probabilities and r's latency.
  GET  /healthz     {"status": "ok", "rounds_max", "trained_rounds", "calibration_ms": {"1": ..., ...}, ...}
  POST /v1/classify {"images": [base64 | data URL, ...], "labels": [...], "templates": optional ["a photo of {}"],
                     "rounds": optional int | "latency_ms": optional number, "top_k": optional int}
                    -> {"results": [{"labels": [{"label", "probability"}, ...]}, ...] (ranked per image),
                        "rounds", "latency_ms": {"calibrated", "budget", "fits"}, "elapsed_ms"}
  POST /v1/embed    {"images": [...]} or {"texts": [...]}, plus "rounds" / "latency_ms"
                    -> {"embeddings": [[...], ...], "dim", "rounds", ...}
  POST /v1/retrieve {"query": "text" (or "image": base64), "top_k": optional, "rounds" / "latency_ms"}
                    -> {"results": [{"path", "cosine", "probability"}, ...]} over the `--index` folder, whose
                    embeddings are computed once per r (at start-up for the default r).

Rounds: `rounds` (1..rounds_max) runs A^rB at inference; without it the model runs as trained.  Anytime mode:
`latency_ms: N` picks the largest r whose latency, measured at start-up for r = 1..rounds_max on a reference
batch (one image and `CALIBRATION_LABELS` labels, the classify path), fits in N ms (r = 1 when none does; the
response says `fits: false`).

Batching: request threads decode and preprocess their images (the training pipeline's own ops, via
`ExportedModel.preprocess_image`), then hand the arrays to one worker thread that groups the pending image
encodes (and text encodes) of all requests with the same r into one batch, run in power-of-two batch buckets up
to `max_batch` (compiled shapes are reused).  Label embeddings are cached (LRU) per (labels, templates, r).

Limits (each a clear 4xx): request body (`max_body_bytes`, 413), images per request, pixels per image (checked
from the header before decoding, 413), labels per request, text length, rounds above rounds_max.
"""

from __future__ import annotations

import base64
import binascii
import collections
import io
import json
import math
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

CALIBRATION_LABELS = 8
CALIBRATION_REPEATS = 3


@dataclass
class Limits:
  """Per-request limits; each violation is a 4xx naming the limit."""

  max_body_bytes: int = 16 << 20
  max_images: int = 64
  max_pixels: int = 4096 * 4096
  max_labels: int = 1000
  max_texts: int = 1000
  max_text_chars: int = 1000
  max_templates: int = 32
  max_top_k: int = 1000


class BadRequest(Exception):
  """A client error: becomes `{"error": message}` with `status`."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


# ------------------------------------------------------------------------------------------- batching
@dataclass
class _Job:
  kind: str  # 'img' (float32 [N, H, W, 3]) or 'txt' (list of strings)
  rounds: Optional[int]
  data: Any
  done: threading.Event = field(default_factory=threading.Event)
  result: Any = None
  error: Optional[BaseException] = None


class Batcher:
  """One worker thread that runs every model call: pending jobs of the same (kind, rounds) are concatenated into
  one batch (up to `max_batch` rows; a short `window_s` wait lets concurrent requests join), encoded in
  power-of-two buckets, and split back.  `submit` blocks the calling request thread until its rows are done."""

  def __init__(self, model, max_batch: int = 32, window_s: float = 0.002):
    self.model = model
    self.max_batch = max(1, int(max_batch))
    self.window_s = window_s
    self._q: queue.Queue = queue.Queue()
    self._pending: collections.deque = collections.deque()
    self._stop = False
    self.batches = 0  # statistics: batches run and rows encoded
    self.rows = 0
    self._thread = threading.Thread(target=self._loop, name="siglip-rins-batcher", daemon=True)
    self._thread.start()

  def submit(self, kind: str, data, rounds: Optional[int], timeout: float = 300.0):
    job = _Job(kind, rounds, data)
    self._q.put(job)
    if not job.done.wait(timeout):
      raise TimeoutError(f"the model did not answer within {timeout:.0f} s")
    if job.error is not None:
      raise job.error
    return job.result

  def close(self) -> None:
    self._stop = True
    self._q.put(None)
    self._thread.join(timeout=10)

  def _take(self, block: bool) -> Optional[_Job]:
    if self._pending:
      return self._pending.popleft()
    try:
      return self._q.get(block=block, timeout=None if block else 0)
    except queue.Empty:
      return None

  def _loop(self) -> None:
    while not self._stop:
      first = self._take(block=True)
      if first is None:
        continue
      group, rows = [first], len(first.data)
      deadline = time.monotonic() + self.window_s
      skipped = []
      while rows < self.max_batch:
        try:
          job = self._pending.popleft() if self._pending else self._q.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
          break
        if job is None:
          self._stop = True
          break
        if job.kind == first.kind and job.rounds == first.rounds and rows + len(job.data) <= self.max_batch:
          group.append(job)
          rows += len(job.data)
        else:
          skipped.append(job)
          if len(skipped) > 64:
            break
      self._pending.extendleft(reversed(skipped))
      self._run(group)

  def _run(self, group: list[_Job]) -> None:
    try:
      if group[0].kind == "img":
        x = np.concatenate([j.data for j in group])
        z = self.model.encode_images(x, group[0].rounds, batch_size=self.max_batch)
      else:
        texts = [t for j in group for t in j.data]
        z = self.model.encode_texts(texts, group[0].rounds, batch_size=self.max_batch)
      self.batches += 1
      self.rows += len(z)
      i = 0
      for j in group:
        j.result = z[i : i + len(j.data)]
        i += len(j.data)
    except BaseException as e:  # noqa: BLE001 - handed to the waiting request threads
      for j in group:
        j.error = e
    finally:
      for j in group:
        j.done.set()


# -------------------------------------------------------------------------------------------- service
def trained_rounds_of(model_config: dict) -> int:
  """r of the image tower's trained signature (A^rB -> r; 1 without recursion)."""
  from siglip_rins.recursion import parse_signature

  rec = ((model_config.get("image") or {}).get("recursion")) or model_config.get("recursion") or {}
  sig = rec.get("signature", "AB") if isinstance(rec, dict) else "AB"
  try:
    letters, _ = parse_signature(sig)
  except ValueError:
    return 1
  return len(letters) - len(letters.lstrip(letters[0])) if letters else 1


def decode_base64_image(item: Any, index: int, limits: Limits) -> bytes:
  """A base64 string or data URL -> image bytes, after checking (from the header, without decoding pixels) that
  it is an image within `limits.max_pixels`."""
  if not isinstance(item, str) or not item:
    raise BadRequest(f"images[{index}] must be a non-empty base64 string (or a data: URL)")
  if item.startswith("data:"):
    head, sep, item = item.partition(",")
    if not sep or ";base64" not in head:
      raise BadRequest(f"images[{index}]: a data URL must be base64-encoded ('data:image/png;base64,...')")
  try:
    data = base64.b64decode("".join(item.split()), validate=True)
  except (binascii.Error, ValueError):
    raise BadRequest(f"images[{index}] is not valid base64") from None
  if not data:
    raise BadRequest(f"images[{index}] is empty")
  from PIL import Image, UnidentifiedImageError

  try:
    with Image.open(io.BytesIO(data)) as im:
      w, h = im.size
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
    raise BadRequest(f"images[{index}] is not a recognised image (JPEG, PNG, GIF or BMP)") from None
  except Image.DecompressionBombError:
    raise BadRequest(f"images[{index}] is too large", 413) from None
  if w < 1 or h < 1:
    raise BadRequest(f"images[{index}] has no pixels ({w}x{h})")
  if w * h > limits.max_pixels:
    raise BadRequest(f"images[{index}] is {w}x{h} = {w * h} pixels; the limit is {limits.max_pixels}", 413)
  return data


class Service:
  """The model side of the server: preprocessing, batching, calibration, the retrieval index.  Usable without
  HTTP (tests, notebooks)."""

  def __init__(
    self,
    model_dir,
    *,
    index: Optional[str] = None,
    max_rounds: Optional[int] = None,
    max_batch: int = 32,
    limits: Optional[Limits] = None,
    calibrate: bool = True,
    warmup: bool = False,
    log=None,
  ):
    from siglip_rins.export import load_exported

    self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    self.model_dir = str(model_dir)
    self.model = load_exported(model_dir)
    if self.model.model.image is None or self.model.tokenizer is None:
      raise ValueError("serve needs a two-tower model with an image and a text tower")
    self.limits = limits or Limits()
    self.trained_rounds = trained_rounds_of(self.model.config["model"])
    self.rounds_max = int(max_rounds or max(4, self.trained_rounds))
    if self.rounds_max < 1:
      raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    self.batcher = Batcher(self.model, max_batch=max_batch)
    self._label_cache: collections.OrderedDict = collections.OrderedDict()
    self._cache_lock = threading.Lock()
    self.calibration_ms: dict[int, float] = {}
    if warmup:
      self.warmup()
    if calibrate:
      self.calibrate()
    self.index_paths: list[str] = []
    self._index: dict[Optional[int], np.ndarray] = {}
    self._index_lock = threading.Lock()
    self._index_images: Optional[np.ndarray] = None
    if index is not None:
      self.build_index(index)

  def close(self) -> None:
    self.batcher.close()

  # ---------------------------------------------------------------------------------------- rounds
  def buckets(self) -> list[int]:
    """The batch sizes the model is compiled for: powers of two up to max_batch, and max_batch."""
    out, b = [], 1
    while b < self.batcher.max_batch:
      out.append(b)
      b *= 2
    return out + [self.batcher.max_batch]

  def warmup(self) -> None:
    """Compiles every batch bucket of both towers for r = 1..rounds_max (later requests never compile)."""
    t0 = time.perf_counter()
    h, w = self.model.image_size
    for r in range(1, self.rounds_max + 1):
      for b in self.buckets():
        self.batcher.submit("img", np.zeros((b, h, w, 3), np.float32), r)
        self.batcher.submit("txt", ["warm-up"] * b, r)
    self.log(
      f"compiled batch buckets {self.buckets()} for r = 1..{self.rounds_max} in {time.perf_counter() - t0:.1f} s"
    )

  def calibrate(self) -> dict[int, float]:
    """Measures the classify path (one image, CALIBRATION_LABELS labels, label cache off) for r = 1..rounds_max:
    the median of CALIBRATION_REPEATS runs after one compiling run."""
    h, w = self.model.image_size
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (w, h)).save(buf, format="PNG")
    image = self.model.preprocess_image(buf.getvalue())[None]  # also traces the bytes -> pixels pp once
    labels = [f"calibration label {i}" for i in range(CALIBRATION_LABELS)]
    for r in range(1, self.rounds_max + 1):
      times = []
      for i in range(CALIBRATION_REPEATS + 1):
        t0 = time.perf_counter()
        self.batcher.submit("txt", labels, r)
        self.batcher.submit("img", image, r)
        if i:
          times.append((time.perf_counter() - t0) * 1e3)
      self.calibration_ms[r] = float(np.median(times))
    self.log(
      "calibrated latency (1 image, %d labels): %s"
      % (
        CALIBRATION_LABELS,
        ", ".join(f"r={r}: {ms:.1f} ms" for r, ms in self.calibration_ms.items()),
      )
    )
    return self.calibration_ms

  def pick_rounds(self, body: dict) -> tuple[Optional[int], dict]:
    """(rounds, info) from a request's "rounds" / "latency_ms"."""
    rounds, budget = body.get("rounds"), body.get("latency_ms")
    if rounds is not None and budget is not None:
      raise BadRequest("give at most one of 'rounds' and 'latency_ms'")
    if rounds is not None:
      if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= self.rounds_max:
        raise BadRequest(f"'rounds' must be an integer in 1..{self.rounds_max}, got {rounds!r}")
      return rounds, {"calibrated": self.calibration_ms.get(rounds)}
    if budget is not None:
      if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise BadRequest(f"'latency_ms' must be a positive number, got {budget!r}")
      if not self.calibration_ms:
        raise BadRequest("this server was started without latency calibration; give 'rounds'", 409)
      fitting = [r for r, ms in self.calibration_ms.items() if ms <= budget]
      r = max(fitting) if fitting else 1
      return r, {"calibrated": self.calibration_ms[r], "budget": budget, "fits": bool(fitting)}
    return None, {"calibrated": self.calibration_ms.get(self.trained_rounds)}

  # ------------------------------------------------------------------------------------------ inputs
  def images_from(self, items: Any) -> np.ndarray:
    lim = self.limits
    if not isinstance(items, list) or not items:
      raise BadRequest("'images' must be a non-empty list of base64-encoded images")
    if len(items) > lim.max_images:
      raise BadRequest(f"{len(items)} images in one request; the limit is {lim.max_images}", 413)
    from siglip_rins.data.preprocess import ImageReadError

    out = []
    for i, item in enumerate(items):
      data = decode_base64_image(item, i, lim)
      try:
        out.append(self.model.preprocess_image(data))
      except (ImageReadError, ValueError) as e:
        raise BadRequest(f"images[{i}]: {e}") from None
    return np.stack(out)

  def texts_from(self, items: Any, what: str, limit: int) -> list[str]:
    if not isinstance(items, list) or not items:
      raise BadRequest(f"'{what}' must be a non-empty list of strings")
    if len(items) > limit:
      raise BadRequest(f"{len(items)} {what} in one request; the limit is {limit}", 413)
    for i, t in enumerate(items):
      if not isinstance(t, str) or not t.strip():
        raise BadRequest(f"{what}[{i}] must be a non-empty string")
      if len(t) > self.limits.max_text_chars:
        raise BadRequest(f"{what}[{i}] has {len(t)} characters; the limit is {self.limits.max_text_chars}", 413)
    return list(items)

  # ---------------------------------------------------------------------------------------- encoders
  def encode_images(self, x: np.ndarray, rounds: Optional[int]) -> np.ndarray:
    return self.batcher.submit("img", x, rounds)

  def encode_texts(self, texts: list[str], rounds: Optional[int]) -> np.ndarray:
    return self.batcher.submit("txt", texts, rounds)

  def class_embeddings(self, labels: list[str], templates: Optional[list[str]], rounds: Optional[int]) -> np.ndarray:
    """As ExportedModel.class_embeddings (mean over templates of normalised embeddings, renormalised), through
    the batcher and an LRU cache."""
    key = (tuple(labels), None if templates is None else tuple(templates), rounds)
    with self._cache_lock:
      if key in self._label_cache:
        self._label_cache.move_to_end(key)
        return self._label_cache[key]
    temps = ["{}"] if templates is None else templates
    texts = [t.format(label) for label in labels for t in temps]
    z = self.encode_texts(texts, rounds).reshape(len(labels), len(temps), -1).mean(axis=1)
    z = z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    with self._cache_lock:
      self._label_cache[key] = z
      while len(self._label_cache) > 256:
        self._label_cache.popitem(last=False)
    return z

  # ----------------------------------------------------------------------------------------- index
  def build_index(self, folder) -> None:
    """Reads the images of `folder` once (unreadable files are skipped with one line) and embeds them at the
    default r; other r are embedded on first use and kept."""
    from siglip_rins.image_io import list_image_files

    paths, arrays = [], []
    for p in list_image_files(folder):
      try:
        arrays.append(self.model.preprocess_image(p))
        paths.append(str(p))
      except (OSError, ValueError) as e:
        self.log(f"index: skipping {e}")
    if not paths:
      raise ValueError(f"--index {folder}: no readable image files")
    self.index_paths = paths
    self._index_images = np.stack(arrays)
    self.index_embeddings(None)
    self.log(f"indexed {len(paths)} images from {folder}")

  def index_embeddings(self, rounds: Optional[int]) -> np.ndarray:
    with self._index_lock:
      if rounds not in self._index:
        chunks = [
          self.encode_images(self._index_images[i : i + self.batcher.max_batch], rounds)
          for i in range(0, len(self._index_images), self.batcher.max_batch)
        ]
        self._index[rounds] = np.concatenate(chunks)
      return self._index[rounds]

  # ------------------------------------------------------------------------------------------- API
  def _prob(self, cos):
    return 1.0 / (1.0 + np.exp(-(self.model.temperature * np.asarray(cos) + self.model.bias)))

  def _top_k(self, body: dict, default: Optional[int]) -> Optional[int]:
    k = body.get("top_k", default)
    if k is None:
      return None
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.limits.max_top_k:
      raise BadRequest(f"'top_k' must be an integer in 1..{self.limits.max_top_k}, got {k!r}")
    return k

  @staticmethod
  def _check_keys(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
      raise BadRequest(f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")

  def classify(self, body: dict) -> dict:
    self._check_keys(body, {"images", "labels", "templates", "rounds", "latency_ms", "top_k"})
    rounds, info = self.pick_rounds(body)
    labels = self.texts_from(body.get("labels"), "labels", self.limits.max_labels)
    templates = body.get("templates")
    if templates is not None:
      templates = self.texts_from(templates, "templates", self.limits.max_templates)
      bad = [t for t in templates if "{}" not in t or t.count("{") != 1 or t.count("}") != 1]
      if bad:
        raise BadRequest(f"each template must contain '{{}}' once (and no other braces), got {bad[0]!r}")
    if len(labels) * len(templates or [1]) > self.limits.max_texts * 4:
      raise BadRequest("labels x templates is too many texts for one request", 413)
    top_k = self._top_k(body, None)
    x = self.images_from(body.get("images"))
    zc = self.class_embeddings(labels, templates, rounds)
    zi = self.encode_images(x, rounds)
    probs = self.model.probabilities(zi, zc)
    results = []
    for row in probs:
      order = np.argsort(-row, kind="stable")[:top_k]
      results.append({"labels": [{"label": labels[i], "probability": float(row[i])} for i in order]})
    return {"results": results, "rounds": rounds or self.trained_rounds, "latency_ms": info}

  def embed(self, body: dict) -> dict:
    self._check_keys(body, {"images", "texts", "rounds", "latency_ms"})
    if ("images" in body) == ("texts" in body):
      raise BadRequest("give exactly one of 'images' and 'texts'")
    rounds, info = self.pick_rounds(body)
    if "images" in body:
      z = self.encode_images(self.images_from(body["images"]), rounds)
    else:
      z = self.encode_texts(self.texts_from(body["texts"], "texts", self.limits.max_texts), rounds)
    return {
      "embeddings": z.tolist(),
      "dim": int(z.shape[-1]),
      "rounds": rounds or self.trained_rounds,
      "latency_ms": info,
    }

  def retrieve(self, body: dict) -> dict:
    self._check_keys(body, {"query", "image", "top_k", "rounds", "latency_ms"})
    if self._index_images is None:
      raise BadRequest("this server has no index: start it with --index FOLDER", 404)
    if ("query" in body) == ("image" in body):
      raise BadRequest("give exactly one of 'query' (text) and 'image' (base64)")
    rounds, info = self.pick_rounds(body)
    top_k = self._top_k(body, 10)
    if "query" in body:
      q = self.encode_texts(self.texts_from([body["query"]], "query", 1), rounds)[0]
    else:
      q = self.encode_images(self.images_from([body["image"]]), rounds)[0]
    cos = self.index_embeddings(rounds) @ q
    order = np.argsort(-cos, kind="stable")[:top_k]
    results = [
      {"path": self.index_paths[i], "cosine": float(cos[i]), "probability": float(self._prob(cos[i]))} for i in order
    ]
    return {"results": results, "rounds": rounds or self.trained_rounds, "latency_ms": info}

  def health(self) -> dict:
    return {
      "status": "ok",
      "model": self.model_dir,
      "trained_rounds": self.trained_rounds,
      "rounds_max": self.rounds_max,
      "calibration_ms": {str(r): ms for r, ms in self.calibration_ms.items()},
      "image_size": list(self.model.image_size),
      "text_len": self.model.text_len,
      "indexed_images": len(self.index_paths),
      "limits": self.limits.__dict__,
      "batches": self.batcher.batches,
      "rows": self.batcher.rows,
    }


# ----------------------------------------------------------------------------------------------- HTTP
def _json(obj: Any, status: int = 200):
  from werkzeug.wrappers import Response

  return Response(json.dumps(obj, ensure_ascii=False), status=status, mimetype="application/json")


class App:
  """The WSGI application around a Service."""

  def __init__(self, service: Service):
    from werkzeug.routing import Map, Rule  # HTTP libraries load only when serving

    self.service = service
    self.url_map = Map(
      [
        Rule("/", endpoint="page", methods=["GET"]),
        Rule("/healthz", endpoint="healthz", methods=["GET"]),
        Rule("/v1/classify", endpoint="classify", methods=["POST"]),
        Rule("/v1/embed", endpoint="embed", methods=["POST"]),
        Rule("/v1/retrieve", endpoint="retrieve", methods=["POST"]),
      ]
    )

  def _body(self, request) -> dict:
    if request.content_length is not None and request.content_length > self.service.limits.max_body_bytes:
      raise BadRequest(
        f"request body of {request.content_length} bytes; the limit is {self.service.limits.max_body_bytes}", 413
      )
    request.max_content_length = self.service.limits.max_body_bytes
    raw = request.get_data(cache=False)
    if not raw:
      raise BadRequest("empty request body: send a JSON object")
    try:
      body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
      raise BadRequest(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
      raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    return body

  def dispatch(self, request):
    from werkzeug.exceptions import HTTPException
    from werkzeug.wrappers import Response

    t0 = time.perf_counter()
    try:
      endpoint, _ = self.url_map.bind_to_environ(request.environ).match()
      if endpoint == "page":
        return Response(page_html(), mimetype="text/html")
      if endpoint == "healthz":
        return _json(self.service.health())
      body = self._body(request)
      out = getattr(self.service, endpoint)(body)
      out["elapsed_ms"] = (time.perf_counter() - t0) * 1e3
      return _json(out)
    except BadRequest as e:
      return _json({"error": str(e)}, e.status)
    except HTTPException as e:  # routing (404 / 405) and werkzeug's own limits (413)
      resp = _json({"error": f"{e.code} {e.name}: {e.description}"}, e.code or 400)
      if e.code == 405 and hasattr(e, "valid_methods") and e.valid_methods:
        resp.headers["Allow"] = ", ".join(e.valid_methods)
      return resp
    except Exception as e:  # noqa: BLE001 - never let a request take the server down
      self.service.log(f"internal error on {request.path}: {type(e).__name__}: {e}")
      return _json({"error": f"internal error: {type(e).__name__}: {e}"}, 500)

  def __call__(self, environ, start_response):
    from werkzeug.wrappers import Request

    return self.dispatch(Request(environ))(environ, start_response)


def make_server(service: Service, host: str = "127.0.0.1", port: int = 8080, threads: int = 16):
  """A Waitress server (not yet running) for `service`; `.effective_port` is the bound port (port=0: any free one),
  `.run()` serves until `.close()`."""
  from waitress import create_server

  return create_server(
    App(service),
    host=host,
    port=port,
    threads=threads,
    # Waitress refuses (413, plain text) bodies over twice the limit before buffering them; bodies between the
    # limit and that get the app's JSON 413.
    max_request_body_size=2 * service.limits.max_body_bytes,
    ident="siglip-rins",
    clear_untrusted_proxy_headers=True,
  )


def serve_main(
  model_dir,
  host: str = "127.0.0.1",
  port: int = 8080,
  index: Optional[str] = None,
  max_rounds: Optional[int] = None,
  max_batch: int = 32,
  threads: int = 16,
  max_pixels: Optional[int] = None,
  warmup: bool = False,
) -> int:
  """`siglip-rins serve`: loads, calibrates, indexes, then serves until interrupted.  Returns 0."""
  limits = Limits()
  if max_pixels:
    limits.max_pixels = int(max_pixels)
  service = Service(model_dir, index=index, max_rounds=max_rounds, max_batch=max_batch, limits=limits, warmup=warmup)
  server = make_server(service, host, port, threads)
  print(f"serving {model_dir} on http://{host}:{server.effective_port}/", flush=True)
  try:
    server.run()
  except KeyboardInterrupt:
    pass
  finally:
    server.close()
    service.close()
  return 0


def add_arguments(p) -> None:
  p.add_argument("--model", required=True, help="exported model folder (siglip-rins export)")
  p.add_argument("--host", default="127.0.0.1")
  p.add_argument("--port", type=int, default=8080)
  p.add_argument("--index", default=None, help="an image folder for /v1/retrieve (embedded once at start-up)")
  p.add_argument("--max-rounds", type=int, default=None, help="largest r a request may ask for (default: 4)")
  p.add_argument("--max-batch", type=int, default=32, help="largest batch of the batching worker")
  p.add_argument("--threads", type=int, default=16, help="request threads")
  p.add_argument("--max-pixels", type=int, default=None, help="largest image (width x height) accepted")
  p.add_argument("--warmup", action="store_true", help="compile every batch bucket for every r at start-up")


def page_html() -> str:
  from siglip_rins.serve_page import PAGE

  return PAGE


__all__ = ["Service", "App", "Limits", "Batcher", "BadRequest", "make_server", "serve_main", "add_arguments"]
