"""SigLIP text canonicalisation, defined once for Python and TensorFlow.

Steps (in this order):
  1. lowercase (Unicode full case mapping: Python `str.lower`, TF `tf.strings.lower(encoding='utf-8')`,
     both ICU/Unicode conformant, e.g. 'ΣΑΣ' -> 'σας');
  2. '_' -> ' ';
  3. delete punctuation: every character of Unicode general category P* (Pc Pd Ps Pe Pi Pf Po) plus the
     ASCII symbols of `string.punctuation` that Unicode files under S* (``$+<=>^`|~``);
  4. collapse runs of whitespace (ASCII \\t \\n \\v \\f \\r space and Unicode category Z*) to one space;
  5. strip leading/trailing spaces.

`PUNCTUATION_RE2` / `WHITESPACE_RE2` are the same classes as RE2 patterns for `tf.strings.regex_replace`
(see `siglip_rins.text.tf_ops.canonicalize_tf`). Python and TF agree as long as Python's `unicodedata`
and TensorFlow's RE2 use the same Unicode version for the category tables (tested on Latin, Cyrillic,
Greek, CJK, Arabic and Devanagari text, and on every code point U+0020..U+30FF except U+2C2F, a
Unicode 14 letter that TensorFlow's older ICU tables do not lowercase).
"""

import unicodedata

ASCII_SYMBOLS_AS_PUNCTUATION = "$+<=>^`|~"
ASCII_WHITESPACE = "\t\n\v\f\r "

# RE2 character classes equal to `is_punctuation` / `is_whitespace` below.
PUNCTUATION_RE2 = r"[\pP\$\+<=>\^`\|~]"
WHITESPACE_RE2 = r"[\t\n\x0B\f\r \pZ]+"


def is_punctuation(char: str) -> bool:
  """True for one character that canonicalisation deletes."""
  return unicodedata.category(char).startswith("P") or char in ASCII_SYMBOLS_AS_PUNCTUATION


def is_whitespace(char: str) -> bool:
  """True for one character that canonicalisation treats as a space."""
  return char in ASCII_WHITESPACE or unicodedata.category(char).startswith("Z")


def canonicalize(text: str) -> str:
  """Canonicalises one caption the SigLIP way (see module docstring). Returns a str."""
  if not isinstance(text, str):
    raise ValueError(f"canonicalize expects str, got {type(text).__name__}")
  lowered = text.lower().replace("_", " ")
  out = []
  in_space = False
  for char in lowered:
    if is_punctuation(char):
      continue
    if is_whitespace(char):
      if not in_space:
        out.append(" ")
      in_space = True
    else:
      out.append(char)
      in_space = False
  return "".join(out).strip(" ")
