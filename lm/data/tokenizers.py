"""Tokenizers: bytes, characters, sentencepiece, and plain symbols for synthetic sources.

Every tokenizer has `encode(str) -> int32 array`, `decode(ids) -> str`, `vocab_size`, `eos_id`
(None: documents are separated by segment ids, not by a token), `name`, `save(dir)` and
`token_bytes`: for each id, how many UTF-8 bytes of the original text it stands for. With it,
bits per byte = sum(nll * w) / ln 2 / sum(token_bytes[targets] * w) is the same quantity
whatever the tokenizer (synthetic symbols count 1 "byte" each, so it is bits per symbol).

Text that is not valid UTF-8 (possible only with the byte tokenizer, or at a byte-exact split
point of a named corpus) is carried as Python `str` with 'surrogateescape', so
`text.encode('utf-8', 'surrogateescape')` gives back the exact bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile

import numpy as np

TOKENIZERS = ("byte", "char", "sentencepiece", "hf")  # hf: saved by `lm import` / init_from (lm.hf)
_META = "tokenizer.json"
_SPM = "spm.model"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Tokenizer:
    name = "base"
    eos_id = None

    def encode(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    def meta(self) -> dict:
        return {"kind": self.name}

    def save(self, directory: str, extra: dict | None = None) -> None:
        """Writes the tokenizer into `directory` atomically (a temp dir, then a rename); `extra`
        goes into tokenizer.json (e.g. the data identity it was made for). Safe when several
        processes save at once: each rename is whole, the last one wins."""
        directory = os.path.abspath(directory)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tokenizer-", dir=parent)
        try:
            self._write(tmp)
            with open(os.path.join(tmp, _META), "w") as f:
                json.dump({**self.meta(), **(extra or {})}, f)
            for _ in range(100):
                try:
                    os.rename(tmp, directory)
                    break
                except OSError:  # the directory exists: move it aside, then try again
                    if not os.path.isdir(directory):
                        raise
                    old = tempfile.mkdtemp(prefix=".tokenizer-old-", dir=parent)
                    try:
                        os.rename(directory, os.path.join(old, "t"))
                    except FileNotFoundError:
                        pass  # another writer moved it first
                    finally:
                        shutil.rmtree(old, ignore_errors=True)
            else:
                raise OSError(f"could not save the tokenizer to {directory}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write(self, directory: str) -> None:
        pass

    def encode_corpus(self, text: str) -> np.ndarray:
        """Encodes a dataset split; may map unseen symbols to <unk> instead of raising."""
        return self.encode(text)


class ByteTokenizer(Tokenizer):
    """The 256 byte values; id = byte. Exact for any input."""

    name = "byte"

    def __init__(self):
        self.token_bytes = np.ones(256, np.int32)

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(_utf8(text), np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", "replace")


class CharTokenizer(Tokenizer):
    """One id per character of the train split, in sorted order (nanoGPT's shakespeare_char).

    `encode` raises on characters outside the vocabulary. Dataset splits are encoded with
    `encode_corpus`, which maps such characters to an extra `<unk>` id (the last one, present only
    when `with_unk`); it counts as 1 byte, so bits per byte errs on the high side.
    """

    name = "char"

    def __init__(self, chars: str, with_unk: bool = False):
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise ValueError("char tokenizer: the train split has no characters")
        self.with_unk = with_unk
        self.unk_id = len(self.chars) if with_unk else None
        self._index = {c: i for i, c in enumerate(self.chars)}
        self.token_bytes = np.array([len(_utf8(c)) for c in self.chars] + [1] * with_unk, np.int32)
        self._table = None  # code point -> id lookup for fast encoding

    @classmethod
    def from_splits(cls, train: str, others=()):
        seen = set(train)
        with_unk = any(set(t) - seen for t in others)
        return cls("".join(seen), with_unk)

    def _lookup(self, text: str, unk: bool) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
        if self._table is None:
            top = max(ord(c) for c in self.chars) + 1
            self._table = np.full(top, -1, np.int32)
            self._table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = np.full(codes.shape, -1, np.int32)
        inside = codes < len(self._table)
        ids[inside] = self._table[codes[inside]]
        if (ids < 0).any():
            if unk and self.unk_id is not None:
                ids[ids < 0] = self.unk_id
            else:
                bad = sorted({text[i] for i in np.flatnonzero(ids < 0)[:1000]})
                raise ValueError(f"char tokenizer: character(s) {bad!r} are not in the vocabulary "
                                 f"built from the train split ({len(self.chars)} characters)")
        return ids

    def encode(self, text: str) -> np.ndarray:
        return self._lookup(text, unk=False)

    def encode_corpus(self, text: str) -> np.ndarray:
        return self._lookup(text, unk=True)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else "\ufffd" for i in np.asarray(ids).tolist())

    def meta(self):
        return {"kind": self.name, "chars": self.chars, "with_unk": self.with_unk}


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece BPE model trained on the train split, exact on any text.

    Identity normalisation, no dummy prefix and no whitespace collapsing keep decode(encode(s))
    == s; newline is a user-defined piece (training sees lines); byte fallback covers characters
    never seen in training (byte pieces count 1 byte each).
    """

    name = "sentencepiece"
    _SURROGATE = re.compile("([\udc80-\udcff])")

    def __init__(self, model_proto: bytes):
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        n = self.sp.get_piece_size()
        tb = np.zeros(n, np.int32)
        for i in range(n):
            if self.sp.is_byte(i):
                tb[i] = 1
            elif not (self.sp.is_control(i) or self.sp.is_unknown(i)):
                tb[i] = len(_utf8(self.sp.id_to_piece(i).replace("\u2581", " ")))
        self.token_bytes = tb
        self.newline_id = self.sp.piece_to_id("\n")
        self._byte_ids = np.array([self.sp.piece_to_id(f"<0x{b:02X}>") for b in range(256)], np.int32)

    @classmethod
    def train(cls, text: str, vocab_size: int, *, max_chars: int = 2_000_000):
        """Trains on the lines of (at most the first `max_chars` characters of) `text`."""
        import sentencepiece as spm

        lines = [line for line in text[:max_chars].split("\n") if line.strip()]
        lines = [cls._SURROGATE.sub("", line) for line in lines]
        if not lines:
            raise ValueError("sentencepiece: the train split has no non-empty lines to train on")
        buf = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size,
                model_type="bpe", character_coverage=1.0, byte_fallback=True,
                normalization_rule_name="identity", remove_extra_whitespaces=False,
                add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
                user_defined_symbols=["\n"], unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1,
                max_sentence_length=1 << 16, num_threads=os.cpu_count() or 1, minloglevel=2)
        except RuntimeError as e:
            small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
            if small:
                raise ValueError(f"data.vocab_size={vocab_size} is too small for this text: it needs at "
                                 f"least {small.group(2)} (every character seen + 256 byte pieces + "
                                 "<unk> and newline)") from None
            m = re.search(r"value <= (\d+)", str(e))
            limit = f" (at most {m.group(1)} for this text)" if m else ""
            raise ValueError(f"data.vocab_size={vocab_size} is too large for the sentencepiece "
                             f"train text{limit}: {e}") from None
        return cls(buf.getvalue())

    def _encode_line(self, line: str) -> list:
        if not self._SURROGATE.search(line):
            return self.sp.encode(line)
        out = []  # lone surrogates are raw bytes (see module docstring): use their byte pieces
        for part in self._SURROGATE.split(line):
            if len(part) == 1 and "\udc80" <= part <= "\udcff":
                out.append(int(self._byte_ids[ord(part) - 0xDC00]))
            elif part:
                out.extend(self.sp.encode(part))
        return out

    def encode(self, text: str) -> np.ndarray:
        lines = text.split("\n")
        if self._SURROGATE.search(text):
            pieces = [self._encode_line(line) for line in lines]
        else:  # the fast path: one batched, multi-threaded call
            pieces = self.sp.encode(lines, num_threads=os.cpu_count() or 1)
        out = []
        for i, ids in enumerate(pieces):
            if i:
                out.append(self.newline_id)
            out.extend(ids)
        return np.asarray(out, np.int32)

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in np.asarray(ids).tolist()])

    def _write(self, directory):
        with open(os.path.join(directory, _SPM), "wb") as f:
            f.write(self.model_proto)


