"""`lm eval --workdir=DIR [--split=valid|test] [--checkpoint=STEP] [--max_batches=N] [--baselines]`

Evaluates a trained workdir on a split and prints one JSON object: loss (nats/token),
bits_per_byte, perplexity, tokens and bytes evaluated (plus the n-gram and compressor
baselines on the same split with --baselines). Works for both model kinds.
"""

import json

from absl import flags

from lm.cli._errors import one_line_errors

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/ and config).")
_SPLIT = flags.DEFINE_string("split", "valid", "Split to evaluate: valid or test.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the latest.")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0, "Evaluate at most N batches (0: the whole split).")
_BASELINES = flags.DEFINE_bool("baselines", False, "Add n-gram and compressor baselines.")
_ORDERS = flags.DEFINE_string("orders", "0..8", "n-gram orders for --baselines.")


@one_line_errors("eval")
def main(argv):
    from lm import checkpoint, trainer

    checkpoint.checkpoint_step(_WORKDIR.value, _CHECKPOINT.value)  # a clear error if none
    run, state = trainer.load_run(_WORKDIR.value, step=_CHECKPOINT.value)  # None: newest good
    config, model, params, dataset = run.config, run.model, state["params"], run.dataset
    step = run.restored_step
    if _SPLIT.value not in dataset.splits:
        raise ValueError(f"--split={_SPLIT.value!r}: the dataset has splits {list(dataset.splits)}")
    metrics = trainer.evaluate(params, model=model, dataset=dataset, config=config, split=_SPLIT.value,
                               max_batches=_MAX_BATCHES.value)
    out = {"workdir": _WORKDIR.value, "split": _SPLIT.value, "checkpoint": step,
           "model": config.model.kind}
    out.update({k: (v.item() if hasattr(v, "item") else v) for k, v in metrics.items()})
    if _BASELINES.value:
        from lm import baselines

        result = baselines.dataset_baselines(dataset, baselines.parse_orders(_ORDERS.value), _SPLIT.value)
        out["baselines"] = {
            "ngram": {r["order"]: r["bits_per_byte"] for r in result["ngram"]},
            "compressors": {r["compressor"]: r["bits_per_byte"] for r in result.get("compressors", [])},
            "note": "bits per byte of the whole split (n-grams: train-split counts; compressors: "
                    "conditional on the train text)",
        }
    print(json.dumps(out, default=str))
