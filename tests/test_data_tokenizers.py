"""Tokenizers: exact round trips, save/load, and bits-per-byte accounting that agrees."""

import math
import os

import numpy as np
import pytest

from lm.config import ConfigError
from lm.data import build_dataset, data_config
from lm.data.tokenizers import (ByteTokenizer, CharTokenizer, SentencePieceTokenizer, SymbolTokenizer,
                                load_tokenizer)

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SAMPLE = "naïve café — 日本語 ☃ 🎉\n\tTabs  and   spaces\n\n  leading\ntrailing  \nπ≈3.14159\n"


def data_cfg(tmp_path, **kw):
    return data_config(data_dir=str(tmp_path / "cache"), **kw)


def corpus():
    path = os.path.join(SHARED, "tinyshakespeare", "input.txt")
    if not os.path.exists(path):
        pytest.skip("../shared/data not present")
    with open(path) as f:
        return f.read()[:200_000] + SAMPLE * 20


@pytest.fixture(scope="module")
def spm_tok():
    return SentencePieceTokenizer.train(corpus(), 400)


def test_byte_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode(SAMPLE)
    assert ids.dtype == np.int32 and tok.vocab_size == 256
    assert len(ids) == len(SAMPLE.encode()) and tok.decode(ids) == SAMPLE


def test_char_round_trip_and_unknown_char():
    tok = CharTokenizer.from_splits(SAMPLE)
    ids = tok.encode(SAMPLE)
    assert tok.vocab_size == len(set(SAMPLE)) and tok.decode(ids) == SAMPLE
    assert tok.token_bytes[tok.encode("🎉")[0]] == 4
    with pytest.raises(ValueError, match="'Z'.*not in the vocabulary"):
        tok.encode("Zebra")


def test_char_unk_only_for_corpus_splits():
    tok = CharTokenizer.from_splits("abc", ["abcz"])
    assert tok.unk_id == 3 and tok.vocab_size == 4
    np.testing.assert_array_equal(tok.encode_corpus("az"), [0, 3])
    with pytest.raises(ValueError):
        tok.encode("z")


def test_sentencepiece_round_trip(spm_tok):
    assert spm_tok.vocab_size == 400
    unseen = "Ωmega ∮ ℵ0 — 한국어 🎉🎉  \n\n\t x"  # characters never seen in training: byte fallback
    for text in (SAMPLE, unseen, "", "\n", "First Citizen:\nBefore we proceed"):
        assert spm_tok.decode(spm_tok.encode(text)) == text
    # subwords actually merge: fewer tokens than bytes on in-domain text
    text = corpus()[:5000]
    assert len(spm_tok.encode(text)) < 0.8 * len(text.encode())


def test_sentencepiece_surrogates_are_byte_pieces(spm_tok):
    raw = "abc".encode() + b"\xe6\x97" + "def".encode()  # a cut multi-byte character
    text = raw.decode("utf-8", "surrogateescape")
    ids = spm_tok.encode(text)
    assert int(spm_tok.token_bytes[ids].sum()) == len(raw)


def test_sentencepiece_vocab_too_large_or_small():
    with pytest.raises(ValueError, match="data.vocab_size=5000 is too large"):
        SentencePieceTokenizer.train("a tiny text\nwith few pieces\n" * 3, 5000)
    with pytest.raises(ValueError, match="data.vocab_size=270 is too small.*at least"):
        SentencePieceTokenizer.train(SAMPLE + "abcdefghijklmnopqrstuvwxyz", 270)


def test_save_load_all(tmp_path, spm_tok):
    toks = [ByteTokenizer(), CharTokenizer.from_splits(SAMPLE), spm_tok, SymbolTokenizer(7)]
    for tok in toks:
        d = str(tmp_path / tok.name)
        tok.save(d)
        again = load_tokenizer(d)
        assert again.name == tok.name and again.vocab_size == tok.vocab_size
        np.testing.assert_array_equal(again.token_bytes, tok.token_bytes)
        text = "3 1 4" if tok.name == "symbol" else SAMPLE
        np.testing.assert_array_equal(again.encode(text), tok.encode(text))
    assert sorted(os.listdir(tmp_path)) == sorted(t.name for t in toks)  # no temp dirs left


