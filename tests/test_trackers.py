"""Optional trackers (lm/trackers.py), offline: W&B in offline mode writes its run file with the
metrics, MLflow with a local file store records them; a run without trackers imports neither."""

import glob
import json
import os
import struct
import subprocess
import sys

import pytest

from lm import trackers, trainer
from lm import workdir as workdir_files
from lm.config import ConfigError
from test_sharding import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(names, tmp_path, steps=4):
    config = tiny_config(mesh__data=1)
    t = config.train
    t.steps, t.log_every, t.eval_every, t.eval_batches = steps, 2, 4, 1
    t.checkpoint_every, t.sample_tokens = 4, 0
    t.trackers, t.tracker_project = tuple(names), "lm-tests"
    t.tracking_uri = (tmp_path / "mlruns").as_uri()
    return config


def test_run_without_trackers_imports_neither_library(tmp_path):
    code = f"""
import json, sys
sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
from lm import trainer
from test_sharding import tiny_config
config = tiny_config(mesh__data=1)
config.train.steps, config.train.log_every, config.train.sample_tokens = 2, 1, 0
config.train.eval_every, config.train.eval_batches, config.train.checkpoint_every = 2, 1, 2
trainer.train(config, {str(tmp_path / 'run')!r}, progress=False)
print(json.dumps({{m: m in sys.modules for m in ("wandb", "mlflow")}}))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"wandb": False, "mlflow": False}
    assert len(workdir_files.read_metrics(str(tmp_path / "run"))) == 2  # it did train and log
    assert not os.path.exists(tmp_path / "run" / "trackers.json")


def test_bad_tracker_settings_are_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown tracker 'tensorboard'; known: wandb, mlflow"):
        trackers.start(_config(["tensorboard"], tmp_path), str(tmp_path), 0)
    assert trackers.validate(_config(["wandb", "mlflow"], tmp_path)) == ("wandb", "mlflow")
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    with pytest.raises(ConfigError, match=r"pip install 'lm\[trackers\]'"):
        trainer.train(_config(["wandb"], tmp_path), str(tmp_path / "run"), progress=False)
    assert not os.path.exists(tmp_path / "run" / "checkpoints")  # it failed before training


def _wandb_records(path):
    """The protobuf records of a W&B run file (LevelDB log format: 32 KiB blocks of chunks,
    each with a 7-byte header: crc32, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = open(path, "rb").read()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf, records = 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            records.append(rec)
    return records


def _key(item):
    return item.key or "/".join(item.nested_key)


def test_trainer_logs_metrics_config_and_record_id_to_wandb_and_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store is opt-in
    (tmp_path / "wandb").mkdir()
    workdir = str(tmp_path / "run")
    config = _config(["wandb", "mlflow"], tmp_path)
    with trackers.tagged(record_id="20261201-quickstart-tiny-abc123"):
        trainer.train(config, workdir, progress=False)
    rows = workdir_files.read_metrics(workdir)
    assert [r["step"] for r in rows] == [2, 4]
    ids = json.load(open(os.path.join(workdir, "trackers.json")))
    assert set(ids) == {"wandb", "mlflow"}

    # MLflow: every metric at every step, the flattened config, the record id.
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=config.train.tracking_uri)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED"
    for key in ("loss", "learning_rate", "eval/loss", "eval/bits_per_byte"):
        jsonl_key = key.replace("eval/", "eval_")
        want = [(r["step"], r[jsonl_key]) for r in rows if jsonl_key in r]
        got = [(m.step, m.value) for m in client.get_metric_history(ids["mlflow"], key)]
        assert [s for s, _ in sorted(got)] == [s for s, _ in want], key
        assert [v for _, v in sorted(got)] == pytest.approx([v for _, v in want]), key
    assert run.data.params["train.steps"] == "4" and run.data.params["model.d_model"] == "32"
    assert run.data.tags["lm.record_id"] == "20261201-quickstart-tiny-abc123"

    # W&B offline: the run file holds each step's metrics, the config and the record id.
    files = glob.glob(str(tmp_path / "wandb" / "wandb" / f"offline-run-*-{ids['wandb']}"
                      / f"run-{ids['wandb']}.wandb"))
    assert len(files) == 1, os.listdir(tmp_path / "wandb" / "wandb")
    records = _wandb_records(files[0])
    history = {}
    for rec in records:
        if rec.WhichOneof("record_type") == "history":
            history.setdefault(rec.history.step.num, {}).update(
                {_key(i): json.loads(i.value_json) for i in rec.history.item})
    assert sorted(history) == [2, 4]
    for r in rows:
        assert history[r["step"]].get("loss") == pytest.approx(r["loss"]), history
    assert history[4]["eval/bits_per_byte"] == pytest.approx(rows[1]["eval_bits_per_byte"])
    run_rec = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    wandb_config = {_key(i): json.loads(i.value_json) for i in run_rec.config.update}
    value = lambda v: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v  # noqa: E731
    assert value(wandb_config["train"])["steps"] == 4, wandb_config.get("train")
    assert value(wandb_config["record_id"]) == "20261201-quickstart-tiny-abc123"

    # A resumed run continues the same MLflow run (id kept in trackers.json).
    again = trackers.start(_config(["mlflow"], tmp_path), workdir, start_step=4)
    assert [t.run_id for t in again] == [ids["mlflow"]]
    again[0].log({"step": 6, "loss": 1.5})
    again[0].close()
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "loss")][-1] == 6


def test_lm_run_gives_trackers_the_record_id(tmp_path):
    from lm import experiment
    from test_experiment import TINY, fake_train

    path = tmp_path / "tiny_4.py"
    path.write_text(TINY.replace("STEPS", "4"))
    seen = []
    inner = fake_train()

    def train(config, workdir, progress=True):
        seen.append(dict(trackers._TAGS))
        return inner(config, workdir, progress)

    rec, _ = experiment.run(str(path), "xs", archive_dir=str(tmp_path / "a"), train_fn=train)
    assert seen == [{"record_id": rec["id"]}] and trackers._TAGS == {}
