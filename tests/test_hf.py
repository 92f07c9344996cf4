"""Hugging Face interop against tiny random models made by `transformers`
(scripts/make_hf_fixtures.py; committed under tests/fixtures/hf/<family>/).

Each fixture holds the HF files and expected.npz: a 520-token prompt, float32 logits at some
positions, and HF's greedy continuation. lm must match the logits to 1e-4, its KV-cache greedy
decode must give HF's continuation, and import -> export must give back HF's files exactly.
"""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from lm import models, sampling
from lm.hf import configs, hub, load
from lm.hf.safetensors_io import CheckpointError, SafetensorsDir
from lm.data.tokenizers import HFTokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
FAMILIES = ["llama", "qwen2", "qwen3", "mistral", "gpt2", "gpt_neox"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fixture(family):
    return os.path.join(FIXTURES, family)


def expected(family):
    with np.load(os.path.join(fixture(family), "expected.npz")) as z:
        return {k: z[k] for k in z.files}


def loaded(family):
    fam, cfg, _ = load.pretrained_config(fixture(family), None if family == "gpt2" else 544)
    assert fam == family
    return cfg, load.load_params(fixture(family), fam, cfg)


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family):
    cfg, params = loaded(family)
    want = expected(family)
    logits = np.asarray(models.build_model(cfg).apply({"params": params}, want["prompt_ids"][None]))[0]
    assert len(want["prompt_ids"]) >= 500
    np.testing.assert_allclose(logits[want["positions"]], want["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gpt_neox"])  # sliding window; partial rotary
def test_kv_cache_greedy_decode_matches_transformers(family):
    cfg, params = loaded(family)
    want = expected(family)
    model = models.build_model(cfg)
    new = sampling.generate(model, params, want["prompt_ids"], max_new_tokens=len(want["greedy"]),
                            temperature=0.0)
    np.testing.assert_array_equal(np.asarray(new).reshape(-1), want["greedy"])


def test_tokenizers_give_the_fixture_ids_and_exact_bytes():
    text = "héllo wörld — 漢字 <|endoftext|>\n\n  tabs\tand  spaces 123"
    for family in ("gpt2", "llama"):
        tok = HFTokenizer.from_model_dir(fixture(family), vocab_size=400)
        prompt = open(os.path.join(fixture(family), "prompt.txt"), encoding="utf-8").read()
        ids = tok.encode(prompt)
        np.testing.assert_array_equal(ids[:520], expected(family)["prompt_ids"])
        assert tok.vocab_size == 400 and tok.token_bytes[-1] == 0  # padded embedding rows
        assert tok.decode(tok.encode(text)) == text
        extra = 0 if tok.byte_level else 1  # sentencepiece style: the dummy-prefix '▁'
        for s in (prompt, text):
            assert tok.token_bytes[tok.encode(s)].sum() == len(s.encode("utf-8")) + extra
    assert HFTokenizer.from_model_dir(fixture("gpt2")).byte_level
    assert not HFTokenizer.from_model_dir(fixture("llama")).byte_level


def test_reader_handles_bf16_and_shards():
    llama = SafetensorsDir(fixture("llama"))
    assert llama.dtype("model.norm.weight") == "BF16"
    assert llama.read("model.norm.weight").dtype.name == "bfloat16"
    qwen = SafetensorsDir(fixture("qwen2"))
    assert len({qwen._entries[n][0] for n in qwen.names}) == 3  # three shard files


def _copy(family, tmp_path):
    return shutil.copytree(fixture(family), tmp_path / family)


