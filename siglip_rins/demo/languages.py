"""Caption vocabulary and grammar for the demo shapes dataset, one table per language.

The demo dataset (`siglip_rins.demo.shapes`) describes each image with a short caption in every language of
`LANGUAGES`. A caption is built from a *noun phrase* per drawn object (article + size + colour + shape, inflected
for gender and case where the language needs it) and a *position* phrase, slotted into one of several
hand-written templates. The vocabulary is small on purpose (8 colours, 6 shapes, 2 sizes, 5 positions) so that a
tiny model can learn it; the translations are hand-written.

Canonical (language-neutral) keys used everywhere else:
    COLOURS   = red green blue yellow purple orange pink white
    SHAPES    = circle square triangle star diamond cross
    SIZES     = small large
    POSITIONS = left right top bottom center

Public API:
    LANGUAGES                                   tuple of language codes ('en', 'de', ...)
    caption(language, objects, template) -> str objects: 1 or 2 `(colour, shape, size, position)` tuples
    num_templates(language, num_objects) -> int
    class_name(language, colour, shape) -> str  e.g. 'red circle', 'roter Kreis', '赤い円'
    colour_forms(language, colour) -> tuple[str, ...]   every inflected form the captions may use
    shape_forms(language, shape) -> tuple[str, ...]
    SCRIPTS                                     language code -> script name ('Latin', 'Cyrillic', ...)

Template placeholders: `{_}` marks a word boundary in languages without spaces (see WORD_MARK); for object i
(1-based) `{np<i>}` is the noun phrase in the default (subject) case, `{dat<i>}` / `{acc<i>}` the dative / accusative (German / Greek only), `{pos<i>}` the position phrase; the same
names with a capital first letter (`{Np1}`, `{Pos1}`) give the phrase with its first letter upper-cased.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "white")
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")

# Marks word boundaries inside Japanese/Chinese captions (which have no spaces). `caption()`/`class_name()` remove
# it by default; the tokenizer trainer keeps it and passes it as SentencePiece's `pretokenization_delimiter`, so that
# no learned piece crosses a word (a piece for "red star" would never be trained when that pair is held out).
WORD_MARK = "\ue000"

# (colour, shape, size, position), all canonical English keys.
DrawnObject = tuple[str, str, str, str]


def _cap(text: str) -> str:
  """Upper-cases the first character (a no-op for scripts without case)."""
  return text[:1].upper() + text[1:]


@dataclasses.dataclass(frozen=True)
class _Language:
  code: str
  script: str
  positions: Mapping[str, str]
  # (colour, shape, size) -> {'np': ..., optional 'dat'/'acc': ...}
  noun_phrases: Callable[[str, str, str], dict[str, str]]
  class_name: Callable[[str, str], str]
  colour_forms: Mapping[str, tuple[str, ...]]
  shape_forms: Mapping[str, tuple[str, ...]]
  single_templates: tuple[str, ...]
  pair_templates: tuple[str, ...]


# ----------------------------------------------------------------------------------------------------------------
# English
_EN_POS = {
  "left": "on the left",
  "right": "on the right",
  "top": "at the top",
  "bottom": "at the bottom",
  "center": "in the center",
}
_EN_SHAPE = {s: s for s in SHAPES}


def _en_np(colour, shape, size):
  return {"np": f"a {size} {colour} {_EN_SHAPE[shape]}"}


_ENGLISH = _Language(
  code="en",
  script="Latin",
  positions=_EN_POS,
  noun_phrases=_en_np,
  class_name=lambda c, s: f"{c} {_EN_SHAPE[s]}",
  colour_forms={c: (c,) for c in COLOURS},
  shape_forms={s: (s,) for s in SHAPES},
  single_templates=("{np1} {pos1}", "a photo of {np1} {pos1}", "{Pos1} there is {np1}", "{Np1} {pos1} of the image"),
  pair_templates=(
    "{np1} {pos1} and {np2} {pos2}",
    "a photo of {np1} {pos1} and {np2} {pos2}",
    "{Pos1} there is {np1}, and {pos2} there is {np2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# German: adjectives after the indefinite article take mixed declension; nouns have grammatical gender.
_DE_SHAPE = {
  "circle": ("Kreis", "m"),
  "square": ("Quadrat", "n"),
  "triangle": ("Dreieck", "n"),
  "star": ("Stern", "m"),
  "diamond": ("Raute", "f"),
  "cross": ("Kreuz", "n"),
}
_DE_COLOUR = {
  "red": "rot",
  "green": "grün",
  "blue": "blau",
  "yellow": "gelb",
  "purple": "violett",
  "orange": "orangefarben",
  "pink": "rosafarben",
  "white": "weiß",
}
_DE_SIZE = {"small": "klein", "large": "groß"}
_DE_NOM = {"m": ("ein", "er"), "n": ("ein", "es"), "f": ("eine", "e")}
_DE_DAT = {"m": ("einem", "en"), "n": ("einem", "en"), "f": ("einer", "en")}
_DE_POS = {"left": "links", "right": "rechts", "top": "oben", "bottom": "unten", "center": "in der Mitte"}


def _de_np(colour, shape, size):
  noun, gender = _DE_SHAPE[shape]
  forms = {}
  for case, table in (("np", _DE_NOM), ("dat", _DE_DAT)):
    article, ending = table[gender]
    forms[case] = f"{article} {_DE_SIZE[size]}{ending} {_DE_COLOUR[colour]}{ending} {noun}"
  return forms


def _de_class(colour, shape):
  noun, gender = _DE_SHAPE[shape]
  return f"{_DE_COLOUR[colour]}{_DE_NOM[gender][1]} {noun}"  # strong declension, no article


_GERMAN = _Language(
  code="de",
  script="Latin",
  positions=_DE_POS,
  noun_phrases=_de_np,
  class_name=_de_class,
  colour_forms={c: tuple(f"{stem}{e}" for e in ("er", "es", "e", "en")) for c, stem in _DE_COLOUR.items()},
  shape_forms={s: (noun,) for s, (noun, _) in _DE_SHAPE.items()},
  single_templates=("{np1} {pos1}", "{Pos1} ist {np1}", "{Np1} befindet sich {pos1}", "Ein Bild mit {dat1} {pos1}"),
  pair_templates=(
    "{np1} {pos1} und {np2} {pos2}",
    "{Pos1} ist {np1}, {pos2} ist {np2}",
    "Ein Bild mit {dat1} {pos1} und {dat2} {pos2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# French: size before the noun, colour after; adjectives agree in gender.
_FR_SHAPE = {
  "circle": ("cercle", "m"),
  "square": ("carré", "m"),
  "triangle": ("triangle", "m"),
  "star": ("étoile", "f"),
  "diamond": ("losange", "m"),
  "cross": ("croix", "f"),
}
_FR_COLOUR = {
  "red": ("rouge", "rouge"),
  "green": ("vert", "verte"),
  "blue": ("bleu", "bleue"),
  "yellow": ("jaune", "jaune"),
  "purple": ("violet", "violette"),
  "orange": ("orange", "orange"),
  "pink": ("rose", "rose"),
  "white": ("blanc", "blanche"),
}
_FR_SIZE = {"small": ("petit", "petite"), "large": ("grand", "grande")}
_FR_POS = {"left": "à gauche", "right": "à droite", "top": "en haut", "bottom": "en bas", "center": "au centre"}
_GI = {"m": 0, "n": 0, "f": 1}


def _fr_np(colour, shape, size):
  noun, gender = _FR_SHAPE[shape]
  g = _GI[gender]
  article = ("un", "une")[g]
  return {"np": f"{article} {_FR_SIZE[size][g]} {noun} {_FR_COLOUR[colour][g]}"}


_FRENCH = _Language(
  code="fr",
  script="Latin",
  positions=_FR_POS,
  noun_phrases=_fr_np,
  class_name=lambda c, s: f"{_FR_SHAPE[s][0]} {_FR_COLOUR[c][_GI[_FR_SHAPE[s][1]]]}",
  colour_forms={c: tuple(sorted(set(f))) for c, f in _FR_COLOUR.items()},
  shape_forms={s: (noun,) for s, (noun, _) in _FR_SHAPE.items()},
  single_templates=("{np1} {pos1}", "une image d'{np1} {pos1}", "{Pos1}, il y a {np1}", "Il y a {np1} {pos1}"),
  pair_templates=(
    "{np1} {pos1} et {np2} {pos2}",
    "une image d'{np1} {pos1} et d'{np2} {pos2}",
    "{Pos1}, il y a {np1}, et {pos2}, {np2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Spanish: noun, colour, size; adjectives agree in gender.
_ES_SHAPE = {
  "circle": ("círculo", "m"),
  "square": ("cuadrado", "m"),
  "triangle": ("triángulo", "m"),
  "star": ("estrella", "f"),
  "diamond": ("rombo", "m"),
  "cross": ("cruz", "f"),
}
_ES_COLOUR = {
  "red": ("rojo", "roja"),
  "green": ("verde", "verde"),
  "blue": ("azul", "azul"),
  "yellow": ("amarillo", "amarilla"),
  "purple": ("morado", "morada"),
  "orange": ("naranja", "naranja"),
  "pink": ("rosa", "rosa"),
  "white": ("blanco", "blanca"),
}
_ES_SIZE = {"small": ("pequeño", "pequeña"), "large": ("grande", "grande")}
_ES_POS = {
  "left": "a la izquierda",
  "right": "a la derecha",
  "top": "arriba",
  "bottom": "abajo",
  "center": "en el centro",
}


def _es_np(colour, shape, size):
  noun, gender = _ES_SHAPE[shape]
  g = _GI[gender]
  article = ("un", "una")[g]
  return {"np": f"{article} {noun} {_ES_COLOUR[colour][g]} {_ES_SIZE[size][g]}"}


_SPANISH = _Language(
  code="es",
  script="Latin",
  positions=_ES_POS,
  noun_phrases=_es_np,
  class_name=lambda c, s: f"{_ES_SHAPE[s][0]} {_ES_COLOUR[c][_GI[_ES_SHAPE[s][1]]]}",
  colour_forms={c: tuple(sorted(set(f))) for c, f in _ES_COLOUR.items()},
  shape_forms={s: (noun,) for s, (noun, _) in _ES_SHAPE.items()},
  single_templates=("{np1} {pos1}", "una imagen de {np1} {pos1}", "Hay {np1} {pos1}", "{Pos1} hay {np1}"),
  pair_templates=(
    "{np1} {pos1} y {np2} {pos2}",
    "una imagen de {np1} {pos1} y {np2} {pos2}",
    "Hay {np1} {pos1} y {np2} {pos2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Russian (Cyrillic): nominative only; adjectives agree in gender (only "звезда" is feminine here).
_RU_SHAPE = {
  "circle": ("круг", "m"),
  "square": ("квадрат", "m"),
  "triangle": ("треугольник", "m"),
  "star": ("звезда", "f"),
  "diamond": ("ромб", "m"),
  "cross": ("крест", "m"),
}
_RU_COLOUR = {
  "red": ("красный", "красная"),
  "green": ("зелёный", "зелёная"),
  "blue": ("синий", "синяя"),
  "yellow": ("жёлтый", "жёлтая"),
  "purple": ("фиолетовый", "фиолетовая"),
  "orange": ("оранжевый", "оранжевая"),
  "pink": ("розовый", "розовая"),
  "white": ("белый", "белая"),
}
_RU_SIZE = {"small": ("маленький", "маленькая"), "large": ("большой", "большая")}
_RU_POS = {"left": "слева", "right": "справа", "top": "сверху", "bottom": "снизу", "center": "в центре"}


def _ru_np(colour, shape, size):
  noun, gender = _RU_SHAPE[shape]
  g = _GI[gender]
  return {"np": f"{_RU_SIZE[size][g]} {_RU_COLOUR[colour][g]} {noun}"}


_RUSSIAN = _Language(
  code="ru",
  script="Cyrillic",
  positions=_RU_POS,
  noun_phrases=_ru_np,
  class_name=lambda c, s: f"{_RU_COLOUR[c][_GI[_RU_SHAPE[s][1]]]} {_RU_SHAPE[s][0]}",
  colour_forms={c: f for c, f in _RU_COLOUR.items()},
  shape_forms={s: (noun,) for s, (noun, _) in _RU_SHAPE.items()},
  single_templates=("{Np1} {pos1}", "{Pos1} {np1}", "На картинке {pos1} {np1}", "{Np1} находится {pos1}"),
  pair_templates=(
    "{Pos1} {np1}, {pos2} {np2}",
    "{Np1} {pos1} и {np2} {pos2}",
    "На картинке {pos1} {np1}, а {pos2} {np2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Greek: nominative and accusative; the shapes used are masculine or neuter.
_EL_SHAPE = {
  "circle": ("κύκλος", "κύκλο", "m"),
  "square": ("τετράγωνο", "τετράγωνο", "n"),
  "triangle": ("τρίγωνο", "τρίγωνο", "n"),
  "star": ("αστέρι", "αστέρι", "n"),
  "diamond": ("ρόμβος", "ρόμβο", "m"),
  "cross": ("σταυρός", "σταυρό", "m"),
}
# (masculine nominative, masculine accusative = neuter nominative/accusative); indeclinable words repeat.
_EL_COLOUR = {
  "red": ("κόκκινος", "κόκκινο"),
  "green": ("πράσινος", "πράσινο"),
  "blue": ("μπλε", "μπλε"),
  "yellow": ("κίτρινος", "κίτρινο"),
  "purple": ("μωβ", "μωβ"),
  "orange": ("πορτοκαλί", "πορτοκαλί"),
  "pink": ("ροζ", "ροζ"),
  "white": ("λευκός", "λευκό"),
}
_EL_SIZE = {"small": ("μικρός", "μικρό"), "large": ("μεγάλος", "μεγάλο")}
_EL_POS = {"left": "αριστερά", "right": "δεξιά", "top": "πάνω", "bottom": "κάτω", "center": "στο κέντρο"}


def _el_np(colour, shape, size):
  nom, acc, gender = _EL_SHAPE[shape]
  if gender == "m":
    return {
      "np": f"ένας {_EL_SIZE[size][0]} {_EL_COLOUR[colour][0]} {nom}",
      "acc": f"έναν {_EL_SIZE[size][1]} {_EL_COLOUR[colour][1]} {acc}",
    }
  phrase = f"ένα {_EL_SIZE[size][1]} {_EL_COLOUR[colour][1]} {nom}"
  return {"np": phrase, "acc": phrase}


def _el_class(colour, shape):
  nom, _, gender = _EL_SHAPE[shape]
  return f"{_EL_COLOUR[colour][0 if gender == 'm' else 1]} {nom}"


_GREEK = _Language(
  code="el",
  script="Greek",
  positions=_EL_POS,
  noun_phrases=_el_np,
  class_name=_el_class,
  colour_forms={c: tuple(sorted(set(f))) for c, f in _EL_COLOUR.items()},
  shape_forms={s: tuple(sorted({nom, acc})) for s, (nom, acc, _) in _EL_SHAPE.items()},
  single_templates=("{np1} {pos1}", "{Pos1} υπάρχει {np1}", "μια εικόνα με {acc1} {pos1}", "{Np1} βρίσκεται {pos1}"),
  pair_templates=(
    "{np1} {pos1} και {np2} {pos2}",
    "μια εικόνα με {acc1} {pos1} και {acc2} {pos2}",
    "{Pos1} υπάρχει {np1} και {pos2} {np2}",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Hindi (Devanagari): all shapes used are masculine; adjectives in the direct case.
_HI_SHAPE = {
  "circle": "वृत्त",
  "square": "वर्ग",
  "triangle": "त्रिभुज",
  "star": "तारा",
  "diamond": "समचतुर्भुज",
  "cross": "क्रॉस",
}
_HI_COLOUR = {
  "red": "लाल",
  "green": "हरा",
  "blue": "नीला",
  "yellow": "पीला",
  "purple": "बैंगनी",
  "orange": "नारंगी",
  "pink": "गुलाबी",
  "white": "सफ़ेद",
}
_HI_SIZE = {"small": "छोटा", "large": "बड़ा"}
_HI_POS = {"left": "बाईं ओर", "right": "दाईं ओर", "top": "ऊपर", "bottom": "नीचे", "center": "बीच में"}


def _hi_np(colour, shape, size):
  return {"np": f"एक {_HI_SIZE[size]} {_HI_COLOUR[colour]} {_HI_SHAPE[shape]}"}


_HINDI = _Language(
  code="hi",
  script="Devanagari",
  positions=_HI_POS,
  noun_phrases=_hi_np,
  class_name=lambda c, s: f"{_HI_COLOUR[c]} {_HI_SHAPE[s]}",
  colour_forms={c: (w,) for c, w in _HI_COLOUR.items()},
  shape_forms={s: (w,) for s, w in _HI_SHAPE.items()},
  single_templates=("{pos1} {np1}", "{np1} {pos1} है", "चित्र में {pos1} {np1} है"),
  pair_templates=(
    "{pos1} {np1} और {pos2} {np2}",
    "चित्र में {pos1} {np1} और {pos2} {np2} हैं",
    "{np1} {pos1} है और {np2} {pos2} है",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Japanese: attributive adjectives / の-phrases before the noun; no spaces. `_W` marks word boundaries (removed or
# replaced by `caption(..., word_sep=...)`), so the tokenizer trainer can keep pieces inside words.
_W = WORD_MARK
_JA_SHAPE = {
  "circle": "円",
  "square": "正方形",
  "triangle": "三角形",
  "star": "星",
  "diamond": "ひし形",
  "cross": "十字",
}
_JA_COLOUR = {
  "red": "赤い",
  "green": "緑の",
  "blue": "青い",
  "yellow": "黄色い",
  "purple": "紫の",
  "orange": "オレンジ色の",
  "pink": "ピンクの",
  "white": "白い",
}
_JA_SIZE = {"small": "小さな", "large": "大きな"}
_JA_POS = {"left": "左", "right": "右", "top": "上", "bottom": "下", "center": "中央"}


def _ja_np(colour, shape, size):
  return {"np": f"{_JA_SIZE[size]}{_W}{_JA_COLOUR[colour]}{_W}{_JA_SHAPE[shape]}"}


_JAPANESE = _Language(
  code="ja",
  script="CJK",
  positions=_JA_POS,
  noun_phrases=_ja_np,
  class_name=lambda c, s: f"{_JA_COLOUR[c]}{_W}{_JA_SHAPE[s]}",
  colour_forms={c: (w,) for c, w in _JA_COLOUR.items()},
  shape_forms={s: (w,) for s, w in _JA_SHAPE.items()},
  single_templates=("{pos1}{_}に{_}{np1}", "{np1}{_}が{_}{pos1}{_}に{_}ある", "{pos1}{_}に{_}{np1}{_}が{_}ある{_}画像"),
  pair_templates=(
    "{pos1}{_}に{_}{np1}{_}、{_}{pos2}{_}に{_}{np2}",
    "{np1}{_}が{_}{pos1}{_}に{_}、{_}{np2}{_}が{_}{pos2}{_}に{_}ある",
    "{pos1}{_}に{_}{np1}{_}、{_}{pos2}{_}に{_}{np2}{_}が{_}ある{_}画像",
  ),
)

# ----------------------------------------------------------------------------------------------------------------
# Chinese (simplified): measure word 个; no spaces; `_W` marks word boundaries as for Japanese.
_ZH_SHAPE = {
  "circle": "圆形",
  "square": "正方形",
  "triangle": "三角形",
  "star": "星形",
  "diamond": "菱形",
  "cross": "十字形",
}
_ZH_COLOUR = {
  "red": "红色",
  "green": "绿色",
  "blue": "蓝色",
  "yellow": "黄色",
  "purple": "紫色",
  "orange": "橙色",
  "pink": "粉色",
  "white": "白色",
}
_ZH_SIZE = {"small": "小", "large": "大"}
_ZH_POS = {"left": "左边", "right": "右边", "top": "上方", "bottom": "下方", "center": "中间"}


def _zh_np(colour, shape, size):
  return {"np": f"一个{_W}{_ZH_SIZE[size]}{_W}的{_W}{_ZH_COLOUR[colour]}{_W}{_ZH_SHAPE[shape]}"}


_CHINESE = _Language(
  code="zh",
  script="CJK",
  positions=_ZH_POS,
  noun_phrases=_zh_np,
  class_name=lambda c, s: f"{_ZH_COLOUR[c]}{_W}{_ZH_SHAPE[s]}",
  colour_forms={c: (w,) for c, w in _ZH_COLOUR.items()},
  shape_forms={s: (w,) for s, w in _ZH_SHAPE.items()},
  single_templates=("{pos1}{_}有{_}{np1}", "{np1}{_}在{_}{pos1}", "图片{_}{pos1}{_}有{_}{np1}"),
  pair_templates=(
    "{pos1}{_}有{_}{np1}{_}，{_}{pos2}{_}有{_}{np2}",
    "图片{_}{pos1}{_}有{_}{np1}{_}，{_}{pos2}{_}有{_}{np2}",
    "{np1}{_}在{_}{pos1}{_}，{_}{np2}{_}在{_}{pos2}",
  ),
)

_TABLES = {
  lang.code: lang for lang in (_ENGLISH, _GERMAN, _FRENCH, _SPANISH, _RUSSIAN, _GREEK, _HINDI, _JAPANESE, _CHINESE)
}
LANGUAGES: tuple[str, ...] = tuple(_TABLES)
SCRIPTS: dict[str, str] = {code: lang.script for code, lang in _TABLES.items()}


def _table(language: str) -> _Language:
  try:
    return _TABLES[language]
  except KeyError:
    raise ValueError(f"unknown demo language {language!r}; known: {', '.join(LANGUAGES)}") from None


def _check_object(obj: Sequence[str]) -> DrawnObject:
  if len(obj) != 4:
    raise ValueError(f"an object is (colour, shape, size, position), got {obj!r}")
  colour, shape, size, position = obj
  for value, allowed, what in (
    (colour, COLOURS, "colour"),
    (shape, SHAPES, "shape"),
    (size, SIZES, "size"),
    (position, POSITIONS, "position"),
  ):
    if value not in allowed:
      raise ValueError(f"unknown {what} {value!r}; known: {', '.join(allowed)}")
  return colour, shape, size, position


def num_templates(language: str, num_objects: int) -> int:
  """Number of caption templates for `num_objects` (1 or 2) objects in `language`."""
  lang = _table(language)
  if num_objects == 1:
    return len(lang.single_templates)
  if num_objects == 2:
    return len(lang.pair_templates)
  raise ValueError(f"captions describe 1 or 2 objects, got num_objects={num_objects}")


def caption(language: str, objects: Sequence[Sequence[str]], template: int, word_sep: str = "") -> str:
  """The caption of `objects` (1 or 2 `(colour, shape, size, position)` tuples, main object first).

  `template` indexes the language's templates for that many objects (0 <= template < num_templates(...)).
  `word_sep` is put between words in languages written without spaces (ja, zh); default: nothing.
  """
  lang = _table(language)
  templates = lang.single_templates if len(objects) == 1 else lang.pair_templates
  if len(objects) not in (1, 2):
    raise ValueError(f"captions describe 1 or 2 objects, got {len(objects)}")
  if not 0 <= template < len(templates):
    raise ValueError(
      f"template {template} out of range for {language!r} with {len(objects)} object(s): 0..{len(templates) - 1}"
    )
  fields = {}
  for i, obj in enumerate(objects, start=1):
    colour, shape, size, position = _check_object(obj)
    phrases = dict(lang.noun_phrases(colour, shape, size))
    phrases["pos"] = lang.positions[position]
    for name, text in phrases.items():
      fields[f"{name}{i}"] = text
      fields[f"{_cap(name)}{i}"] = _cap(text)
  return templates[template].format(_=WORD_MARK, **fields).replace(WORD_MARK, word_sep)


def class_name(language: str, colour: str, shape: str, word_sep: str = "") -> str:
  """Name of the (colour, shape) class in `language`, without article: 'red circle', 'roter Kreis', ...

  `word_sep` as in `caption`.
  """
  _check_object((colour, shape, SIZES[0], POSITIONS[0]))
  return _table(language).class_name(colour, shape).replace(WORD_MARK, word_sep)


def colour_forms(language: str, colour: str) -> tuple[str, ...]:
  """Every inflected form of `colour` that captions in `language` may contain."""
  _check_object((colour, SHAPES[0], SIZES[0], POSITIONS[0]))
  return tuple(_table(language).colour_forms[colour])


def shape_forms(language: str, shape: str) -> tuple[str, ...]:
  """Every form of the noun for `shape` that captions in `language` may contain."""
  _check_object((COLOURS[0], shape, SIZES[0], POSITIONS[0]))
  return tuple(_table(language).shape_forms[shape])
