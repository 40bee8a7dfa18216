"""Your model, your answer: a width-transfer study on any PyTorch model, from one Python file.

A *model file* defines (nothing else is read from it)::

    def build(width: int) -> torch.nn.Module     # the same family at every width
    def batches(seed: int) -> Iterator           # training batches; the same sequence for a given seed
    def val_batches() -> list                    # fixed held-out batches
    def loss(model, batch) -> torch.Tensor       # optional; default: model(**batch).loss for a dict batch
                                                 # (the Hugging Face convention), else model(batch)

``wdscale sweep --model FILE.py`` and ``wdscale study --model FILE.py`` then run on it as on the built-in models:
the run id holds the file's sha256 (an edited file retrains; the same file and config never does), the model is
named after the file, and every reader (report, the pages, ``tour --store``, ``inspect``) works on the records.

mu-P is done for the user, in one place (``Member``):

* classes from shapes against ``build(base_width)`` (``rules.classify_model``, microsoft/mup's ``set_base_shapes``
  idea), with ``overrides`` (``NAME=CLASS``) first;
* init: each class re-drawn as ``rules.Resolved`` says (``init="mup"``), or the model's own
  (``init="keep"``: ``torch.manual_seed(seed); build(width)``);
* the readout's 1/m forward multiplier: a forward hook on the module that produces the logits (under a tied
  embedding, the readout's use of the weight, never the lookup);
* ``torch.optim.AdamW(param_groups(...), betas=(0.9, 0.95))``: per class lr and weight_decay; torch multiplies
  weight_decay by lr, so the per-step decay is lr*wd and tau = 1/(lr*wd) steps.

Members train one of two ways, whichever is *measured* faster on the machine at hand (``choose_path``, cached):
``loop`` (each member its own module and torch AdamW, stepped in turn on the same batch: literally the plain
loop) or ``batched`` (torch.func: ``stack_module_state`` + ``vmap`` over the members, per-member AdamW on the stacked
tensors).  Tied weights stay tied in both (``named_parameters`` holds a tie once; the reparametrization re-ties
it).  A model vmap cannot batch (an op without a batching rule, random ops such as dropout, in-place buffer updates
such as BatchNorm's running stats) falls back to ``loop`` with a one-line notice.  tests/test_own.py checks that
member i equals the plain loop in both paths.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import BadInput
from .modelfile import INITS, file_digest, model_name, parse_overrides  # noqa: F401 (re-exported)
from ..core.rules import CLASSES, classify_model, fan_dims, param_groups, scaling_dims, shape_class

PATHS = ("auto", "loop", "batched")
BATCHED_MIN_SPEEDUP = 1.2  # adopt the batched path only where it is measured at least this much faster
PROBE_STEPS = 3  # timed steps per path when choosing (after one untimed warm-up step)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


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
# Classes, readout# ---------------------------------------------------------------------------------------------------------------
# Classes, readout, init: mu-P in one place
# ---------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _base_model(path: str, sha: str, base_width: int) -> nn.Module:
    """build(base_width), once per file and base width: its shapes say which dims scale.  Built under a forked RNG
    so it never moves the global stream a user's code may read."""
    with torch.random.fork_rng(devices=[]):
        return build_model(_load(path, sha), base_width)


def shape_reference(mf: ModelFile, width: int, base_width: int) -> nn.Module:
    """The build whose shapes say which dims scale: ``build(base_width)``, or ``build(2 * base_width)`` for a model
    at the base width itself (the same shapes say nothing)."""
    return _base_model(mf.path, mf.sha256, base_width if width != base_width else 2 * base_width)


