"""Data: sources (streamed), tokenizers, the on-disk token store, packing into rows, resumable iterators.

    ds = build_dataset(config.data, seq_len=128, workdir=workdir, seed=config.seed)
    it = ds.train_iterator(32, seed=0)           # endless; it.state() / it.restore(state)
    for batch in ds.eval_batches("valid", 32):   # whole split, last batch padded (weights 0)
        ...

bits per byte = sum(nll * weights) / ln 2 / sum(ds.tokenizer.token_bytes[targets] * weights).
"""

from lm.data.dataset import SOURCES, Dataset, build_dataset, data_config
from lm.data.tokenizers import (ByteTokenizer, CharTokenizer, SentencePieceTokenizer, SymbolTokenizer,
                                load_tokenizer)

__all__ = ["SOURCES", "Dataset", "build_dataset", "data_config", "ByteTokenizer", "CharTokenizer",
           "SentencePieceTokenizer", "SymbolTokenizer", "load_tokenizer"]
