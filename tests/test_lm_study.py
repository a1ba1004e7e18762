"""The decoder-LM RINS study (siglip_rins/demo/lm_study.py): corpus cleaning, splitting, tokenizer/document
preparation, and (slow) the whole study end to end on a small generated English corpus (no network)."""

import json
import math
import os
import random

import pytest

from siglip_rins.demo import lm_study

HEADER = """The Project Gutenberg EBook of Test Plays, by Nobody

This eBook is for the use of anyone anywhere at no cost.

*** START OF THIS PROJECT GUTENBERG EBOOK TEST PLAYS ***




Produced by Some Volunteers

"""
FOOTER = """

End of the Project Gutenberg EBook of Test Plays

*** END OF THIS PROJECT GUTENBERG EBOOK TEST PLAYS ***

***** This file should be named 1234.txt *****
Updated editions will replace the previous one."""

SUBJECTS = ["the king", "my lord", "the queen", "a fool", "this night", "the moon", "our love", "the sea"]
VERBS = ["doth speak", "shall rise", "hath fallen", "will weep", "must go", "doth sing", "is come", "hath sworn"]
OBJECTS = ["with gentle grace", "in the dark", "to the tower", "upon my word", "before the dawn", "for honour"]


def english_text(paragraphs: int, seed: int = 0) -> str:
  """Deterministic play-like English: paragraphs of a speaker line and 2-4 verse lines."""
  rng = random.Random(seed)
  out = []
  for _ in range(paragraphs):
    speaker = rng.choice(["KING.", "QUEEN.", "FOOL.", "HAMLET."])
    lines = [
      f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
      for _ in range(rng.randint(2, 4))
    ]
    out.append("\n".join([speaker] + lines))
  return "\n\n".join(out)


def test_clean_gutenberg_strips_header_footer_and_credits():
  body = english_text(5)
  cleaned = lm_study.clean_gutenberg(HEADER.replace("\n", "\r\n") + body + FOOTER)
  assert cleaned == body
  for boilerplate in ("Gutenberg", "eBook", "Produced by", "START OF", "1234.txt"):
    assert boilerplate not in cleaned
  # Text without markers is kept as it is (paragraph structure included).
  assert lm_study.clean_gutenberg(body) == body
  # The older '*END*THE SMALL PRINT!' header marker.
  assert lm_study.clean_gutenberg("licence text\n*END*THE SMALL PRINT! for public domain\n\nTo be.") == "To be."


def test_split_blocks_is_deterministic_disjoint_and_complete():
  works = [("a.txt", [f"a{i}" for i in range(250)]), ("b.txt", [f"b{i}" for i in range(170)])]
  train, val = lm_study.split_blocks(works, block_paragraphs=20, val_every=10)
  assert (train, val) == lm_study.split_blocks(works, block_paragraphs=20, val_every=10)
  flat_train = [p for b in train for p in b]
  flat_val = [p for b in val for p in b]
  assert not set(flat_train) & set(flat_val)
  assert sorted(flat_train + flat_val) == sorted(p for _, ps in works for p in ps)
  assert 0.05 < len(flat_val) / (len(flat_train) + len(flat_val)) < 0.2
  with pytest.raises(ValueError, match="too few"):
    lm_study.split_blocks([("x.txt", ["one", "two"])], block_paragraphs=20)