def test_bad_inputs_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hub.local_dir(str(tmp_path))
    d = _copy("gpt2", tmp_path)
    hf = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**hf, "model_type": "bert",
                                               "architectures": ["BertModel"]}))
    with pytest.raises(configs.UnsupportedModel, match="'bert'.*supported: .*GPT2LMHeadModel"):
        load.pretrained_config(str(d))
    (d / "config.json").write_text(json.dumps({**hf, "n_embd": 64}))
    family, cfg, _ = load.pretrained_config(str(d))
    with pytest.raises(CheckpointError, match=r"tensor 'transformer.wte.weight' has shape \[320, 32\]"):
        load.load_params(str(d), family, cfg)
    q = _copy("qwen2", tmp_path)
    os.remove(q / "model-00002-of-00003.safetensors")
    with pytest.raises(CheckpointError, match="shard model-00002-of-00003.safetensors .* missing"):
        load.load_params(str(q), *load.pretrained_config(str(q))[:2])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    with pytest.raises(ValueError, match="pass the local directory"):
        hub.local_dir("hf:nobody/not-cached")
    from lm.config import ConfigError
    from lm.data import build_dataset, data_config

    with pytest.raises(ConfigError, match="data.tokenizer='hf' uses the tokenizer of a pretrained"):
        build_dataset(data_config(source="files", path=os.path.join(fixture("gpt2"), "prompt.txt"),
                                  tokenizer="hf", store_dir=str(tmp_path / "store")), 16,
                      workdir=str(tmp_path / "w"))


def test_import_cli_bad_input_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-m", "lm", "import", str(tmp_path), f"--workdir={tmp_path}/w"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [f"lm import: error: {tmp_path}: no config.json, so "
                                             "not a Hugging Face model directory"]
    assert not os.path.exists(tmp_path / "w")


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(open(os.path.join(fixture("gpt2"), "prompt.txt"), encoding="utf-8").read() * 3)
    return str(path)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt_neox", "gpt2"])
def test_import_export_round_trip_is_exact(family, tmp_path, text_file):
    from lm.cli._hf import export_workdir, import_model

    work, out = str(tmp_path / "work"), str(tmp_path / "out")
    import_model(fixture(family), work, max_len=64 if family != "gpt2" else 0,
                 data_source="files", data_path=text_file)
    result = export_workdir(work, out)
    assert result["family"] == family
    src, dst = SafetensorsDir(fixture(family)), SafetensorsDir(out)
    assert dst.names == src.names
    for name in src.names:  # float32 copies of the stored values (bf16 widens exactly)
        np.testing.assert_array_equal(dst.read(name), np.asarray(src.read(name), np.float32))
    want = json.loads(open(os.path.join(fixture(family), "config.json")).read())
    got = json.loads(open(os.path.join(out, "config.json")).read())
    assert {k: v for k, v in got.items() if k != "dtype"} == {k: v for k, v in want.items() if k != "dtype"}
    assert open(os.path.join(out, "tokenizer.json")).read() == \
        open(os.path.join(fixture(family), "tokenizer.json")).read()
    # ... and imported again, the exported directory gives the same model.
    family2, cfg2, _ = load.pretrained_config(out, None if family == "gpt2" else 64)
    again = load.load_params(out, family2, cfg2)
    first = load.load_params(fixture(family), family, cfg2)
    jax.tree.map(np.testing.assert_array_equal, again, first)


def test_init_from_fine_tunes_from_the_pretrained_weights(tmp_path, text_file):
    from lm import runs, trainer
    from lm.config import base_config

    config = base_config()
    config.init_from = fixture("gpt_neox")
    config.model.max_len = 32
    config.mesh.data = 1  # one device: the weights are the point, not the mesh
    config.data.source, config.data.path = "files", text_file
    config.train.update(steps=2, batch_size=8, learning_rate=0.0, warmup_steps=0,
                        schedule="constant", eval_every=0, eval_batches=1, sample_tokens=0,
                        checkpoint_every=0)
    summary = trainer.train(config, str(tmp_path / "ft"), progress=False)
    run, state = runs.load_run(str(tmp_path / "ft"))
    assert run.model_cfg.parallel_residual and run.model_cfg.d_model == 32
    assert run.config.data.tokenizer == "hf" and run.model_cfg.max_len == 32
    want = load.load_params(fixture("gpt_neox"), "gpt_neox", run.model_cfg)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), want)  # lr 0
    assert np.isfinite(summary["final"]["loss"]) and summary["step"] == 2
    # init_from an lm workdir: its newest checkpoint's params, restored into the new run.
    config.init_from, config.train.steps = str(tmp_path / "ft"), 1
    trainer.train(config, str(tmp_path / "ft2"), progress=False)
    _, state2 = runs.load_run(str(tmp_path / "ft2"))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state2["params"]), want)


