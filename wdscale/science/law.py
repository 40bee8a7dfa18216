"""The spectrum's law measured, not assumed: sigma ~ eta^a * lam^-b, a and b apart, per matrix class.

Fan et al. (arXiv 2510.15262) write sigma_top ~ sqrt(eta/lam) d^alpha: a = b = 1/2.  That is the balance of decay
against a *random walk* (shared/science.md, "Noise or signal"); where Adam's update u is consistent the fixed point
is W ~ u/lam (no eta, lam^-1), and an lr decay pushes the end-of-run weights that way.  So here both exponents are
fitted apart, by one least-squares fit of

    log y = a log eta - b log lam + c_d          (y: sigma_top, ||W||_F or the bulk, median sigma)

over the runs of a study at S = sum_t eta_t lam >= ``MIN_S`` (S of the matrix class), eta and lam the class's own
lr and torch weight_decay, with one intercept c_d per width (no width law assumed).  ``scope``:

* ``proxy``: the proxy's eta x lam grid at the base width d0 (the cheapest runs; what the fitted rule reads);
* ``all``: every width, lam varying across the rules at each width (for a study whose proxy grid has one lam).

Runs that are the very same computation (at m = 1 every mu-P rule is one model: the gallery stores them under
each rule name) count once.  CIs: a bootstrap over the runs.

With sigma_top ~ eta^a lam^-b d^gamma and mu-P's eta ~ 1/d, a width-invariant sigma_top needs
lam ~ d^((gamma - a)/b) = d^(e_mup / b), e_mup = sigma_top's width exponent under ``mup`` (lam fixed): the
``fitted`` rule (``fitted_exponent``).  The paper's 2 alpha - 1 is the case a = b = 1/2 (``fitted-sqrt``).

Also here: the law through the schedule (``law_over_time``, from stored spectra snapshots) and Kosson's balance,
the stationary norm from update RMS, cos(W, u) and eta*lam (``predict_norm``, ``BalanceMonitor``).
Inputs are store records and spectra (a dict run_id -> spectra, or a reader such as ``RunStore.spectra``).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

import numpy as np

MIN_S = 3.0  # the steady-state gate, as everywhere (verdict.MIN_TAUS)
TOLERANCE = 0.1  # |exponent - 1/2| within this: the sqrt(eta/lam) law holds for that exponent
QUANTITIES = ("top", "fro", "bulk")
QUANTITY_NAMES = {"top": "σ_top", "fro": "‖W‖_F", "bulk": "bulk (median σ)"}
# The studies whose law the app and `wdscale validate` report (gallery name -> regime in words)
GALLERY_STUDIES = (("synthetic-4w", "synthetic core, many epochs, constant lr"),
                   ("tf-lm", "Transformer, LM ~1 pass, cosine decay to 10%"),
                   ("tf-epochs", "Transformer, ~10 epochs, cosine decay to 10%"))


# Matrix classes by parameter name: the Transformer's l{i}_{wq,wk,wv,wo,w1,w3,w2}; the synthetic core's w1/w2.
CLASS_OF = {"wq": "attn q", "wk": "attn k", "wv": "attn v", "wo": "attn o", "w1": "mlp gate", "w3": "mlp up",
            "w2": "mlp down"}
_NAME = re.compile(r"^(?:l|h|b)?\d*_?(wq|wk|wv|wo|w1|w3|w2)(?:_\d+)?$")  # l0_wq; the synthetic core's w1_0


# Hugging Face / nanoGPT module names (a model file's weights keep the user's names: 'model.layers.0.mlp.up_proj.weight')
HF_CLASS_OF = {"q_proj": "attn q", "k_proj": "attn k", "v_proj": "attn v", "o_proj": "attn o", "c_attn": "attn qkv",
               "gate_proj": "mlp gate", "up_proj": "mlp up", "down_proj": "mlp down", "c_fc": "mlp up",
               "mlp_proj": "mlp down"}


def matrix_class(name: str, model: str = "transformer") -> str | None:
    """'l0_wq' -> 'attn q'; the synthetic core's 'b0_w1' -> 'W1' (it has no attention); a Hugging Face or nanoGPT
    weight by its module's name ('...self_attn.q_proj.weight' -> 'attn q'; GPT-2's 'attn.c_proj' -> 'attn o',
    'mlp.c_proj' -> 'mlp down')."""
    parts = name.split(".")
    if len(parts) >= 2 and parts[-1] == "weight":
        mod = parts[-2]
        if mod == "c_proj" and len(parts) >= 3:
            return {"attn": "attn o", "mlp": "mlp down"}.get(parts[-3], "attn o")
        if mod in HF_CLASS_OF:
            return HF_CLASS_OF[mod]
    m = _NAME.match(parts[-1])
    if not m:
        return None
    if model == "synthetic":
        return {"w1": "W1", "w2": "W2"}.get(m.group(1))
    return CLASS_OF[m.group(1)]


# -- the points ------------------------------------------------------------------------------------------------
def class_matrices(rec: dict) -> dict[str, list[str]]:
    """{class: [matrix names]} of a run's hidden matrices (``matrix_class``), plus ``pooled`` (all)."""
    out = defaultdict(list)
    for n, c in rec["param_class"].items():
        if c != "matrix":
            continue
        out["pooled"].append(n)
        k = matrix_class(n, rec.get("model", "transformer"))
        if k:
            out[k].append(n)
    return dict(out)


