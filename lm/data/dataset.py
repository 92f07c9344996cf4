"""`build_dataset(data_cfg, seq_len)`: source -> tokenizer -> token arrays -> batches."""

from __future__ import annotations

import os

import numpy as np

from lm.config import ConfigError
from lm.data import batches, pairs, prepare, sources, synthetic
from lm.data.tokenizers import TOKENIZERS, SymbolTokenizer, Tokenizer

SOURCES = ("stdlib", "tinyshakespeare", "enwik8", "files", "hf", "markov", "copy", "tasks") + pairs.SOURCES


class Dataset:
    """Token splits plus a tokenizer; hands out train iterators and eval batches.

    Attributes: tokenizer, vocab_size, splits (tuple of names), seq_len, entropy_rate (bits per
    symbol for the Markov source, else None), source.
    """

    def __init__(self, source: str, tokenizer: Tokenizer, seq_len: int, *, packed=None, docs=None,
                 copy_task=None, copy_eval_rows=1, seed=0, entropy_rate=None, markov_table=None,
                 sampling="packed_epochs"):
        if sampling not in batches.SAMPLINGS:
            raise ConfigError(f"data.sampling={sampling!r} is not one of {batches.SAMPLINGS}")
        self.sampling = sampling  # batches.SAMPLINGS; the copy task ignores it
        self.source = source
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.seed = seed
        self.entropy_rate = entropy_rate
        self.markov_table = markov_table
        self._packed = packed or {}  # split -> batches.PackedSplit
        self._docs = docs  # text sources: a sources.Source (or {split: [str]})
        self._copy = copy_task
        self._copy_eval_rows = copy_eval_rows
        self.splits = ("train", "valid") if copy_task else tuple(self._packed)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def _check(self, split):
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this dataset has {self.splits}")

    def text(self, split: str) -> str:
        """The raw text of a split (documents concatenated). Invalid UTF-8 bytes (byte tokenizer,
        enwik8 split points) appear as surrogates: .encode('utf-8', 'surrogateescape') is exact."""
        self._check(split)
        if self._docs is None:
            raise ValueError(f"data.source={self.source} is synthetic: it has tokens, not text")
        if isinstance(self._docs, sources.Source):
            return self._docs.text(split)
        return "".join(self._docs[split])

    def tokens(self, split: str) -> np.ndarray:
        """The whole split as int32 token ids (copy task: its eval rows, concatenated)."""
        self._check(split)
        if self._copy:
            n = self._copy_eval_rows  # train: the start of the (unshuffled) train stream
            return self._copy.rows(np.arange(n), self.seed, self.splits.index(split))["inputs"].reshape(-1)
        return self._packed[split].tokens

    def stream(self, split: str):
        """The split as a token stream read on demand: `num_tokens`, `span(lo, hi)` (int32 ids)
        and `fingerprint` (the token store's checksums, or None for in-memory splits)."""
        self._check(split)
        if self._copy:
            return batches.TokenStream(self.tokens(split))
        return self._packed[split]

    def train_iterator(self, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1):
        """Endless {'inputs','targets','weights','segment_ids'} batches of batch_size // process_count rows."""
        if self._copy:
            make = lambda rows, s: self._copy.rows(rows, s, 0)
        elif self.sampling == "random_windows":
            if not hasattr(self._packed["train"], "window_rows"):
                raise ConfigError("data.sampling=random_windows: this source's train split (a "
                                  "mixture?) has no random windows; use packed_epochs")
            make = self._packed["train"].window_rows
        else:
            make = self._packed["train"].train_rows
        return batches.TrainIterator(make, batch_size, seed=seed, process_index=process_index,
                                     process_count=process_count)

    def eval_batches(self, split: str, batch_size: int, *, max_batches: int = 0,
                     process_index: int = 0, process_count: int = 1):
        """The whole split in order (max_batches > 0 truncates), the last batch padded.

        Random-window sampling with max_batches > 0: max_batches batches of random windows
        (nanoGPT's estimate_loss), the same windows at every call whatever the run's seed."""
        self._check(split)
        if self._copy:
            stream = self.splits.index(split)
            num, make = self._copy_eval_rows, lambda rows: self._copy.rows(rows, self.seed, stream)
        elif self.sampling == "random_windows" and max_batches > 0:
            packed, stream = self._packed[split], 1 + self.splits.index(split)
            num, make = max_batches * batch_size, lambda rows: packed.window_rows(rows, 0, stream)
        else:
            packed = self._packed[split]
            num, make = packed.num_eval_rows(), packed.eval_rows
        return batches.eval_batches(num, make, batch_size, max_batches=max_batches, process_index=process_index,
                                    process_count=process_count, seq_len=self.seq_len)


