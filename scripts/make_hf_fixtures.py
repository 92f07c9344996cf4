"""Tiny random Hugging Face models + expected outputs for tests/test_hf.py (run by hand).

Needs torch and transformers (not lm's dependencies), e.g. in a separate venv:

    python -m venv --system-site-packages /work/venv-ref
    /work/venv-ref/bin/pip install torch==2.13.0 transformers
    /work/venv-ref/bin/python scripts/make_hf_fixtures.py [--out=tests/fixtures/hf]

Each family gets a directory with what `transformers` writes (config.json, safetensors, tokenizer
files) and expected.npz: the prompt ids (>= 500 tokens: short prompts hide partial-rope and
sliding-window bugs), float32 logits at a subset of positions (eager attention, float32), and a
greedy continuation. Weights are random (seeded); the tokenizers are tiny BPEs trained here
with `tokenizers`: byte-level (GPT-2 style) for most, sentencepiece style ('▁', byte fallback)
for llama and mistral. Variants exercise the reader too: llama is saved in bfloat16 (the
reference runs in float32 on the same rounded weights), qwen2 as sharded safetensors + index.
"""

from __future__ import annotations

import argparse
import collections
import inspect
import os
import shutil

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

VOCAB = 320
PROMPT_TOKENS = 520
NEW_TOKENS = 16


def corpus() -> str:
    """Some fixed English prose (the stdlib's own docs: no download)."""
    texts = [inspect.getdoc(m) or "" for m in (argparse, inspect, shutil, os.path, transformers)]
    texts += [inspect.getdoc(f) or "" for f in (shutil.copytree, os.walk, argparse.ArgumentParser)]
    return "\n\n".join(texts)


def byte_level_tokenizer(text: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 1, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text], trainer)
    return tok


def sentencepiece_style_tokenizer(text: str) -> Tokenizer:
    """Llama-2 / Mistral layout: '▁' for spaces, a dummy prefix, byte fallback, <unk> <s> </s>."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    counts = collections.Counter(text.replace(" ", "▁"))
    alphabet = sorted(c for c, n in counts.items() if n >= 3)  # rarer characters fall back to bytes
    trainer = trainers.BpeTrainer(vocab_size=VOCAB + 40, special_tokens=specials,
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet))
    tok.train_from_iterator([text.replace(" ", "▁")], trainer)
    return tok


FAMILIES = {
    "llama": dict(
        cls="LlamaForCausalLM", tokenizer="sentencepiece", dtype=torch.bfloat16,
        config=dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                    rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                         low_freq_factor=1.0, high_freq_factor=4.0,
                                         original_max_position_embeddings=64))),
    "qwen2": dict(
        cls="Qwen2ForCausalLM", tokenizer="byte_level", shard="40KB",
        config=dict(model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                    rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
    "qwen3": dict(
        cls="Qwen3ForCausalLM", tokenizer="byte_level",
        config=dict(model_type="qwen3", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    max_position_embeddings=1024, rms_norm_eps=1e-6, tie_word_embeddings=True,
                    use_sliding_window=False,
                    rope_parameters=dict(rope_type="default", rope_theta=1000000.0))),
    "mistral": dict(
        cls="MistralForCausalLM", tokenizer="sentencepiece",
        config=dict(model_type="mistral", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=1024,
                    rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=64,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
    "gpt2": dict(
        cls="GPT2LMHeadModel", tokenizer="byte_level",
        config=dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=640,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5)),
    "gpt_neox": dict(
        cls="GPTNeoXForCausalLM", tokenizer="byte_level",
        config=dict(model_type="gpt_neox", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, max_position_embeddings=1024, rotary_pct=0.25,
                    use_parallel_residual=True, hidden_act="gelu", layer_norm_eps=1e-5,
                    tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0))),
}


def make(name: str, spec: dict, out: str, text: str, prompt_text: str) -> None:
    torch.manual_seed(0)
    path = os.path.join(out, name)
    shutil.rmtree(path, ignore_errors=True)
    tok = (sentencepiece_style_tokenizer(text) if spec["tokenizer"] == "sentencepiece"
           else byte_level_tokenizer(text))
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="</s>" if spec["tokenizer"] == "sentencepiece" else "<|endoftext|>")
    cfg_kw = dict(spec["config"])
    model_type = cfg_kw.pop("model_type")
    cfg_kw.update(vocab_size=-(-len(fast) // 8) * 8, bos_token_id=None, eos_token_id=fast.eos_token_id,
                  pad_token_id=None)
    config = transformers.AutoConfig.for_model(model_type, **cfg_kw)
    model = getattr(transformers, spec["cls"])(config).eval()
    with torch.no_grad():  # wider than the default init, so that mistakes show in the logits
        for p in model.parameters():
            if p.ndim >= 1 and p.numel() > 1:
                p.add_(torch.randn_like(p) * 0.05)
    dtype = spec.get("dtype", torch.float32)
    with torch.no_grad():  # round the weights (not the rope buffers) to the stored dtype
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    ids = fast(prompt_text)["input_ids"][:PROMPT_TOKENS]
    assert len(ids) >= 500, len(ids)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].numpy().astype(np.float32)
        gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].numpy()
    positions = np.unique(np.r_[np.arange(8), np.arange(8, len(ids), 37), len(ids) - 8 + np.arange(8)])
    save_kw = {"max_shard_size": spec["shard"]} if "shard" in spec else {}
    model.to(dtype).save_pretrained(path, **save_kw)
    fast.save_pretrained(path)
    for extra in ("generation_config.json",):  # not needed by lm or the tests
        if os.path.exists(os.path.join(path, extra)):
            os.remove(os.path.join(path, extra))
    np.savez_compressed(os.path.join(path, "expected.npz"), prompt_ids=np.asarray(ids, np.int32),
                        positions=positions.astype(np.int32), logits=logits[positions],
                        greedy=gen.astype(np.int32))
    with open(os.path.join(path, "prompt.txt"), "w") as f:
        f.write(prompt_text)
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    print(f"{name}: {len(ids)} prompt tokens, {size / 1024:.0f} KB in {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests",
                                                      "fixtures", "hf"))
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args()
    text = corpus()
    prompt_text = text[:4000]
    for name in args.families.split(","):
        make(name, FAMILIES[name], os.path.abspath(args.out), text, prompt_text)


if __name__ == "__main__":
    main()
