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
                same as SP (``Resolved.init_std``), so the effective map (1/m) W has std 1/(m sqrt(d)) and the
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
* ``fitted`` the measured law's rule: ``custom`` with a = 1 and b = e_mup / b_hat, where e_mup is sigma_top's width
             exponent on the study's own two smallest widths under ``mup`` and b_hat its measured lam exponent
             (sigma_top ~ eta^a lam^-b_hat on the proxy grid; ``wdscale.science.regimes.fitted_b``, ``wdscale.science.law``).
* ``fitted-sqrt`` the paper's recipe taken literally: b = 2*alpha_hat - 1 = 2 e_mup, i.e. ``fitted`` with the
             sqrt(eta/lam) law assumed (a = b_hat = 1/2; ``wdscale.science.regimes.fitted_b_sqrt``).
             Both are the maths of ``custom``; their own names so studies report them apart.
"""
from __future__ import annotations

from collections import Counter

import math
import re
from dataclasses import dataclass

RULES = ("sp", "mup", "indep", "wd", "custom", "fitted", "fitted-sqrt")
FREE_RULES = ("custom", "fitted", "fitted-sqrt")  # rules whose exponents (a, b) are part of the run
CLASSES = ("matrix", "vector", "embedding", "readout")

RULE_SHORT = {  # plot labels
    "sp": "SP", "mup": "μP, λ fixed", "indep": "μP, ηλ fixed (λ∝d)", "wd": "μP, λ∝√d", "custom": "custom",
    "fitted": "μP, λ∝d^(e/b̂) (fitted, measured law)", "fitted-sqrt": "μP, λ∝d^(2α̂−1) (fitted, √(η/λ) law)",
}
RULE_INFO = {
    "sp": "SP: nothing scaled with width",
    "mup": "muP, lam fixed (mup decoupled_wd=True)",
    "indep": "muP, eta*lam fixed: lam ~ d (mup MuAdamW default)",
    "wd": "muP, lam ~ sqrt(d) (Fan et al. 2025)",
    "custom": "eta ~ m^-a, lam ~ m^b",
    "fitted": "muP, lam ~ d^(e_mup/b_hat): e_mup = sigma_top's width exponent under mup at the two smallest widths, "
              "b_hat its measured lam exponent on the proxy grid",
    "fitted-sqrt": "muP, lam ~ d^(2 alpha_hat - 1), alpha_hat measured at the two smallest widths (sqrt(eta/lam) "
                   "law assumed)",
}


def rule_exponents(rule: str, a: float | None = None, b: float | None = None) -> tuple[float, float]:
    """(a, b) such that the matrix lr scales as m^-a and the matrix wd as m^b."""
    table = {"sp": (0.0, 0.0), "mup": (1.0, 0.0), "indep": (1.0, 1.0), "wd": (1.0, 0.5)}
    if rule == "custom":
        return (1.0 if a is None else float(a), 0.5 if b is None else float(b))
    if rule in ("fitted", "fitted-sqrt"):
        if b is None:
            what = "e_mup/b_hat" if rule == "fitted" else "2*alpha_hat - 1"
            raise ValueError(f"rule {rule} needs its measured wd exponent b = {what} (give -b)")
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
    """Everything the parametrization decides at one width, in one place: per class AdamW's lr and wd, the init std
    and the forward multiplier; and the attention logit scale.  The models read these; they decide none.

    ``groups[cls]`` = {"lr", "wd", "init_std", "mult"}:

    * ``init_std``: the entries of a weight are drawn N(0, (init_std / sqrt(fan_in))^2), fan_in = the inputs each
      output sums over (a lookup table's is 1, so a token embedding gets std init_std); None keeps the constructor's
      fill (gains = 1).  fan_in is the member's own, so hidden matrices and the readout are N(0, 1/d) at width d (not
      MuReadout's base-width init: see the module docstring).
    * ``mult``: the class's output is multiplied by it in the forward pass; 1/m for the readout under mu-P rules,
      1 everywhere else.
    """

    rule: str
    width: int
    base_width: int
    groups: dict  # class -> {"lr", "wd", "init_std", "mult"}

    @property
    def m(self) -> float:
        return self.width / self.base_width

    @property
    def readout_mult(self) -> float:
        return self.groups["readout"]["mult"]

    def init_std(self, cls: str, fan_in: int) -> float | None:
        """The std a weight of class ``cls`` with ``fan_in`` inputs per output is drawn with; None: keep its fill."""
        s = self.groups[cls]["init_std"]
        return None if s is None else s / math.sqrt(fan_in)

    def attn_scale(self, head_dim: int, base_head_dim: int | None = None) -> float:
        """The attention logit scale.  SP: 1/sqrt(head_dim).  mu-P: 1/head_dim, times sqrt(base_head_dim) so that it
        equals SP's at the base (microsoft/mup's attn_mult).  With a head dim that stays fixed as width grows
        (``base_head_dim`` = ``head_dim``, wdscale's Transformer) both are 1/sqrt(head_dim): at m = 1 an ``sp`` and a
        ``mup`` member are then the same model."""
        if self.rule == "sp":
            return 1.0 / math.sqrt(head_dim)
        base = head_dim if base_head_dim is None else base_head_dim
        return 1.0 / math.sqrt(base) * (base / head_dim)

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
    """Resolve a rule to per-class {lr, wd (torch AdamW semantics), init_std, mult} at ``width``."""
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
    # Exact values for the common cases (m**1.0 can differ from m by an ulp; users compare them).
    if ea == 1.0:
        mlr = lr / m
    if eb == 1.0:
        mwd = wd * m
    # init std in units of 1/sqrt(fan_in): the same under every rule, so sp and mu-P members share their init
    groups = {
        "matrix": {"lr": mlr, "wd": mwd, "init_std": 1.0, "mult": 1.0},
        "vector": {"lr": lr, "wd": 0.0, "init_std": None, "mult": 1.0},
        "embedding": {"lr": lr, "wd": wd, "init_std": 1.0, "mult": 1.0},
        "readout": {"lr": lr, "wd": wd, "init_std": 1.0, "mult": (1.0 / m) if mup else 1.0},
    }
    return Resolved(rule, int(width), int(base_width), groups)


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
# Applying a rule to any torch model: classes from which dimensions scale with width
# ---------------------------------------------------------------------------------------------
MAX_MULTIPLE = 8  # without a base model, k * width for k = 2..8 scales with width (fused qkv 3d, MLP 4d)
# Name patterns, used only where shapes cannot tell an embedding table from a readout: a state dict (no module types).
EMBED_PAT = re.compile(r"(^|\.)(embed\w*|wte|wpe|tok_emb\w*|token_emb\w*|pos_emb\w*|position_embeddings?|"
                       r"embed_positions|w_in|input\w*|emb)(\.|$)", re.I)
READOUT_PAT = re.compile(r"(^|\.)(lm_head|readout|head|w_out|output|out_proj_final|classifier|fc_out)(\.|$)",
                         re.I)


def scaling_dims(shape, width: int, base_shape=None) -> list[bool | None]:
    """Per dimension: True if it scales with width ("infinite"), False if not, None if it cannot be told.

    With ``base_shape`` (the same tensor in the base model): a dim scales iff it differs from the base's, as
    microsoft/mup's ``set_base_shapes`` decides.  Without: a dim equal to ``width`` (or k * width, k = 2..8) scales;
    one below width or above 8 * width does not (inputs, classes, vocabularies, kernel sizes); one in between that is
    no multiple (a LLaMA MLP's 8/3 d, or a vocabulary of 100 at width 64) cannot be told."""
    if base_shape is not None:
        return [int(s) != int(b) for s, b in zip(shape, base_shape)]
    out = []
    for s in shape:
        if s == width or (s % width == 0 and s // width <= MAX_MULTIPLE):
            out.append(True)
        elif s < width or s > MAX_MULTIPLE * width:
            out.append(False)
        else:
            out.append(None)
    return out


def shape_class(inf: list, fans: tuple[int, int] | None) -> str | None:
    """The class from which dims scale (``scaling_dims``), or None when that is ambiguous.

    Both fans scale: ``matrix``.  Only the fan-out: ``embedding`` (its fan-in is fixed).  Only the fan-in:
    ``readout``.  ``fans`` = (fan-in dim, fan-out dim), or None where the layout is unknown (then only a weight with
    two scaling dims is classed)."""
    if len(inf) < 2:
        return "vector"
    if fans is None:
        return "matrix" if sum(d is True for d in inf) >= 2 else None
    fi, fo = fans
    rest = [d for k, d in enumerate(inf) if k not in (fi, fo)]  # conv kernel dims: fixed sizes
    if None in (inf[fi], inf[fo]) or any(rest):
        return None
    return {(True, True): "matrix", (False, True): "embedding", (True, False): "readout"}.get((inf[fi], inf[fo]))


def fan_dims(module, pname: str) -> tuple[int, int] | None:
    """(fan-in dim, fan-out dim) of a weight, read from the type of the module that holds it; None if unknown."""
    import torch.nn as nn

    if pname != "weight" and not (isinstance(module, nn.MultiheadAttention) and pname.endswith("proj_weight")):
        return None
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return 0, 1  # (num_embeddings, dim): the fan-in is the table's rows
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return 0, 1
    if type(module).__name__ == "Conv1D":  # GPT-2's (HF transformers): the weight is stored (in, out)
        return 0, 1
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention)):
        return 1, 0
    return None


def _override(name: str, overrides: dict | None) -> str | None:
    for pat, c in (overrides or {}).items():
        if pat == name or re.search(pat, name):
            if c not in CLASSES:
                raise ValueError(f"unknown class {c!r} for {name}; choose from {', '.join(CLASSES)}")
            return c
    return None


def classify_model(model, width: int, base_model=None, overrides: dict | None = None,
                   strict: bool = True) -> dict[str, str]:
    """Class of every trainable parameter of ``model``: name -> class, from which of its dims scale with width.

    Dims scale where they differ from ``base_model``'s (the same model at the base width, as microsoft/mup's
    ``set_base_shapes``), or where they equal ``width`` when no base model is given or it has the very same shapes
    (``scaling_dims``).  Which dim is the fan-in comes from the holding module's type (nn.Linear, nn.Embedding,
    convolutions, GPT-2's Conv1D); an embedding table's rows (tokens, positions) never scale.  Names are not read.
    A weight tied into several modules (a token embedding reused as the readout) takes its first holder's class, and
    its other roles count as found.  ``overrides`` (name or regex -> class) come first.

    Raises a one-line ValueError naming the first weight whose class cannot be told, and the override to use.
    Warns when no readout is found: under mu-P its 1/m forward multiplier then has nowhere to go.  ``strict=False``
    is for labels only (SpectralMonitor's class column), where refusing would stop a training loop: a weight that
    cannot be told takes the class its name suggests (``classify_tensor``), and nothing warns."""
    import warnings

    import torch.nn as nn

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    holders: dict[int, list] = {}
    for mod in model.modules():
        for pname, p in mod.named_parameters(recurse=False):
            holders.setdefault(id(p), []).append((mod, pname))
    base = None
    if base_model is not None:
        base = {n: tuple(p.shape) for n, p in base_model.named_parameters()}
        missing = [n for n in params if n not in base]
        if missing:
            raise ValueError(f"base_model has no parameter {missing[0]}: pass the same model built at the base width")
        if all(base[n] == tuple(p.shape) for n, p in params.items()):
            base = None  # the same shapes say nothing about what scales: width decides
    out, roles = {}, set()
    for name, p in params.items():
        cls = _override(name, overrides)
        if cls is None:
            inf = scaling_dims(p.shape, width, None if base is None else base[name])
            if any(isinstance(mod, (nn.Embedding, nn.EmbeddingBag)) for mod, _ in holders[id(p)]):
                inf[0] = False
            found = [shape_class(inf, fan_dims(mod, pname)) for mod, pname in holders[id(p)]]
            if None in found and not strict:
                found = [classify_tensor(name, p.shape, width, base_shape=None if base is None else base[name])]
            if None in found:
                how = "pass base_model= (the same model at the base width) or " if base is None else "pass "
                raise ValueError(f"cannot tell the class of {name} (shape {tuple(p.shape)}, width {width}): "
                                 f"{how}overrides={{{name!r}: 'matrix' | 'embedding' | 'readout' | 'vector'}}")
            cls = found[0]
            roles.update(found)
        roles.add(cls)
        out[name] = cls
    if strict and "readout" not in roles:
        warnings.warn("no readout found (a weight whose fan-in scales with width and fan-out does not): under mu-P "
                      "the logits' 1/m multiplier has nowhere to go; name it with overrides={NAME: 'readout'}",
                      stacklevel=3)
    return out


def classify_tensor(name: str, shape, width: int, base_shape=None, overrides: dict | None = None) -> str:
    """Class of one tensor of a state dict, where no module type tells its layout.

    Scaling dims first (``scaling_dims``): two scale -> ``matrix``; 1-D -> ``vector``.  Only where one dim scales
    (an embedding table and a readout then look alike: (vocab, d) both) or none can be told does the name decide
    (``EMBED_PAT``, ``READOUT_PAT``), and a name that says nothing leaves it a ``matrix``."""
    cls = _override(name, overrides)
    if cls is not None:
        return cls
    shape = tuple(shape)
    cls = shape_class(scaling_dims(shape, width, base_shape), None)
    if cls is not None:
        return cls
    if EMBED_PAT.search(name):
        return "embedding"
    if READOUT_PAT.search(name):
        return "readout"
    return "matrix"


def param_groups(model, width: int, base_width: int, rule: str, lr: float, wd: float,
                 a: float | None = None, b: float | None = None, overrides: dict | None = None,
                 base_model=None) -> list[dict]:
    """AdamW param groups for *any* torch model under ``rule``.

    Classes come from ``classify_model``: which dims scale with width, against ``base_model`` (the same model at
    ``base_width``) when given, else against ``width``.  ``overrides`` maps a parameter name (or a regex matched with
    re.search) to a class.  Each group carries ``name`` (its class) and ``params`` so it can go straight into
    ``torch.optim.AdamW``.  The readout multiplier (``resolve(...).readout_mult``) belongs in your forward pass;
    param groups cannot express it.
    """
    res = resolve(rule, width, base_width, lr, wd, a, b)
    classes = classify_model(model, width, base_model, overrides)
    buckets: dict[str, list] = {c: [] for c in CLASSES}
    for name, p in model.named_parameters():
        if name in classes:
            buckets[classes[name]].append(p)
    return [{"name": c, "params": ps, "lr": res.groups[c]["lr"], "weight_decay": res.groups[c]["wd"]}
            for c, ps in buckets.items() if ps]


def rule_json(res: Resolved, steps: int | None = None, head_dim: int = 32) -> dict:
    """``wdscale rules --json``: per class lr, wd, init_std (x 1/sqrt(fan_in); null = the fill), mult, the decay per
    step and tau (null = never), steps_over_tau (with steps); and the attention logit scale at ``head_dim``."""
    t = res.table(steps)
    out = {c: {**res.groups[c], **r, "tau": None if math.isinf(r["tau"]) else r["tau"]} for c, r in t.items()}
    out["attention"] = {"head_dim": head_dim, "scale": res.attn_scale(head_dim)}
    return out


def format_table(res: Resolved, steps: int | None = None, head_dim: int = 32) -> str:
    """Human-readable rule table: per class lr, wd, per-step decay lr*wd, tau, init std and forward multiplier."""
    t = res.table(steps)
    head = f"rule {res.rule} ({RULE_INFO[res.rule]}), width {res.width}, base width {res.base_width}, " \
           f"m = {res.m:g}, attention logits x {res.attn_scale(head_dim):.4g} (head dim {head_dim})"
    cols = ["class", "lr", "wd (torch)", "lr*wd / step", "tau (steps)"] + (["steps/tau"] if steps else []) + \
        ["init std", "forward x"]
    rows = [cols]
    for cls, r in t.items():
        row = [cls, f"{r['lr']:.4g}", f"{r['wd']:.4g}", f"{r['decay_per_step']:.3g}",
               "inf" if math.isinf(r["tau"]) else f"{r['tau']:.4g}"]
        if steps:
            row.append(f"{r['steps_over_tau']:.3g}")
        g = res.groups[cls]
        row += ["1 (fill)" if g["init_std"] is None else f"{g['init_std']:.4g}/sqrt(fan_in)", f"{g['mult']:.4g}"]
        rows.append(row)
    w = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = [head] + ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    lines.append("torch AdamW applies p <- p * (1 - lr*wd) each step; tau = 1/(lr*wd).  fan_in: the inputs each output "
                 "sums over (a lookup table's is 1).")
    return "\n".join(lines)


def infer_width(sd: dict) -> int:
    """The model width d: the most common dimension over all vectors and matrices (norm gains, residual
    projections and the embedding's second axis are all d)."""
    dims = Counter()
    for t in sd.values():
        if t.is_floating_point() and 1 <= t.ndim <= 2:
            dims.update(t.shape)
    if not dims:
        raise ValueError("no vectors or matrices to infer the width from; pass --widths")
    return dims.most_common(1)[0][0]