def data_config(**overrides):
    """The `data` section of base_config() with overrides; a misspelt key is an error."""
    from lm.config import base_config, set_dotted

    config = base_config()
    for key, value in overrides.items():
        set_dotted(config, f"data.{key}", value)
    return config.data


def build_dataset(data_cfg, seq_len: int, *, workdir: str | None = None, seed: int = 0) -> Dataset:
    """The dataset named by `data_cfg` (the config's `data` section), in rows of seq_len + 1 tokens.

    Text sources go through the on-disk token store (lm/data/prepare.py, store.py): tokenized
    once, then read by memmap. With `workdir`, the tokenizer is kept in workdir/tokenizer/ with
    the data identity it was made for; a stale one is replaced, or refused when checkpoints use
    it. `seed` seeds the synthetic samples (Markov / copy streams).
    """
    cfg = data_cfg
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source={cfg.source!r} is not one of {SOURCES}")
    if seq_len < 1:
        raise ConfigError(f"seq_len must be positive, got {seq_len}")
    masking = bool(cfg.document_masking)
    if cfg.source in pairs.SOURCES:
        return pairs.build(cfg, seq_len, workdir=workdir, seed=seed)
    if cfg.source == "markov":
        return _markov(cfg, seq_len, seed, masking, workdir)
    if cfg.source == "copy":
        task = synthetic.CopyTask(cfg.copy_vocab, cfg.copy_prefix_len, seq_len, masking)
        return Dataset("copy", _symbols(task.vocab_size, workdir), seq_len, copy_task=task, seed=seed,
                       copy_eval_rows=max(1, int(cfg.eval_tokens) // seq_len))
    if cfg.tokenizer not in TOKENIZERS:
        raise ConfigError(f"data.tokenizer={cfg.tokenizer!r} is not one of {TOKENIZERS}")
    if cfg.mixture:
        from lm.data.mixture import open_mixture

        source = open_mixture(cfg, strict=cfg.tokenizer != "byte")
    else:
        source = sources.open_source(cfg, strict=cfg.tokenizer != "byte")
    tok, packed = prepare.prepare_text(cfg, source, seq_len, workdir=workdir, masking=masking)
    return Dataset(cfg.source, tok, seq_len, packed=packed, docs=source, seed=seed,
                   sampling=cfg.get("sampling", "packed_epochs"))


def _symbols(vocab: int, workdir: str | None) -> Tokenizer:
    tok = SymbolTokenizer(vocab)
    saved = os.path.join(workdir, "tokenizer") if workdir else ""
    if saved and not os.path.isdir(saved):  # checked first: reading a workdir writes nothing
        with prepare.file_lock(os.path.join(workdir, ".tokenizer.lock")):
            if not os.path.isdir(saved):
                tok.save(saved)
    return tok


def _markov(cfg, seq_len, seed, masking, workdir) -> Dataset:
    order, vocab = int(cfg.markov_order), int(cfg.markov_vocab)
    table = synthetic.markov_table(vocab, order, float(cfg.markov_concentration), int(cfg.markov_seed))
    packed = {}
    for i, (name, n) in enumerate((("train", cfg.train_tokens), ("valid", cfg.eval_tokens))):
        if n < 1:
            raise ConfigError(f"data.{name.replace('valid', 'eval')}_tokens must be positive, got {n}")
        rng = np.random.default_rng([int(cfg.markov_seed), seed, i])
        symbols, doc_ids = synthetic.markov_sample(table, order, int(n), rng)
        packed[name] = batches.PackedSplit(symbols, doc_ids, seq_len, masking, name=f"markov/{name}")
    return Dataset("markov", _symbols(vocab, workdir), seq_len, packed=packed, seed=seed,
                   entropy_rate=synthetic.markov_entropy_rate(table), markov_table=table,
                   sampling=cfg.get("sampling", "packed_epochs"))
