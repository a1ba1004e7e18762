"""Caption fields of JSONL records: siglip_rins.data.fields rules, and the pipeline's skip counts for them."""

import json

import pytest

from siglip_rins.data import fields

RECORDS = [
  {"id": 0, "texts": "a red circle"},
  {"id": 1, "texts": ["a blue square", "a small blue square"]},
  {"id": 2, "texts": {"en": ["a green star"], "fr": "une étoile verte"}},
  {"id": 3, "texts": 42},
  {"id": 4, "texts": None},
  {"id": 5, "texts": True},
  {"id": 6},
  {"id": 7, "texts": {"en": "a white cross", "de": ["ein weißes Kreuz", "weißes Kreuz"]}},
  {"id": 8, "texts": ["ok", 3]},
  {"id": 9, "texts": ""},
]
# What each record gives without options / with text_key='texts.fr' / with flatten_texts=True.
PLAIN = {0: ["a red circle"], 1: ["a blue square", "a small blue square"]}
PLAIN_REASONS = {
  "text_is_dict": 2,
  "text_not_string": 3,
  "text_is_null": 1,
  "missing_field": 1,
  "empty_text": 1,
  "missing_language": 0,
}
FLAT = {
  **PLAIN,
  2: ["a green star", "une étoile verte"],
  7: ["a white cross", "ein weißes Kreuz", "weißes Kreuz"],
}


# ------------------------------------------------------------------------------------------- fields.py


def test_text_values_plain_rules():
  got = {r["id"]: fields.text_values(r, "texts") for r in RECORDS}
  assert got == {
    0: ["a red circle"],
    1: ["a blue square", "a small blue square"],
    2: "text_is_dict",
    3: "text_not_string",
    4: "text_is_null",
    5: "text_not_string",
    6: "missing_field",
    7: "text_is_dict",
    8: "text_not_string",
    9: "empty_text",
  }
  assert fields.is_refused("text_is_dict") and not fields.is_refused(["x"])
  assert set(v for v in got.values() if isinstance(v, str)) <= set(fields.TEXT_REASONS)


def test_text_values_select_and_flatten():
  assert fields.text_values(RECORDS[2], "texts", select="fr") == ["une étoile verte"]
  assert fields.text_values(RECORDS[2], "texts", select="en") == ["a green star"]
  assert fields.text_values(RECORDS[7], "texts", select="fr") == "missing_language"
  assert fields.text_values(RECORDS[0], "texts", select="fr") == "missing_language"  # not a dict
  assert fields.text_values(RECORDS[4], "texts", select="fr") == "text_is_null"
  assert fields.text_values({"c": {"x": {"fr": ["a"]}}}, "c", select="x.fr") == ["a"]  # nested dot path
  assert fields.text_values(RECORDS[7], "texts", flatten=True) == FLAT[7]
  assert fields.text_values(RECORDS[0], "texts", flatten=True) == ["a red circle"]  # str/list kept as is
  assert fields.text_values(RECORDS[7], "texts", flatten=True, languages=["de"]) == FLAT[7][1:]
  assert fields.text_values(RECORDS[2], "texts", flatten=True, languages=["de"]) == "missing_language"
  assert fields.text_values({"texts": {"en": 3}}, "texts", flatten=True) == "text_not_string"
  assert fields.text_values({"texts": {"en": {"x": "y"}}}, "texts", flatten=True) == "text_not_string"
  assert fields.text_values({"texts": {"en": ""}}, "texts", flatten=True) == "empty_text"
  # One record per language (XM3600 layout): `language` decides when languages are given.
  per_lang = {"texts": ["ein Hund"], "language": "de"}
  assert fields.text_values(per_lang, "texts", flatten=True, languages=["de"]) == ["ein Hund"]
  assert fields.text_values(per_lang, "texts", flatten=True, languages=["fr"]) == "missing_language"
  with pytest.raises(ValueError, match="flatten"):
    fields.text_values(RECORDS[0], "texts", languages=["en"])


def test_split_text_key():
  assert fields.split_text_key("texts.fr") == ("texts", "fr")
  assert fields.split_text_key("texts") == ("texts", None)
  assert fields.split_text_key("a.b.c") == ("a", "b.c")
  for bad in ("", ".fr", "texts.", None):
    with pytest.raises(ValueError, match="text_key"):
      fields.split_text_key(bad)


# ------------------------------------------------------------------------------------------- pipeline

tf = pytest.importorskip("tensorflow")
from siglip_rins.data import pipeline, sources  # noqa: E402

