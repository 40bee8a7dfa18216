"""Byte-level text data for the transformer: tokens are bytes (vocab 256), no tokenizer to download.

Corpora:

* ``"stdlib"`` (default): the running interpreter's standard-library ``.py`` sources (no site-packages, no
  test suites), files in sorted path order, concatenated up to ``STDLIB_CAP`` bytes.  Deterministic for a given
  Python version, always present, nothing to download.
* a path to a user's UTF-8 text file.

Split: the last ``VAL_FRACTION`` of the bytes is validation (``train_bytes`` keeps only the first bytes of the
training split, for the multi-epoch regime; validation is unchanged) (for stdlib that is whole files at the end of the
sorted list).  Training batches are random windows of ``seq_len + 1`` bytes drawn from a generator seeded by
``data_seed``; every member of an ensemble sees the same batch.  ``data.val`` is a fixed list of validation
batches (evenly spaced windows, independent of seeds and batch size): the metric behind loss-vs-LR curves.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
import torch

VOCAB = 256
STDLIB_CAP = 8_000_000  # bytes of stdlib source; plenty for a few thousand steps of small models
MAX_CORPUS_BYTES = 256 * 2**20  # a user's corpus is read whole (then copied to the device): refuse bigger files
VAL_FRACTION = 0.05
VAL_SEQS = 64  # validation windows (fixed)
VAL_BATCH = 16  # windows per validation batch
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test"}


def cache_dir() -> Path:
    """``$WDSCALE_CACHE``, else ``~/.cache/wdscale``."""
    return Path(os.environ.get("WDSCALE_CACHE") or Path.home() / ".cache" / "wdscale")


def stdlib_files(root: str | None = None) -> list[Path]:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    out = []
    for dp, dns, fns in os.walk(root):
        dns[:] = sorted(d for d in dns if d not in _SKIP_DIRS)
        out += [Path(dp) / f for f in fns if f.endswith(".py")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _read_stdlib(cap: int = STDLIB_CAP) -> np.ndarray:
    chunks, n = [], 0
    for f in stdlib_files():
        try:
            b = f.read_bytes()
            b.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a few stdlib files carry other encodings on purpose; skip them
        if n + len(b) > cap:
            break
        chunks.append(b)
        n += len(b)
    return np.frombuffer(b"".join(chunks), dtype=np.uint8)


def _stdlib_cached() -> np.ndarray:
    """The stdlib corpus, read once per machine and Python version, then loaded from an .npy cache."""
    key = hashlib.sha1(f"{sys.version}|{sysconfig.get_paths()['stdlib']}|{STDLIB_CAP}".encode()).hexdigest()[:12]
    path = cache_dir() / f"stdlib-{key}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        pass
    arr = _read_stdlib()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file
    except OSError:
        pass  # read-only home: the in-process cache still helps
    return arr


def min_bytes(seq_len: int, batch_size: int) -> int:
    """Shortest usable file: a few batches' worth of training text and a validation split of >= 2 windows."""
    return max(4 * (seq_len + 1) * batch_size, int(2 * (seq_len + 1) / VAL_FRACTION) + 1)


