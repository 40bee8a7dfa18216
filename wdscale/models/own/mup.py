"""mu-P on the user's own modules, in one place: each parameter's class (from shapes against ``build(base_width)``,
``--override`` first), the readout's 1/m forward hook, the per-class init, and ``Member``, which puts them together
with the per-class AdamW exactly as a user's plain loop would (the package docstring lists the rules).

``Member`` is what both member paths (``members``), the coordinate check (``coord``) and the bench's plain loop
build; ``class_rows`` shows the user what each parameter got, and ``preflight`` checks a study before it trains.
"""
from __future__ import annotations

import functools
import re
import sys

import torch
from torch import nn

from ...core.errors import BadInput
from ...core.rules import CLASSES, classify_model, fan_dims, param_groups, scaling_dims, shape_class
from .modelfile import ModelFile, _count, _load, _val, batches_of, build_model, load, parse_overrides


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
            it = batches_of(mf, c0.data_seed)
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