def test_workdir_tokenizer_saved_and_reloaded(tmp_path):
    (tmp_path / "a.txt").write_text(corpus()[:60_000])
    cfg = data_cfg(tmp_path, source="files", path=str(tmp_path / "a.txt"), tokenizer="sentencepiece",
                   vocab_size=500)
    work = str(tmp_path / "work")
    ds1 = build_dataset(cfg, 32, workdir=work)
    assert os.path.exists(os.path.join(work, "tokenizer", "spm.model"))
    cfg.vocab_size = 520  # no checkpoint uses the saved tokenizer (a failed first run): replaced
    ds2 = build_dataset(cfg, 32, workdir=work)
    assert (ds1.vocab_size, ds2.vocab_size) == (500, 520)
    assert load_tokenizer(os.path.join(work, "tokenizer")).vocab_size == 520
    os.makedirs(os.path.join(work, "checkpoints", "10"))  # now a trained model depends on it
    np.testing.assert_array_equal(build_dataset(cfg, 32, workdir=work).tokens("valid"), ds2.tokens("valid"))
    cfg.vocab_size = 500  # never silently ignored: refused
    with pytest.raises(ConfigError, match="data.vocab_size=520, now 500.*checkpoints"):
        build_dataset(cfg, 32, workdir=work)
    cfg.vocab_size, cfg.tokenizer = 520, "char"
    with pytest.raises(ConfigError, match="data.tokenizer='sentencepiece', now 'char'"):
        build_dataset(cfg, 32, workdir=work)
    (tmp_path / "a.txt").write_text(corpus()[:50_000])  # other data, same settings
    cfg.tokenizer = "sentencepiece"
    with pytest.raises(ConfigError, match="the data"):
        build_dataset(cfg, 32, workdir=work)


def piece_bytes(tok, i) -> bytes:
    """The bytes token i stands for (a single byte or byte piece does not decode on its own)."""
    if tok.name == "byte":
        return bytes([i])
    if tok.name == "sentencepiece":
        if tok.sp.is_byte(i):
            return bytes([int(tok.sp.id_to_piece(i)[1:-1], 16)])
        if tok.sp.is_unknown(i):
            return b""
        return tok.sp.id_to_piece(i).replace("\u2581", " ").encode()
    return tok.decode([i]).encode()


def test_bits_per_byte_agree_across_tokenizers(tmp_path):
    """A fixed unigram byte model, mapped through each tokenizer, gives the same bits per byte."""
    text = corpus()[:40_000] + SAMPLE * 5
    (tmp_path / "train.txt").write_text(text)
    (tmp_path / "valid.txt").write_text(SAMPLE * 3 + text[:3000])
    raw = (SAMPLE * 3 + text[:3000]).encode()
    counts = np.bincount(np.frombuffer(text.encode(), np.uint8), minlength=256) + 1.0
    byte_nll = -np.log(counts / counts.sum())  # nats per byte value
    results = {}
    for kind in ("byte", "char", "sentencepiece"):
        cfg = data_cfg(tmp_path, source="files", path=str(tmp_path), tokenizer=kind, vocab_size=500)
        ds = build_dataset(cfg, 16)
        tok = ds.tokenizer
        # nll of a token = nll of its bytes under the byte model
        piece_nll = np.array([byte_nll[np.frombuffer(piece_bytes(tok, i), np.uint8)].sum()
                              for i in range(tok.vocab_size)])
        assert [len(piece_bytes(tok, i)) for i in range(tok.vocab_size)] == tok.token_bytes.tolist()
        ids = ds.tokens("valid")
        assert int(tok.token_bytes[ids].sum()) == len(raw)  # same bytes
        nats = bytes_ = 0.0
        for batch in ds.eval_batches("valid", 4):
            w = batch["weights"]
            nats += (piece_nll[batch["targets"]] * w).sum()
            bytes_ += (tok.token_bytes[batch["targets"]] * w).sum()
        first = tok.token_bytes[ids[0]]
        assert bytes_ == len(raw) - first  # every token but the first is a target exactly once
        nats += piece_nll[ids[0]]
        results[kind] = nats / math.log(2) / (bytes_ + first)
    assert results["byte"] == pytest.approx(results["char"], rel=1e-9)
    assert results["byte"] == pytest.approx(results["sentencepiece"], rel=1e-9)
