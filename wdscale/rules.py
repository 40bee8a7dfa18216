"""The rule table: how AdamW's lr and weight decay scale with width, in one place.

Every rule maps a proxy setting (base width d0, proxy lr eta0, proxy weight decay lam0) to per-class
AdamW hyper-parameters at width d, with width multiplier m = d / d0.

``wd`` below is always the *torch* AdamW ``weight_decay`` argument. torch multiplies it by the lr, so the
per-step decay factor is ``1 - lr * wd`` and the steady-state timescale is tau = 1 / (lr * wd) steps.

Parameter classes (the mu-P-for-Adam treatment of Yang et al. 2022, "Tensor Programs V", Table 3; lr and wd as
microsoft/mup's MuAdam sets them, the readout multiplier as its MuReadout, the readout *init* not; see below):

* ``matrix``    hidden d x d (or d x k*d) matrices.  mu-P: eta2 = eta0 / m; lam2 per rule (Fan et al. 2025).
* ``vector``    gains and biases (1-D).  eta1 = eta0, lam1 = 0 under every rule: decaying a norm gain towards
                zero has nothing to do with the steady-state argument, and nanoGPT / mup exclude them too.
* ``embedding`` input layer (fan-in fixed: vocab or input dim).  "Vector-like" in mu-P: eta = eta0,
                lam = lam0, init std constant.  Its entries do not grow with width, so no rescaling is needed.
* ``readout``   output layer (d -> fixed out dim).  mu-P: the forward pass multiplies the logits by 1/m
                (``readout_mult``), MuReadout's ``x / width_mult()`` with ``output_mult=1``; lr eta0 and lam0 are
                left unscaled (MuAdam treats it as vector-like: one infinite dim).
                Init is *not* MuReadout's.  wdscale draws the readout N(0, 1/d) at the member's own width d, the
                same as SP (``EnsembleModule.init_std``), so the effective map (1/m) W has std 1/(m sqrt(d)) and the
                initial logits are O(1/m).  MuReadout keeps the base width's variance (nn.Linear's default,
                var 1/(3 d0), after ``set_base_shapes`` rescales it by sqrt(m)): logits O(1/sqrt(m)); or zero with
                ``readout_zero_init=True``.  All three vanish as width grows, so all are mu-P (wdscale's lies
                between MuReadout's and zero init); at m = 1 wdscale's readout is exactly SP's, which keeps
                ``sp`` and ``mup`` members identical at the base width.

Rules (Fan et al. 2025, arXiv 2510.15262, and the variants users of microsoft/mup meet):

* ``sp``     standard parameterisation: nothing scaled, readout multiplier 1.
* ``mup``    mu-P with lam fixed (microsoft/mup ``MuAdamW(decoupled_wd=True)``).
* ``indep``  mu-P with eta*lam fixed, i.e. lam2 proportional to m (microsoft/mup ``MuAdamW`` default,
             "independent" weight decay; Kosson et al., Wang & Aitchison).
* ``wd``     mu-P with lam2 proportional to sqrt(m): the paper's rule, keeps sigma_top width-invariant.
* ``custom`` eta2 proportional to m^-a, lam2 proportional to m^b (defaults a=1, b=0.5).
* ``fitted`` the paper's recipe taken literally: ``custom`` with a = 1 and b = 2*alpha_hat - 1, where alpha_hat is
             sigma_top's width exponent measured on the study's own two smallest widths under ``mup``
             (``wdscale.regimes.fitted_b``).  Same maths as ``custom``; its own name so studies report it apart.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

RULES = ("sp", "mup", "indep", "wd", "custom", "fitted")
FREE_RULES = ("custom", "fitted")  # rules whose exponents (a, b) are part of the run
CLASSES = ("matrix", "vector", "embedding", "readout")

RULE_SHORT = {  # plot labels
    "sp": "SP", "mup": "μP, λ fixed", "indep": "μP, ηλ fixed (λ∝d)", "wd": "μP, λ∝√d", "custom": "custom",
    "fitted": "μP, λ∝d^(2α̂−1) (fitted)",
}
RULE_INFO = {
    "sp": "SP: nothing scaled with width",
    "mup": "muP, lam fixed (mup decoupled_wd=True)",
    "indep": "muP, eta*lam fixed: lam ~ d (mup MuAdamW default)",
    "wd": "muP, lam ~ sqrt(d) (Fan et al. 2025)",
    "custom": "eta ~ m^-a, lam ~ m^b",
    "fitted": "muP, lam ~ d^(2 alpha_hat - 1), alpha_hat measured at the two smallest widths",
}


def rule_exponents(rule: str, a: float | None = None, b: float | None = None) -> tuple[float, float]:
    """(a, b) such that the matrix lr scales as m^-a and the matrix wd as m^b."""
    table = {"sp": (0.0, 0.0), "mup": (1.0, 0.0), "indep": (1.0, 1.0), "wd": (1.0, 0.5)}
    if rule == "custom":
        return (1.0 if a is None else float(a), 0.5 if b is None else float(b))
    if rule == "fitted":
        if b is None:
            raise ValueError("rule fitted needs its measured wd exponent b = 2*alpha_hat - 1 (give -b)")
        return (1.0 if a is None else float(a), float(b))
    if rule not in table:
        raise ValueError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
    return table[rule]


def _power(sym: str, k: float) -> str:
    if k == 0:
        return ""
    if k == 1:
        return sym
    if k == 0.5:
        return f"√{sym}"
    return f"{sym}^{k:g}"


def symbolic(rule: str, a: float | None = None, b: float | None = None) -> tuple[str, str]:
    """The matrix class's (lr, wd) under ``rule`` as formulas in η₀, λ₀ and m (the Home page's table)."""
    ea, eb = rule_exponents(rule, a, b)
    lr = "η₀" if ea == 0 else (f"η₀/{_power('m', ea)}" if ea > 0 else f"η₀·{_power('m', -ea)}")
    wd = "λ₀" if eb == 0 else (f"λ₀·{_power('m', eb)}" if eb > 0 else f"λ₀/{_power('m', -eb)}")
    return lr, wd


@dataclass(frozen=True)
class Resolved:
    """Per-class AdamW settings at one width, plus the forward-pass readout multiplier.

    ``readout_mult`` is 1/m under mu-P rules and 1 under SP; it multiplies a readout initialised N(0, 1/d) at
    width d (not MuReadout's base-width init: see the module docstring)."""

    rule: str
    width: int
    base_width: int
    groups: dict  # class -> {"lr": float, "wd": float}
    readout_mult: float

    @property
    def m(self) -> float:
        return self.width / self.base_width

    def table(self, steps: int | None = None, lr_sum: float | None = None) -> dict:
        """Class -> lr, wd, the per-step decay lr*wd, tau = 1/(lr*wd) and (if steps) steps_over_tau.

        ``steps_over_tau`` is the accumulated decay S = sum_t eta_t * lam: with an lr schedule eta_t = eta *
        s_t, pass ``lr_sum`` = sum_t s_t (``RunConfig.lr_sum``); without it the lr is taken as constant
        (S = steps * eta * lam, which overstates S under warmup or cosine decay)."""
        out = {}
        for cls, g in self.groups.items():
            decay = g["lr"] * g["wd"]
            row = {"lr": g["lr"], "wd": g["wd"], "decay_per_step": decay,
                   "tau": (1.0 / decay) if decay > 0 else math.inf}
            if steps is not None:
                row["steps_over_tau"] = (steps if lr_sum is None else lr_sum) * decay
            out[cls] = row
        return out


def _scaled(x: float, m: float, e: float) -> float:
    try:
        return x * m ** e
    except OverflowError:  # custom exponents like 1e308
        return math.inf


def resolve(rule: str, width: int, base_width: int, lr: float, wd: float,
            a: float | None = None, b: float | None = None) -> Resolved:
    """Resolve a rule to per-class {lr, wd} (torch AdamW semantics) at ``width``."""
    check_positive(width=width, base_width=base_width, lr=lr)
    if not (math.isfinite(wd) and wd >= 0):
        raise ValueError(f"wd must be a finite number >= 0, got {wd}")
    ea, eb = rule_exponents(rule, a, b)
    m = width / base_width
    mup = rule != "sp"
    mlr, mwd = _scaled(lr, m, -ea), _scaled(wd, m, eb)
    if not (math.isfinite(mlr) and math.isfinite(mwd) and mlr > 0):
        raise ValueError(f"rule {rule} (a={ea:g}, b={eb:g}) gives matrix lr {mlr:g}, wd {mwd:g} at width {width} "
                         f"(m={m:g}): not usable numbers; use smaller exponents")
    groups = {
        "matrix": {"lr": mlr, "wd": mwd},
        "vector": {"lr": lr, "wd": 0.0},
        "embedding": {"lr": lr, "wd": wd},
        "readout": {"lr": lr, "wd": wd},
    }
    # Exact values for the common cases (m**1.0 can differ from m by an ulp; users compare them).
    if ea == 1.0:
        groups["matrix"]["lr"] = lr / m
    if eb == 1.0:
        groups["matrix"]["wd"] = wd * m
    return Resolved(rule, int(width), int(base_width), groups, (1.0 / m) if mup else 1.0)


MAX_DECAY = 1.0  # per-step decay eta*lam at or above this: the factor 1 - eta*lam is <= 0
WARN_DECAY = 0.1  # above this, tau = 1/(eta*lam) is under 10 steps: the run is mostly decay


def decay_problem(res: Resolved) -> tuple[str, str] | None:
    """("error" | "warning", one-line reason) for the group with the largest per-step decay eta*lam, or None."""
    cls, g = max(res.groups.items(), key=lambda kv: kv[1]["lr"] * kv[1]["wd"])
    decay = g["lr"] * g["wd"]
    where = f"{res.rule}, d={res.width}: {cls} lr {g['lr']:.3g} x wd {g['wd']:.3g} = per-step decay {decay:.3g}"
    if decay >= MAX_DECAY:
        return "error", (f"{where} >= 1, so p <- p*(1 - lr*wd) flips or zeroes the weights every step; "
                         "use a smaller lr or wd")
    if decay > WARN_DECAY:
        return "warning", f"{where} > {WARN_DECAY:g} (tau = {1 / decay:.3g} steps): the weights barely keep any history"
    return None


def check_positive(**kw) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{k} must be a finite number > 0, got {v}")


# ---------------------------------------------------------------------------------------------
# Applying a rule to any torch model
# ---------------------------------------------------------------------------------------------
EMBED_PAT = re.compile(r"(^|\.)(embed\w*|wte|tok_emb\w*|token_emb\w*|w_in|input\w*|emb)(\.|$)", re.I)
READOUT_PAT = re.compile(r"(^|\.)(lm_head|readout|head|w_out|output|out_proj_final|classifier|fc_out)(\.|$)",
                         re.I)


def classify(name: str, param, module=None) -> str:
    """Guess a parameter's class from its name and shape.

    1-D (and 0-D) tensors are ``vector``; nn.Embedding weights and names like ``embed``/``wte`` are
    ``embedding``; ``lm_head``/``readout``/``head``/``output`` are ``readout``; every other >=2-D tensor
    is a hidden ``matrix``.  Names are matched on whole dotted components.  Leading ensemble dimensions
    are not counted: a tensor whose trailing two dims form the matrix is a matrix.
    """
    import torch.nn as nn

    if param.ndim < 2:
        return "vector"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if EMBED_PAT.search(name):
        return "embedding"
    if READOUT_PAT.search(name):
        return "readout"
    return "matrix"


def param_groups(model, width: int, base_width: int, rule: str, lr: float, wd: float,
                 a: float | None = None, b: float | None = None, overrides: dict | None = None) -> list[dict]:
    """AdamW param groups for *any* torch model under ``rule``.

    ``overrides`` maps a parameter name (or a regex matched with re.search) to a class, for models whose
    names the heuristics in :func:`classify` get wrong.  Each group carries ``name`` (its class) and
    ``params`` so it can go straight into ``torch.optim.AdamW``.  Note the readout multiplier
    (``resolve(...).readout_mult``) belongs in your forward pass; param groups cannot express it.
    """
    res = resolve(rule, width, base_width, lr, wd, a, b)
    owner = {}
    for mod_name, mod in model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    buckets: dict[str, list] = {c: [] for c in CLASSES}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        cls = None
        for pat, c in (overrides or {}).items():
            if pat == name or re.search(pat, name):
                cls = c
                break
        if cls is None:
            cls = classify(name, p, owner.get(name))
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r} for {name}; choose from {CLASSES}")
        buckets[cls].append(p)
    return [{"name": c, "params": ps, "lr": res.groups[c]["lr"], "weight_decay": res.groups[c]["wd"]}
            for c, ps in buckets.items() if ps]


def format_table(res: Resolved, steps: int | None = None) -> str:
    """Human-readable rule table (lr, wd, per-step decay lr*wd, tau)."""
    t = res.table(steps)
    head = f"rule {res.rule} ({RULE_INFO[res.rule]}), width {res.width}, base width {res.base_width}, " \
           f"m = {res.m:g}, readout multiplier {res.readout_mult:g}"
    cols = ["class", "lr", "wd (torch)", "lr*wd / step", "tau (steps)"] + (["steps/tau"] if steps else [])
    rows = [cols]
    for cls, r in t.items():
        row = [cls, f"{r['lr']:.4g}", f"{r['wd']:.4g}", f"{r['decay_per_step']:.3g}",
               "inf" if math.isinf(r["tau"]) else f"{r['tau']:.4g}"]
        if steps:
            row.append(f"{r['steps_over_tau']:.3g}")
        rows.append(row)
    w = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.append("torch AdamW applies p <- p * (1 - lr*wd) each step; tau = 1/(lr*wd).")
    return "\n".join(lines)