def test_corpus_errors_are_precise(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
    lm_study.corpus_files(str(tmp_path / "missing"))
  with pytest.raises(FileNotFoundError, match="no .txt file"):
    lm_study.corpus_files(str(tmp_path))
  (tmp_path / "empty.txt").write_text(HEADER + FOOTER)
  with pytest.raises(ValueError, match="empty after removing Gutenberg"):
    lm_study.read_corpus(str(tmp_path))
  with pytest.raises(ValueError, match="unknown variant"):
    lm_study.parse_variants("baseline,bogus")
  assert lm_study.parse_variants("rins,rao,rins") == ["baseline", "rins", "rao"]


def test_prepare_data_writes_tokenizer_and_length_bounded_documents(tmp_path):
  import sentencepiece as spm

  corpus = tmp_path / "corpus"
  corpus.mkdir()
  (corpus / "play1.txt").write_text(HEADER + english_text(120, seed=1) + FOOTER)
  (corpus / "play2.txt").write_text(english_text(80, seed=2))
  seq_len = 24
  meta = lm_study.prepare_data(
    str(corpus), vocab=300, seq_len=seq_len, cache_root=str(tmp_path / "cache"), verbose=False
  )
  sp = spm.SentencePieceProcessor(model_file=meta["tokenizer"])
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert meta["vocab_size"] == sp.get_piece_size() <= 300
  docs = {}
  for split in ("train", "val"):
    with open(os.path.join(meta[f"{split}_dir"], "data.jsonl"), encoding="utf-8") as f:
      docs[split] = [json.loads(line)["text"] for line in f]
    assert len(docs[split]) == meta[f"{split}_docs"] > 0
    lengths = [len(ids) + 1 for ids in sp.encode(docs[split])]  # + EOS
    assert max(lengths) <= seq_len
    assert sum(lengths) == meta[f"{split}_tokens"]
  joined = "\n".join(docs["train"] + docs["val"])
  assert "Gutenberg" not in joined and "KING." in joined
  # Cached: a second call returns the same folder without rebuilding.
  again = lm_study.prepare_data(
    str(corpus), vocab=300, seq_len=seq_len, cache_root=str(tmp_path / "cache"), verbose=False
  )
  assert again == meta


def test_variant_configs_share_hyperparameters_and_match_baseline_flops(tmp_path):
  from siglip_rins import flops
  from siglip_rins.models import build_model

  corpus = tmp_path / "plays.txt"
  corpus.write_text(english_text(60, seed=4))
  data = lm_study.prepare_data(
    str(corpus), vocab=300, seq_len=32, label="plays", cache_root=str(tmp_path / "c"), verbose=False
  )
  settings = {**lm_study.DEFAULTS, **lm_study.QUICK, "steps": 50, "seed": 3}
  configs = {name: lm_study.variant_config(name, settings, data) for name in lm_study.VARIANTS}
  shared = lambda c: (
    c.lr,
    c.wd,
    c.seed,
    c.input.batch_size,
    c.input.seq_len,
    c.input.tokenizer,
    c.input.data.path,
    c.model.variant,
    c.model.vocab_size,
    c.schedule.to_dict(),
  )
  base = configs["baseline"]
  assert base.input.data.path == data["train_dir"] and base.input.tokenizer == data["tokenizer"]
  assert base.model.vocab_size == data["vocab_size"] and base.total_steps == 50 and base.seed == 3
  base_flops = flops.train_flops_per_example(build_model(base.model), {"tokens": 32}) * 8 * base.total_steps
  for name, c in configs.items():
    assert shared(c) == shared(base), name
    assert c.model.recursion.signature == lm_study.VARIANTS[name]["signature"]
    per_step = flops.train_flops_per_example(build_model(c.model), {"tokens": 32}) * 8
    assert 0 <= base_flops - per_step * c.total_steps < per_step, name
    assert c.ckpt_every >= 1 and c.total_steps // c.ckpt_every + 2 <= c.keep_ckpts
  assert configs["rins3"].total_steps < configs["rins"].total_steps < 50


@pytest.mark.slow
def test_quick_study_end_to_end(tmp_path, monkeypatch):
  monkeypatch.setenv("SIGLIP_RINS_DATA_DIR", str(tmp_path / "data"))
  corpus = tmp_path / "plays.txt"
  corpus.write_text(HEADER + english_text(300, seed=3) + FOOTER)
  out = tmp_path / "report"
  rc = lm_study.main(
    ["--corpus", str(corpus), "--out", str(out), "--quick", "--quiet", "--steps", "8", "--variants", "baseline,rins"]
  )
  assert rc == 0
  for name in ("lm_report.md", "lm_results.json", "lm_val_vs_flops.png"):
    assert (out / name).stat().st_size > 0
  res = json.loads((out / "lm_results.json").read_text())
  variants = res["variants"]
  assert list(variants) == ["baseline", "rins"]
  vocab = res["data"]["vocab_size"]
  base = variants["baseline"]
  assert base["steps"] == 8
  for name, v in variants.items():
    assert abs(v["train_flops"] - base["train_flops"]) <= v["train_flops_per_step"], name
    assert res["compute_matching"][name]["within_one_step"]
    assert len(v["val_curve"]) >= 2 and v["val_curve"][-1]["step"] == v["steps"]
    for point in v["val_curve"]:
      assert all(math.isfinite(x) for x in point["log_ppl"].values())
    assert v["val_log_ppl_r1"] < math.log(vocab) and v["val_log_ppl_trained"] < math.log(vocab), name
  assert base["trained_rounds"] == 1 and variants["rins"]["trained_rounds"] == 2
  assert variants["rins"]["steps"] < 8
  assert set(variants["rins"]["val_curve"][-1]["log_ppl"]) == {"1", "2"}
  report = (out / "lm_report.md").read_text()
  assert "| rins | A^2B |" in report and "within one step" in report


def test_demo_lm_flag_routes_to_the_study(tmp_path, capsys):
  from siglip_rins.demo import runner

  missing = tmp_path / "no_such_corpus.txt"
  assert runner.main(["--lm", "--corpus", str(missing), "--out", str(tmp_path / "o")]) == 1
  assert f"--corpus {str(missing)!r} does not exist" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    runner.main(["--lm", "--help"])
  assert "siglip-rins demo --lm" in capsys.readouterr().out
