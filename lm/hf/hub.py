"""Where a pretrained model's files are: `hf:ORG/NAME` (Hugging Face hub, cached) or a directory."""

from __future__ import annotations

import os
import socket

HUB_PREFIX = "hf:"
PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model"]


def is_hub(source: str) -> bool:
    return source.startswith(HUB_PREFIX)


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Can we open a connection to the hub at all (a quick check, so offline fails at once)?"""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def local_dir(source: str) -> str:
    """A local directory holding the model's config.json, safetensors and tokenizer files.

    hf:ORG/NAME: from the huggingface_hub cache if there, else downloaded (only config, weights
    and tokenizer files). Offline and not cached: one line saying to pass a local directory.
    """
    if not source:
        raise ValueError("no pretrained model given (hf:ORG/NAME or a local directory)")
    if not is_hub(source):
        if not os.path.isdir(source):
            raise FileNotFoundError(f"{source}: no such directory (pass hf:ORG/NAME for the hub)")
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise FileNotFoundError(f"{source}: no config.json, so not a Hugging Face model directory")
        return source
    repo = source[len(HUB_PREFIX):].strip("/")
    if repo.count("/") != 1:
        raise ValueError(f"{source}: expected hf:ORG/NAME")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{source}: huggingface_hub is not installed (pip install 'lm[hf]'), "
                         "or pass a local directory") from None
    try:
        return snapshot_download(repo, allow_patterns=PATTERNS, local_files_only=True)
    except Exception:  # not cached (LocalEntryNotFoundError and friends): download below
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _online():
        raise ValueError(f"{source}: not in the local Hugging Face cache and the hub cannot be "
                         f"reached; download it where there is a network (huggingface-cli download "
                         f"{repo}) and pass the local directory instead (lm import DIR, or init_from=DIR)")
    try:
        return snapshot_download(repo, allow_patterns=PATTERNS)
    except Exception as e:  # repository not found, gated, network error mid-way
        raise ValueError(f"{source}: download failed: {str(e).splitlines()[0]}") from None