def classes(mf: ModelFile, model: nn.Module, width: int, base_width: int, overrides: dict | None = None) -> dict:
    """name -> class for every trainable parameter (a tie once, under its first name); BadInput if ambiguous (with
    the ``--override`` to use) or if no hidden matrix is found."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a missing readout is not an error: sp and mu-P then differ in lr only
            out = classify_model(model, width, shape_reference(mf, width, base_width), overrides)
    except ValueError as e:
        msg = str(e)
        m = re.search(r"class of (\S+) \(shape ([^)]*\)), width (\d+)\)", msg)
        if m:
            raise BadInput(f"{mf.name}: cannot tell the class of {m.group(1)} (shape {m.group(2)}) from its shapes at "
                           f"widths {base_width} and {width}; name it with --override {m.group(1)}=CLASS "
                           f"({' | '.join(CLASSES)})") from None
        raise BadInput(f"{mf.name}: {msg}") from None
    if "matrix" not in out.values():
        raise BadInput(f"{mf.name}: no hidden matrix found (no weight with both dims scaling with width between "
                       f"build({base_width}) and build({max(width, 2 * base_width)})): wdscale studies how hidden "
                       "matrices scale")
    return out


def readout_modules(model: nn.Module, width: int, base_model: nn.Module | None,
                    overrides: dict | None = None) -> list[str]:
    """Names of the modules whose output is the logits: those holding a weight in the readout role (fan-in scales,
    fan-out does not), or a weight overridden to ``readout``.  Under a tie this is the readout's module (GPT-2's
    ``lm_head``), never the embedding lookup that shares its weight."""
    base = dict(base_model.named_parameters(remove_duplicate=False)) if base_model is not None else {}
    out = []
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if p.ndim < 2:
                continue
            forced = None
            for pat, c in (overrides or {}).items():
                if pat == full or re.search(pat, full):
                    forced = c
                    break
            if forced is not None:
                role = forced
            else:
                bp = base.get(full)
                inf = scaling_dims(p.shape, width, None if bp is None or tuple(bp.shape) == tuple(p.shape)
                                   else bp.shape)
                if isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
                    inf[0] = False
                role = shape_class(inf, fan_dims(mod, pname))
            if role == "readout" and mname not in out:
                out.append(mname)
    return out


def fan_in_of(model: nn.Module, name: str) -> int:
    """Inputs each output of weight ``name`` sums over, from the module that holds it (a lookup table's is 1)."""
    mname, _, pname = name.rpartition(".")
    mod = model.get_submodule(mname) if mname else model
    p = getattr(mod, pname)
    if isinstance(mod, (nn.Embedding, nn.EmbeddingBag)):
        return 1
    fans = fan_dims(mod, pname)
    if fans is None:
        return int(p.shape[-1]) if p.ndim >= 2 else 1
    return int(p.numel() // p.shape[fans[1]])


@torch.no_grad()
def reinit(model: nn.Module, res, cls_of: dict, seed: int) -> None:
    """Re-draw every weight as ``res`` says for its class: N(0, (init_std / sqrt(fan_in))^2); gains and biases
    (init_std None) keep the model's own fill.  One generator seeded by the member's seed, in parameter order, so a
    member's init depends on nothing else."""
    g = torch.Generator().manual_seed(int(seed))
    for name, p in model.named_parameters():
        cls = cls_of.get(name)
        if cls is None:
            continue
        std = res.init_std(cls, fan_in_of(model, name))
        if std is not None:
            p.copy_((torch.randn(p.shape, generator=g) * std).to(p.dtype))


class _Mult:
    """The readout multiplier a hook reads: a float, or (batched path) each member's value inside vmap."""

    def __init__(self, value):
        self.value = value


def attach_readout_hook(model: nn.Module, modules: list[str], mult: _Mult) -> list:
    """mu-P's readout multiplier as a forward hook: the logits times ``mult.value`` (1/m under mu-P rules).  Only
    outputs that are tensors (or an output object's ``logits``) are scaled."""

    def hook(mod, args, out):
        if torch.is_tensor(out):
            return out * mult.value
        raise BadInput(f"the readout module {type(mod).__name__} returns {type(out).__name__}, not a tensor; "
                       "name the module that returns the logits with --override NAME=readout")

    return [model.get_submodule(n).register_forward_hook(hook) for n in modules]


class Member:
    """One run's model, its AdamW and its readout hook: exactly what a user's plain loop would build.

    ``torch.manual_seed(seed); model = build(width)``, re-drawn per class unless ``init == "keep"``;
    ``torch.optim.AdamW(param_groups(model, ..., base_model=build(base_width)), betas=(0.9, 0.95))``; the readout
    hook.  Its own CPU RNG stream (dropout draws) is kept across steps, so stepping members in turn equals
    training each alone."""

    def __init__(self, mf: ModelFile, cfg, overrides: dict, device: torch.device):
        self.cfg = cfg
        self.res = cfg.resolved()
        torch.manual_seed(int(cfg.seed))
        self.model = build_model(mf, cfg.width).to(device)
        self.cls_of = classes(mf, self.model, cfg.width, cfg.base_width, overrides)
        if cfg.init != "keep":
            reinit(self.model, self.res, self.cls_of, cfg.seed)
        self.rng = torch.get_rng_state()
        ref = shape_reference(mf, cfg.width, cfg.base_width)
        self.readouts = readout_modules(self.model, cfg.width, ref, overrides)
        self.mult = _Mult(float(self.res.readout_mult))
        self.hooks = attach_readout_hook(self.model, self.readouts, self.mult)
        # what a user's loop passes: param_groups(model, ..., base_model=build(base_width)); at the base width
        # itself the classes come from the wider reference (_groups_at_base: the same numbers)
        groups = (param_groups(self.model, cfg.width, cfg.base_width, cfg.rule, cfg.lr, cfg.wd, cfg.a, cfg.b,
                               overrides=overrides, base_model=ref) if cfg.width != cfg.base_width
                  else self._groups_at_base())
        for g in groups:
            g["initial_lr"] = g["lr"]
        self.opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
        self.model.train()

    def _groups_at_base(self) -> list[dict]:
        """param_groups at m = 1 from the classes found against a wider build (same shapes at the base say
        nothing)."""
        buckets: dict = {c: [] for c in CLASSES}
        for name, p in self.model.named_parameters():
            if name in self.cls_of:
                buckets[self.cls_of[name]].append(p)
        return [{"name": c, "params": ps, "lr": self.res.groups[c]["lr"], "weight_decay": self.res.groups[c]["wd"]}
                for c, ps in buckets.items() if ps]

    def set_lr_factor(self, f: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = g["initial_lr"] * f

    def matrices(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.model.named_parameters() if p.ndim == 2}


def check_loss(mf: ModelFile, value, where: str) -> torch.Tensor:
    """The loss must be a finite scalar tensor: BadInput (one line) otherwise."""
    if not torch.is_tensor(value) or value.numel() != 1:
        what = type(value).__name__ if not torch.is_tensor(value) else f"a tensor of shape {tuple(value.shape)}"
        raise BadInput(f"{mf.name}: the loss at {where} is {what}, not a scalar tensor (define loss(model, batch) "
                       "in the model file)")
    if not torch.isfinite(value.detach()).all():
        raise BadInput(f"{mf.name}: the loss at {where} is {float(value.detach()):g}, not finite")
    return value.reshape(())


def class_rows(mf: ModelFile, cfg, overrides: dict | None = None) -> list[dict]:
    """What each parameter gets at ``cfg``'s width: name, shape, class, lr, wd (torch: per-step decay lr*wd),
    tau = 1/(lr*wd) steps, init std, forward multiplier (the readout's, on the module that makes the logits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg.seed))
        model = build_model(mf, cfg.width)
    cls_of = classes(mf, model, cfg.width, cfg.base_width, overrides)
    res = cfg.resolved()
    reads = readout_modules(model, cfg.width, shape_reference(mf, cfg.width, cfg.base_width), overrides)
    tied = {}
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            tied.setdefault(id(p), []).append(f"{mname}.{pname}" if mname else pname)
    rows = []
    for name, p in model.named_parameters():
        if name not in cls_of:
            continue
        c = cls_of[name]
        g = res.groups[c]
        decay = g["lr"] * g["wd"]
        std = None if cfg.init == "keep" else res.init_std(c, fan_in_of(model, name))
        also = [n for n in tied[id(p)] if n != name]
        rows.append({"name": name, "shape": list(p.shape), "class": c, "lr": g["lr"], "wd": g["wd"],
                     "decay_per_step": decay, "tau": (1 / decay) if decay > 0 else None,
                     "init_std": std, "tied_to": also})
    for r in reads:
        rows.append({"name": f"{r} (output)", "shape": [], "class": "readout", "lr": None, "wd": None,
                     "decay_per_step": None, "tau": None, "init_std": None, "tied_to": [],
                     "mult": res.readout_mult})
    return rows


def format_class_rows(rows: list[dict], cfg) -> str:
    head = (f"{cfg.model} at width {cfg.width} (base {cfg.base_width}), rule {cfg.rule}, lr {cfg.lr:g}, wd {cfg.wd:g}, "
            f"init {'the model’s own' if cfg.init == 'keep' else 'mu-P re-drawn'}:")
    lines = [head]
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        if r.get("mult") is not None:
            lines.append(f"  {r['name']:<{w}}  logits x {r['mult']:.4g} (forward hook)")
            continue
        tau = "inf" if r["tau"] is None else f"{r['tau']:.3g}"
        std = "own" if r["init_std"] is None else f"{r['init_std']:.3g}"
        tie = f"  (tied: {', '.join(r['tied_to'])})" if r["tied_to"] else ""
        lines.append(f"  {r['name']:<{w}}  {str(tuple(r['shape'])):>14}  {r['class']:<9}  lr {r['lr']:<9.3g} "
                     f"wd {r['wd']:<7.3g} tau {tau:>8} steps  init std {std}{tie}")
    lines.append("  torch AdamW: p <- p*(1 - lr*wd) each step, so tau = 1/(lr*wd) steps")
    return "\n".join(lines)


def print_classes(configs) -> None:
    """Before a model file trains: which parameter got which class, lr and wd (at the widest width, first run)."""
    own = [c for c in configs if c.model_file is not None]
    if not own:
        return
    c = max(own, key=lambda c: c.width)
    print(format_class_rows(class_rows(load(c.model_file), c, parse_overrides(c.overrides)), c), file=sys.stderr)


def preflight(configs: list) -> None:
    """Checks that need no training, one line each (BadInput): the file loads; build works at every width; the
    classes can be told and a hidden matrix exists; the loss on the first batch is a finite scalar; the batches
    last the run; val_batches() is a non-empty list."""
    by_file: dict = {}
    for c in configs:
        by_file.setdefault((c.model_file, c.overrides, c.base_width), []).append(c)
    for (path, ov, base_width), cs in by_file.items():
        mf = load(path)
        overrides = parse_overrides(ov)
        for w in sorted({c.width for c in cs}):
            with torch.random.fork_rng(devices=[]):
                model = build_model(mf, w)
            classes(mf, model, w, base_width, overrides)
        c0 = cs[0]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c0.seed)
            model = build_model(mf, c0.base_width)
            it = _batches(mf, c0.data_seed)
            first = next(it, None)
            if first is None:
                raise BadInput(f"{mf.name}: batches({c0.data_seed}) yields no batch")
            check_loss(mf, mf.loss(model, first), "the first batch")
        steps = max(c.steps for c in cs)
        for seed in sorted({c.data_seed for c in cs}):
            n = _count(mf, seed, steps)
            if n < steps:
                raise BadInput(f"{mf.name}: batches({seed}) ran out after {n} batches; the runs need {steps} steps")
        vb = _val(mf)
        if not vb:
            raise BadInput(f"{mf.name}: val_batches() returned no batches")


def _batches(mf: ModelFile, seed: int):
    try:
        return iter(mf.batches(int(seed)))
    except Exception as e:  # noqa: BLE001
        raise BadInput(f"{mf.name}: batches({seed}) raised {_exc_line(e)}{_where(e, mf.path)}") from None


def _count(mf: ModelFile, seed: int, steps: int, budget_s: float = 10.0) -> int:
    """How many batches batches(seed) gives, up to ``steps`` (stops counting after ``budget_s``: a slow loader is
    then checked as it trains)."""
    it, n, t0 = _batches(mf, seed), 0, time.perf_counter()
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


# ---------------------------------------------------------------------------------------------------------------
# Training: the two paths
# ---------------------------------------------------------------------------------------------------------------
def _next_batch(mf: ModelFile, it, seed: int, step: int):
    try:
        return next(it)
    except StopIteration:
        raise BadInput(f"{mf.name}: batches({seed}) ran out after {step} batches") from None


class _LoopPath:
    """Each member its own module and torch AdamW; members stepped in turn on the same batch."""

    name = "loop"

    def __init__(self, mf, configs, overrides, device):
        self.mf = mf
        self.members = [Member(mf, c, overrides, device) for c in configs]
        self.cls_of = self.members[0].cls_of

    def step(self, batch, factors: list[float], alive: list[bool]) -> list[float]:
        losses = []
        for mem, f, ok in zip(self.members, factors, alive):
            if not ok:
                losses.append(float("nan"))
                continue
            torch.set_rng_state(mem.rng)  # this member's own stream (dropout), as if trained alone
            mem.set_lr_factor(f)
            loss = self.mf.loss(mem.model, batch)
            if not torch.is_tensor(loss) or loss.numel() != 1:
                check_loss(self.mf, loss, "a training step")
            loss = loss.reshape(())
            lv = float(loss.detach())
            if math.isfinite(lv):
                loss.backward()
                mem.opt.step()
            mem.opt.zero_grad(set_to_none=True)
            mem.rng = torch.get_rng_state()
            losses.append(lv)
        return losses

    @torch.no_grad()
    def val_losses(self, val: list) -> list[float]:
        out = []
        for mem in self.members:
            mem.model.eval()
            out.append(float(np.mean([float(self.mf.loss(mem.model, b)) for b in val])))
            mem.model.train()
        return out

    def state(self) -> dict:
        """What a resume needs: each member's weights, AdamW state and RNG stream."""
        return {"members": [{"model": m.model.state_dict(), "opt": m.opt.state_dict(), "rng": m.rng}
                            for m in self.members]}

    def load(self, st: dict) -> None:
        for m, s in zip(self.members, st["members"]):
            m.model.load_state_dict(s["model"])
            m.opt.load_state_dict(s["opt"])
            m.rng = s["rng"]

    def stacked_matrices(self) -> dict[str, torch.Tensor]:
        names = list(self.members[0].matrices())
        return {n: torch.stack([dict(m.model.named_parameters())[n].detach() for m in self.members]) for n in names}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", torch.float32).clone() for n, p in self.members[i].model.named_parameters()}

    def close(self):
        for m in self.members:
            for h in m.hooks:
                h.remove()


class _StackedParams:
    """What ``EnsembleAdamW`` reads of a model: stacked (E, ...) parameters by name and their classes."""

    def __init__(self, params: dict, cls_of: dict):
        self._p, self.param_class = params, cls_of

    def named_parameters(self):
        return iter(self._p.items())

    def parameters(self):
        return iter(self._p.values())


class _BatchedPath:
    """torch.func: the members' weights stacked on a leading dim, one vmapped forward and backward for all of
    them, per-member AdamW on the stacked tensors (the same maths as torch.optim.AdamW)."""

    name = "batched"

    def __init__(self, mf, configs, overrides, device):
        from torch.func import stack_module_state

        from .ensemble import EnsembleAdamW

        self.mf = mf
        members = [Member(mf, c, overrides, device) for c in configs]
        self.base = members[0].model  # its own tensors are swapped out for the stacked ones in each call
        for m in members[1:]:
            for h in m.hooks:
                h.remove()
        self.mult = members[0].mult
        self.mults = torch.tensor([m.mult.value for m in members], dtype=torch.float32, device=device)
        params, buffers = stack_module_state([m.model for m in members])
        self.params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self.names = [n for n, _ in self.base.named_parameters()]
        self.cls_of = members[0].cls_of
        self.opt = EnsembleAdamW(_StackedParams(self.params, self.cls_of), [m.res for m in members])
        self.E = len(members)
        self.hooks = members[0].hooks
        self._fn = torch.func.vmap(self._member_loss, in_dims=(0, 0, 0, None), randomness="error")

    def _member_loss(self, params, buffers, mult, batch):
        from torch.nn.utils.stateless import _reparametrize_module

        self.mult.value = mult
        try:
            with _reparametrize_module(self.base, {**params, **buffers}, tie_weights=True):
                return self.mf.loss(self.base, batch).reshape(())
        finally:
            self.mult.value = 1.0

    def step(self, batch, factors: list[float], alive: list[bool]) -> list[float]:
        losses = self._fn(self.params, self.buffers, self.mults, batch)
        live = torch.tensor(alive, dtype=torch.bool)
        fin = torch.isfinite(losses.detach())
        ok = live & fin
        torch.where(ok, losses, torch.zeros_like(losses)).sum().backward()
        self.opt.step(torch.tensor(factors, dtype=torch.float64), ok)
        self.opt.zero_grad()
        return [float(x) if a else float("nan") for x, a in zip(losses.detach().tolist(), alive)]

    @torch.no_grad()
    def val_losses(self, val: list) -> list[float]:
        self.base.eval()
        try:
            per = torch.stack([self._fn(self.params, self.buffers, self.mults, b) for b in val])
        finally:
            self.base.train()
        return per.mean(0).tolist()

    def state(self) -> dict:
        return {"params": {n: p.detach() for n, p in self.params.items()}, "buffers": dict(self.buffers),
                "opt": self.opt.state()}

    @torch.no_grad()
    def load(self, st: dict) -> None:
        for n, p in self.params.items():
            p.copy_(st["params"][n])
        for n, b in self.buffers.items():
            b.copy_(st["buffers"][n])
        self.opt.load_state(st["opt"])

    def stacked_matrices(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items() if p.ndim == 3}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: self.params[n][i].detach().to("cpu", torch.float32).clone() for n in self.names}

    def close(self):
        for h in self.hooks:
            h.remove()


def _make_path(kind: str, mf, configs, overrides, device):
    return (_BatchedPath if kind == "batched" else _LoopPath)(mf, configs, overrides, device)


def _path_cache() -> Path:
    from .data import cache_dir

    return cache_dir() / "own_paths.json"


def _path_key(mf, configs, device) -> str:
    c = configs[0]
    return (f"{mf.sha256[:16]}|w{c.width}|E{len(configs)}|{device}|torch {torch.__version__}|"
            f"threads {torch.get_num_threads()}")


def measure_paths(mf: ModelFile, configs: list, overrides: dict, device, steps: int = PROBE_STEPS) -> dict:
    """Seconds per step of each path on fresh copies of these members (thrown away after), and why the batched
    path cannot run, if it cannot.  One untimed warm-up step each."""
    it = _batches(mf, configs[0].data_seed)
    batches = [_next_batch(mf, it, configs[0].data_seed, k) for k in range(steps + 1)]
    out = {"loop": None, "batched": None, "batched_error": None}
    ones, alive = [1.0] * len(configs), [True] * len(configs)
    for kind in ("loop", "batched"):
        with torch.random.fork_rng(devices=[]):
            try:
                path = _make_path(kind, mf, configs, overrides, device)
                path.step(batches[0], ones, alive)
                t0 = time.perf_counter()
                for b in batches[1:]:
                    path.step(b, ones, alive)
                out[kind] = (time.perf_counter() - t0) / steps
                path.close()
            except BadInput:
                raise
            except Exception as e:  # noqa: BLE001 (no batching rule, random ops, in-place buffers, ...)
                if kind == "loop":
                    raise
                out["batched_error"] = _exc_line(e)
    return out


def choose_path(mf: ModelFile, configs: list, overrides: dict, device, how: str = "auto",
                emit=lambda e: None) -> tuple[str, str]:
    """(path, one-line reason).  ``how``: ``loop``, ``batched`` or ``auto`` (time a few steps of each here, adopt
    batched where it is >= BATCHED_MIN_SPEEDUP x faster; the choice is cached per file, width, members, device,
    torch and threads)."""
    if how not in PATHS:
        raise BadInput(f"unknown member path {how!r}; choose from {', '.join(PATHS)}")
    if how == "loop":
        emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: one member at "
                                        "a time (asked for)"})
        return "loop", "one member at a time (asked for)"
    key = _path_key(mf, configs, device)
    cache = _path_cache()
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if how == "auto" and key in known:
        k = known[key]
        emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: "
                                        f"{k['reason']} (cached choice)"})
        return k["path"], k["reason"] + " (cached choice)"
    t = measure_paths(mf, configs, overrides, device)
    if t["batched"] is None:
        if how == "batched":
            raise BadInput(f"{mf.name}: the batched path cannot run this model ({t['batched_error']}); use --members "
                           "loop")
        path, reason = "loop", f"one member at a time: vmap cannot batch this model ({t['batched_error']})"
    else:
        speedup = t["loop"] / t["batched"]
        if how == "batched":
            path = "batched"
        else:
            path = "batched" if speedup >= BATCHED_MIN_SPEEDUP else "loop"
        reason = (f"{'batched (torch.func vmap)' if path == 'batched' else 'one member at a time'}: measured "
                  f"{t['loop'] * 1e3:.1f} ms/step looped vs {t['batched'] * 1e3:.1f} ms batched for {len(configs)} "
                  f"members (batched x{speedup:.2f}; adopted at >= x{BATCHED_MIN_SPEEDUP})")
    emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: {reason}"})
    if how == "auto":
        known[key] = {"path": path, "reason": reason, "loop_s": t["loop"], "batched_s": t["batched"]}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, cache)
        except OSError:
            pass
    return path, reason