def _reader(spectra):
    if spectra is None:
        return lambda rid: None
    if callable(spectra):
        def read(rid):
            try:
                return spectra(rid)
            except Exception:  # noqa: BLE001  (a damaged run is one point fewer, not a failed fit)
                return None
        return read
    return lambda rid: spectra.get(rid)


def _geo(vals) -> float | None:
    v = [float(x) for x in vals if x is not None and math.isfinite(x) and x > 0]
    return float(np.exp(np.mean(np.log(v)))) if v else None


def run_values(rec: dict, names: list[str], sp: dict | None = None, index: int = -1) -> dict:
    """{top, fro, bulk} of one run: each the geometric mean over ``names`` of sigma_top, ||W||_F = sqrt(sum sigma^2)
    and the median sigma, read from spectra snapshot ``index``; without spectra sigma_top comes from the record
    (final) and the others are None."""
    if sp is None:
        return {"top": _geo(rec["top_sv"].get(n) for n in names) if index == -1 else None, "fro": None, "bulk": None}
    top, fro, bulk = [], [], []
    for n in names:
        if n not in sp:
            continue
        s = np.asarray(sp[n], float)[index]
        if not np.isfinite(s).all():
            continue
        top.append(float(s[0]))
        fro.append(float(np.sqrt((s ** 2).sum())))
        bulk.append(float(np.median(s)))
    return {"top": _geo(top), "fro": _geo(fro), "bulk": _geo(bulk)}


def S_at(rec: dict, step: int) -> float:
    """S = sum_{t < step} eta_t lam of the matrix class: the accumulated decay at a snapshot."""
    from ..models.config import _factor

    if step <= 0:
        return 0.0
    f = _factor(rec.get("schedule", "constant"), rec.get("warmup", 0.0) or 0.0, rec["steps"],
                rec["width"] / rec["base_width"], np.arange(int(step), dtype=float))
    return float(rec["matrix_lr"] * rec["matrix_wd"] * np.sum(f))


def _S(rec: dict) -> float | None:
    return ((rec.get("groups") or {}).get("matrix") or {}).get("steps_over_tau")


def _key(r: dict) -> tuple:
    """The computation a run is: at the same width, matrix (eta, lam), readout multiplier and seed, two rule names
    train the very same model (every mu-P rule at m = 1; ``fitted`` with b = 0.5 and ``wd``)."""
    return (r["width"], r.get("model"), r["steps"], r.get("schedule"), r["seed"], r.get("data_seed"),
            f"{r['matrix_lr']:.9g}", f"{r['matrix_wd']:.9g}", f"{r.get('readout_mult', 1.0):.9g}", r.get("lr"),
            r.get("wd"))


