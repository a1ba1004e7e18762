"""Text utilities: SentencePiece tokenizers (pure Python) and SigLIP text canonicalisation.

`tf_ops` (TensorFlow) is deliberately not imported here, so model code can import
`siglip_rins.text` without pulling in TensorFlow.
"""

from siglip_rins.text.canonicalize import canonicalize
from siglip_rins.text.tokenizer import Tokenizer, get_tokenizer, resolve_tokenizer_path

__all__ = ["Tokenizer", "canonicalize", "get_tokenizer", "resolve_tokenizer_path"]