class SymbolTokenizer(Tokenizer):
    """Synthetic sources: ids are the symbols; text is space-separated integers."""

    name = "symbol"

    def __init__(self, vocab_size: int):
        self.token_bytes = np.ones(vocab_size, np.int32)

    def encode(self, text: str) -> np.ndarray:
        try:
            ids = np.asarray([int(t) for t in text.split()], np.int32)
        except ValueError:
            raise ValueError(f"symbol tokenizer: expected space-separated integers, got {text[:50]!r}") from None
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"symbol tokenizer: ids must be in [0, {self.vocab_size}), got {text[:50]!r}")
        return ids

    def decode(self, ids) -> str:
        return " ".join(str(i) for i in np.asarray(ids).tolist())

    def meta(self):
        return {"kind": self.name, "vocab_size": self.vocab_size}


def saved_meta(directory: str) -> dict:
    """tokenizer.json of a saved tokenizer (kind, its settings, and any `extra` given to save)."""
    path = os.path.join(directory, _META)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no saved tokenizer in {directory} (missing {_META})")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); delete {directory} to rebuild it") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} is not a tokenizer description; delete {directory} to rebuild it")
    return meta


def load_tokenizer(directory: str) -> Tokenizer:
    """Loads a tokenizer written by `Tokenizer.save`."""
    path = os.path.join(directory, _META)
    meta = saved_meta(directory)
    kind = meta.get("kind")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer(meta["chars"], meta.get("with_unk", False))
    if kind == "sentencepiece":
        model = os.path.join(directory, _SPM)
        try:
            with open(model, "rb") as f:
                return SentencePieceTokenizer(f.read())
        except (OSError, RuntimeError) as e:
            why = str(e).splitlines()[0] if str(e) else repr(e)
            raise ValueError(f"{model} is not a readable sentencepiece model ({why}); "
                             f"delete {directory} to rebuild it") from None
    if kind == "symbol":
        return SymbolTokenizer(meta["vocab_size"])
    if kind == "hf":  # a Hugging Face tokenizer.json
        return HFTokenizer.load(directory, meta)
    raise ValueError(f"{path}: unknown tokenizer kind {kind!r}")


