"""Writes evaluation records: `<out>/eval_results.json` (the list of records) and `<out>/eval_report.md`
(one Markdown table per task; rows = (dataset, language, metric), columns = rounds, so the values of one
checkpoint evaluated at r = 1, 2, ... land side by side). XM3600 records also get a Table-4-style table.

A record's `rounds` counts the first block's leading run (A^kB) unless the record has `axis: 'repeat'`: then
it counts repeats of the signature's unit (RAO, (AB)^k for ABAB); such columns are labelled 'repeat=k'.

`write_report(records, out_dir, merge=True)`: with merge, records already in eval_results.json are kept unless a
new record has the same (dataset, model, task, language, rounds, axis) key, which replaces it.
"""

from __future__ import annotations

import json
import math
from typing import Iterable, Mapping, Sequence

from siglip_rins import paths

_REQUIRED = ('dataset', 'model', 'task', 'metrics', 'language', 'rounds')


def _column(rec: Mapping) -> tuple:
  """(axis, rounds) of a record: the column it lands in ('rounds' for the trained plan, rounds=None)."""
  r = rec['rounds']
  return ('rounds' if r is None else rec.get('axis') or 'rounds', r)


def _key(rec: Mapping) -> tuple:
  return (rec['dataset'], rec['model'], rec['task'], rec['language']) + _column(rec)


def _check(records: Iterable[Mapping]) -> list[dict]:
  out = []
  for i, rec in enumerate(records):
    missing = [k for k in _REQUIRED if k not in rec]
    if missing:
      raise ValueError(f'record {i} lacks {missing}; a record needs {list(_REQUIRED)}')
    out.append(dict(rec))
  return out


def _rounds_sort_key(column):
  axis, r = column
  return (r is not None, axis != 'rounds', r or 0)


def _rounds_label(column) -> str:
  axis, r = column
  return 'r=trained' if r is None else (f'r={r}' if axis == 'rounds' else f'{axis}={r}')


def _fmt(v) -> str:
  if v is None:
    return '–'
  if isinstance(v, float) and math.isnan(v):
    return 'nan'
  if float(v).is_integer() and abs(v) >= 10:
    return str(int(v))
  return f'{v:.4f}'


def markdown_report(records: Sequence[Mapping]) -> str:
  """The Markdown text: '## <task>' then a table per task (rows = dataset/language/metric, columns = rounds)."""
  records = _check(records)
  lines = ['# Evaluation report', '']
  for task in sorted({r['task'] for r in records}):
    recs = [r for r in records if r['task'] == task]
    rounds_values = sorted({_column(r) for r in recs}, key=_rounds_sort_key)
    models = sorted({r['model'] for r in recs})
    value = {(r['model'], r['dataset'], r['language'], m, _column(r)): v for r in recs for m, v in r['metrics'].items()}
    rows = sorted({k[:4] for k in value}, key=lambda k: (k[0], k[1], k[2] == 'avg', k[2], k[3]))
    lines += [f'## {task}', '']
    header = (
      (['model'] if len(models) > 1 else [])
      + ['dataset', 'language', 'metric']
      + [_rounds_label(r) for r in rounds_values]
    )
    lines += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
      cells = (
        ([row[0]] if len(models) > 1 else []) + list(row[1:]) + [_fmt(value.get(row + (rv,))) for rv in rounds_values]
      )
      lines.append('| ' + ' | '.join(str(c) for c in cells) + ' |')
    lines.append('')
  xm = [r for r in records if r['dataset'] == 'xm3600']
  if xm:
    from evaluators.xm3600 import language_table

    lines += ['## XM3600 per language (R@1, %)', '', language_table(xm)]
  return '\n'.join(lines)


def write_report(records: Sequence[Mapping], out_dir, merge: bool = True) -> tuple[str, str]:
  """Writes eval_results.json and eval_report.md into out_dir (created; a local path or e.g. gs://..., through
  siglip_rins.paths); returns their paths as strings."""
  records = _check(records)
  out = paths.makedirs(paths.workdir_path(out_dir))
  json_path = out / 'eval_results.json'
  md_path = out / 'eval_report.md'
  if merge and paths.exists(json_path):
    old = _check(json.loads(paths.read_text(json_path)))
    new_keys = {_key(r) for r in records}
    records = [r for r in old if _key(r) not in new_keys] + records
  paths.write_text(json_path, json.dumps(records, indent=1, ensure_ascii=False))
  paths.write_text(md_path, markdown_report(records))
  return str(json_path), str(md_path)