def test_params_are_placed_straight_into_their_shardings():
    from lm import sharding

    cfg, plain = loaded("gpt_neox")
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    boxed = jax.eval_shape(models.build_model(cfg).init, jax.random.PRNGKey(0),
                           np.zeros((1, 1), np.int32))["params"]
    shardings = sharding.logical_shardings(boxed, mesh)
    placed = load.load_params(fixture("gpt_neox"), "gpt_neox", cfg, shardings)
    qkv = placed["decoder"]["layer_0"]["attn"]["qkv"]
    assert qkv.sharding == shardings["decoder"]["layer_0"]["attn"]["qkv"]
    assert len({str(s.index) for s in qkv.addressable_shards}) > 1  # really split across devices
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), placed, plain)


def test_scan_layers_models_load_and_export_the_same_tensors():
    import dataclasses

    cfg, _ = loaded("gpt_neox")
    scanned = dataclasses.replace(cfg, scan_layers=True)
    params = load.load_params(fixture("gpt_neox"), "gpt_neox", scanned)
    assert params["decoder"]["layers"]["block_0"]["attn"]["qkv"].shape[0] == cfg.num_layers
    want = expected("gpt_neox")
    logits = np.asarray(models.build_model(scanned).apply({"params": params}, want["prompt_ids"][None]))[0]
    np.testing.assert_allclose(logits[want["positions"]], want["logits"], atol=1e-4, rtol=0)
    src = SafetensorsDir(fixture("gpt_neox"))
    out = dict(load.export_tensors(params, "gpt_neox", scanned))
    assert sorted(out) == src.names
    for name, value in out.items():
        np.testing.assert_array_equal(value, src.read(name))


def test_pretrained_ladder_offline_fails_at_once_without_a_record(tmp_path, monkeypatch):
    from lm import experiment

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    path = os.path.join(REPO, "experiments", "pretrained_ladder.py")
    with pytest.raises(ValueError, match="pythia-160m: not in the local Hugging Face cache.*local directory"):
        experiment.run(path, "pythia_160m", archive_dir=str(tmp_path / "archive"))
    assert not os.path.exists(tmp_path / "archive")
    config = experiment.load_config(path, "pythia_410m", ())
    assert config.init_from == "hf:EleutherAI/pythia-410m" and config.data.tokenizer == "hf"


def test_config_translation_reads_published_config_keys():
    llama31 = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
               "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-5,
               "max_position_embeddings": 131072, "rope_theta": 500000.0, "hidden_act": "silu",
               "tie_word_embeddings": False,
               "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    family, kw = configs.from_hf(llama31)
    assert family == "llama" and kw["max_len"] == 2048 and kw["num_kv_heads"] == 8
    assert (kw["rope_scaling"], kw["rope_factor"], kw["rope_original_max_len"], kw["rope_base"]) == \
        ("llama3", 8.0, 8192, 500000.0)
    pythia = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "vocab_size": 50304,
              "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 6,
              "num_attention_heads": 8, "rotary_pct": 0.25, "rotary_emb_base": 10000,
              "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
              "max_position_embeddings": 2048, "tie_word_embeddings": False}
    family, kw = configs.from_hf(pythia, max_len=512)
    assert family == "gpt_neox" and kw["rotary_fraction"] == 0.25 and kw["mlp"] == "gelu_exact"
    assert kw["parallel_residual"] and not kw["tie_embeddings"] and kw["max_len"] == 512
    qwen25 = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
              "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
              "num_attention_heads": 14, "num_key_value_heads": 2, "rope_theta": 1000000.0,
              "rope_scaling": None, "sliding_window": 32768, "use_sliding_window": False,
              "tie_word_embeddings": True, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6}
    family, kw = configs.from_hf(qwen25)
    assert kw["qkv_bias"] and kw.get("sliding_window", 0) == 0 and kw["tie_embeddings"]
    with pytest.raises(configs.UnsupportedModel, match="rope scaling type 'yarn'"):
        configs.from_hf({**qwen25, "rope_scaling": {"type": "yarn", "factor": 4.0}})
    with pytest.raises(ValueError, match="max_len=4096 exceeds"):
        configs.from_hf(pythia, max_len=4096)
