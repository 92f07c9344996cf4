"""The lm-evaluation-harness adapter, offline on the local tasks in tests/fixtures/harness/:
the harness's numbers equal the ones computed from the direct API on the same requests."""

import math
import os

import pytest

pytest.importorskip("lm_eval")

from lm.evals import harness  # noqa: E402
from test_evals import REPO, _random_evaluator  # noqa: E402

FIXTURES = os.path.join(REPO, "tests", "fixtures", "harness")


def _docs():
    import json

    with open(os.path.join(FIXTURES, "tiny_arith.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_harness_numbers_equal_the_direct_api(monkeypatch):
    monkeypatch.chdir(REPO)  # the YAMLs name their data files from the repository root
    ev, _, _ = _random_evaluator(max_len=24, batch_size=4)
    results = harness.run(None, "lm_tiny_arith,lm_tiny_arith_mc,lm_tiny_arith_rolling",
                          include_path=FIXTURES, evaluator=ev)
    docs = _docs()
    gen = ev.generate_until([(d["question"], {"until": ["\n"], "max_gen_toks": 4}) for d in docs])
    exact = sum(g.strip() == d["answer"] for g, d in zip(gen, docs)) / len(docs)
    assert results["lm_tiny_arith"]["exact_match,none"] == pytest.approx(exact)
    acc = 0
    for d in docs:
        lls = [ll for ll, _ in ev.loglikelihood([(d["question"], c) for c in d["choices"]])]
        acc += int(max(range(len(lls)), key=lls.__getitem__) == d["gold"])
    assert results["lm_tiny_arith_mc"]["acc,none"] == pytest.approx(acc / len(docs))
    texts = [d["question"] + d["answer"] for d in docs]
    lls = ev.loglikelihood_rolling(texts)
    bpb = -sum(lls) / sum(len(t.encode()) for t in texts) / math.log(2)
    assert results["lm_tiny_arith_rolling"]["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-6)


def test_missing_data_file_and_unknown_task_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.yaml").write_text(
        "task: lm_broken\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: nowhere.jsonl\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{a}}'\n")
    ev, _, _ = _random_evaluator()
    with pytest.raises(FileNotFoundError, match="harness task 'lm_broken' .*'nowhere.jsonl' does not exist"):
        harness.run(None, "lm_broken", include_path=str(tmp_path), evaluator=ev)
    with pytest.raises(ValueError, match=r"unknown harness task\(s\) \['lm_nope'\]"):
        harness.run(None, "lm_nope", include_path=str(tmp_path), evaluator=ev)


def test_malformed_yaml_and_too_many_fewshot_examples_are_clear_errors(tmp_path, monkeypatch):
    (tmp_path / "bad.yaml").write_text("task: lm_bad\ndataset_path: json\n  oops: [unclosed\n")
    ev, _, _ = _random_evaluator()
    with pytest.raises(ValueError, match=r"harness task 'lm_bad': .*bad.yaml is not valid YAML \(.+\)"):
        harness.run(None, "lm_bad", include_path=str(tmp_path), evaluator=ev)
    monkeypatch.chdir(REPO)  # 4 documents, the few-shot examples drawn from the same split
    with pytest.raises(ValueError, match=r"--num_fewshot=9: .*'lm_tiny_arith_mc' has 3; use --num_fewshot<=3"):
        harness.run(None, "lm_tiny_arith_mc", include_path=FIXTURES, evaluator=ev, num_fewshot=9, limit=1)


def test_results_file_and_table_are_lm_evals_own(tmp_path, monkeypatch):
    import glob
    import json

    from lm_eval.utils import make_table

    monkeypatch.chdir(REPO)
    ev, _, _ = _random_evaluator(max_len=24, batch_size=4)
    full = harness.run(None, "lm_tiny_arith_mc", include_path=FIXTURES, evaluator=ev, full=True,
                       output_path=str(tmp_path))
    files = glob.glob(str(tmp_path / "**" / "results_*.json"), recursive=True)
    assert len(files) == 1
    with open(files[0]) as f:
        saved = json.load(f)
    acc = full["results"]["lm_tiny_arith_mc"]["acc,none"]
    assert saved["results"]["lm_tiny_arith_mc"]["acc,none"] == acc
    assert {"versions", "n-shot", "configs", "config"} <= set(saved)
    table = make_table(full)  # lm-eval's markdown: |Tasks|Version|Filter|n-shot|Metric|  |Value|...
    row = next(line.split("|") for line in table.splitlines() if line.startswith("|lm_tiny_arith_mc"))
    assert row[5].strip() == "acc" and float(row[7]) == pytest.approx(acc, abs=1e-4)