def _save(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint, never a torn one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only or full store: training goes on, only the crash insurance is lost
        pass


def _resume_state(path: Path | None, run_ids: list[str], kind: str) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception:  # noqa: BLE001 (unreadable: start over)
        return None
    return st if st.get("run_ids") == run_ids and st.get("kind") == kind else None


def train_members(configs: list, opts=None, on_event=None, cancel=None, ckpt: Path | None = None) -> list[dict]:
    """Train the runs of one model file at one width (one ``group_key``); one result dict per config, the same
    keys as ``train.train_ensemble``'s, so the store and every reader take them unchanged.  ``opts.members``
    (``auto`` | ``loop`` | ``batched``) picks the path; the result's ``extra`` says which ran and why.

    ``ckpt``: a checkpoint file, written every ``opts.checkpoint_seconds`` and on cancel (weights, AdamW state, RNG
    streams, histories, spectra), so a killed or cancelled ensemble resumes where it stopped; the batches are
    replayed from ``batches(data_seed)`` up to that step (the file's contract: the same batches for a seed)."""
    from .config import MIN_SPECTRA_GAP, SPECTRA_SNAPSHOTS, eval_steps, lr_factor, pick_device
    from .ensemble import singular_values

    if opts is None:  # train.TrainOptions' defaults, without importing the trainer above this module
        from types import SimpleNamespace

        opts = SimpleNamespace(device="cpu", spectra_every=None, n_evals=8, blowup=4.0, event_every=None,
                               members="auto")
    emit = on_event or (lambda e: None)
    c0 = configs[0]
    mf = load(c0.model_file)
    if mf.sha256 != c0.canonical().get("model_file_sha256"):
        raise BadInput(f"{mf.name}: the file changed while the study was being planned; run it again")
    overrides = parse_overrides(c0.overrides)
    dev = pick_device(opts.device)
    E, steps, width = len(configs), c0.steps, c0.width
    kind, reason = choose_path(mf, configs, overrides, dev, getattr(opts, "members", "auto"), emit)
    with torch.random.fork_rng(devices=[]):
        path = _make_path(kind, mf, configs, overrides, dev)
        val = _val(mf)
        it = _batches(mf, c0.data_seed)
        spectra_every = opts.spectra_every or max(MIN_SPECTRA_GAP, steps // SPECTRA_SNAPSHOTS)
        event_every = opts.event_every or max(1, steps // 100)
        evals_at = set(eval_steps(steps, opts.n_evals))
        alive = [True] * E
        diverged_step: list = [None] * E
        init_loss: list = [None] * E
        loss_hist = np.full((steps, E), np.nan, dtype=np.float32)
        eval_hist: dict[int, list] = {}
        spectra: dict = {"steps": []}
        run_ids = [c.run_id for c in configs]
        t0 = time.perf_counter()

        def snapshot(step: int) -> None:
            spectra["steps"].append(step)
            for n, w in path.stacked_matrices().items():
                w = w.float()
                ok = torch.isfinite(w).flatten(1).all(1)
                sv = torch.full((E, min(w.shape[1:])), float("nan"))
                if bool(ok.any()):
                    sv[ok.cpu()] = singular_values(w[ok]).cpu()
                spectra.setdefault(n, []).append(sv)
                for i in torch.nonzero(~ok).flatten().tolist():
                    if diverged_step[i] is None:
                        diverged_step[i], alive[i] = step, False
            emit({"type": "spectra", "width": width, "step": step,
                  "top_sv": {n: spectra[n][-1][:, 0].tolist() for n in spectra if n != "steps"}})

        def save(done: int) -> None:
            _save(Path(ckpt), {
                "run_ids": run_ids, "kind": kind, "step": done, "path": path.state(), "alive": list(alive),
                "diverged_step": list(diverged_step), "init_loss": list(init_loss),
                "loss_hist": torch.from_numpy(loss_hist[:done].copy()),
                "evals": {str(k): v for k, v in eval_hist.items()},
                "spectra": {"steps": list(spectra["steps"]),
                            **{n: torch.stack(v) for n, v in spectra.items() if n != "steps"}}})

        start = 0
        st = _resume_state(ckpt, run_ids, kind)
        if st is not None:
            start = int(st["step"])
            path.load(st["path"])
            alive[:], diverged_step[:], init_loss[:] = st["alive"], st["diverged_step"], st["init_loss"]
            loss_hist[:start] = st["loss_hist"].numpy()
            eval_hist.update({int(k): v for k, v in st["evals"].items()})
            spectra.update({"steps": list(st["spectra"]["steps"]),
                            **{n: list(v.unbind(0)) for n, v in st["spectra"].items() if n != "steps"}})
            for k in range(start):  # replay the batch order up to where the checkpoint stopped
                _next_batch(mf, it, c0.data_seed, k)
        emit({"type": "start", "width": width, "n_members": E, "steps": steps, "run_ids": run_ids,
              "resumed_from": start, "member_path": kind})
        if start == 0:
            snapshot(0)
        done = start
        last_ckpt = time.perf_counter()
        every_s = float(getattr(opts, "checkpoint_seconds", 120.0))
        try:
            for step in range(start, steps):
                if cancel is not None and cancel.is_set():
                    if ckpt is not None and done > start:
                        save(done)  # before the partial snapshot below: a resume keeps the cadence
                    break
                batch = _next_batch(mf, it, c0.data_seed, step)
                factors = [lr_factor(c, step) for c in configs]
                losses = path.step(batch, factors, list(alive))
                loss_hist[step] = losses
                for i, lv in enumerate(losses):
                    if not alive[i]:
                        continue
                    if init_loss[i] is None:
                        init_loss[i] = lv
                    if not math.isfinite(lv) or lv > opts.blowup * init_loss[i]:
                        diverged_step[i], alive[i] = step, False
                done = step + 1
                if done in evals_at:
                    eval_hist[done] = path.val_losses(val)
                if done % spectra_every == 0 or done == steps:
                    snapshot(done)
                if done % event_every == 0 or done == steps:
                    el = time.perf_counter() - t0
                    emit({"type": "step", "width": width, "step": done, "steps": steps, "loss": losses,
                          "alive": list(alive), "elapsed": el, "eta": el / (done - start) * (steps - done)})
                if ckpt is not None and done < steps and time.perf_counter() - last_ckpt >= every_s:
                    save(done)
                    last_ckpt = time.perf_counter()
            partial = done < steps
            if partial and done > 0 and spectra["steps"][-1] != done:
                snapshot(done)
            final = path.val_losses(val) if done > 0 else [float("nan")] * E
            emit({"type": "cancelled" if partial else "done", "width": width, "step": done})
            names = [n for n in spectra if n != "steps"]
            out = []
            for i, c in enumerate(configs):
                div = diverged_step[i] is not None
                out.append({
                    "config": c, "run_id": c.run_id, "status": "partial" if partial else "done", "steps_done": done,
                    "final_loss": float("nan") if div else final[i], "train_loss": loss_hist[:done, i].tolist(),
                    "diverged": div, "diverged_step": diverged_step[i],
                    "evals": {s: v[i] for s, v in eval_hist.items()},
                    "spectra": {"steps": list(spectra["steps"]),
                                **{n: torch.stack([s[i] for s in spectra[n]]).numpy() for n in names}},
                    "weights": path.member_state(i), "top_sv": {n: float(spectra[n][-1][i, 0]) for n in names},
                    "param_class": dict(path.cls_of), "resolved": c.resolved(), "seconds": time.perf_counter() - t0,
                    "extra": {"member_path": kind, "member_path_reason": reason},
                })
            return out
        finally:
            path.close()


def model_file_paths(folder: str | os.PathLike | None) -> list[Path]:
    """The model files the app may offer: ``*.py`` directly in ``folder`` (named when the server starts), sorted;
    [] without a folder.  Listing reads names only: no file is imported until the user asks for it."""
    if not folder:
        return []
    p = Path(folder)
    if not p.is_dir():
        return []
    return sorted(f for f in p.glob("*.py") if f.is_file() and not f.name.startswith("_"))


# ---------------------------------------------------------------------------------------------------------------
# The coordinate check on a model file (microsoft/mup's, through forward hooks on the user's own modules)
# ---------------------------------------------------------------------------------------------------------------
def _tensor_of(out):
    if torch.is_tensor(out):
        return out
    for key in ("logits", "last_hidden_state"):
        v = getattr(out, key, None)
        if torch.is_tensor(v):
            return v
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    return None


def coord_check(path: str, widths=(32, 64, 128), rules=("sp", "mup"), steps: int = 4, lr: float = 1e-2,
                wd: float = 0.0, base_width: int | None = None, seed: int = 0, init: str = "mup",
                overrides: str = "", modules=None) -> list[dict]:
    """RMS of each module's output on a fixed batch, after 0..steps AdamW updates, at each width and rule: rows
    dict(model, rule, width, step, module, rms), the shape ``diagnostics.coord_check`` returns.

    Hooks sit on the user's own modules (every leaf module, plus the readout's output *after* the 1/m multiplier,
    as ``logits``) and are removed after each measurement, so the model is trained exactly as ``Member`` trains it.
    Under SP a hidden module's RMS grows with width after the first update; under mu-P it stays flat.  A flat coord
    check says the first steps are right; it says nothing of the steady state weight decay sets later."""
    mf = load(path)
    ov = parse_overrides(overrides)
    base_width = int(base_width or min(widths))
    rows = []
    from .config import RunConfig

    for width in widths:
        for rule in rules:
            cfg = RunConfig(model=mf.name, model_file=str(path), width=int(width), base_width=base_width, rule=rule,
                            lr=float(lr), wd=float(wd), steps=max(1, int(steps)), seed=int(seed), init=init,
                            overrides=overrides)
            with torch.random.fork_rng(devices=[]):
                mem = Member(mf, cfg, ov, torch.device("cpu"))
                it = _batches(mf, cfg.data_seed)
                probe = _next_batch(mf, it, cfg.data_seed, 0)  # measured on; training batches follow it
                names = {m: n for n, m in mem.model.named_modules() if n and not list(m.children())}
                for step in range(int(steps) + 1):
                    seen: dict = {}

                    def hook(mod, args, out, _seen=seen):
                        t = _tensor_of(out)
                        if t is not None and t.is_floating_point():
                            _seen[names[mod]] = float(t.detach().float().pow(2).mean().sqrt())
                    hs = [m.register_forward_hook(hook) for m in names]
                    try:
                        with torch.no_grad():
                            mem.model.eval()
                            out = mf.loss(mem.model, probe)
                            mem.model.train()
                    finally:
                        for h in hs:
                            h.remove()
                    for r in mem.readouts:  # registered after the readout hook, ours saw the scaled logits
                        if r in seen:
                            seen["logits"] = seen[r]
                    del out
                    for name, v in seen.items():
                        if modules and not any(name == m or name.startswith(m) for m in modules):
                            continue
                        rows.append({"model": mf.name, "rule": rule, "width": int(width), "step": step,
                                     "module": name, "rms": v})
                    if step == steps:
                        break
                    loss = mf.loss(mem.model, _next_batch(mf, it, cfg.data_seed, step + 1))
                    check_loss(mf, loss, f"step {step}").backward()
                    mem.opt.step()
                    mem.opt.zero_grad(set_to_none=True)
                for h in mem.hooks:
                    h.remove()
    return rows


def coord_slopes(rows: list[dict]) -> list[dict]:
    """Per rule and module: the width exponent of the output RMS at the last step (log-log slope over widths).
    ~0 is what mu-P's coordinate check asks; SP's hidden modules grow (~+1 after an Adam step)."""
    last = max(r["step"] for r in rows)
    out = []
    for rule in sorted({r["rule"] for r in rows}):
        for mod in sorted({r["module"] for r in rows}):
            pts = [(r["width"], r["rms"]) for r in rows if r["rule"] == rule and r["module"] == mod
                   and r["step"] == last and r["rms"] > 0]
            if len({w for w, _ in pts}) < 2:
                continue
            x = np.log([w for w, _ in pts])
            y = np.log([v for _, v in pts])
            out.append({"rule": rule, "module": mod, "slope": float(np.polyfit(x, y, 1)[0]), "step": last})
    return out


# ---------------------------------------------------------------------------------------------------------------
# Bench: what the model-file trainer costs over a plain loop, and what batching buys (``wdscale bench``)
# ---------------------------------------------------------------------------------------------------------------
def plain_loop_seconds(mf: ModelFile, configs: list, overrides: dict | None = None) -> float:
    """Wall seconds of the hand-written loop over these members, one after the other: build, AdamW on
    ``param_groups``, the readout hook, ``batches(data_seed)``; no spectra, no evals, no store."""
    from .config import lr_factor

    t0 = time.perf_counter()
    for c in configs:
        with torch.random.fork_rng(devices=[]):
            mem = Member(mf, c, overrides or {}, torch.device("cpu"))
            it = _batches(mf, c.data_seed)
            for step in range(c.steps):
                mem.set_lr_factor(lr_factor(c, step))
                loss = mf.loss(mem.model, next(it))
                loss.backward()
                mem.opt.step()
                mem.opt.zero_grad(set_to_none=True)
            for h in mem.hooks:
                h.remove()
    return time.perf_counter() - t0
