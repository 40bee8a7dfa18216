"""A model file's identity, read without importing it: its sha256 (part of every run id), its name (the stem) and
the ``--override`` syntax.  A leaf (no torch), so ``config`` can name a model file's runs; ``wdscale.models.own`` trains
them."""
from __future__ import annotations

import functools
import hashlib
import os
import re
from pathlib import Path

from ..core.errors import BadInput

INITS = ("mup", "keep")
CLASSES = ("matrix", "vector", "embedding", "readout")  # rules.CLASSES (a test keeps the two equal)


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of the file's bytes (cached on its size and mtime): part of every run id of the file."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        raise BadInput(f"model file {path}: no such file") from None
    if not p.is_file():
        raise BadInput(f"model file {path} is not a file")
    return _digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


def model_name(path: str | os.PathLike) -> str:
    """The model's name in the store and the plots: the file's stem ('examples/hf_llama.py' -> 'hf_llama')."""
    return Path(path).stem


def parse_overrides(text: str | None) -> dict[str, str]:
    """'lm_head.weight=readout; .*norm.*=vector' -> {name or regex: class}; BadInput for a malformed item."""
    out = {}
    for item in re.split(r"[;,\n]", text or ""):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise BadInput(f"override {item!r} is not NAME=CLASS (CLASS one of {', '.join(CLASSES)})")
        name, cls = (s.strip() for s in item.rsplit("=", 1))
        if cls not in CLASSES:
            raise BadInput(f"override {item!r}: unknown class {cls!r}; choose from {', '.join(CLASSES)}")
        try:
            re.compile(name)
        except re.error as e:
            raise BadInput(f"override {item!r}: {name!r} is not a name or regex ({e})") from None
        out[name] = cls
    return out


def check(model: str, model_file: str, init: str, overrides: str) -> None:
    """A model file's RunConfig fields, checked (BadInput, one line): the file exists, the model is named after it,
    the init and the overrides are known."""
    file_digest(model_file)
    if model != model_name(model_file):
        raise BadInput(f"a model file's runs are named after the file: model {model_name(model_file)!r}, not {model!r}")
    if init not in INITS:
        raise BadInput(f"unknown init {init!r}; choose from {', '.join(INITS)}")
    parse_overrides(overrides)


def add_own_args(p) -> None:
    """Options of a model-file study (wdscale.models.own); ignored for the built-in models."""
    p.add_argument("--override", action="append", default=[], metavar="NAME=CLASS",
                   help="model file: give a parameter (name or regex) its class (matrix, vector, embedding, readout); "
                        "repeatable")
    p.add_argument("--init", default="mup", choices=["mup", "keep"],
                   help="model file: re-draw each class as mu-P says (mup), or keep build()'s own init (keep)")
    p.add_argument("--members", default="auto", choices=["auto", "loop", "batched"],
                   help="model file: train members one at a time (loop), batched with torch.func (batched), or "
                        "whichever is measured faster here (auto)")
