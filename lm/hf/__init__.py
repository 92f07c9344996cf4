"""Hugging Face interop: safetensors checkpoints, config.json translation, tokenizers.

    lm.hf.hub.local_dir("hf:ORG/NAME" or a directory)     -> a local model directory
    lm.hf.load.pretrained_config(dir)                      -> (family, ModelConfig, config.json)
    lm.hf.load.load_params(dir, family, cfg, shardings)    -> params, each leaf in its sharding
    lm.hf.load.export_tensors(params, family, cfg)         -> HF tensors, one at a time
    lm.data.tokenizers.HFTokenizer                          -> tokenizer.json as an lm Tokenizer

Families: lm.hf.configs.FAMILIES (llama, mistral, qwen2, qwen3, gpt2, gpt_neox), one weight
table each in lm.hf.weights. Commands: `lm import`, `lm export` (lm/cli); configs can start
from a pretrained model with the top-level key `init_from`.
"""