def fingerprint(tok: Tokenizer) -> str:
    """A stable hash of a tokenizer (for the token cache key)."""


    h = hashlib.sha256(json.dumps(tok.meta(), sort_keys=True).encode())
    if isinstance(tok, SentencePieceTokenizer):
        h.update(tok.model_proto)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- Hugging Face tokenizer.json
#
# A Hugging Face tokenizer.json (the `tokenizers` library) as an lm Tokenizer.
#
# token_bytes, the UTF-8 bytes of text each id stands for, is what keeps bits per byte exact:
# - byte-level BPE (GPT-2, Llama 3, Qwen, Pythia, SmolLM): each character of a piece is one byte
#   under GPT-2's byte-to-unicode map;
# - sentencepiece style (Llama 2, Mistral): '▁' is a space (1 byte), '<0xNN>' byte-fallback pieces
#   are 1 byte, other characters their UTF-8 length. Such tokenizers usually prepend a '▁' to the
#   text ("dummy prefix"), which counts as one byte that the text does not have: one byte per
#   encoded document too many (bits per byte errs low by that fraction; byte-level BPE is exact);
# - added tokens (e.g. <|endoftext|>) the UTF-8 length of their text, as `encode` matches them there.
# Ids past the tokenizer's vocabulary (embedding rows models pad to a round size) stand for no text
# (0 bytes): they never occur as targets.
#
# The lm tokenizer directory keeps tokenizer.json as hf_tokenizer.json (lm's own tokenizer.json
# holds the kind), and tokenizer_config.json as hf_tokenizer_config.json.

