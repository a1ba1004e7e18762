"""Test-session settings: quiet TensorFlow/XLA logs; keep JAX on CPU."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
