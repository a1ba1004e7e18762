"""Caption (text) fields of local JSONL records: validation, key selection, per-language flattening.

Pure Python (no TensorFlow), so the data pipeline (`sources._jsonl_source`), the tokenizer trainer
(`siglip_rins.text.train_tokenizer`) and evaluators read caption fields by the same rules.

A caption field holds a string or a list of strings. Anything else is refused for that record, with a reason
(the same names as `siglip_rins.data.sources.REASONS`, so the pipeline counts them as `skipped/<reason>`):

  missing_field      the field is absent from the record
  text_is_null       the field is null
  text_is_dict       the field is a dict (e.g. {"en": [...], "fr": [...]}) and neither `select` nor `flatten` is given
  text_not_string    a number, a bool, or a list holding anything but strings (a number is never silently
                     turned into text)
  missing_language   `select` names a key the dict does not have (e.g. 'fr' in a record without French
                     captions), or `flatten` with `languages` found none of those languages
  empty_text         no non-empty string (e.g. "", [] or ["", ""])

API:
  text_values(record, field, *, select=None, flatten=False, languages=None) -> list[str] | str
      The captions of `record[field]` as a list of strings, or the reason name (a str) when refused.
      select:    a key path inside a dict-valued field, dots for nesting: select='fr' reads record[field]['fr'].
      flatten:   a dict of language -> str | list[str] becomes the list of all its strings (dict order, each
                 language's captions in their order); a str or list value is kept as it is.
      languages: with flatten, only these dict keys are used. A record whose value is a plain str/list is kept
                 only when its `language` field (the XM3600 one-record-per-language layout) is one of them.
  split_text_key('texts.fr') -> ('texts', 'fr');  split_text_key('texts') -> ('texts', None)
  is_refused(result) -> bool            True when text_values returned a reason name
  TEXT_REASONS                          the reason names above

The strings are returned as they are (no stripping); only an all-empty result is refused.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

TEXT_REASONS = ("missing_field", "text_is_null", "text_is_dict", "text_not_string", "missing_language", "empty_text")
LANGUAGE_FIELD = "language"


def split_text_key(text_key: str) -> tuple[str, str | None]:
  """'texts.fr' -> ('texts', 'fr'); 'a.b.c' -> ('a', 'b.c'); 'texts' -> ('texts', None)."""
  if not isinstance(text_key, str) or not text_key or text_key.startswith(".") or text_key.endswith("."):
    raise ValueError(f"text_key must be a field name or a dot path like 'texts.fr', got {text_key!r}")
  field, _, select = text_key.partition(".")
  return field, (select or None)


def is_refused(result) -> bool:
  """True when `text_values` refused the record (returned a reason name instead of a list)."""
  return isinstance(result, str)


def _string_list(value: Any) -> list[str] | str:
  """str -> [str]; list of str -> list; anything else -> reason name."""
  if value is None:
    return "text_is_null"
  if isinstance(value, str):
    return [value]
  if isinstance(value, Mapping):
    return "text_is_dict"
  if isinstance(value, (list, tuple)):
    if all(isinstance(v, str) for v in value):
      return list(value)
    return "text_not_string"
  return "text_not_string"  # int, float, bool, anything else


def text_values(
  record: Mapping,
  field: str,
  *,
  select: str | None = None,
  flatten: bool = False,
  languages: Sequence[str] | None = None,
) -> list[str] | str:
  """The captions of `record[field]` (list of str), or the reason name (str) why the record is refused.

  See the module docstring for the rules. `languages` only applies with `flatten`.
  """
  if languages is not None and not flatten:
    raise ValueError("languages= only applies together with flatten=True")
  if not isinstance(record, Mapping) or field not in record:
    return "missing_field"
  value = record[field]
  if select:
    for part in select.split("."):
      if not isinstance(value, Mapping):  # a plain caption has no language; null/number/bool are refused as such
        return "missing_language" if not is_refused(_string_list(value)) else _string_list(value)
      if part not in value:
        return "missing_language"
      value = value[part]
    out = _string_list(value)
  elif flatten and isinstance(value, Mapping):
    wanted = None if languages is None else set(languages)
    out = []
    for language, captions in value.items():
      if wanted is not None and language not in wanted:
        continue
      strings = _string_list(captions)
      if is_refused(strings):
        return "text_not_string" if strings == "text_is_dict" else strings
      out.extend(strings)
    if wanted is not None and not any(language in wanted for language in value):
      return "missing_language"
  else:
    out = _string_list(value)
    if not is_refused(out) and flatten and languages is not None:
      language = record.get(LANGUAGE_FIELD)
      if not isinstance(language, str) or language not in set(languages):
        return "missing_language"
  if is_refused(out):
    return out
  if not any(out):
    return "empty_text"
  return out
