"""TensorBoard event files written through the path layer (siglip_rins.paths), so `<workdir>/tb` lives wherever
the workdir does (local, gs://, s3://, ...) -- TensorFlow's own file layer is not involved.

One file per writer, `events.out.tfevents.<time>.<host>.<pid>.v2`, in TensorBoard's record format (tensorboard's
`RecordWriter`: length, masked CRC32C, the `Event` proto, its CRC); scalars are `simple_value` summaries, which
TensorBoard's scalar dashboard reads.  `write` appends the records of a batch of rows with one path-layer
append (a real append locally; an object rewrite on object stores, as for metrics.jsonl).  Pure Python:
neither TensorFlow nor JAX is imported.
"""

from __future__ import annotations

import os
import socket
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

from siglip_rins import paths


class _Chunks:
  """The file-like sink RecordWriter wants, collecting bytes in memory (written out through the path layer)."""

  def __init__(self, chunks: list):
    self.write = chunks.append


class EventWriter:
  """Appends scalar summaries to one event file under `logdir` (created on first write)."""

  def __init__(self, logdir):
    self.logdir = paths.Path(logdir)
    name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.v2"
    self.path = self.logdir / name
    self._started = False

  def _records(self, events) -> bytes:
    chunks = []
    writer = RecordWriter(_Chunks(chunks))
    for event in events:
      writer.write(event.SerializeToString())
    return b"".join(chunks)

  def write(self, rows) -> None:
    """rows: (step, {tag: number}); non-numbers are left out."""
    events = []
    if not self._started:
      paths.makedirs(self.logdir)
      events.append(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    for step, scalars in rows:
      values = [
        summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
        for tag, v in scalars.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
      ]
      if values:
        events.append(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))
    if len(events) > (0 if self._started else 1):
      paths.append_bytes(self.path, self._records(events))
      self._started = True
