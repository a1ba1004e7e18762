"""LM validation log-perplexity and zero-shot multiple choice (paper App. C)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluators_fixtures import PlantedPredictor, make_tokenizer, write_dataset  # noqa: E402

import evaluators  # noqa: E402
from evaluators import lm_multichoice  # noqa: E402


@pytest.fixture(scope='module')
def predictor():
  tok = make_tokenizer()
  cost = {
    tok.encode_ids(w, canonicalize=False)[-1]: float(c + 1)
    for w, c in [('cat', 0), ('dog', 1), ('bird', 2), ('fish', 3), ('horse', 4)]
  }
  # Planted LM: log p(next token) = -(concept index + 1) for cat/dog/bird/fish/horse, -0.5 for anything else.
  return PlantedPredictor(tok, logprob_of_token=lambda t: -cost.get(t, 0.5))


def test_log_perplexity_is_mean_nll_over_non_pad_tokens(predictor, tmp_path):
  tok = predictor.tokenizer
  assert [len(tok.encode_ids(t, canonicalize=False)) for t in ('cat dog', 'bird')] == [4, 2]  # '▁' + word each
  folder = write_dataset(tmp_path / 'lm', [{'text': 'cat dog'}, {'text': 'bird'}])
  ev = evaluators.build(
    'c4', dict(type='lm_ppl', data=dict(type='jsonl', path=folder), seq_len=12, batch_size=4, show_progress=False)
  )
  (rec,) = ev.run(predictor)
  # 'cat dog</s>': scored cat(1) ▁(.5) dog(2) </s>(.5) = 4 over 4 tokens; 'bird</s>': bird(3) </s>(.5) = 3.5 over 2.
  assert rec['metrics']['tokens'] == 6
  assert rec['metrics']['log_ppl'] == pytest.approx(7.5 / 6)
  assert rec['metrics']['ppl'] == pytest.approx(np.exp(7.5 / 6))


def test_multiple_choice_picks_lowest_per_token_log_perplexity(predictor, tmp_path):
  rows = [
    {'context': 'The answer is', 'options': ['horse', 'dog', 'bird'], 'label': 1},  # dog 1.25 → correct
    {'context': 'The answer is', 'options': ['fish', 'bird'], 'label': 0},  # bird 1.75 < fish 2.25 → wrong
    # per token: 'cat cat cat' (1+.5)*3/6 = .75 beats 'dog' 1.25 although its SUM (4.5 > 2.5) is larger
    {'context': 'The answer is', 'options': ['cat cat cat', 'dog'], 'label': 0},
  ]
  folder = write_dataset(tmp_path / 'mc', rows)
  ev = evaluators.build(
    'generic',
    dict(
      type='lm_multichoice',
      task='generic',
      data=dict(type='jsonl', path=folder),
      seq_len=16,
      batch_size=3,
      show_progress=False,
    ),
  )
  (rec,) = ev.run(predictor, rounds=1)
  assert rec['metrics']['accuracy'] == pytest.approx(2 / 3) and rec['metrics']['n'] == 3
  assert rec['rounds'] == 1


def test_context_longer_than_seq_len_is_cut_on_the_left(predictor):
  tok = predictor.tokenizer
  ctx = tok.encode_ids('horse horse horse horse', canonicalize=False)
  scores = lm_multichoice.option_scores(
    predictor,
    [(ctx, tok.encode_ids('cat', canonicalize=False)), (ctx, tok.encode_ids('dog', canonicalize=False))],
    None,
    seq_len=4,
    batch_size=2,
    score='option',
  )
  np.testing.assert_allclose(scores, [0.75, 1.25])


def test_app_c_scores_context_and_answer_by_default(predictor):
  """App. C: the per-token log-perplexity of context + answer (every predicted token), not of the answer alone."""
  tok = predictor.tokenizer
  ctx = tok.encode_ids('horse', canonicalize=False)  # '▁' (.5) 'horse' (5)
  rows = [(ctx, tok.encode_ids('cat', canonicalize=False)), (ctx, tok.encode_ids('dog', canonicalize=False))]
  full = lm_multichoice.option_scores(predictor, rows, None, seq_len=16, batch_size=2)
  # predicted tokens after the first: horse(5), ▁(.5), cat(1) | dog(2)  → mean over 3
  np.testing.assert_allclose(full, [(5 + 0.5 + 1) / 3, (5 + 0.5 + 2) / 3])
  only = lm_multichoice.option_scores(predictor, rows, None, seq_len=16, batch_size=2, score='option')
  np.testing.assert_allclose(only, [(0.5 + 1) / 2, (0.5 + 2) / 2])


def test_paper_prompt_formats():
  ctx, opts, label = lm_multichoice.format_example(
    'boolq', {'passage': 'Cats purr.', 'question': 'do cats purr', 'answer': True}
  )
  assert ctx == 'Cats purr. Based on this, the answer to the question: do cats purr, is:'
  assert opts == ['no', 'yes'] and label == 1
  ctx, opts, label = lm_multichoice.format_example(
    'piqa', {'goal': 'Deep clean coffee grinder.', 'sol1': 'Scrape with rice.', 'sol2': 'Scrape with flour', 'label': 0}
  )
  assert ctx == 'The goal is: Deep clean coffee grinder. The solution is:'
  assert opts == ['Scrape with rice.', 'Scrape with flour.'] and label == 0
  _, opts, label = lm_multichoice.format_example(
    'openbookqa',
    {
      'question': {'stem': 'Q?', 'choices': [{'label': 'B', 'text': 'b'}, {'label': 'A', 'text': 'a'}]},
      'answerKey': 'B',
    },
  )
  assert opts == ['a', 'b'] and label == 1
  _, opts, label = lm_multichoice.format_example(
    'openbookqa',
    {'question': {'stem': 'Q?', 'choice_A': 'a', 'choice_B': 'b', 'choice_C': 'c', 'choice_D': 'd'}, 'answerKey': 2},
  )
  assert opts == ['a', 'b', 'c', 'd'] and label == 2
  ctx, opts, label = lm_multichoice.format_example(
    'siqa', {'context': 'Kai ate.', 'question': 'Why?', 'answerA': 'x', 'answerB': 'y', 'answerC': 'z', 'label': '3'}
  )
  assert ctx == 'Kai ate. Why?' and label == 2
  assert lm_multichoice.format_example('hellaswag', {'ctx': 'A man', 'endings': ['a', 'b'], 'label': 1})[2] == 1
  with pytest.raises(ValueError, match="piqa: example lacks field 'sol2'"):
    lm_multichoice.format_example('piqa', {'goal': 'g', 'sol1': 's', 'label': 0})
  with pytest.raises(ValueError, match="unknown multiple-choice task 'arc'"):
    evaluators.build('x', dict(type='lm_multichoice', task='arc', data={}))
