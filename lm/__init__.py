"""lm: transformer language models in JAX/Flax, with experiments that can say "not yet"."""

__version__ = "0.1.0"
