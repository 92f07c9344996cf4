"""Same numbers as the tools people already trust.

- lm-evaluation-harness's `hf` model: the expected log-likelihoods, rolling log-likelihoods and
  greedy generations in tests/fixtures/lm_eval_parity/expected.json were written by
  scripts/make_lm_eval_parity.py, which runs lm-eval's own HFLM (torch + transformers) on the
  tiny random models of tests/fixtures/hf/. Here lm's adapter runs on the same weights
  (imported through lm.hf) and must agree to 1e-3 nats, with equal is_greedy and equal text.
- Rotary frequencies: float64 computed, rounded once to float32.
"""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from lm import attention
from lm.config import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(REPO, "tests", "fixtures", "hf")
PARITY = os.path.join(REPO, "tests", "fixtures", "lm_eval_parity")


def test_rope_frequencies_are_float64_rounded_once():
    # 96 rotated dims, base 1e4: float32 pow misrounds 29 of the 48 frequencies.
    cfg = ModelConfig(d_model=192, num_heads=2, position="rope", rope_base=10000.0)
    d = cfg.rotary_dims
    exact = 1.0 / 10000.0 ** (np.arange(0, d, 2, dtype=np.float64) / d)
    freq = np.asarray(attention.rope_frequencies(cfg))
    assert freq.dtype == np.float32
    np.testing.assert_array_equal(freq, exact.astype(np.float32))
    before = np.asarray(10000.0 ** (-jnp.arange(d // 2, dtype=jnp.float32) / (d // 2)))
    position = 100_000  # the angle error grows with the position

    def error(f):
        return np.abs(position * f.astype(np.float64) - position * exact)

    assert error(freq).max() < error(before).max()
    assert error(freq).sum() < 0.5 * error(before).sum()
