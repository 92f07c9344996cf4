"""Abilities of pretrained models: few-shot 2-digit addition across the Pythia ladder.

    lm run experiments/pretrained_tasks.py --rung=pythia_70m        # online: downloads the weights
    lm archive rerun <id> --rung=next

Each rung starts from a pretrained Hugging Face model (`init_from=hf:...`, its own tokenizer)
and trains one step at learning rate 0, so the record holds the pretrained model itself; the
trainer's eval hook then runs the built-in addition task with five solved demonstrations.
Exact match is the criterion; the answer NLL is the continuous surrogate the archive fits
against compute (FLOPs of the one step, proportional to model size here), so the ladder of
pretrained sizes gives a prediction of where few-shot addition passes.

Needs the `init_from` key (Hugging Face import) and, for hf: names, the network once.
"""

from lm.config import ConfigError, base_config
from lm.experiment import apply_rung, ladder


def get_config(arg=None):
    c = base_config()
    if "init_from" not in c:
        raise ConfigError("experiments/pretrained_tasks.py needs the config key init_from "
                          "(Hugging Face import), which this version of lm does not have")
    c.init_from = "hf:EleutherAI/pythia-70m"
    c.data.update(source="tasks", tasks="addition_2", train_tokens=20_000, eval_tokens=2_000)
    c.model.update(max_len=256)
    c.train.update(steps=1, batch_size=8, learning_rate=0.0, warmup_steps=0, schedule="constant",
                   eval_every=1, eval_batches=1, checkpoint_every=0, sample_tokens=0)
    c.evals.update(tasks="addition_2", num_examples=64, num_fewshot=5)
    c.experiment.update(
        name="pretrained_tasks",
        hypothesis=("Few-shot 2-digit addition appears with pretrained model size: small Pythia "
                    "models miss it while the answer NLL falls smoothly across the ladder."),
        metric="task:addition_2/exact_match", comparator=">=", threshold=0.5, split="valid")
    c.experiment.ladder = ladder(
        pythia_70m={"init_from": "hf:EleutherAI/pythia-70m"},
        pythia_160m={"init_from": "hf:EleutherAI/pythia-160m"},
        pythia_410m={"init_from": "hf:EleutherAI/pythia-410m"},
        pythia_1b={"init_from": "hf:EleutherAI/pythia-1b"},
    )
    return apply_rung(c, arg)
