"""`lm sample --workdir=DIR --prompt=TEXT [--max_new_tokens=N --temperature=T --top_k=K --top_p=P --seed=S]`

Generates a continuation of the prompt with the KV cache (lm.sampling) from a trained
workdir and prints prompt + continuation on stdout; why it stopped (max_new_tokens, the
end-of-sequence token or the context limit) goes to stderr. An empty prompt starts from a
newline (or the EOS id). Encoder-decoder models take the prompt as the source and continue it.
Deterministic for a seed; --temperature=0 is greedy. Past one context window a progress bar on
stderr counts the new tokens; more than lm.sampling.MAX_NEW_TOKENS is refused before loading.
"""

import os
import sys

import numpy as np
from absl import flags

from lm.cli._errors import one_line_errors

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (holds checkpoints/ and config.json).")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate (past the context, the window slides).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 is greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling: the smallest set with this mass.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_CHECKPOINT = flags.DEFINE_integer("checkpoint", None, "Checkpoint step; default the latest.")


def _prompt_ids(tokenizer, prompt: str) -> np.ndarray:
    if prompt:
        return np.asarray(tokenizer.encode(prompt), np.int32)
    try:
        start = tokenizer.encode("\n")[-1:]
    except ValueError:  # no newline in a char vocabulary
        start = []
    if not len(start):
        eos = getattr(tokenizer, "eos_id", None)
        start = [0 if eos is None else eos]
    return np.asarray(start, np.int32)


@one_line_errors("sample")
def main(argv):
    workdir = _WORKDIR.value
    from lm import checkpoint, runs, sampling
    from lm import workdir as workdir_files
    from lm.config import model_config
    from lm.data.tokenizers import load_tokenizer
    from lm.models import build_model

    # Cheap checks first (config, tokenizer, prompt, lengths, checkpoint), then the restore.
    step = checkpoint.checkpoint_step(workdir, _CHECKPOINT.value)
    from lm import remote

    local, _ = remote.localize(workdir)  # gs:// workdirs: config and tokenizer copied here
    config = workdir_files.config_from_json(
        workdir_files.read_json(os.path.join(local, "config.json")))
    tokenizer = load_tokenizer(os.path.join(local, "tokenizer"))
    config.model.vocab_size = tokenizer.vocab_size
    prompt = _prompt_ids(tokenizer, _PROMPT.value)
    request = dict(max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                   top_p=_TOP_P.value)
    sampling.check_request(build_model(model_config(config)), prompt, slide=True, **request)

    run, state = runs.load_run(workdir, step=_CHECKPOINT.value)  # None: the newest good one
    model, params, dataset, step = run.model, state["params"], run.dataset, run.restored_step
    bar = None
    if len(prompt) + _MAX_NEW.value > model.cfg.max_len:  # several windows: show that it is alive
        from tqdm.auto import tqdm
        bar = tqdm(total=_MAX_NEW.value, desc="sample", unit="tok", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    try:
        out = sampling.generate_full(model, params, prompt, seed=_SEED.value, strict=True, slide=True,
                                     eos_id=getattr(dataset.tokenizer, "eos_id", None),
                                     progress=bar.update if bar is not None else None, **request)
    finally:
        if bar is not None:
            bar.close()
    text = dataset.tokenizer.decode(out.tokens[0, :out.lengths[0]])
    print(_PROMPT.value + text)
    print(f"[{out.stop_reason}: {out.message}; checkpoint step {step}]", file=sys.stderr)
