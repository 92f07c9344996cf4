"""A Hugging Face tokenizer.json (the `tokenizers` library) as an lm Tokenizer.

token_bytes, the UTF-8 bytes of text each id stands for, is what keeps bits per byte exact:
- byte-level BPE (GPT-2, Llama 3, Qwen, Pythia, SmolLM): each character of a piece is one byte
  under GPT-2's byte-to-unicode map;
- sentencepiece style (Llama 2, Mistral): '▁' is a space (1 byte), '<0xNN>' byte-fallback pieces
  are 1 byte, other characters their UTF-8 length. Such tokenizers usually prepend a '▁' to the
  text ("dummy prefix"), which counts as one byte that the text does not have: one byte per
  encoded document too many (bits per byte errs low by that fraction; byte-level BPE is exact);
- added tokens (e.g. <|endoftext|>) the UTF-8 length of their text, as `encode` matches them there.
Ids past the tokenizer's vocabulary (embedding rows models pad to a round size) stand for no text
(0 bytes): they never occur as targets.

The lm tokenizer directory keeps tokenizer.json as hf_tokenizer.json (lm's own tokenizer.json
holds the kind), and tokenizer_config.json as hf_tokenizer_config.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

from lm.data.tokenizers import Tokenizer

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
        with open(path, encoding="utf-8") as f:
            text = f.read()
        config = {}
        if os.path.isfile(config_path):
            with open(config_path) as f:
                config = json.load(f)
        return cls(text, config, vocab_size)

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
