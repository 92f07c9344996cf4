"""Experiment files, `lm run` records, reruns at the next rung, crash and kill safety."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest

from lm import archive, experiment
from lm.config import ConfigError

TINY = '''
"""A tiny test experiment: `lm run THIS --rung=xs`."""
from lm.config import base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    c.data.update(source="markov", train_tokens=20_000, eval_tokens=2_000)
    c.model.update(d_model=16, num_layers=1, num_heads=2, max_len=16)
    c.train.update(steps=STEPS, batch_size=4, warmup_steps=0, schedule="constant", log_every=2, eval_every=4,
                   eval_batches=2, checkpoint_every=1000, sample_tokens=0)
    c.mesh.data = 1
    c.experiment.update(name="tiny", hypothesis="a tiny model learns a Markov chain",
                        metric="loss", comparator="<=", threshold=1.0)  # reachable growing N only
    c.experiment.ladder = ladder(xs={"model.d_model": 8}, s={"model.d_model": 16},
                                 m={"model.d_model": 32, "model.num_layers": 2})
    return apply_rung(c, arg)
'''

FIELDS = ["id", "experiment", "experiment_file", "rung", "hypothesis", "criterion", "config",
          "config_hash", "provenance", "seed", "num_params", "train_flops", "flops_per_token",
          "tokens_seen", "wall_time", "history", "final", "metric_value", "verdict", "reason",
          "command", "parent", "prediction", "devices", "mesh"]




@pytest.fixture
def tiny_file(tmp_path):
    def make(steps=4):
        path = tmp_path / f"tiny_{steps}.py"
        path.write_text(TINY.replace("STEPS", str(steps)))
        return str(path)
    return make


def fake_train(floor=0.0, crash=False, seed_noise=0.0):
    """Stands in for lm.trainer.train: loss = floor + 3 (C / 1e6)^-0.3 from the config's size
    (+ seed_noise x (config.seed - 1): seeds 0, 1, 2 give -1, 0, +1 times it)."""
    def train(config, workdir, progress=True):
        if crash:
            raise RuntimeError("out of memory (simulated)")
        floor_ = floor + seed_noise * (config.seed - 1)
        d, layers = config.model.d_model, config.model.num_layers
        fpt = 6.0 * 12 * layers * d * d
        tokens = config.train.steps * config.train.batch_size * config.model.max_len
        loss = floor_ + 3.0 * (fpt * tokens / 1e6) ** -0.3
        steps = config.train.steps  # the eval curve follows the same law in tokens so far
        history = [{"step": s, "loss": loss + 0.1,
                    "eval_loss": floor_ + 3.0 * (fpt * tokens * s / steps / 1e6) ** -0.3} for s in (2, 4)]
        return dict(step=config.train.steps, history=history, num_params=12 * layers * d * d,
                    flops_per_token=fpt, tokens_seen=tokens, wall_time=0.01, mesh={"data": 1},
                    devices=["cpu:0"], sample="",
                    final=dict(loss=loss, bits_per_byte=loss / math.log(2),
                               perplexity=math.exp(loss), accuracy=0.5))
    return train


def test_ladder_order_apply_rung_and_errors(tiny_file):
    config = experiment.load_config(tiny_file(), "m")
    assert experiment.rungs(config) == ["xs", "s", "m"]
    assert config.model.d_model == 32 and config.model.num_layers == 2
    assert config.experiment.rung == "m"
    assert experiment.next_rung(config, "xs") == "s"
    with pytest.raises(ConfigError, match=r"unknown rung 'huge'.*\['xs', 's', 'm'\]"):
        experiment.load_config(tiny_file(), "huge")
    with pytest.raises(ConfigError, match="top of the ladder"):
        experiment.next_rung(config, "m")
    config = experiment.load_config(tiny_file(), None, ["model.dropout=0.1", "train.steps=7"])
    assert config.experiment.rung == "xs" and config.model.dropout == 0.1 and config.train.steps == 7
    with pytest.raises(ConfigError, match="train.stepz"):
        experiment.load_config(tiny_file(), "xs", ["train.stepz=3"])


def test_run_writes_a_complete_record(tiny_file, tmp_path):
    rec, path = experiment.run(tiny_file(), "xs", archive_dir=str(tmp_path / "a"), train_fn=fake_train(),
                               sets=["train.learning_rate=0.003"])
    saved = archive.load_records(str(tmp_path / "a"))
    assert [r["id"] for r in saved] == [rec["id"]] and saved[0]["_path"] == path
    missing = [k for k in FIELDS if k not in saved[0]]
    assert not missing
    assert rec["verdict"] == "not_yet" and "no trend yet" in rec["reason"]  # a first miss
    assert rec["train_flops"] == rec["flops_per_token"] * rec["tokens_seen"]
    assert rec["command"].startswith("lm run ") and "--rung=xs" in rec["command"]
    assert "--set=train.learning_rate=0.003" in rec["command"]
    assert rec["variant"] == "train.learning_rate=0.003"
    assert rec["config"]["train"]["learning_rate"] == 0.003
    assert set(rec["provenance"]["versions"]) >= {"python", "jax", "flax", "optax", "orbax-checkpoint"}


def test_crash_is_a_broken_record_not_a_verdict(tiny_file, tmp_path):
    rec, path = experiment.run(tiny_file(), "xs", archive_dir=str(tmp_path / "a"),
                               train_fn=fake_train(crash=True))
    assert rec["verdict"] == "broken" and "out of memory" in rec["reason"] and os.path.exists(path)
    assert "RuntimeError" in rec["error"]


def test_rerun_of_not_yet_at_next_rung_links_and_predicts(tiny_file, tmp_path):
    a = str(tmp_path / "a")
    f = tiny_file()
    r1, _ = experiment.run(f, "xs", archive_dir=a, train_fn=fake_train())
    r2, _ = experiment.run(f, "s", archive_dir=a, train_fn=fake_train())
    assert (r1["verdict"], r2["verdict"]) == ("not_yet", "not_yet")
    r3, path = experiment.rerun(r2, "next", archive_dir=a, train_fn=fake_train())
    assert r3["parent"] == r2["id"] and r3["rung"] == "m" and os.path.exists(path)
    assert r3["prediction"]["from_records"] == [r1["id"], r2["id"]]
    assert r3["prediction"]["at"]["surrogate"] > 0
    ahead = r3["prediction"]["rungs_ahead"]  # the ladder's rungs above s, with the forecast
    assert [a["rung"] for a in ahead] == ["m"] and ahead[0]["surrogate"] == pytest.approx(
        r3["prediction"]["at"]["surrogate"])
    assert r3["prediction"]["cheapest_rung"] == ("m" if ahead[0]["passes"] else None)
    assert len(archive.load_records(a)) == 3


def test_end_to_end_and_rerun_command_reproduces(tiny_file, tmp_path):
    a = str(tmp_path / "a")
    rec, path = experiment.run(tiny_file(steps=4), "xs", archive_dir=a, progress=False)
    assert rec["verdict"] != "broken", rec.get("error")
    assert not [k for k in FIELDS if k not in rec]
    assert math.isfinite(rec["final"]["loss"]) and rec["num_params"] > 0 and rec["train_flops"] > 0
    again, _ = experiment.run(**experiment.parse_command(rec["command"]), archive_dir=a, progress=False)
    assert again["config_hash"] == rec["config_hash"]
    assert again["final"]["loss"] == pytest.approx(rec["final"]["loss"], rel=1e-5)


def test_killing_lm_run_leaves_no_partial_record(tiny_file, tmp_path):
    a, wd = tmp_path / "a", tmp_path / "wd"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-m", "lm", "run", tiny_file(steps=100_000), "--rung=xs",
                             f"--archive={a}", f"--workdir={wd}", "--noprogress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = wd / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not (metrics.exists() and metrics.stat().st_size):
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]  # still training
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    names = os.listdir(a) if a.exists() else []
    records = archive.load_records(str(a))  # warns (and the test fails) on a corrupt file
    assert len([n for n in names if n.endswith(".json")]) == len(records)
    assert records == []  # killed outright: nothing, never half a record


def test_sigterm_mid_training_writes_a_broken_record(tiny_file, tmp_path):
    def train(config, workdir, progress=True):
        os.kill(os.getpid(), signal.SIGTERM)  # what `kill PID` does to `lm run`
        time.sleep(5)
        raise AssertionError("SIGTERM did not interrupt training")

    with pytest.raises(experiment.Interrupted):
        experiment.run(tiny_file(), "xs", archive_dir=str(tmp_path / "a"), train_fn=train)
    records = archive.load_records(str(tmp_path / "a"))
    assert [r["verdict"] for r in records] == ["broken"] and "Interrupted" in records[0]["reason"]


def test_seeds_give_one_record_with_the_mean_and_the_spread(tiny_file, tmp_path):
    a = str(tmp_path / "a")
    f = tiny_file()
    rec, _ = experiment.run(f, "xs", archive_dir=a, train_fn=fake_train(seed_noise=0.01), seeds=3)
    s = rec["seeds"]
    assert s["seeds"] == [0, 1, 2] and len(s["values"]) == 3 == len(s["surrogate_values"])
    assert s["values"][2] - s["values"][0] == pytest.approx(0.02)
    assert rec["metric_value"] == pytest.approx(sum(s["values"]) / 3)
    assert s["metric_std"] == pytest.approx(0.01) and s["surrogate_std"] == pytest.approx(0.01)
    assert rec["final"]["loss"] == pytest.approx(rec["metric_value"])  # the mean, like the metric
    assert rec["train_flops"] == rec["flops_per_token"] * rec["tokens_seen"]  # one seed's compute
    assert "--seeds=3" in rec["command"] and experiment.parse_command(rec["command"])["seeds"] == 3
    one, _ = experiment.run(f, "xs", archive_dir=a, train_fn=fake_train())
    assert "seeds" not in one and "--seeds" not in one["command"]
    with pytest.raises(ConfigError, match="at least one seed"):
        experiment.run(f, "xs", archive_dir=a, train_fn=fake_train(), seeds=0)


def test_a_result_within_seed_noise_of_the_threshold_says_so(tiny_file, tmp_path):
    a, f = str(tmp_path / "a"), tiny_file()
    mean = experiment.run(f, "xs", archive_dir=a, train_fn=fake_train())[0]["metric_value"]
    noisy = fake_train(seed_noise=0.05)  # 2 standard errors of 3 seeds: 0.058
    hit, _ = experiment.run(f, "xs", archive_dir=a, train_fn=noisy, seeds=3,
                            sets=[f"experiment.threshold={mean + 0.02}"])
    assert hit["verdict"] == "passed" and "within seed noise of the threshold" in hit["reason"]
    near, _ = experiment.run(f, "xs", archive_dir=a, train_fn=noisy, seeds=3,
                             sets=[f"experiment.threshold={mean - 0.02}"])
    assert near["verdict"] == "not_yet" and "within seed noise of the threshold" in near["reason"]
    far, _ = experiment.run(f, "xs", archive_dir=a, train_fn=noisy, seeds=3,
                            sets=[f"experiment.threshold={mean - 0.2}"])
    assert far["verdict"] == "not_yet" and "seed noise" not in far["reason"]  # a first miss


def test_seeds_on_the_command_line_train_each_seed(tiny_file, tmp_path):
    a, wd = tmp_path / "a", tmp_path / "wd"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-m", "lm", "run", tiny_file(steps=2), "--rung=xs", "--seeds=2",
                          f"--archive={a}", f"--workdir={wd}", "--noprogress"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    [rec] = archive.load_records(str(a))
    assert rec["seeds"]["seeds"] == [0, 1] and len(set(rec["seeds"]["values"])) == 2  # seeds differ
    assert sorted(os.listdir(wd)) == ["seed0", "seed1"]


def test_summary_baselines_and_entropy_rate_go_into_the_record(tiny_file, tmp_path):
    def train(config, workdir, progress=True):
        summary = fake_train()(config, workdir, progress)
        return dict(summary, baselines={"bits_per_byte": {"kn2": 1.5}, "context": "test"},
                    entropy_rate=0.5)

    rec, _ = experiment.run(tiny_file(), "xs", archive_dir=str(tmp_path / "a"), train_fn=train)
    assert rec["baselines"]["context"] == "test" and rec["final"]["entropy_rate"] == 0.5
    assert rec["final"]["excess_bits_per_byte"] == pytest.approx(rec["final"]["bits_per_byte"] - 0.5)


def test_a_failure_after_training_keeps_the_run(tiny_file, tmp_path):
    """R08: the trainer fails after its final checkpoint (the end-of-run sample, say): no
    broken record, the workdir and its checkpoint stay, the error says where."""
    def train(config, workdir, progress=True):
        os.makedirs(os.path.join(workdir, "checkpoints", str(config.train.steps)))
        raise ValueError("sample: empty prompt (simulated)")

    a = tmp_path / "a"
    with pytest.raises(experiment.TrainedButFailed, match="training finished") as caught:
        experiment.run(tiny_file(), "xs", archive_dir=str(a), train_fn=train)
    kept = str(caught.value).split("--workdir=")[1].split(" ")[0]
    assert os.path.isdir(os.path.join(kept, "checkpoints", "4")) and "empty prompt" in str(caught.value)
    assert archive.load_records(str(a)) == []
    import shutil

    shutil.rmtree(kept)


def test_rerun_keeps_the_parents_seeds_unless_told(tiny_file, tmp_path):
    a, f = str(tmp_path / "a"), tiny_file()
    parent, _ = experiment.run(f, "xs", archive_dir=a, train_fn=fake_train(seed_noise=0.01), seeds=2)
    child, _ = experiment.rerun(parent, "next", archive_dir=a, train_fn=fake_train(seed_noise=0.01))
    assert child["rung"] == "s" and child["seeds"]["seeds"] == [0, 1]
    one, _ = experiment.rerun(parent, "m", archive_dir=a, train_fn=fake_train(), seeds=1)
    assert "seeds" not in one
