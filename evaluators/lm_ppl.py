"""Language-model validation log-perplexity: mean per-token negative log-likelihood (nats) over non-pad tokens.

`predictor.lm_logprobs(tokens [N, T], rounds) -> [N, T-1]` gives log p(token[t+1] | tokens[:t+1]); every
token after the first of each text is scored (no BOS is added), up to and including an EOS (eos='yes').
Token-weighted over the whole dataset. Metrics: `log_ppl` (nats/token), `ppl` = exp(log_ppl), `tokens`.

Config: dict(type='lm_ppl', data=dict(type='jsonl', path=FOLDER) (lines {"text": "..."}) or
dict(type='tfds', name='lm1b', split='test'), text_key='text', seq_len=1024, batch_size=8, dataset=NAME).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from evaluators import common
from evaluators.registry import register


def masked_mean_nll(logprobs: np.ndarray, targets_valid: np.ndarray) -> tuple[float, int]:
  """logprobs [N, T-1], valid bool [N, T-1] → (sum of −log p over valid, count of valid)."""
  valid = np.asarray(targets_valid, bool)
  return float(-np.asarray(logprobs, np.float64)[valid].sum()), int(valid.sum())


@register('lm_ppl')
class LMPerplexityEvaluator:
  task = 'lm_perplexity'

  def __init__(
    self,
    name: str,
    data: Mapping,
    text_key: str = 'text',
    seq_len: int = 1024,
    batch_size: int = 8,
    eos: str = 'yes',
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    if seq_len < 2:
      raise ValueError(f'seq_len must be >= 2, got {seq_len}')
    self.name, self.data, self.dataset = name, dict(data), dataset or name
    self.text_key, self.seq_len, self.batch_size, self.eos = text_key, int(seq_len), int(batch_size), eos
    self.limit, self.model, self.show_progress = limit, model, show_progress

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    totals = {r: [0.0, 0] for r in rounds_list}
    pad = int(getattr(predictor.tokenizer, 'pad_id', 0))
    batches = common.iterate_batches(
      self.data, fields={'text': self.text_key}, image_key=None, batch_size=self.batch_size, limit=self.limit
    )
    for batch in common.progress(batches, f'{self.name}: texts', enabled=self.show_progress):
      seqs = common.token_lists(predictor.tokenizer, batch['text'], self.seq_len, eos=self.eos)
      tokens = np.full((self.batch_size, self.seq_len), pad, np.int32)
      valid = np.zeros((self.batch_size, self.seq_len - 1), bool)
      for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
        valid[i, : max(len(s) - 1, 0)] = True
      for r in rounds_list:
        nll, count = masked_mean_nll(predictor.lm_logprobs(tokens, r), valid)
        totals[r][0] += nll
        totals[r][1] += count
    records = []
    for r in rounds_list:
      nll, count = totals[r]
      if count == 0:
        raise ValueError(
          f'evaluator {self.name!r}: no token to score in {self.data} (texts empty or a single token each)'
        )
      log_ppl = nll / count
      records.append(
        common.make_record(
          dataset=self.dataset,
          model=self.model or common.model_name(predictor),
          task=self.task,
          metrics={'log_ppl': log_ppl, 'ppl': float(np.exp(log_ppl)), 'tokens': count},
          language='en',
          rounds=r,
        )
      )
    return records