def unique_runs(records: list[dict]) -> list[dict]:
    """Finished, non-diverged, decayed runs, each computation once."""
    seen = {}
    for r in records:
        if (r.get("status", "done") != "done" or r.get("diverged") or not r.get("matrix_wd")
                or not r.get("param_class") or not r.get("top_sv")):
            continue
        seen.setdefault(_key(r), r)
    return list(seen.values())


def proxy_runs(records: list[dict]) -> list[dict]:
    """The unique runs at the base width d0 (the proxy's eta x lam grid and the transfer runs there)."""
    return [r for r in unique_runs(records) if r["width"] == r["base_width"]]


def choose_scope(records: list[dict], min_S: float = MIN_S) -> str:
    """``proxy`` when the base width's runs at S >= min_S span >= 2 eta and >= 2 lam, else ``all``."""
    px = [r for r in proxy_runs(records) if (_S(r) or 0) >= min_S]
    ok = len({r["matrix_lr"] for r in px}) >= 2 and len({r["matrix_wd"] for r in px}) >= 2
    return "proxy" if ok else "all"


def law_points(records: list[dict], spectra=None, cls: str = "pooled", scope: str = "proxy",
               min_S: float | None = MIN_S, step: int | None = None) -> list[dict]:
    """One point per unique run of ``scope`` with S >= min_S: {run_id, eta, lam, width, seed, S, top, fro, bulk}.

    ``step``: read the spectra snapshot at that step (S then counts up to it) instead of the final one."""
    read = _reader(spectra)
    runs = proxy_runs(records) if scope == "proxy" else unique_runs(records)
    out = []
    for r in runs:
        names = class_matrices(r).get(cls)
        if not names:
            continue
        sp = read(r["run_id"])
        index = -1
        if step is not None:
            if sp is None:
                continue
            hit = np.nonzero(np.asarray(sp["steps"]) == step)[0]
            if not len(hit):
                continue
            index = int(hit[0])
            S = S_at(r, step)
        else:
            S = _S(r)
        if min_S is not None and (S is None or S < min_S):
            continue
        v = run_values(r, names, sp, index)
        if sp is not None and step is None and v["top"] is None:
            v = run_values(r, names)
        if v["top"] is None:
            continue
        out.append({"run_id": r["run_id"], "eta": r["matrix_lr"], "lam": r["matrix_wd"], "width": r["width"],
                    "seed": r["seed"], "S": S, **v})
    return out


# -- the fit ---------------------------------------------------------------------------------------------------
def _design(pts: list[dict]):
    widths = sorted({p["width"] for p in pts})
    X = np.array([[math.log(p["eta"]), math.log(p["lam"])] + [float(p["width"] == w) for w in widths]
                  for p in pts])
    return X


def fit_law(points: list[dict], quantity: str = "top", n_boot: int = 400, seed: int = 0) -> dict:
    """log y = a log eta - b log lam + c_width by least squares; 95% CIs from a bootstrap over the points.

    Returns {a, a_ci, b, b_ci, n, widths, identifiable, quantity}: b > 0 for y ~ lam^-b.  NaN where the points do
    not separate eta from lam (one eta, one lam, or eta and lam moving together)."""
    pts = [p for p in points if p.get(quantity) is not None and p[quantity] > 0]
    nan = float("nan")
    out = {"quantity": quantity, "a": nan, "a_ci": [nan, nan], "b": nan, "b_ci": [nan, nan], "n": len(pts),
           "widths": sorted({p["width"] for p in pts}), "identifiable": False}
    if len(pts) < 4:
        return out
    X = _design(pts)
    y = np.log([p[quantity] for p in pts])
    if np.linalg.matrix_rank(X) < X.shape[1] or len(pts) <= X.shape[1]:
        return out
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    out.update(a=float(coef[0]), b=float(-coef[1]), identifiable=True)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(pts), len(pts))
        Xb = X[idx]
        keep = Xb[:, 2:].any(0)  # a width the resample missed has no intercept to fit
        Xb = np.concatenate([Xb[:, :2], Xb[:, 2:][:, keep]], 1)
        if np.linalg.matrix_rank(Xb) < Xb.shape[1]:
            continue
        cb = np.linalg.lstsq(Xb, y[idx], rcond=None)[0]
        boots.append((cb[0], -cb[1]))
    if len(boots) >= n_boot // 2:
        bt = np.array(boots)
        out["a_ci"] = [float(v) for v in np.percentile(bt[:, 0], [2.5, 97.5])]
        out["b_ci"] = [float(v) for v in np.percentile(bt[:, 1], [2.5, 97.5])]
    return out


