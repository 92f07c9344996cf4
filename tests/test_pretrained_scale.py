"""A rung that starts from a pretrained model is fitted at the pretrained model's size.

The scaling fields of a record (N, and the compute a rerun is predicted at) must come from the
model the run trains: with init_from, the pretrained architecture, not the config's model
section (which init_from overrides): otherwise every Pythia rung has the same N and no trend.
"""

import os

from lm.config import base_config, model_config
from lm.hf.pretrained import run_model_config
from lm.models import nonembed_params
from lm.scaling.records import record_fields

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "hf", "gpt_neox")


def _config(init_from=""):
    c = base_config()
    c.init_from = init_from
    c.model.update(max_len=96, d_model=256, num_layers=6)  # what init_from must override
    return c


def test_run_model_config_is_the_pretrained_architecture():
    m = run_model_config(_config(FIXTURE))
    assert (m.d_model, m.num_layers) == (32, 2)  # tests/fixtures/hf/gpt_neox/config.json
    assert m.max_len == 96  # a run field: the experiment's own context length
    assert run_model_config(_config()) == model_config(_config())  # no init_from: unchanged


def test_record_fields_count_the_pretrained_parameters():
    n_pre = record_fields(_config(FIXTURE), {}, 320)["num_params_nonembed"]
    n_own = record_fields(_config(), {}, 320)["num_params_nonembed"]
    assert n_pre == round(nonembed_params(run_model_config(_config(FIXTURE))))
    assert n_pre < n_own / 10  # 2 layers of width 32 vs 6 of width 256
