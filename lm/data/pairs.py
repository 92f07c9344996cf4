"""Post-training data: prompt/response examples (SFT) and preference pairs (DPO).

    data.source=sft         {prompt, response} examples, packed into rows with segment ids;
                            only response tokens carry loss (weights 0 on prompt and padding).
    data.source=preference  {prompt, chosen, rejected} triples; each pair becomes two rows
                            (prompt + chosen, prompt + rejected) padded to the context, with
                            weights 1 on the response's targets only.

Examples come from data.path (jsonl, one JSON object per line; `train=FILE,valid=FILE` for split
files, else the last 10% of examples are valid), from a hub dataset (data.hf_name and
data.hf_config through `datasets`: its train and validation/test splits), or from a generated task (data.path='synthetic:sorted').
Field names are data.prompt_field / response_field / chosen_field / rejected_field.

Templates (data.template): 'plain' joins prompt and response as they are; 'chat' wraps them in
"### User:\\n{prompt}\\n### Assistant:\\n" and "{response}\\n### End\\n". Prompt and response are
tokenized separately, so the boundary between them is exact for every tokenizer.

Stated handling of awkward examples (counted and logged, never silent): an example whose prompt +
response does not fit in seq_len + 1 tokens is dropped; an empty response is dropped; a pair whose
chosen equals its rejected is dropped (it carries no preference). A split left empty is an error.

The synthetic task 'sorted': the prompt is k distinct letters, a response is a permutation of them.
Its SFT data answers with a random permutation (so a model trained on it rarely sorts: 1/k!); its
preference pairs prefer the sorted permutation over a random unsorted one. DPO should teach the
model to sort, which sampling can check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from lm.config import ConfigError
from lm.data import batches, prepare, sources

log = logging.getLogger(__name__)
SOURCES = ("sft", "preference")
TEMPLATES = ("plain", "chat")
SYNTHETIC_TASKS = ("sorted",)
_CHAT = ("### User:\n{prompt}\n### Assistant:\n", "{response}\n### End\n")


# ----------------------------------------------------------------------------- examples

def sorted_task(n: int, seed: int, *, split: str = "train", letters: int = 5) -> list:
    """n examples of the 'sorted' task: prompt, response (random order), chosen (sorted), rejected.

    Prompts are those of the eval task sort_<letters> (lm/evals/tasks.py), from its stream for
    `split` (train or valid), so they never coincide with the task's eval examples.
    """
    from lm.evals import tasks

    task, rng = tasks.get_task(f"sort_{letters}"), np.random.default_rng([seed, letters, tasks.STREAMS[split]])
    out = []
    for i in range(n):
        ex = task.example(i, seed, split)
        word = ex.prompt.split("\n")[0][3:]  # "Q: dbgai\nA: " -> "dbgai"
        shuffled = "".join(rng.permutation(list(word)))
        while shuffled == ex.answer:  # the rejected answer must not happen to be sorted
            shuffled = "".join(rng.permutation(list(word)))
        out.append({"prompt": ex.prompt, "response": "".join(rng.permutation(list(word))) + "\n",
                    "chosen": ex.answer + "\n", "rejected": shuffled + "\n"})
    return out


def is_sorted_answer(text: str) -> bool:
    """The property the 'sorted' task rewards: the answer's letters in increasing order."""
    word = text.split("\n", 1)[0].strip()
    return len(word) > 1 and all(a < b for a, b in zip(word, word[1:]))


def _read_jsonl(path: str) -> list:
    if not os.path.exists(path):
        raise ConfigError(f"data.path: {path} does not exist")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    if not rows:
        raise ConfigError(f"data.path: {path} holds no examples")
    return rows