def measure_law(records: list[dict], spectra=None, min_S: float = MIN_S, scope: str | None = None,
                n_boot: int = 400, name: str = "") -> dict:
    """The law of one study: per matrix class and ``pooled`` (all hidden matrices), the exponents of sigma_top
    (``a``, ``b`` with CIs, top level) and of ||W||_F and the bulk (``fro``, ``bulk``; need spectra).

    Returns {scope, min_S, n_runs (unique runs in the scope), n_used, classes: {class: fit}, pooled: fit,
    sentence}."""
    scope = scope or choose_scope(records, min_S)
    runs = proxy_runs(records) if scope == "proxy" else unique_runs(records)
    classes = sorted({k for r in runs[:1] for k in class_matrices(r)} - {"pooled"})
    out = {"scope": scope, "min_S": min_S, "n_runs": len(runs), "classes": {}, "pooled": None,
           "has_spectra": spectra is not None}
    read = _reader(spectra)
    cache = {}

    def cached(rid):  # each run's spectra read once for every class
        if rid not in cache:
            cache[rid] = read(rid)
        return cache[rid]
    for k in classes + ["pooled"]:
        pts = law_points(runs, cached if spectra is not None else None, k, "all", min_S)
        f = fit_law(pts, "top", n_boot)
        f["min_S"] = min_S
        for q in ("fro", "bulk"):
            g = fit_law(pts, q, n_boot) if spectra is not None else None
            f[q] = None if g is None or not g["n"] else {x: g[x] for x in ("a", "a_ci", "b", "b_ci", "n")}
        if k == "pooled":
            out["pooled"] = f
            out["n_used"] = f["n"]
        else:
            out["classes"][k] = f
    out["sentence"] = law_sentence(out, name)
    return out


def holds(fit: dict | None, tol: float = TOLERANCE) -> bool | None:
    """Whether a fit is the sqrt(eta/lam) law: both exponents within ``tol`` of 1/2 (None: no fit)."""
    if not fit or not fit.get("identifiable") or not (math.isfinite(fit["a"]) and math.isfinite(fit["b"])):
        return None
    return abs(fit["a"] - 0.5) <= tol and abs(fit["b"] - 0.5) <= tol


def _ab(f: dict) -> str:
    return f"a {f['a']:.2f}, b {f['b']:.2f}"


def law_sentence(law: dict, name: str = "") -> str:
    """Where the sqrt(eta/lam) law (a = b = 1/2, each within 0.1) holds in one study and where it does not, in one
    plain sentence with the numbers (sigma_top ~ eta^a lam^-b)."""
    where = f"In {name}" if name else "Here"
    fits = {**law.get("classes", {}), "all hidden matrices pooled": law.get("pooled")}
    fits = {k: f for k, f in fits.items() if holds(f) is not None}
    if not fits:
        return f"{where} the runs at S ≥ {law.get('min_S', MIN_S):g} do not separate η from λ: no law can be fitted."
    yes = [k for k, f in fits.items() if holds(f)]
    no = [k for k, f in fits.items() if not holds(f)]
    scope = "the proxy grid at d₀" if law.get("scope") == "proxy" else "every width"
    n = (law.get("pooled") or {}).get("n")
    head = (f"{where} ({n} runs at S ≥ {law.get('min_S', MIN_S):g}, {scope}; σ_top ∝ η^a·λ^−b) the √(η/λ) law "
            f"(a and b within {TOLERANCE:g} of ½) ")
    lst = lambda ks: ", ".join(f"{k} ({_ab(fits[k])})" for k in ks)
    if not no:
        return head + f"holds for every matrix class: {lst(yes)}."
    p = fits.get("all hidden matrices pooled")
    ratio = ""
    if p is not None and holds(p) is False and abs(p["a"] - p["b"]) > 2 * TOLERANCE:
        ratio = f", and η and λ do not enter as one ratio η/λ (pooled a {p['a']:.2f} ≠ b {p['b']:.2f})"
    if not yes:
        return head + f"holds for no matrix class: {lst(no)}{ratio}."
    return head + f"holds for {lst(yes)} but not for {lst(no)}{ratio}."


