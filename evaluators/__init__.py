"""Evaluators for siglip_rins: zero-shot classification, retrieval, XM3600, cultural diversity, LM perplexity,
LM multiple choice and classifier accuracy.

`build(name, cfg)` makes one from `config.evals.NAME` (`dict(type=..., every=..., ...)`);
`evaluator.run(predictor, rounds=None | int | [ints]) -> list[record]` with record =
`{dataset, model, task, metrics, language, rounds}`; `report.write_report(records, out_dir)` writes them.
"""

from evaluators.registry import build, build_all, known_types, register

# Importing the modules registers their types.
from evaluators import classification, cultural, lm_multichoice, lm_ppl, retrieval, xm3600, zeroshot  # noqa: F401,E402
from evaluators.report import markdown_report, write_report  # noqa: E402

__all__ = ['build', 'build_all', 'known_types', 'register', 'write_report', 'markdown_report']
