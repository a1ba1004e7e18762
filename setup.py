"""siglip_rins: Recursive Inference Scaling (RINS) for SigLIP, LMs and ViTs in JAX."""

from setuptools import find_packages, setup

setup(
  name="siglip_rins",
  version="0.1.0",
  description="Recursive Inference Scaling (RINS) in JAX: SigLIP-RINS, decoder LMs, ViT classifiers.",
  python_requires=">=3.11,<3.13",
  packages=find_packages(include=["siglip_rins*", "evaluators*"]),
  package_data={
    "evaluators": ["data/*.json", "data/*.md"],
  },
  include_package_data=True,
  # Exact versions live in requirements.txt (the pinned set `make` installs);
  # these are the direct dependencies with the versions we test.
  install_requires=[
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "ml-collections==1.1.0",
    "numpy>=2.0",
    "safetensors>=0.4",
    "pillow>=10",
    "scipy>=1.11",
    "matplotlib>=3.8",
    "filelock>=3.10",  # bounds the persistent compilation cache (siglip_rins.compile_cache)
  ],
  extras_require={
    # The input pipeline (only it imports TensorFlow).
    "data": ["tensorflow==2.21.0", "tensorflow-text==2.21.1", "sentencepiece==0.2.3", "tensorflow-datasets==4.9.10"],
    # Hugging Face export / interop tests (torch 2.13.0 CPU installs from a local file here).
    "hf": ["torch==2.13.0", "transformers==5.23.0"],
    # `siglip-rins serve` (siglip_rins/serve.py).
    "serve": ["werkzeug==3.1.9", "waitress==3.0.2"],
    "test": ["pytest", "pytest-xdist", "hypothesis"],
  },
  entry_points={"console_scripts": ["siglip-rins=siglip_rins.cli:main"]},
)