def where_law_holds(laws: dict) -> str:
    """One sentence over several studies ({name: measure_law(...)}): where a = b = 1/2 holds and where not."""
    yes, no = [], []
    for name, law in laws.items():
        p = (law or {}).get("pooled")
        h = holds(p)
        if h is None:
            continue
        (yes if h else no).append(f"{name} (a {p['a']:.2f}, b {p['b']:.2f})")
    if not yes and not no:
        return "No study here separates η from λ at S ≥ 3: the √(η/λ) law cannot be tested."
    parts = []
    if yes:
        parts.append("σ_top ∝ √(η/λ) holds (a, b within 0.1 of ½, all hidden matrices pooled, S ≥ 3) in " +
                     ", ".join(yes))
    if no:
        parts.append(("but not in " if yes else "σ_top ∝ √(η/λ) does not hold (a, b within 0.1 of ½, all hidden "
                      "matrices pooled, S ≥ 3) in ") + ", ".join(no))
    return "; ".join(parts) + "."


def law_rows(laws: dict) -> list[dict]:
    """One table row per (study, class): the sigma_top exponents a and b with CIs, ||W||_F's and the bulk's,
    the run count, the S filter and the scope (the Regimes and Steady state pages' table)."""
    rows = []
    ci = lambda c: "-" if c is None or not all(math.isfinite(x) for x in c) else f"[{c[0]:.2f}, {c[1]:.2f}]"
    num = lambda x: "-" if x is None or not math.isfinite(x) else f"{x:.2f}"
    for name, law in laws.items():
        if not law:
            continue
        for k, f in list(law["classes"].items()) + [("pooled", law["pooled"])]:
            if not f:
                continue
            rows.append({"study": name, "class": k, "a (σ_top ∝ η^a)": num(f["a"]), "a 95% CI": ci(f["a_ci"]),
                         "b (σ_top ∝ λ^−b)": num(f["b"]), "b 95% CI": ci(f["b_ci"]),
                         "‖W‖_F a, b": "-" if not f.get("fro") else f"{num(f['fro']['a'])}, {num(f['fro']['b'])}",
                         "bulk a, b": "-" if not f.get("bulk") else f"{num(f['bulk']['a'])}, {num(f['bulk']['b'])}",
                         "runs": f["n"], "S filter": f"S ≥ {law['min_S']:g}",
                         "scope": "proxy grid at d₀" if law["scope"] == "proxy" else "all widths",
                         "√(η/λ) law": {True: "holds", False: "no", None: "-"}[holds(f)]})
    return rows


