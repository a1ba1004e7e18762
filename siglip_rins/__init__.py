"""siglip_rins: Recursive Inference Scaling (RINS) in JAX — SigLIP-RINS, decoder LMs and ViT classifiers.

Entry points: `siglip_rins.models.build_model`, `siglip_rins.train.train`, `siglip_rins.load_exported`,
the `siglip-rins` command line (siglip_rins/cli.py).
"""

__version__ = "0.1.0"


def load_exported(model_dir):
  """Loads an exported model folder (see siglip_rins.export): encode_images / encode_texts / classify."""
  from siglip_rins.export import load_exported as _load

  return _load(model_dir)