def _load_hf(cfg) -> dict:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config or None)
    except Exception as e:  # offline, unknown name: one line, the way out
        raise ConfigError(f"data.hf_name={cfg.hf_name!r} could not be loaded ({type(e).__name__}); "
                          "use a local jsonl file with data.path=...") from None
    names = {"train": "train", "valid": "validation" if "validation" in ds else "test"}
    if names["valid"] not in ds:
        return _split_tail(list(ds["train"]))
    return {k: list(ds[v]) for k, v in names.items()}


def _split_tail(rows: list) -> dict:
    cut = max(1, len(rows) - max(1, len(rows) // 10))
    if len(rows) < 2:
        raise ConfigError(f"need at least 2 examples to split train/valid, got {len(rows)}")
    return {"train": rows[:cut], "valid": rows[cut:]}


def load_examples(cfg, seed: int) -> dict:
    """{split: [dict, ...]} from data.path / data.hf_name / a synthetic task."""
    path = cfg.path
    if path.startswith("synthetic:"):
        task = path.split(":", 1)[1]
        if task not in SYNTHETIC_TASKS:
            raise ConfigError(f"data.path={path!r}: unknown synthetic task; choose from {SYNTHETIC_TASKS}")
        n_train, n_valid = int(cfg.train_tokens) // 16, int(cfg.eval_tokens) // 16  # ~16 tokens each
        return {"train": sorted_task(n_train, seed), "valid": sorted_task(n_valid, seed, split="valid")}
    if cfg.hf_name:
        return _load_hf(cfg)
    if not path:
        raise ConfigError(f"data.source={cfg.source} needs data.path (a jsonl file) or data.hf_name")
    if "=" in path:
        spec = dict(part.split("=", 1) for part in path.split(","))
        if "train" not in spec or "valid" not in spec:
            raise ConfigError(f"data.path={path!r}: split files need train=FILE,valid=FILE")
        return {name: _read_jsonl(spec[name].strip()) for name in ("train", "valid")}
    return _split_tail(_read_jsonl(path))


def _fields(cfg) -> tuple:
    if cfg.source == "sft":
        return (cfg.prompt_field, cfg.response_field)
    return (cfg.prompt_field, cfg.chosen_field, cfg.rejected_field)


def _check_fields(rows: list, fields: tuple, split: str) -> None:
    """Every example an object with a text value in each field; the error names the example,
    the field and what it holds instead."""
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"{split} example {i} is a JSON {type(row).__name__}, not an object "
                              f"with the fields {list(fields)}")
        missing = [f for f in fields if f not in row]
        if missing:
            raise ConfigError(f"{split} example {i}: missing text field(s) {missing} (have {sorted(row)}); "
                              "set data.prompt_field / response_field / chosen_field / rejected_field")
        for f in fields:
            if not isinstance(row[f], str):
                shown = repr(row[f])
                raise ConfigError(f"{split} example {i}: field {f!r} holds {type(row[f]).__name__} "
                                  f"{shown[:40] + '...' if len(shown) > 40 else shown}, not text")


# ----------------------------------------------------------------------------- tokenized examples

def _templated(template: str, prompt: str, response: str) -> tuple:
    if template not in TEMPLATES:
        raise ConfigError(f"data.template={template!r} is not one of {TEMPLATES}")
    if template == "chat":
        return _CHAT[0].format(prompt=prompt), _CHAT[1].format(response=response)
    return prompt, response


def _encode_pair(tok, template, prompt, response) -> tuple:
    p, r = _templated(template, prompt, response)
    return np.asarray(tok.encode(p), np.int32), np.asarray(tok.encode(r), np.int32)


def _row(prompt_ids, response_ids, seq_len: int) -> dict:
    """One example as a padded row: weights on the targets that are response tokens."""
    tokens = np.zeros(seq_len + 1, np.int32)
    n = len(prompt_ids) + len(response_ids)
    tokens[:n] = np.concatenate([prompt_ids, response_ids])
    weights = np.zeros(seq_len, np.float32)
    weights[len(prompt_ids) - 1:n - 1] = 1.0  # target j is token j+1: the response's tokens
    segments = (np.arange(seq_len) < n - 1).astype(np.int32)
    return {"inputs": tokens[:-1], "targets": tokens[1:], "weights": weights, "segment_ids": segments}


class _Dropped:
    """Counts of examples left out, by reason, logged once per split."""

    def __init__(self, split):
        self.split, self.counts = split, {}

    def add(self, reason):
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def report(self, kept: int):
        if self.counts:
            log.warning("%s: kept %d examples, dropped %s", self.split, kept,
                        ", ".join(f"{n} ({why})" for why, n in sorted(self.counts.items())))
        if not kept:
            raise ConfigError(f"split {self.split!r} has no usable examples "
                              f"(dropped: {self.counts or 'none given'})")


def _sft_examples(rows, tok, cfg, seq_len, split) -> list:
    dropped, out = _Dropped(split), []
    for row in rows:
        p, r = _encode_pair(tok, cfg.template, row[cfg.prompt_field], row[cfg.response_field])
        if not len(r):
            dropped.add("empty response")
        elif len(p) + len(r) > seq_len + 1 or not len(p):
            dropped.add(f"longer than seq_len + 1 = {seq_len + 1} tokens or no prompt")
        else:
            out.append((p, r))
    dropped.report(len(out))
    return out


def _preference_examples(rows, tok, cfg, seq_len, split) -> list:
    dropped, out = _Dropped(split), []
    for row in rows:
        chosen, rejected = row[cfg.chosen_field], row[cfg.rejected_field]
        p, c = _encode_pair(tok, cfg.template, row[cfg.prompt_field], chosen)
        _, r = _encode_pair(tok, cfg.template, row[cfg.prompt_field], rejected)
        if chosen == rejected:
            dropped.add("chosen equals rejected")
        elif not len(c) or not len(r):
            dropped.add("empty response")
        elif len(p) + max(len(c), len(r)) > seq_len + 1 or not len(p):
            dropped.add(f"longer than seq_len + 1 = {seq_len + 1} tokens or no prompt")
        else:
            out.append((p, c, r))
    dropped.report(len(out))
    return out


# ----------------------------------------------------------------------------- splits

def pack_examples(examples: list, seq_len: int) -> dict:
    """Greedy packing in order: whole examples into rows of seq_len + 1 tokens, segment ids 1, 2, ...

    An example never straddles two rows; loss sits on response targets inside one example.
    """
    rows, current, used = [], [], 0
    for p, r in examples:
        n = len(p) + len(r)
        if current and used + n > seq_len + 1:
            rows.append(current)
            current, used = [], 0
        current.append((p, r))
        used += n
    if current:
        rows.append(current)
    out = {k: np.zeros((len(rows), seq_len), np.float32 if k == "weights" else np.int32)
           for k in ("inputs", "targets", "weights", "segment_ids")}
    for i, row in enumerate(rows):
        tokens = np.concatenate([np.concatenate(ex) for ex in row])
        seg = np.concatenate([np.full(len(p) + len(r), s + 1) for s, (p, r) in enumerate(row)])
        resp = np.concatenate([np.r_[np.zeros(len(p)), np.ones(len(r))] for p, r in row])
        m = len(tokens) - 1
        out["inputs"][i, :m], out["targets"][i, :m] = tokens[:-1], tokens[1:]
        out["segment_ids"][i, :m] = seg[:-1]
        out["weights"][i, :m] = resp[1:] * (seg[1:] == seg[:-1])  # no loss across examples
    return out


class _Rows:
    """A fixed table of rows (dict of [N, ...] arrays): endless shuffled epochs, ordered eval."""

    def __init__(self, table: dict):
        self.table = table
        self.n = len(next(iter(table.values())))
        self._perm = (None, None)  # (seed, epoch) -> permutation, the last one only

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        if self._perm[0] != (seed, epoch):
            self._perm = ((seed, epoch), np.random.default_rng([seed, epoch]).permutation(self.n))
        return self._perm[1]

    def train_rows(self, rows: np.ndarray, seed: int) -> dict:
        """Global row g is row perm(seed, g // n)[g % n]: O(1) resumable, like PackedSplit."""
        epochs, index = np.divmod(rows, self.n)
        picked = np.array([self._permutation(seed, int(e))[i] for e, i in zip(epochs, index)], np.int64)
        return {k: v[picked] for k, v in self.table.items()}

    def eval_rows(self, rows: np.ndarray) -> dict:
        return {k: v[rows] for k, v in self.table.items()}


def _pair_table(examples: list, seq_len: int) -> dict:
    chosen = [_row(p, c, seq_len) for p, c, _ in examples]
    rejected = [_row(p, r, seq_len) for p, _, r in examples]
    table = {}
    for prefix, rows in (("chosen", chosen), ("rejected", rejected)):
        for key in rows[0]:
            table[f"{prefix}_{key}"] = np.stack([row[key] for row in rows])
    return table


class PostTrainingDataset:
    """The Dataset interface (tokenizer, splits, train_iterator, eval_batches) over examples."""

    def __init__(self, source, tokenizer, seq_len, tables: dict, seed: int = 0):
        self.source, self.tokenizer, self.seq_len, self.seed = source, tokenizer, seq_len, seed
        self.entropy_rate = None
        self._rows = {name: _Rows(t) for name, t in tables.items()}
        self.splits = tuple(tables)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def num_rows(self, split: str) -> int:
        return self._rows[split].n

    def train_iterator(self, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1):
        return batches.TrainIterator(self._rows["train"].train_rows, batch_size, seed=seed,
                                     process_index=process_index, process_count=process_count)

    def eval_batches(self, split: str, batch_size: int, *, max_batches: int = 0,
                     process_index: int = 0, process_count: int = 1):
        if split not in self._rows:
            raise ValueError(f"unknown split {split!r}; this dataset has {self.splits}")
        rows = self._rows[split]
        local, first = batches.local_slice(batch_size, process_index, process_count)
        count = -(-rows.n // batch_size)
        count = min(count, max_batches) if max_batches else count
        for k in range(count):
            idx = np.arange(k * batch_size + first, k * batch_size + first + local)
            batch = rows.eval_rows(np.minimum(idx, rows.n - 1))
            real = (idx < rows.n).astype(np.float32)[:, None]  # padding rows carry no weight
            for key in batch:
                if key.endswith("weights"):
                    batch[key] = batch[key] * real
            yield batch

    def text(self, split: str) -> str:
        raise ValueError(f"data.source={self.source} holds examples, not a text corpus")


def build(cfg, seq_len: int, *, workdir=None, seed: int = 0) -> PostTrainingDataset:
    """The dataset of data.source in SOURCES (examples are small: tokenized in memory)."""
    if cfg.source == "sft" and not cfg.document_masking:
        raise ConfigError("data.source=sft packs several examples into a row: set "
                          "data.document_masking=True so they cannot attend to each other")
    examples = load_examples(cfg, seed)
    fields = _fields(cfg)
    for split, rows in examples.items():
        _check_fields(rows, fields, split)
    texts = {split: [" ".join(row[f] for f in fields) for row in rows] for split, rows in examples.items()}
    digest = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:16]
    corpus = sources.Source.from_docs(cfg.source, {"examples": digest}, lambda: texts)
    tok = prepare.small_corpus_tokenizer(cfg, corpus, workdir)
    tables = {}
    for split, rows in examples.items():
        if cfg.source == "sft":
            tables[split] = pack_examples(_sft_examples(rows, tok, cfg, seq_len, split), seq_len)
        else:
            tables[split] = _pair_table(_preference_examples(rows, tok, cfg, seq_len, split), seq_len)
    return PostTrainingDataset(cfg.source, tok, seq_len, tables, seed=seed)
