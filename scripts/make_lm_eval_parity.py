"""lm-evaluation-harness's own `hf` model on the tiny HF fixtures: the numbers lm must match
(tests/test_evals_parity.py; run by hand, needs torch + transformers + lm-eval):

    pip install torch==2.13.0 transformers lm-eval
    python scripts/make_lm_eval_parity.py [--out=tests/fixtures/lm_eval_parity]

For each model it runs HFLM (float32, CPU, max_length=128 so documents span several rolling
windows) on a fixed set of requests: contexts ending in "\\n", spaces and mixed whitespace, an
empty context, rolling documents, and greedy generations with stop strings. It writes
expected.json: {model: {"max_length", "loglikelihood": [[ctx, cont, ll, is_greedy]],
"rolling": [[text, ll]], "generate": [[ctx, kwargs, text]]}}.

logits_cache=False: lm-eval 0.4.13's logits cache groups requests by context + continuation[:-1]
tokens and, when two requests join the same text at different points ("...?\n" + "Answer: a
list" and "...?\nAnswer:" + " a list"), scores the shorter continuation on the leading positions
of the longer one's logits (its greedy check uses the trailing ones): 0.38 nats off here. With
the cache off HFLM's number is the plain forward pass, as for every request the cache does not
group.

Models: gpt_neox (byte-level BPE, EOS only, as Pythia) and llama (sentencepiece style, EOS only)
from tests/fixtures/hf/, and llama_bos: the llama weights with a Llama-2 style tokenizer (BOS
'<s>' added by the template) and the unembedding row of EOS set to that of a token the model
generates mid-answer, so greedy answers end at EOS mid-answer. llama_bos is written in full to
--out/llama_bos (the only model files this script writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HF = os.path.join(REPO, "tests", "fixtures", "hf")
MAX_LENGTH = 128


def requests(text: str) -> dict:
    """The requests every model answers (text: a few thousand characters of prose)."""
    words = text.split()
    ll = [
        ("The quick brown", " fox"),
        ("Question: what does it return?\n", "Answer: a list"),
        ("Question: what does it return?\nAnswer:", " a list"),
        ("Question: what does it return?\nAnswer: ", "a list"),
        ("A line\n\n", "Another line"),
        ("Tabs and spaces \t \n ", "then text"),
        ("", "An empty context"),
        ("", " starts with a space"),
        (" ".join(words[:30]), " " + " ".join(words[30:34])),
        (" ".join(words[:80]), " " + " ".join(words[80:84])),  # cut from the left
    ]
    rolling = [text[:40], text[:300], text[:700], "Short.\n", text[1000:1900]]
    gen = [
        ("Question: what does it return?\nAnswer:", {"until": ["\n"], "max_gen_toks": 12}),
        (" ".join(words[:20]), {"until": ["."], "max_gen_toks": 16}),
        (" ".join(words[40:60]), {"until": [], "max_gen_toks": 20}),
        ("The", {"until": ["\n\n", "Question:"], "max_gen_toks": 24}),
        (" ".join(words[100:160]), {"until": ["\n"], "max_gen_toks": 16}),  # cut to the last 112 tokens
        ("Returns the", {"max_gen_toks": 20}),
    ]
    return {"loglikelihood": ll, "rolling": rolling, "generate": gen}


def llama_bos(out: str) -> str:
    """tests/fixtures/hf/llama with a BOS-adding tokenizer and an EOS-prone unembedding."""
    import torch
    import transformers

    path = os.path.join(out, "llama_bos")
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(os.path.join(HF, "llama"), path,
                    ignore=shutil.ignore_patterns("expected.npz", "prompt.txt"))
    with open(os.path.join(path, "tokenizer.json")) as f:
        spec = json.load(f)
    bos = next(t for t in spec["added_tokens"] if t["content"] == "<s>")
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [bos["id"]], "tokens": ["<s>"]}}}
    with open(os.path.join(path, "tokenizer.json"), "w") as f:
        json.dump(spec, f, ensure_ascii=False)
    with open(os.path.join(path, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    tcfg.update(bos_token="<s>", add_bos_token=True)
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert tok("x")["input_ids"][0] == bos["id"] == tok.bos_token_id, "the template adds no BOS"
    # EOS takes the place of a token greedy decoding picks mid-answer (a visible token first
    # seen at step >= 3 after "The").
    with torch.no_grad():
        ids = tok("The", return_tensors="pt")["input_ids"]
        gen = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, ids.shape[1]:].tolist()
        mid = next(t for k, t in enumerate(gen)
                   if k >= 3 and t not in gen[:k] and tok.decode([t], skip_special_tokens=True))
        head = model.lm_head.weight
        head[tok.eos_token_id] = head[mid] * 1.01
    model.config.bos_token_id = tok.bos_token_id
    model.to(torch.bfloat16).save_pretrained(path)  # the fixture's own storage dtype
    for extra in ("generation_config.json",):
        if os.path.exists(os.path.join(path, extra)):
            os.remove(os.path.join(path, extra))
    return path


def reference(path: str, reqs: dict) -> dict:
    """HFLM's answers to the requests."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hflm = HFLM(pretrained=path, backend="causal", max_length=MAX_LENGTH, batch_size=4,
                device="cpu", dtype="float32", logits_cache=False)

    def ask(kind, args):
        return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]

    ll = hflm.loglikelihood(ask("loglikelihood", reqs["loglikelihood"]))
    rolling = hflm.loglikelihood_rolling(ask("loglikelihood_rolling", [(t,) for t in reqs["rolling"]]))
    gen = hflm.generate_until(ask("generate_until", [(c, dict(k)) for c, k in reqs["generate"]]))
    return {
        "max_length": MAX_LENGTH, "prefix_token_id": int(hflm.prefix_token_id),
        "loglikelihood": [[c, x, float(v), bool(g)] for (c, x), (v, g) in zip(reqs["loglikelihood"], ll)],
        "rolling": [[t, float(v)] for t, v in zip(reqs["rolling"], rolling)],
        "generate": [[c, k, s] for (c, k), s in zip(reqs["generate"], gen)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(REPO, "tests", "fixtures", "lm_eval_parity"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(HF, "gpt2", "prompt.txt")) as f:
        reqs = requests(f.read())
    models = {"gpt_neox": os.path.join(HF, "gpt_neox"), "llama": os.path.join(HF, "llama"),
              "llama_bos": llama_bos(args.out)}
    expected = {name: reference(path, reqs) for name, path in models.items()}
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
    for name, e in expected.items():
        n_eos = sum(len(s) < 1 for _, _, s in e["generate"])
        print(f"{name}: prefix {e['prefix_token_id']}, {len(e['loglikelihood'])} ll, "
              f"{len(e['rolling'])} rolling, generations {[s for _, _, s in e['generate']]} ({n_eos} empty)")
    print("mean |ll|", np.mean([abs(v) for e in expected.values() for _, _, v, _ in e["loglikelihood"]]))


if __name__ == "__main__":
    main()
