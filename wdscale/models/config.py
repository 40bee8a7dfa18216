"""Run configuration: one member of a study, its validation, the bounds on what it may ask, and the device.

A leaf module: the store, the verdicts, the jobs and the models read a ``RunConfig`` without importing the
trainer, so imports run one way (config and rules at the bottom, models, then training and the store, then
analysis, then the CLI and the app).  ``wdscale.training.train`` re-exports these names for older code.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass

import torch

from ..core.rules import FREE_RULES, RULES, check_positive, resolve

MAX_MEMBERS = 64  # members per ensemble chunk: bounds memory, keeps batching efficient (a demo width is 42)
MODELS = ("synthetic", "transformer")
SCHEDULES = ("constant", "warmup", "cosine", "exp_warmup")
# Part of every run id: a model whose maths changed gets a new version, so runs of the old one are never reused
# as "cached" (synthetic 2: the normalized residual MLP on a finite power-law task; transformer 2: one attention
# scale 1/sqrt(head_dim) for every rule).
MODEL_VERSIONS = {"synthetic": 2, "transformer": 2}
OWN_VERSION = 1  # the model-file trainer (wdscale.models.own): members train as a plain torch loop would
# Bounds on what one config may ask for: far beyond any study this tool is for, well below what would exhaust
# memory before a check could run (the loss history alone is steps x members floats).
MAX_STEPS = 1_000_000
MAX_WIDTH = 8192
MAX_DEPTH = 64
MAX_BATCH = 65_536
MAX_SEED = 2**31 - 1


MIN_SPECTRA_GAP = 50  # steps between default spectra snapshots, at least
SPECTRA_SNAPSHOTS = 10  # default snapshots per run (plus step 0): enough to see the spectrum settle


def eval_steps(steps: int, n: int = 8) -> list[int]:
    """Steps after which the validation loss is measured: n evenly spaced points, the last one = steps."""
    return sorted({max(1, round(steps * k / n)) for k in range(1, n + 1)})


@dataclass(frozen=True)
class RunConfig:
    """One run = one member of an ensemble. Its hash is the run id in the store."""

    model: str
    width: int
    base_width: int
    rule: str
    lr: float
    wd: float
    steps: int
    seed: int = 0  # init seed
    data_seed: int = 0  # batches; members of one ensemble share it
    a: float | None = None  # custom rule: matrix lr ~ m^-a
    b: float | None = None  # custom rule: matrix wd ~ m^b
    schedule: str = "constant"
    warmup: float = 0.0  # fraction of steps (warmup, cosine, exp_warmup)
    batch_size: int | None = None  # None: the model's default
    depth: int | None = None
    seq_len: int = 128  # transformer only
    head_dim: int = 32  # transformer only
    corpus: str = "stdlib"  # transformer only: "stdlib" or a path to a UTF-8 text file
    # transformer only: train on the first train_bytes bytes of the corpus's training split, revisited in epochs
    # (Wang & Aitchison's multi-epoch regime); None = the whole split (LM pretraining: at most ~one pass)
    train_bytes: int | None = None
    # a user's model file (wdscale.models.own): ``model`` is then the file's stem, and the file's sha256 is in the run id
    model_file: str | None = None
    init: str = "mup"  # model files: "mup" re-draws each class as rules.Resolved says; "keep" keeps build()'s init
    overrides: str = ""  # model files: "NAME=CLASS;..." (name or regex), before the classes shapes give

    def __post_init__(self):
        validate_config(self)

    @property
    def run_id(self) -> str:
        d = self.canonical()
        d.pop("model_file", None)  # a model file's content names its runs (model_file_sha256), not where it lies
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def canonical(self) -> dict:
        d = dataclasses.asdict(self)
        if self.model_file is None:  # the fields came later: run ids of the built-in models stay what they were
            for k in ("model_file", "init", "overrides"):
                d.pop(k)
        else:  # the file defines its own data and shapes; its bytes, hashed, stand for them
            from .own.modelfile import file_digest

            for k in ("seq_len", "head_dim", "corpus", "train_bytes", "depth", "batch_size"):
                d.pop(k, None)
            d["model_file_sha256"] = file_digest(self.model_file)
        d["model_version"] = MODEL_VERSIONS.get(self.model, OWN_VERSION) if self.model_file is None else OWN_VERSION
        if "train_bytes" in d and d["train_bytes"] is None:  # the field came later: run ids of whole-corpus runs stay what they were
            d.pop("train_bytes")
        if self.model_file is not None:
            pass
        elif self.model == "synthetic":  # transformer-only fields do not change a synthetic run
            for k in ("seq_len", "head_dim", "corpus", "train_bytes"):
                d.pop(k, None)
        elif self.corpus != "stdlib":  # a user's file: its content, not just its path, names the run
            from .data import corpus_digest

            d["corpus_sha256"] = corpus_digest(self.corpus)
        if self.rule not in FREE_RULES:
            d.pop("a"), d.pop("b")
        return d

    def group_key(self) -> tuple:
        """Configs with the same key can train together in one ensemble."""
        d = self.canonical()
        for k in ("rule", "lr", "wd", "seed", "a", "b"):
            d.pop(k, None)
        return tuple(sorted(d.items()))

    def resolved(self):
        return resolve(self.rule, self.width, self.base_width, self.lr, self.wd, self.a, self.b)

    def lr_sum(self) -> float:
        """sum_t s_t of the lr schedule's multiplier over the run: the accumulated decay of a class with lr eta and
        wd lam is S = eta * lam * lr_sum() (= steps * eta * lam at a constant lr)."""
        return schedule_sum(self.schedule, self.warmup, self.steps, self.width / self.base_width)

    def decay_table(self) -> dict:
        """``Resolved.table`` with ``steps_over_tau`` = S = sum_t eta_t * lam, the schedule counted."""
        return self.resolved().table(self.steps, lr_sum=self.lr_sum())


def lr_factor(cfg: RunConfig, step: int) -> float:
    """Schedule multiplier on every lr of a member at ``step`` (0-based).

    ``exp_warmup`` is Kosson et al.'s replacement for mu-P's implicit warmup: s_t = m^min(0, t/T_W - 1),
    rising from 1/m to 1 over T_W = warmup * steps (use it with the ``sp`` rule, no mu-P lr scaling)."""
    return _factor(cfg.schedule, cfg.warmup, cfg.steps, cfg.width / cfg.base_width, step)  # a float


def _factor(schedule: str, warmup: float, T: int, m: float, step):
    """The schedule at ``step`` (an int or an array of steps: one formula for the trainer and the sums)."""
    import numpy as np

    t = np.asarray(step, dtype=float)
    tw = warmup * T
    if schedule == "constant" or (schedule == "exp_warmup" and tw <= 0):
        out = np.ones_like(t)
    elif schedule == "exp_warmup":
        out = m ** np.minimum(0.0, t / tw - 1.0)
    else:
        warm = np.minimum(1.0, (t + 1) / tw) if tw > 0 else np.ones_like(t)
        if schedule == "warmup":
            out = warm
        else:  # cosine: linear warmup, then cosine decay to 10% of the peak
            prog = np.zeros_like(t) if T <= tw else np.maximum(0.0, (t - tw) / (T - tw))
            out = warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * np.minimum(1.0, prog))))
    return float(out) if out.ndim == 0 else out


@functools.lru_cache(maxsize=4096)
def schedule_sum(schedule: str, warmup: float, steps: int, m: float = 1.0) -> float:
    """sum_{t < steps} s_t: what the steps count for under the schedule (steps at a constant lr)."""
    import numpy as np

    if schedule == "constant":
        return float(steps)
    return float(np.sum(_factor(schedule, warmup, steps, m, np.arange(steps, dtype=float))))


def validate_config(c: RunConfig) -> None:
    """Raise ValueError with a one-line message for anything a user could mistype."""
    if c.model_file is not None:
        from .own.modelfile import check

        check(c.model, c.model_file, c.init, c.overrides)
    elif c.model not in MODELS:
        raise ValueError(f"unknown model {c.model!r}; choose from {', '.join(MODELS)} or a model file (path.py)")
    if c.rule not in RULES:
        raise ValueError(f"unknown rule {c.rule!r}; choose from {', '.join(RULES)}")
    if c.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {c.schedule!r}; choose from {', '.join(SCHEDULES)}")
    for k in ("width", "base_width", "steps"):
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{k} must be a positive integer, got {v!r}")
    check_positive(lr=c.lr)
    if not (isinstance(c.wd, (int, float)) and math.isfinite(c.wd) and c.wd >= 0):
        raise ValueError(f"wd must be a finite number >= 0, got {c.wd!r}")
    if not 0 <= c.warmup <= 1:
        raise ValueError(f"warmup is a fraction of the steps in [0, 1], got {c.warmup}")
    if c.batch_size is not None and c.batch_size <= 0:
        raise ValueError(f"batch size must be > 0, got {c.batch_size}")
    if c.train_bytes is not None and (isinstance(c.train_bytes, bool) or not isinstance(c.train_bytes, int)
                                      or c.train_bytes <= 0):
        raise ValueError(f"train_bytes must be a positive integer (bytes of the training split), got {c.train_bytes!r}")
    if c.train_bytes is not None and c.model != "transformer":
        raise ValueError("train_bytes slices the Transformer's byte corpus; the synthetic task has its own finite set")
    if c.depth is not None and c.depth <= 0:
        raise ValueError(f"depth must be > 0, got {c.depth}")
    for k, v, hi in (("steps", c.steps, MAX_STEPS), ("width", c.width, MAX_WIDTH), ("base width", c.base_width,
                     MAX_WIDTH), ("depth", c.depth, MAX_DEPTH), ("batch size", c.batch_size, MAX_BATCH)):
        if v is not None and v > hi:
            raise ValueError(f"{k} {v} is above the limit of {hi:,} for one run")
    for k in ("seed", "data_seed"):
        v = getattr(c, k)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SEED:
            raise ValueError(f"{k.replace('_', ' ')} must be an integer in [0, {MAX_SEED}], got {v!r}")
    from ..core.rules import decay_problem  # local: keeps this edit inside validate_config

    problem = decay_problem(c.resolved())  # also refuses custom exponents that overflow
    if problem and problem[0] == "error":
        raise ValueError(problem[1])
    if c.schedule == "exp_warmup":
        from ..core.rules import rule_exponents  # local: keeps this edit inside validate_config

        if rule_exponents(c.rule, c.a, c.b)[0] != 0:  # the rule already scales the matrix lr by m^-a
            raise ValueError(f"schedule exp_warmup scales the lr by width itself (Kosson et al.'s replacement "
                             f"for mu-P's lr scaling); use it with rule sp, not {c.rule!r}, or the width factor "
                             f"applies twice")


def pick_device(device: str = "cpu") -> torch.device:
    """The torch device for a --device string; ValueError (one line) for one this machine cannot train on."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but torch sees no GPU; use --device cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: torch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("MPS was asked for but torch cannot use it here; use --device cpu")
    return dev


