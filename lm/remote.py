"""Workdirs at a URL (gs://bucket/run, s3://..., through etils.epath).

Orbax writes checkpoints to the URL itself (each host its own shards). The small files
(config.json, metrics.jsonl, summary.json, tokenizer/, tb/) are written by plain file code,
so for a URL workdir they live in a local mirror (~/.cache/lm/workdirs/<hash of the URL>,
or $LM_WORKDIR_CACHE) that is filled from the URL when a run starts or is loaded and copied
back up after every checkpoint and at the end (process 0 only). Local workdirs are used as
they are. gs:// needs gcsfs (`pip install lm[gcs]`).
"""

from __future__ import annotations

import hashlib
import os
import shutil

from lm.files import is_main_process

CHECKPOINTS = "checkpoints"


def is_url(path) -> bool:
    return "://" in str(path)


def _epath(path):
    from etils import epath

    return epath.Path(path)


class Mirror:
    """The local copy of a URL workdir's small files."""

    def __init__(self, url: str, local: str | None = None):
        self.url = str(url).rstrip("/")
        root = os.environ.get("LM_WORKDIR_CACHE") or os.path.expanduser("~/.cache/lm/workdirs")
        self.local = local or os.path.join(root, hashlib.sha256(self.url.encode()).hexdigest()[:16])
        self._sent: dict[str, tuple[int, int]] = {}

    def _small_files(self, root):
        """Relative paths of files under root, checkpoints/ not entered (a walk by iterdir:
        epath refuses recursive globs on buckets)."""
        out, stack = [], [(_epath(root), "")]
        while stack:
            folder, prefix = stack.pop()
            if not folder.exists():
                continue
            for p in folder.iterdir():
                rel = prefix + p.name
                if p.is_dir():
                    if rel != CHECKPOINTS:
                        stack.append((p, rel + "/"))
                else:
                    out.append(rel)
        return out

    def pull(self) -> str:
        """Copy the URL's small files into the local mirror (replacing it); returns its path."""
        remote = _epath(self.url)
        shutil.rmtree(self.local, ignore_errors=True)  # no stale files from an older run
        os.makedirs(self.local, exist_ok=True)
        for rel in self._small_files(remote):
            dst = os.path.join(self.local, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, "wb") as f:
                f.write((remote / rel).read_bytes())
            self._sent[rel] = _stamp(dst)
        return self.local

    def push(self) -> None:
        """Copy new or changed local files up to the URL (process 0 only)."""
        if not is_main_process():
            return
        remote = _epath(self.url)
        for rel in self._small_files(self.local):
            src = os.path.join(self.local, rel)
            stamp = _stamp(src)
            if self._sent.get(rel) == stamp:
                continue
            dst = remote / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            with open(src, "rb") as f:
                dst.write_bytes(f.read())
            self._sent[rel] = stamp


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def localize(workdir: str) -> tuple[str, Mirror | None]:
    """(local directory to use for the small files, Mirror or None for a local workdir)."""
    if not is_url(workdir):
        return workdir, None
    mirror = Mirror(workdir)
    return mirror.pull(), mirror