HF_FILE, HF_CONFIG = "hf_tokenizer.json", "hf_tokenizer_config.json"
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _byte_decoder() -> dict:
    """GPT-2's byte-to-unicode map, inverted: printable stand-in character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _has(component, kind: str) -> bool:
    """Does a tokenizer.json component (possibly a Sequence) contain a part of this type?"""
    if not isinstance(component, dict):
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("pretokenizers") or component.get("decoders") or component.get("normalizers") or []
    return any(_has(p, kind) for p in parts)


class HFTokenizer(Tokenizer):
    name = "hf"

    def __init__(self, json_text: str, config: dict | None = None, vocab_size: int | None = None):
        from tokenizers import Tokenizer as _Tok

        spec = json.loads(json_text)
        model = spec.get("model", {})
        if model.get("type") not in ("BPE", "Unigram", "WordLevel"):
            raise ValueError(f"tokenizer.json: model type {model.get('type')!r} is not supported "
                             "(BPE, Unigram or WordLevel)")
        self.json_text, self.config = json_text, dict(config or {})
        self.tok = _Tok.from_str(json_text)
        self.byte_level = _has(spec.get("pre_tokenizer"), "ByteLevel") or _has(spec.get("decoder"), "ByteLevel")
        n = self.tok.get_vocab_size(with_added_tokens=True)
        size = max(n, int(vocab_size or 0))
        added = {t["id"]: t["content"] for t in spec.get("added_tokens", [])}
        decoder = _byte_decoder()
        tb = np.zeros(size, np.int32)
        for i in range(n):
            piece = self.tok.id_to_token(i)
            if piece is None:
                continue
            if not self.byte_level and _BYTE_PIECE.fullmatch(piece):  # byte fallback
                tb[i] = 1
            elif i in added:
                tb[i] = len(added[i].encode("utf-8"))
            elif self.byte_level:
                tb[i] = sum(1 if c in decoder else len(c.encode("utf-8")) for c in piece)
            else:
                tb[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
        self.token_bytes = tb
        eos = self.config.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        self.eos_id = self.tok.token_to_id(eos) if eos else None

    # --- construction
    @classmethod
    def from_model_dir(cls, directory: str, vocab_size: int | None = None) -> "HFTokenizer":
        """From a Hugging Face model directory (tokenizer.json, optional tokenizer_config.json)."""
        path = os.path.join(directory, "tokenizer.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{directory}: no tokenizer.json (only the `tokenizers` format "
                                    "is read; save the tokenizer with a fast tokenizer)")
        return cls._read(path, os.path.join(directory, "tokenizer_config.json"), vocab_size)

    @classmethod
    def load(cls, directory: str, meta: dict) -> "HFTokenizer":
        """From an lm tokenizer directory written by `save`."""
        tok = cls._read(os.path.join(directory, HF_FILE), os.path.join(directory, HF_CONFIG),
                        meta.get("vocab_size"))
        if meta.get("eos_id") is not None:
            tok.eos_id = int(meta["eos_id"])
        return tok

    @classmethod
    def _read(cls, path, config_path, vocab_size):
        """One line naming the file when tokenizer.json or its config is not readable."""
        reading = path
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            config = {}
            if os.path.isfile(config_path):
                reading = config_path
                with open(config_path) as f:
                    config = json.load(f)
            reading = path
            return cls(text, config, vocab_size)
        except Exception as e:  # noqa: BLE001 -- json, UTF-8 and the tokenizers library's own errors
            why = (str(e).splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{reading} is not a readable Hugging Face tokenizer file ({why}); "
                             "replace it with the model's original") from None

    # --- the Tokenizer interface
    def encode(self, text: str) -> np.ndarray:
        try:
            ids = self.tok.encode(text, add_special_tokens=False).ids
        except (UnicodeEncodeError, TypeError):  # raw bytes carried as surrogates: not text
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            ids = self.tok.encode(text, add_special_tokens=False).ids
        return np.asarray(ids, np.int32)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in np.asarray(ids).reshape(-1).tolist()],
                               skip_special_tokens=False)

    def meta(self) -> dict:
        return {"kind": self.name, "vocab_size": int(self.vocab_size), "eos_id": self.eos_id,
                "sha256": hashlib.sha256(self.json_text.encode("utf-8")).hexdigest()[:16]}

    def _write(self, directory: str) -> None:
        with open(os.path.join(directory, HF_FILE), "w", encoding="utf-8") as f:
            f.write(self.json_text)
        with open(os.path.join(directory, HF_CONFIG), "w") as f:
            json.dump(self.config, f, indent=2)

    def export(self, directory: str) -> None:
        """tokenizer.json + tokenizer_config.json for `transformers` (AutoTokenizer)."""
        with open(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as f:
            f.write(self.json_text)
        config = dict(self.config) or {"tokenizer_class": "PreTrainedTokenizerFast"}
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