PP = "choice(inkey='texts', mode='first')|keep('texts', 'id')"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("fields")
  with open(root / "data.jsonl", "w", encoding="utf-8") as f:
    for r in RECORDS:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  return root


def _eval(folder, **data_kw):
  it = pipeline.make_eval_iterator(
    dict(data=dict(type="jsonl", path=str(folder), **data_kw), pp=PP, prefetch=1), batch_size=4
  )
  kept = {}
  for batch in it:
    for i, t, m in zip(batch["id"], batch["texts"], batch["_mask"]):
      if m:
        kept[int(i)] = t.decode("utf-8")
  return kept, it.stats()


def _source_texts(folder, **data_kw):
  src = sources.build_source(dict(type="jsonl", path=str(folder), **data_kw))
  out = {}
  for element in src.dataset:
    if int(element[sources.REASON_KEY]) == 0:
      texts = element["texts"].numpy()
      texts = [texts] if isinstance(texts, bytes) else list(texts)
      out[int(element["id"])] = [t.decode("utf-8") for t in texts]
  return out


def test_reasons_are_registered():
  for name in fields.TEXT_REASONS:
    assert name in sources.REASONS


def test_eval_iterator_refuses_non_string_captions(folder):
  kept, stats = _eval(folder)
  assert kept == {i: v[0] for i, v in PLAIN.items()}
  assert stats["examined_records"] == len(RECORDS)
  assert stats["skipped_records"] == len(RECORDS) - len(PLAIN)
  for reason, n in PLAIN_REASONS.items():
    assert stats[f"skipped/{reason}"] == n, reason
  assert _source_texts(folder) == PLAIN  # no dict ever reaches the model as JSON text


def test_text_key_selects_a_language(folder):
  kept, stats = _eval(folder, text_key="texts.fr")
  assert kept == {2: "une étoile verte"}
  assert stats["skipped/missing_language"] == 4  # records 0, 1, 9 (not a dict) and 7 (no "fr")
  assert stats["skipped/text_is_null"] == 1 and stats["skipped/missing_field"] == 1
  assert stats["skipped/text_not_string"] == 3  # 42, true, ["ok", 3] still refused
  assert stats["skipped/text_is_dict"] == 0


def test_flatten_texts(folder):
  assert _source_texts(folder, flatten_texts=True) == FLAT
  kept, stats = _eval(folder, flatten_texts=True)
  assert kept == {i: v[0] for i, v in FLAT.items()}
  assert stats["skipped/text_is_dict"] == 0 and stats["skipped/text_not_string"] == 3
  kept, stats = _eval(folder, flatten_texts=True, languages=["de"])
  assert kept == {7: "ein weißes Kreuz"}
  assert stats["skipped/missing_language"] == 4  # 0, 1, 9 (no language field), 2 (no 'de')


def test_train_iterator_counts_and_keeps(folder):
  it = pipeline.make_train_iterator(
    dict(data=dict(type="jsonl", path=str(folder)), pp=PP, shuffle_buffer_size=1, prefetch=1),
    global_batch_size=2,
    seed=0,
  )
  ids = set()
  for _ in range(3):
    ids |= set(int(i) for i in next(it)["id"])
  assert ids == set(PLAIN)
  stats = it.stats()
  assert stats["skipped/text_is_dict"] >= 2 and stats["skipped/text_not_string"] >= 3


def test_bad_options_raise(folder):
  with pytest.raises(ValueError, match="flatten_texts"):
    sources.build_source(dict(type="jsonl", path=str(folder), languages=["fr"]))
  with pytest.raises(ValueError, match="not both"):
    sources.build_source(dict(type="jsonl", path=str(folder), text_key="texts.fr", flatten_texts=True))


def test_non_text_fields_unchanged(tmp_path):
  (tmp_path / "data.jsonl").write_text(
    "\n".join(
      json.dumps(r)
      for r in [
        {"texts": "a", "label": 3, "country": "Peru", "income": 10.5},
        {"texts": "b", "label": 4, "country": "Chad", "income": 20},
      ]
    )
    + "\n"
  )
  src = sources.build_source(dict(type="jsonl", path=str(tmp_path)))
  rows = list(src.dataset.as_numpy_iterator())
  assert [r["label"] for r in rows] == [3, 4]
  assert [r["country"] for r in rows] == [b"Peru", b"Chad"]
  assert [float(r["income"]) for r in rows] == [10.5, 20.0]
  assert [r["texts"] for r in rows] == [b"a", b"b"]
