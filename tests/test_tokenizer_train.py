"""`siglip-rins tokenizer train` driven as a user would (subprocess, relative paths), plus its building blocks."""

import io
import json
import os
import pathlib
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import pytest

from siglip_rins.text import train_tokenizer as tt
from siglip_rins.text.tokenizer import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]

COLOURS = {
  "en": ["red", "green", "blue", "yellow", "white"],
  "ar": ["أحمر", "أخضر", "أزرق", "أصفر", "أبيض"],
  "ja": ["赤い", "緑の", "青い", "黄色い", "白い"],
  "zh": ["红色的", "绿色的", "蓝色的", "黄色的", "白色的"],
}
THINGS = {
  "en": ["cat", "dog", "car", "house", "tree", "bird"],
  "ar": ["قطة", "كلب", "سيارة", "بيت", "شجرة", "طائر"],
  "ja": ["猫", "犬", "車", "家", "木", "鳥"],
  "zh": ["猫", "狗", "汽车", "房子", "树", "鸟"],
}
PATTERN = {
  "en": "a {c} {t} in the park",
  "ar": "{t} {c} في الحديقة",
  "ja": "公園に{c}{t}がいます",
  "zh": "公园里有一只{c}{t}",
}
VOCAB = 400
# Not in the corpus: characters the model never saw must round-trip through byte fallback.
HELD_OUT = ["قطة تجلس على النافذة في الصباح", "東京の夜景、とても綺麗です。", "一只猫坐在窗台上", "Ωμέγα 🐱 ok"]