def parse_numbers(text: str, kind=float) -> list:
    """'64, 128;256' -> [64, 128, 256]: the one list parser of the CLI and the Train page.

    Commas or semicolons; empty items are skipped; a ValueError names the item that is not a (finite) number."""
    out = []
    for tok in str(text).replace(";", ",").split(","):
        tok = tok.strip()
        if not tok:
            continue
        try:
            v = kind(tok)
        except ValueError:
            raise ValueError(f"{tok!r} is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{tok!r} is not a finite number")
        out.append(v)
    return out


def check_fits(configs: list, estimate, avail: int, dev_type: str, describe, advice: str) -> None:
    """Every ensemble the configs make (grouped by ``group_key``, at most MAX_MEMBERS members) must fit in 90% of
    the free memory ``avail``; else a one-line ValueError.  ``estimate(config, n_members)`` is in bytes."""
    groups: dict = {}
    for c in configs:
        groups.setdefault(c.group_key(), []).append(c)
    for group in groups.values():
        c, E = group[0], min(len(group), MAX_MEMBERS)
        need = estimate(c, E)
        if need > 0.9 * avail:
            raise ValueError(f"{describe(c)} x {E} members needs ~{need / 2**30:.1f} GiB but {dev_type} has "
                             f"{avail / 2**30:.1f} GiB free; {advice}")
