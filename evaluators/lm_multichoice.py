"""Zero-shot multiple choice for language models (paper App. C): each option is concatenated after the context,
the per-token log-perplexity (mean −log p, nats) of the whole sequence is taken under the causal mask, and the
option with the LOWEST score is the answer (App. C: "we evaluate the log-perplexity of each option, applying a
causal mask, after concatenating the contextual information (if any), followed by the prefix and the answer").
Metric: accuracy in [0, 1].  `score='full'` (the default) is that protocol; `score='option'` scores only the
option's tokens (a common variant elsewhere, e.g. lm-eval-harness's acc_norm family), available for comparison.

Context and option are tokenised separately (no canonicalisation, no EOS) and concatenated; a context too long
for `seq_len` is cut on the left.

Prompt formats (`task`):
  generic       {"context": str, "options": [str, ...], "label": int (0-based)}       — any task
  openbookqa    TFDS openbookqa {question: {stem, choice_A..choice_D}, answerKey: 0..3}, or the release JSONL
                {question: {stem, choices: [{text, label}]}, answerKey: "A".."D"}; context = stem
  commonsenseqa release JSONL, same fields as openbookqa's release JSONL (answerKey "A".."E")
  boolq         {passage, question, answer: bool} (release) or TFDS super_glue/boolq {passage, question,
                label: 0/1}; context = "<passage> Based on this, the answer to the question: <question>, is:",
                options ["no", "yes"]
  piqa          {goal, sol1, sol2, label: 0/1} (TFDS piqa or release JSONL + labels); context =
                "The goal is: <goal> The solution is:", option = "<sol>." (one final period)
  siqa          {context, question, answerA, answerB, answerC, label: 1..3 (1-based as in the release's
                labels file)}; context = "<context> <question>"
  hellaswag     TFDS hellaswag {context, endings, label} or release JSONL {ctx, endings, label}
Config: dict(type='lm_multichoice', task='piqa', data=dict(type='jsonl', path=FOLDER) or
dict(type='tfds', name='piqa', split='validation'), seq_len=1024, batch_size=16, score='full').
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from evaluators import common
from evaluators.registry import register

_LETTERS = 'ABCDEFGH'


def _letter_or_index(value, n: int, where: str) -> int:
  if isinstance(value, str) and value.strip().upper() in _LETTERS[:n]:
    return _LETTERS.index(value.strip().upper())
  if isinstance(value, (int, np.integer)) and 0 <= int(value) < n:
    return int(value)
  raise ValueError(f'{where}: answer {value!r} is not one of {list(_LETTERS[:n])} or 0..{n - 1}')


def _generic(ex):
  return str(ex['context']), [str(o) for o in ex['options']], int(ex['label'])


def _question_choices(ex):
  q = ex['question']
  if 'choices' in q:
    choices = sorted(q['choices'], key=lambda c: c['label'])
    options = [c['text'] for c in choices]
  else:
    options = [q[f'choice_{letter}'] for letter in _LETTERS if f'choice_{letter}' in q]
  return q['stem'], options, _letter_or_index(ex['answerKey'], len(options), 'answerKey')


def _boolq(ex):
  context = f"{ex['passage']} Based on this, the answer to the question: {ex['question']}, is:"
  answer = ex['answer'] if 'answer' in ex else ex['label']
  if isinstance(answer, str):
    answer = answer.strip().lower() in ('true', '1', 'yes')
  return context, ['no', 'yes'], int(bool(answer))


def _piqa(ex):
  context = f"The goal is: {ex['goal']} The solution is:"
  options = [f"{str(ex[k]).rstrip().rstrip('.')}." for k in ('sol1', 'sol2')]
  return context, options, int(ex['label'])


def _siqa(ex):
  label = int(ex['label']) - 1
  if label not in (0, 1, 2):
    raise ValueError(f"siqa label must be 1, 2 or 3 (1-based), got {ex['label']!r}")
  return f"{ex['context']} {ex['question']}", [ex['answerA'], ex['answerB'], ex['answerC']], label


def _hellaswag(ex):
  context = ex['context'] if 'context' in ex else ex['ctx']
  return context, list(ex['endings']), int(ex['label'])


TASK_FORMATS = {
  'generic': _generic,
  'openbookqa': _question_choices,
  'commonsenseqa': _question_choices,
  'boolq': _boolq,
  'piqa': _piqa,
  'siqa': _siqa,
  'hellaswag': _hellaswag,
}


def format_example(task: str, example: Mapping) -> tuple[str, list[str], int]:
  """A raw example → (context, options, 0-based label). Missing fields → ValueError naming them."""
  if task not in TASK_FORMATS:
    raise ValueError(f'unknown multiple-choice task {task!r}; known: {sorted(TASK_FORMATS)}')
  try:
    context, options, label = TASK_FORMATS[task](example)
  except KeyError as e:
    raise ValueError(
      f'{task}: example lacks field {e.args[0]!r}; it has {sorted(example)} '
      f'(see evaluators/lm_multichoice.py for the fields per task)'
    ) from None
  if not options or not 0 <= label < len(options):
    raise ValueError(f'{task}: label {label} out of range for {len(options)} options')
  return context, options, label


def option_scores(
  predictor, rows: list[tuple[list[int], list[int]]], rounds, *, seq_len: int, batch_size: int, score: str = 'full'
) -> np.ndarray:
  """rows of (context ids, option ids) → float [len(rows)] per-token log-perplexity (lower = more likely)."""
  pad = int(getattr(predictor.tokenizer, 'pad_id', 0))
  out = np.empty(len(rows))
  for start in range(0, len(rows), batch_size):
    chunk = rows[start : start + batch_size]
    tokens = np.full((batch_size, seq_len), pad, np.int32)
    weights = np.zeros((batch_size, seq_len - 1), bool)
    for i, (ctx, opt) in enumerate(chunk):
      opt = opt[:seq_len]
      ctx = ctx[max(0, len(ctx) - (seq_len - len(opt))) :] if seq_len > len(opt) else []
      seq = ctx + opt
      tokens[i, : len(seq)] = seq
      first = 1 if score == 'full' else max(len(ctx), 1)  # target positions scored: first..len(seq)-1
      weights[i, first - 1 : len(seq) - 1] = True
    logp = np.asarray(predictor.lm_logprobs(tokens, rounds), np.float64)
    for i in range(len(chunk)):
      n = weights[i].sum()
      out[start + i] = -logp[i][weights[i]].sum() / n if n else np.inf
  return out


@register('lm_multichoice')
class LMMultipleChoiceEvaluator:
  task_name = 'lm_multichoice'

  def __init__(
    self,
    name: str,
    task: str,
    data: Mapping,
    seq_len: int = 1024,
    batch_size: int = 16,
    score: str = 'full',
    dataset: str | None = None,
    limit: int | None = None,
    model: str | None = None,
    show_progress: bool = True,
  ):
    if task not in TASK_FORMATS:
      raise ValueError(f'unknown multiple-choice task {task!r}; known: {sorted(TASK_FORMATS)}')
    if score not in ('option', 'full'):
      raise ValueError(f"score must be 'option' or 'full', got {score!r}")
    self.name, self.mc_task, self.data, self.dataset = name, task, dict(data), dataset or task
    self.seq_len, self.batch_size, self.score = int(seq_len), int(batch_size), score
    self.limit, self.model, self.show_progress = limit, model, show_progress
    self.task = 'lm_multichoice'

  def _examples(self):
    batches = common.iterate_batches(
      self.data, fields={'example': '*'}, image_key=None, batch_size=256, limit=self.limit
    )
    return [format_example(self.mc_task, ex) for b in batches for ex in b['example']]

  def run(self, predictor, rounds=None) -> list[dict]:
    rounds_list = common.as_rounds_list(rounds)
    examples = self._examples()
    if not examples:
      raise ValueError(f'evaluator {self.name!r}: dataset {self.data} yielded no examples')
    tok = predictor.tokenizer
    contexts = common.token_lists(tok, [c for c, _, _ in examples], self.seq_len)
    flat_opts = [o for _, opts, _ in examples for o in opts]
    opt_ids = common.token_lists(tok, flat_opts, self.seq_len)
    rows, owner = [], []
    k = 0
    for e, (_, opts, _) in enumerate(examples):
      for _ in opts:
        rows.append((contexts[e], opt_ids[k]))
        owner.append(e)
        k += 1
    bounds = np.searchsorted(np.asarray(owner), np.arange(len(examples) + 1))  # option rows per example
    labels = np.array([lab for _, _, lab in examples])
    records = []
    for r in rounds_list:
      scores = option_scores(predictor, rows, r, seq_len=self.seq_len, batch_size=self.batch_size, score=self.score)
      predictions = np.array([np.argmin(scores[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
      records.append(
        common.make_record(
          dataset=self.dataset,
          model=self.model or common.model_name(predictor),
          task=self.task,
          metrics={'accuracy': float((predictions == labels).mean()), 'n': len(examples)},
          language='en',
          rounds=r,
        )
      )
    return records