def _captions(lang):
  return [PATTERN[lang].format(c=c, t=t) for c in COLOURS[lang] for t in THINGS[lang]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """cwd with caps/data.jsonl (list-of-captions and per-language dict fields, plus records to skip) and
  extra.txt (Arabic, Japanese, Chinese lines)."""
  cwd = tmp_path_factory.mktemp("user")
  (cwd / "caps").mkdir()
  lines = []
  en, ar, ja = _captions("en"), _captions("ar"), _captions("ja")
  for i in range(len(en)):
    lines.append({"image": f"img/{i}.jpg", "texts": [en[i], en[i].upper()]})
    lines.append({"image": f"img/{i}.jpg", "texts": {"en": en[i], "ar": [ar[i]], "ja": [ja[i], ja[i] + "。"]}})
    lines.append({"image": f"img/{i}.jpg", "caption": f"photo number {i}"})
  lines += [{"texts": 42}, {"texts": None}, {"label": 3}]
  with open(cwd / "caps" / "data.jsonl", "w", encoding="utf-8") as f:
    for r in lines:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
    f.write("{not json\n")
  text = [*_captions("ar"), *_captions("ja"), *_captions("zh"), "", "   "]
  (cwd / "extra.txt").write_text("\n".join(text * 3) + "\n", encoding="utf-8")
  return cwd


def _cli(cwd, *args):
  env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
  return subprocess.run(
    [sys.executable, "-m", "siglip_rins.cli", "tokenizer", "train", *args],
    cwd=cwd,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )


def _train(cwd, out, *extra):
  return _cli(cwd, "--input", "caps", "extra.txt", "--vocab", str(VOCAB), "--out", out, *extra)


@pytest.fixture(scope="module")
def trained(corpus):
  proc = _train(corpus, "models/tok.model")  # relative, in a folder that does not exist yet
  assert proc.returncode == 0, proc.stderr
  return corpus / "models" / "tok.model", proc


def test_cli_trains_a_model_with_the_documented_layout(trained):
  path, proc = trained
  assert "wrote models/tok.model" in proc.stdout
  assert "bad_json 1" in proc.stdout and "text_not_string 1" in proc.stdout and "no_caption_field 1" in proc.stdout
  tok = Tokenizer.from_file(path)
  assert tok.vocab_size == VOCAB
  sp = tok._sp
  assert (tok.pad_id, tok.eos_id, sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
  assert sp.piece_to_id("<0xE6>") > 2  # byte-fallback pieces are in the vocabulary
  ids = tok.encode(["a red cat in the park"], 12, eos="sticky", pad_value=1)[0]
  assert 0 not in ids and ids[-1] == 1  # sticky EOS + pad_value=1: pads with EOS


def test_round_trips_cjk_and_arabic(trained):
  tok = Tokenizer.from_file(trained[0])
  for text in HELD_OUT + _captions("ar")[:3] + _captions("zh")[:3]:
    ids = tok.encode_ids(text, canonicalize=False)
    assert 2 not in ids, text  # never <unk>: byte fallback
    assert tok.decode(ids) == text


def test_same_seed_same_bytes(corpus, trained):
  again = _train(corpus, "again.model")
  assert again.returncode == 0, again.stderr
  assert (corpus / "again.model").read_bytes() == trained[0].read_bytes()


def test_max_sentences_samples_by_seed(corpus):
  outs = {}
  for name, seed in (("a", 1), ("b", 1), ("c", 2)):
    proc = _train(corpus, f"s_{name}.model", "--max-sentences", "250", "--seed", str(seed))
    assert proc.returncode == 0, proc.stderr
    assert "250 sentences (a sample of" in proc.stdout
    outs[name] = (corpus / f"s_{name}.model").read_bytes()
  assert outs["a"] == outs["b"] and outs["a"] != outs["c"]


def _one_error_line(proc, *needles):
  assert proc.returncode == 1, (proc.stdout, proc.stderr)
  lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  for needle in needles:
    assert needle in lines[0], lines[0]


def test_errors_are_one_line(corpus):
  (corpus / "empty.txt").write_text("\n  \n\n")
  (corpus / "nocap").mkdir(exist_ok=True)
  (corpus / "nocap" / "data.jsonl").write_text('{"label": 1}\n{"texts": 5}\n')
  (corpus / "nodata").mkdir(exist_ok=True)
  _one_error_line(_cli(corpus, "--input", "missing.txt", "--vocab", "300", "--out", "m.model"), "missing.txt")
  _one_error_line(_cli(corpus, "--input", "nodata", "--vocab", "300", "--out", "m.model"), "nodata", "data.jsonl")
  _one_error_line(_cli(corpus, "--input", "empty.txt", "--vocab", "300", "--out", "m.model"), "empty.txt", "no caption")
  _one_error_line(
    _cli(corpus, "--input", "nocap", "--vocab", "300", "--out", "m.model"), "no caption", "text_not_string 1"
  )
  _one_error_line(
    _cli(corpus, "--input", "extra.txt", "--vocab", "100000", "--out", "m.model"), "too large", "extra.txt"
  )
  _one_error_line(_cli(corpus, "--input", "extra.txt", "--vocab", "100", "--out", "m.model"), "too small")
  _one_error_line(_cli(corpus, "--input", "extra.txt", "--vocab", "300", "--out", "m.bin"), ".model")
  assert not (corpus / "m.model").exists()


# ------------------------------------------------------------------------------------------- building blocks


def test_bounded_lines_skip_hostile_long_lines():
  data = b"short\n" + b"x" * 100_000 + b"\nok\r\n" + b"y" * 50 + b"\nlast"
  assert list(tt._bounded_lines(io.BytesIO(data), 10)) == [b"short", None, b"ok", None, b"last"]
  assert list(tt._bounded_lines(io.BytesIO(b"z" * 11), 10)) == [None]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
  lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")), max_size=8),
  ending=st.sampled_from([b"\n", b"\r\n"]),
  final_newline=st.booleans(),
  limit=st.integers(1, 25),
)
def test_bounded_lines_property(lines, ending, final_newline, limit):
  data = ending.join(lines) + (ending if final_newline and lines else b"")
  expected = [x if len(x) <= limit else None for x in lines]
  if lines and not final_newline and lines[-1] == b"":
    expected = expected[:-1]  # an empty unterminated last line is no line
  assert list(tt._bounded_lines(io.BytesIO(data), limit)) == expected


def test_long_and_bad_lines_are_counted(tmp_path):
  (tmp_path / "t.txt").write_bytes(b"good line\n" + b"a" * 5000 + b"\n" + b"caf\xe9\n" + "日本語".encode() + b"\n")
  skipped = {}
  got = list(tt.iter_captions([(tmp_path / "t.txt", "text")], tt.DEFAULT_FIELDS, 4096, skipped))
  assert got == ["good line", "日本語"] and skipped == {"too_long": 1, "bad_utf8": 1}
  (tmp_path / "r.jsonl").write_text(
    '{"text": "lone \\ud800 surrogate"}\n{"caption": ["x" , "%s"]}\n{"texts": {"en": "fine"}}\n' % ("b" * 5000)
  )
  skipped = {}
  got = list(tt.iter_captions([(tmp_path / "r.jsonl", "jsonl")], tt.DEFAULT_FIELDS, 4096, skipped))
  assert got == ["x", "fine"] and skipped == {"bad_utf8": 1, "too_long": 1}


def test_sample_sentences():
  items = [str(i) for i in range(100)]
  assert tt.sample_sentences(iter(items), 200, seed=0) == (items, 100)
  a, n = tt.sample_sentences(iter(items), 10, seed=3)
  assert n == 100 and len(a) == 10 and a == sorted(a, key=int)  # input order kept
  assert tt.sample_sentences(iter(items), 10, seed=3)[0] == a
  assert tt.sample_sentences(iter(items), 10, seed=4)[0] != a


def test_function_api_and_delimiter(tmp_path):
  (tmp_path / "c.txt").write_text("\n".join(_captions("en") * 4) + "\n")
  result = tt.train_tokenizer(
    [tmp_path / "c.txt"], 300, tmp_path / "m.model", model_type="bpe", normalization="identity"
  )
  assert result.sentences == 4 * len(_captions("en")) and result.vocab_size == 300
  assert Tokenizer.from_file(tmp_path / "m.model").vocab_size == 300
  assert tt._delimiter("U+E000") == "\ue000" and tt._delimiter("|") == "|" and tt._delimiter("") == ""
  with pytest.raises(tt.TokenizerTrainingError, match="model-type"):
    tt.train_tokenizer([tmp_path / "c.txt"], 300, tmp_path / "m.model", model_type="word")


@pytest.mark.slow
def test_shipped_demo_tokenizer_is_built_by_the_command(tmp_path):
  """tokenizers/demo_multilingual.model == `siglip-rins tokenizer train` on the demo corpus (README command)."""
  sys.path.insert(0, str(ROOT / "tokenizers"))
  try:
    import train_demo_tokenizer as demo
  finally:
    sys.path.remove(str(ROOT / "tokenizers"))
  demo.write_corpus(tmp_path / "corpus")
  proc = _cli(
    tmp_path,
    *("--input", "corpus", "--vocab", "2000", "--out", "demo.model", "--model-type", "bpe"),
    *("--character-coverage", "1.0", "--pretokenization-delimiter", "U+E000"),
  )
  assert proc.returncode == 0, proc.stderr
  assert (tmp_path / "demo.model").read_bytes() == (ROOT / "tokenizers" / "demo_multilingual.model").read_bytes()
