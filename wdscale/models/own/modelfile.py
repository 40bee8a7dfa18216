"""The model file itself: who it is, and reading it.

Its identity is read without importing it: its sha256 (part of every run id, so ``config`` names a model file's runs
from here), its name (the stem), the ``--override`` syntax and the options of a model-file study.  Importing it
(``load``, only ever on the user's request) gives a ``ModelFile``; ``build_model``, ``batches_of`` and the
validation batches call the user's functions with every failure turned into one BadInput line that names the line
of the file.  The bottom room of ``wdscale.models.own``: it imports nothing of the package.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ...core.errors import BadInput
from ...core.rules import CLASSES

INITS = ("mup", "keep")


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


# ---------------------------------------------------------------------------------------------------------------
# Reading the file
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFile:
    """A loaded model file: its functions, its name (the stem) and the sha256 its runs carry."""

    path: str
    name: str
    sha256: str
    build: Callable
    batches: Callable
    val_batches: Callable
    user_loss: Callable | None

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        if self.user_loss is not None:
            return self.user_loss(model, batch)
        if isinstance(batch, dict):
            return model(**batch).loss
        return model(batch)


def _where(exc: BaseException, path: str) -> str:
    """' (file.py:LINE)' for the deepest frame of the user's file in the traceback, else ''."""
    line = None
    for fr in traceback.extract_tb(exc.__traceback__):
        if Path(fr.filename).resolve() == Path(path).resolve():
            line = fr.lineno
    return f" ({Path(path).name}:{line})" if line else ""


def _exc_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


def load(path: str | os.PathLike) -> ModelFile:
    """Import a model file (only ever on the user's request: nothing read from a store runs code).

    BadInput, one line, for a missing file, a syntax error (file:line), an import that raises, or a missing
    ``build`` / ``batches`` / ``val_batches``."""
    sha = file_digest(path)
    return _load(str(Path(path).resolve()), sha)


@functools.lru_cache(maxsize=32)
def _load(path: str, sha: str) -> ModelFile:
    src = Path(path).read_text(encoding="utf-8", errors="replace")
    try:
        compile(src, path, "exec")
    except SyntaxError as e:
        raise BadInput(f"model file {path}:{e.lineno}: syntax error: {e.msg}") from None
    name = model_name(path)
    mod_name = f"wdscale_model_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{sha[:12]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod  # dataclasses and pickling-free tools look modules up by name
    try:
        spec.loader.exec_module(mod)
    except Exception as e:  # noqa: BLE001 (the user's code: anything can come out of it)
        sys.modules.pop(mod_name, None)
        raise BadInput(f"model file {path}: importing it raised {_exc_line(e)}{_where(e, path)}") from None
    fns = {}
    for fn in ("build", "batches", "val_batches"):
        f = getattr(mod, fn, None)
        if not callable(f):
            sig = {"build": "build(width) -> nn.Module", "batches": "batches(seed) -> iterator of batches",
                   "val_batches": "val_batches() -> list of batches"}[fn]
            raise BadInput(f"model file {path} defines no {sig}")
        fns[fn] = f
    user_loss = getattr(mod, "loss", None)
    return ModelFile(path=path, name=name, sha256=sha, user_loss=user_loss if callable(user_loss) else None, **fns)


def build_model(mf: ModelFile, width: int) -> nn.Module:
    """``mf.build(width)``, checked: BadInput naming the line for an exception or a non-Module."""
    try:
        m = mf.build(int(width))
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{mf.name}: build({width}) raised {_exc_line(e)}{_where(e, mf.path)}") from None
    if not isinstance(m, nn.Module):
        raise BadInput(f"{mf.name}: build({width}) returned {type(m).__name__}, not a torch.nn.Module")
    return m


# ---------------------------------------------------------------------------------------------------------------
# The user's batches, checked
# ---------------------------------------------------------------------------------------------------------------
def batches_of(mf: ModelFile, seed: int):
    """``iter(batches(seed))``; a raise in the user's code becomes one BadInput line naming the file's line."""
    try:
        return iter(mf.batches(int(seed)))
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{mf.name}: batches({seed}) raised {_exc_line(e)}{_where(e, mf.path)}") from None


def _count(mf: ModelFile, seed: int, steps: int, budget_s: float = 10.0) -> int:
    """How many batches batches(seed) gives, up to ``steps`` (stops counting after ``budget_s``: a slow loader is
    then checked as it trains)."""
    it, n, t0 = batches_of(mf, seed), 0, time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        for _ in range(steps):
            if next(it, None) is None:
                return n
            n += 1
            if time.perf_counter() - t0 > budget_s:
                return steps
    return n


@functools.lru_cache(maxsize=8)
def _val_cached(path: str, sha: str) -> list:
    mf = _load(path, sha)
    try:
        vb = list(mf.val_batches())
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{mf.name}: val_batches() raised {_exc_line(e)}{_where(e, mf.path)}") from None
    return vb


def _val(mf: ModelFile) -> list:
    return _val_cached(mf.path, mf.sha256)


def _next_batch(mf: ModelFile, it, seed: int, step: int):
    """The next batch, or BadInput saying after how many batches ``batches(seed)`` ran out."""
    try:
        return next(it)
    except StopIteration:
        raise BadInput(f"{mf.name}: batches({seed}) ran out after {step} batches") from None


def model_file_paths(folder: str | os.PathLike | None) -> list[Path]:
    """The model files the app may offer: ``*.py`` directly in ``folder`` (named when the server starts), sorted;
    [] without a folder.  Listing reads names only: no file is imported until the user asks for it."""
    if not folder:
        return []
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(f for f in p.glob("*.py") if f.is_file() and not f.name.startswith("_"))