def _corpus_size(path: str) -> int:
    """Size of a user's corpus file; ValueError when it is not a regular file or above MAX_CORPUS_BYTES."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        st = None
    if st is None or not p.is_file():
        raise ValueError(f"corpus {path!r} is not a readable file (use 'stdlib' or a path to a UTF-8 text file)")
    if st.st_size > MAX_CORPUS_BYTES:
        raise ValueError(f"corpus {path!r} is {st.st_size / 2**20:,.0f} MiB, above the limit of "
                         f"{MAX_CORPUS_BYTES / 2**20:,.0f} MiB (the whole text is held in memory); use a part of it")
    return st.st_size


@functools.lru_cache(maxsize=32)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_digest(path: str) -> str | None:
    """sha256 of a corpus file's bytes (part of a run's id, so an edited file is not served from the cache).

    Cached on (path, size, mtime); None when the file cannot be read (preflight reports that)."""
    try:
        _corpus_size(path)
        st = os.stat(path)
        return _digest(os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except (OSError, ValueError):
        return None


def read_text_file(path: str) -> np.ndarray:
    size = _corpus_size(path)
    with open(path, "rb") as f:  # never more than the limit, even if the file grows meanwhile
        b = f.read(min(size, MAX_CORPUS_BYTES) + 1)[:MAX_CORPUS_BYTES]
    if not b:
        raise ValueError(f"corpus {path!r} is empty")
    if b"\x00" in b:
        raise ValueError(f"corpus {path!r} looks binary (contains NUL bytes); give a UTF-8 text file")
    try:
        b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"corpus {path!r} is not UTF-8 text (bad byte at offset {e.start})") from None
    return np.frombuffer(b, dtype=np.uint8)


@functools.lru_cache(maxsize=8)
def _load(corpus: str, stamp: tuple | None) -> np.ndarray:
    arr = _stdlib_cached() if corpus == "stdlib" else read_text_file(corpus)
    arr.setflags(write=False)
    return arr


def load_corpus(corpus: str = "stdlib") -> np.ndarray:
    """All bytes of a corpus as uint8 (cached in-process; a user file is re-read when it changes)."""
    stamp = None
    if corpus != "stdlib":
        try:
            st = os.stat(corpus)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            raise ValueError(f"corpus {corpus!r} is not a readable file "
                             "(use 'stdlib' or a path to a UTF-8 text file)") from None
    return _load(corpus, stamp)


def split(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = len(arr) - int(len(arr) * VAL_FRACTION)
    return arr[:cut], arr[cut:]


def check_corpus(corpus: str, seq_len: int, batch_size: int) -> np.ndarray:
    """Load and validate; ValueError (one line) when the text is too short for this seq_len and batch size."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    arr = load_corpus(corpus)
    need = min_bytes(seq_len, batch_size)
    if len(arr) < need:
        raise ValueError(f"corpus {corpus!r} is too short: {len(arr)} bytes, need at least {need} "
                         f"for seq_len {seq_len} and batch size {batch_size}")
    return arr


class TextData:
    """Iterator of (batch_size, seq_len + 1) int64 token windows on ``device``; ``val`` is a fixed list."""

    def __init__(self, corpus: str, seq_len: int, batch_size: int, data_seed: int = 0, device="cpu",
                 train_bytes: int | None = None):
        arr = check_corpus(corpus, seq_len, batch_size)
        train, val = split(arr)
        if train_bytes is not None:  # a finite slice revisited in epochs; validation stays the same held-out text
            if train_bytes < seq_len + 2:
                raise ValueError(f"train_bytes {train_bytes} is shorter than one window of seq_len {seq_len} + 1")
            if train_bytes > len(train):
                raise ValueError(f"train_bytes {train_bytes:,} is more than the corpus's {len(train):,} training bytes")
            train = train[:train_bytes]
        self.seq_len, self.batch_size, self.device = seq_len, batch_size, torch.device(device)
        self.train = torch.from_numpy(train.copy()).to(self.device)
        self.gen = torch.Generator().manual_seed(20_000 + int(data_seed))
        self.offsets = torch.arange(seq_len + 1, device=self.device)
        n_win = len(val) - seq_len - 1
        starts = np.linspace(0, n_win, num=min(VAL_SEQS, n_win + 1)).astype(np.int64)
        vt = torch.from_numpy(val.copy()).to(self.device)
        windows = vt[torch.from_numpy(starts).to(self.device)[:, None] + self.offsets].long()
        self.val = list(windows.split(VAL_BATCH))

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        hi = len(self.train) - self.seq_len - 1
        start = torch.randint(0, hi + 1, (self.batch_size,), generator=self.gen).to(self.device)
        return self.train[start[:, None] + self.offsets].long()
