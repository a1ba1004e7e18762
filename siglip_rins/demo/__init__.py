"""Built-in demo data: a multilingual coloured-shapes image-caption dataset (see `shapes` and `languages`)."""

from siglip_rins.demo import languages, shapes
from siglip_rins.demo.shapes import (
  HELDOUT_PAIRS,
  NUM_CLASSES,
  SPLITS,
  class_names,
  class_prompts,
  generate,
  write_jsonl_dataset,
)

__all__ = [
  "languages",
  "shapes",
  "HELDOUT_PAIRS",
  "NUM_CLASSES",
  "SPLITS",
  "class_names",
  "class_prompts",
  "generate",
  "write_jsonl_dataset",
]