def format_law(laws: dict) -> str:
    """Markdown: ``law_rows`` as a table and ``where_law_holds``' sentence (``wdscale validate``, ``report``)."""
    rows = law_rows(laws)
    if not rows:
        return ""
    cols = list(rows[0])
    L = ["### The law measured: σ ∝ η^a·λ^−b (a = b = ½ is √(η/λ)); η, λ the matrix class's lr and torch wd, "
         "one intercept per width, bootstrap 95% CIs", "",
         "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    L += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    L += ["", where_law_holds(laws)]
    L += [f"- {law['sentence']}" for law in laws.values() if law]
    return "\n".join(L)


# -- through the schedule ----------------------------------------------------------------------------------------
def snapshot_steps(records: list[dict], spectra) -> list[int]:
    """Spectra snapshot steps shared by the study's runs (read from the first few runs)."""
    read = _reader(spectra)
    steps = None
    for r in unique_runs(records)[:5]:
        sp = read(r["run_id"])
        if sp is None:
            continue
        s = {int(x) for x in np.asarray(sp["steps"])}
        steps = s if steps is None else steps & s
    return sorted(steps or [])


def law_over_time(records: list[dict], spectra, cls: str = "pooled", min_S: float | None = MIN_S,
                  scope: str | None = None, n_boot: int = 200) -> list[dict]:
    """a(t), b(t) of sigma_top at every stored spectra snapshot (S counted up to that step, so early snapshots
    keep only the runs already past S >= min_S).  [] when the store keeps one snapshot (the final spectrum)."""
    steps = [s for s in snapshot_steps(records, spectra) if s > 0]
    if len(steps) < 2:
        return []
    scope = scope or choose_scope(records, min_S or 0.0)
    read = _reader(spectra)
    cache = {}

    def cached(rid):
        if rid not in cache:
            cache[rid] = read(rid)
        return cache[rid]
    out = []
    for s in steps:
        pts = law_points(records, cached, cls, scope, min_S, step=s)
        f = fit_law(pts, "top", n_boot)
        out.append({"step": s, "a": f["a"], "a_ci": f["a_ci"], "b": f["b"], "b_ci": f["b_ci"], "n": f["n"],
                    "median_S": float(np.median([p["S"] for p in pts])) if pts else None})
    return out


# -- the rule that follows ------------------------------------------------------------------------------------------
def fitted_exponent(e_mup: float, b_hat: float) -> float:
    """lam ~ d^(e_mup / b_hat) holds sigma_top width-invariant under mu-P's eta ~ 1/d (sigma ~ eta^a lam^-b d^gamma:
    under mup the width exponent is e_mup = gamma - a; a rule lam ~ d^beta makes it e_mup - b beta)."""
    if not (math.isfinite(e_mup) and math.isfinite(b_hat)) or b_hat <= 0:
        raise ValueError(f"no lam exponent from e_mup {e_mup} and b {b_hat}: b must be a finite number > 0")
    return e_mup / b_hat


def sqrt_law_exponent(e_mup: float) -> float:
    """The paper's 2 alpha - 1 with alpha = e_mup + 1/2: ``fitted_exponent`` at a = b = 1/2."""
    return 2 * e_mup


# -- Kosson's balance -----------------------------------------------------------------------------------------------
def predict_norm(update_rms, cos_wu, eta, lam, n):
    """Stationary ||W||_F of torch's AdamW step W' = (1 - eta lam) W - eta u, from the update RMS, cos(W, u) and
    eta lam (u: Adam's normalized step m_hat/(sqrt(v_hat) + eps), so the weight moves by -eta u before decay).

    The exact identity ||W'||^2 = (1-eta lam)^2 ||W||^2 - 2 eta (1-eta lam) <W,u> + eta^2 ||u||^2, at ||W'|| = ||W||
    with ||u|| = rms sqrt(n) and <W,u> = c ||W|| ||u||, is q x^2 + 2 eta (1-eta lam) c U x - eta^2 U^2 = 0,
    q = eta lam (2 - eta lam):  x = eta U [sqrt((1-eta lam)^2 c^2 + q) - (1-eta lam) c] / q.
    c = 0 (noise) gives U sqrt(eta / (lam (2 - eta lam))) ~ rms sqrt(eta n / (2 lam)); c = -1 (W grown along a
    consistent -u) gives U / lam exactly: no eta, lam^-1."""
    rms, c, eta, lam, n = (np.asarray(x, float) for x in (update_rms, cos_wu, eta, lam, n))
    U = rms * np.sqrt(n)
    k = 1 - eta * lam
    q = eta * lam * (2 - eta * lam)
    out = eta * U * (np.sqrt(k * k * c * c + q) - k * c) / q
    return float(out) if out.ndim == 0 else out


class BalanceMonitor:
    """Training callback recording Kosson's balance terms per matrix and member: ``TrainOptions(callbacks=[mon])``.

    On every ``every``-th update it keeps W before the step, then reads u = ((1 - eta_t lam) W - W') / eta_t from
    the step itself (eta_t: the member's matrix lr times the schedule at that step, lam its wd: the configs say), and
    records {step, member, param, n, fro (||W|| before the step), update_rms (RMS of u), cos_wu, eta, lam}."""

    def __init__(self, configs: list, every: int = 5):
        from ..models.config import lr_factor

        self.configs, self.every = list(configs), int(every)
        res = [c.resolved() for c in self.configs]
        self.lr = [r.groups["matrix"]["lr"] for r in res]
        self.wd = [r.groups["matrix"]["wd"] for r in res]
        self._factor = lr_factor
        self._prev = None
        self.rows: list[dict] = []

    def _names(self, model):
        pc = getattr(model, "param_class", {})
        return [n for n, p in model.named_parameters() if p.ndim == 3 and pc.get(n) == "matrix"]

    def __call__(self, step: int, model, batch, opt=None) -> None:
        import torch

        with torch.no_grad():
            params = dict(model.named_parameters())
            if self._prev is not None:
                for n, W0 in self._prev.items():
                    W1 = params[n].detach().double()
                    for i, c in enumerate(self.configs):
                        eta = self.lr[i] * self._factor(c, step)
                        lam = self.wd[i]
                        w0 = W0[i]
                        u = ((1 - eta * lam) * w0 - W1[i]) / eta
                        nw, nu = float(w0.norm()), float(u.norm())
                        self.rows.append({"step": step + 1, "member": i, "param": n, "n": int(w0.numel()),
                                          "fro": nw, "update_rms": nu / math.sqrt(w0.numel()),
                                          "cos_wu": float((w0 * u).sum()) / (nw * nu) if nw and nu else float("nan"),
                                          "eta": eta, "lam": lam})
                self._prev = None
            if (step + 2) % self.every == 0:  # keep W before the next step
                self._prev = {n: params[n].detach().double().clone() for n in self._names(model)}


def balance_rows(rows: list[dict], configs: list, final_fro: dict | None = None, tail: float = 1 / 3) -> list[dict]:
    """Per (member, matrix): over the last ``tail`` of the recorded steps, the mean ||W|| measured next to
    ``predict_norm`` from the RMS of u (root mean square), the mean cos(W, u) and eta lam, and next to the
    noise-only prediction (cos = 0) and sqrt(eta n / (2 lam)) (update RMS 1)."""
    by = defaultdict(list)
    for r in rows:
        by[(r["member"], r["param"])].append(r)
    out = []
    for (i, p), rs in sorted(by.items()):
        rs = sorted(rs, key=lambda r: r["step"])
        last = rs[-max(1, int(len(rs) * tail)):]
        rms = math.sqrt(np.mean([r["update_rms"] ** 2 for r in last]))
        cos = float(np.nanmean([r["cos_wu"] for r in last]))
        eta, lam, n = last[-1]["eta"], last[-1]["lam"], last[-1]["n"]
        meas = float(np.mean([r["fro"] for r in last]))
        pred = predict_norm(rms, cos, eta, lam, n)
        c = configs[i]
        out.append({"width": c.width, "lr": c.lr, "wd": c.wd, "rule": c.rule, "param": p, "eta": eta, "lam": lam,
                    "S": c.decay_table()["matrix"]["steps_over_tau"], "update_rms": rms, "cos_wu": cos,
                    "measured": meas, "predicted": pred, "error": pred / meas - 1,
                    "predicted_noise": predict_norm(rms, 0.0, eta, lam, n),
                    "predicted_rms1": float(math.sqrt(eta * n / (2 * lam)))})
    return out


def balance_grid(widths=(32, 64), lrs=(4e-3, 1.6e-2), wds=(1.0, 4.0), steps: int = 600, every: int = 5,
                 seed: int = 0, device: str = "cpu") -> list[dict]:
    """A cheap synthetic-core grid (mup, constant lr) trained here with ``BalanceMonitor``; ``balance_rows`` of it.
    Nothing is stored."""
    from ..training.sweep import expand_grid
    from ..training.train import TrainOptions, train_ensemble

    out = []
    for w in widths:
        cs = expand_grid("synthetic", [w], widths[0], ["mup"], list(lrs), list(wds), steps, [seed], data_seed=0)
        mon = BalanceMonitor(cs, every)
        train_ensemble(cs, TrainOptions(device=device, callbacks=[mon]))
        out += balance_rows(mon.rows, cs)
    return out


