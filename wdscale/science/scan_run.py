"""The lam-exponent scan as an engine (``run_scan``), and the scan a store already holds (``stored_scan``).

``run_scan`` is ``wdscale scan``'s whole pipeline, every phase through ``training.sweep.run_sweep`` (cached in the
store like every sweep, so a rerun trains nothing):

1. the proxy's eta x lam grid at d0 (``study.proxy_configs``) -> (eta0, lam0) = its seed-averaged minimum;
2. the predictors of q_drift*, computed *before* the scan from the cheapest runs only: that grid and one ``mup``
   ensemble at 2 d0 at lam0 (``scan.predictors``);
3. the scan, lam = lam0 (d/d0)^q under eta ~ 1/d on the q grid (``scan.scan_configs``: q = 0, 1/2, 1 are the named
   rules' own runs, and every q's d0 run is the mup run of the same lr and seed, so neither trains twice);
4. ``scan.scan_summary``: both crossings, the mechanism verdict, the scoreboard, the recipe at a target width.

``stored_scan`` finds a scan among a store's records (>= 2 q values with >= 2 widths each, at one lam0 and one
design; the named rules of any transfer study are three points of it) and summarises it: the report's ``scan``,
the Scan page, Home's column and the tour read it.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import defaultdict
from pathlib import Path

from .scan import QS, format_scan, q_of, scan_configs, scan_summary
from .verdict import DEFAULT_THRESHOLD

SCAN_FIELDS = ("run_id", "rule", "q", "a", "b", "width", "base_width", "lr", "wd", "seed", "steps", "final_loss",
               "diverged", "matrix_lr", "matrix_wd", "top_sv", "param_class", "cached", "twin_of")


def check_qs(qs) -> tuple[float, ...]:
    """The q grid, sorted and without repeats; ValueError (one line, exit code 2) for a negative, non-finite or
    too short one."""
    out = []
    for q in qs:
        q = float(q)
        if not math.isfinite(q) or q < 0:
            raise ValueError(f"q must be a finite number >= 0 (lam ~ d^q), got {q:g}")
        if not any(math.isclose(q, x, abs_tol=1e-9) for x in out):
            out.append(q)
    if len(out) < 2:
        raise ValueError(f"the scan needs at least two q values, got {', '.join(f'{q:g}' for q in out) or 'none'}")
    return tuple(sorted(out))


def check_target_width(d) -> int | None:
    if d is None:
        return None
    if int(d) != d or d <= 0:
        raise ValueError(f"--target-width must be a positive integer width, got {d}")
    return int(d)


def run_scan(store, spec: dict, qs=QS, seeds=None, opts=None, on_event=None, cancel=None,
             target_width: int | None = None, steps: int | None = None, on_record=None, n_boot: int = 400) -> dict:
    """The whole scan into ``store`` (see the module docstring); {runs, scan, proxy, predictors, notes, seconds,
    n_trained (members trained by this call, every phase; twins are one member), n_proxy, n_twins (scan runs at
    d0 other than mup's: every q is the very same member there, trained once), partial}.  ``runs``: the scan's
    records (every q, width, lr and seed; the 2 d0 ensemble is q = 0's); ``scan``: ``scan_summary``'s dict;
    ``proxy``: ``study.proxy_optimum``'s.  ``seeds`` replaces the spec's seeds (as ``wdscale demo --seeds``);
    ``steps`` the spec's steps (else ``WDSCALE_DEMO_STEPS`` or the spec's).  Cancelled between phases: what
    finished is stored, ``partial`` is True and ``scan`` None."""
    from .scan import predictors
    from .study import proxy_configs, proxy_optimum, transfer_configs  # the trainer (torch) comes with study
    from ..training.sweep import run_sweep

    t0 = time.perf_counter()
    qs = check_qs(qs)
    target_width = check_target_width(target_width)
    d = dict(spec) if seeds is None else {**spec, "seeds": tuple(seeds)}
    trained = [0]  # members trained by this call: an ensemble trains a twin (the same member) once

    def emit(e):
        if e.get("type") == "start":
            trained[0] += int(e.get("n_members") or 0)
        if on_event is not None:
            on_event(e)

    kw = dict(opts=opts, on_event=emit, cancel=cancel, on_record=on_record)

    def sweep(configs):
        return run_sweep(configs, store, **kw)

    def stopped():
        return cancel is not None and cancel.is_set()

    def partial(**extra):
        return {"runs": [], "scan": None, "proxy": None, "predictors": None, "notes": [], "partial": True,
                "seconds": time.perf_counter() - t0, "n_trained": trained[0], **extra}

    proxy = sweep(proxy_configs(steps, d))
    if stopped():
        return partial()
    best = proxy_optimum(proxy)
    eta0, lam0, d0 = best["eta0"], best["lam0"], d["base_width"]
    notes = []
    if 2 * d0 not in d["widths"]:
        notes.append(f"the predictors' 2·d0 ensemble (width {2 * d0}) is not a width of the scan: trained apart")
    # the predictors from the cheapest runs only, before the scan: the proxy grid and mup at 2 d0, lam0
    ens = sweep(transfer_configs(eta0, lam0, steps, d, widths=[2 * d0], rules=["mup"]))
    if stopped():
        return partial(proxy=best)
    preds = predictors(proxy, ens, eta0, lam0)
    recs = sweep(scan_configs(d, eta0, lam0, qs, None, steps, notes))
    if stopped():
        return partial(proxy=best, predictors=preds, notes=notes)
    summary = scan_summary(recs, eta0=eta0, preds=preds, lam0=lam0, target_width=target_width, n_boot=n_boot)
    summary["notes"] = notes
    summary["proxy_runs"] = len(proxy)
    return {"runs": recs, "scan": summary, "proxy": best, "predictors": preds, "notes": notes, "partial": False,
            "seconds": time.perf_counter() - t0, "n_trained": trained[0], "n_proxy": len(proxy),
            "n_twins": sum(1 for r in recs if r["width"] == r["base_width"] and r["rule"] != "mup")}


def run_rows(records: list[dict]) -> list[dict]:
    """The scan's records as ``wdscale scan --json``'s ``runs``: rule, ``q`` and ``b`` = q (the lam exponent, also
    for the named twins), width, lr (eta0, the rule's knob), seed, final loss, top_sv and param_class."""
    out = []
    for r in records:
        row = {k: r.get(k) for k in SCAN_FIELDS}
        row["q"] = row["b"] = q_of(r)
        out.append(row)
    return out


# -- a scan the store already holds ------------------------------------------------------------------------------
_SKIP = {"rule", "a", "b", "width", "lr", "seed", "data_seed", "wd"}


@functools.lru_cache(maxsize=1)
def _design_keys() -> tuple:
    from ..models.config import RunConfig

    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in _SKIP) + ("model_version",)


def _design(r: dict) -> tuple:
    """Everything of a run's config but the rule (q), width, lr, seed and lam: one study's design."""
    return tuple((k, r.get(k)) for k in _design_keys())


def _widths_per_q(recs: list[dict]) -> dict:
    out = defaultdict(set)
    for r in recs:
        out[round(q_of(r), 9)].add(r["width"])
    return out


def scan_records(records: list[dict]) -> tuple[list[dict], dict] | None:
    """The scan among a store's records, or None: finished runs with a q (``scan.q_of``) of one design and one lam0,
    the group with the most (q, width) pairs, keeping the q values with >= 2 widths, when there are >= 2 of them.
    The base width keeps only the lrs the wider widths were trained at (a proxy grid's other lrs at d0 are not
    points of the scan's curves).  Returns (records, {design, lam0, proxy}): ``proxy`` the proxy grid's records at
    d0 (mup at several lam; the lrs trained at several lam and the seeds trained at every lam, so neither the
    transfer lrs at d0 nor more transfer seeds move it, as ``study.proxy_seeds``) where the store holds one, for
    the predictors and eta0."""
    done = [r for r in records if r.get("status", "done") == "done" and q_of(r) is not None]
    groups = defaultdict(list)
    for r in done:
        groups[(_design(r), r["wd"])].append(r)
    best, score = None, (0, 0)
    for key, recs in groups.items():
        per_q = _widths_per_q(recs)
        good = {q for q, ws in per_q.items() if len(ws) >= 2}
        s = (sum(len(per_q[q]) for q in good), len(recs))
        if len(good) >= 2 and s > score:
            best, score = key, s
    if best is None:
        return None
    design, lam0 = best
    per_q = _widths_per_q(groups[best])
    recs = [r for r in groups[best] if len(per_q[round(q_of(r), 9)]) >= 2]
    base = min(r["base_width"] for r in recs)
    wide_lrs = {r["lr"] for r in recs if r["width"] != base}
    recs = [r for r in recs if r["width"] != base or any(math.isclose(r["lr"], x, rel_tol=1e-9) for x in wide_lrs)]
    proxy = [r for r in done if _design(r) == design and r["width"] == base and r["rule"] == "mup"]
    by_wd = defaultdict(set)
    for r in proxy:
        by_wd[r["wd"]].add(r["seed"])
    seeds = set.intersection(*by_wd.values()) if by_wd else set()  # the proxy's seeds: those at every lam
    wds_at = defaultdict(set)
    for r in proxy:
        wds_at[r["lr"]].add(r["wd"])
    # the grid's lrs (trained at several lam): the transfer lrs at d0 (at lam0 only) are not the proxy's
    proxy = [r for r in proxy if r["seed"] in seeds and len(wds_at[r["lr"]]) >= 2]
    if len(by_wd) < 2 or len({r["lr"] for r in proxy}) < 3:
        proxy = []
    return recs, {"design": dict(design), "lam0": lam0, "proxy": proxy}


def stored_scan(records: list[dict], eta0: float | None = None, target_width: int | None = None,
                n_boot: int = 200, threshold: float = DEFAULT_THRESHOLD) -> dict | None:
    """``scan_summary`` of the scan a store holds (``scan_records``), or None where it holds none.  eta0: given (a
    reference study's manifest), else the stored proxy grid's optimum where it is one of the scan's lrs, else the
    grid lr nearest the base width's optimum (``scan.infer_eta0``).  The predictors are computed where the store
    holds the proxy grid; else only the two constant ones are scored."""
    found = scan_records(records)
    if found is None:
        return None
    recs, info = found
    proxy = info["proxy"]
    if eta0 is None and proxy:
        from .study import proxy_optimum

        try:
            x = proxy_optimum(proxy)["eta0"]
        except (RuntimeError, ValueError):
            x = None
        eta0 = x if x and any(math.isclose(r["lr"], x, rel_tol=1e-9) for r in recs) else None
    out = scan_summary(recs, eta0=eta0, threshold=threshold, proxy_records=proxy or None, lam0=info["lam0"],
                       target_width=target_width, n_boot=n_boot)
    out["n_runs"] = len(recs)
    out["model"] = info["design"].get("model")
    out["steps"] = info["design"].get("steps")
    return out


def reference_scan(name: str, root=None, n_boot: int = 200) -> dict | None:
    """``stored_scan`` of one reference study (its manifest's eta0), None where it holds no scan; raises as
    ``gallery.open_reference`` does.  Cached per process (Home, the Scan page and the tour read the same numbers),
    keyed on the manifest's mtime so a rebuilt study is read again."""
    import copy

    from . import gallery

    d = Path(root) if root else gallery.gallery_dir()
    try:
        stamp = (d / name / "manifest.json").stat().st_mtime_ns
    except OSError:
        stamp = None
    return copy.deepcopy(_reference_scan(name, str(d), n_boot, stamp))


@functools.lru_cache(maxsize=16)
def _reference_scan(name: str, root: str, n_boot: int, stamp) -> dict | None:
    from . import gallery

    ref = gallery.open_reference(name, root)
    return stored_scan(ref.records(), eta0=(ref.manifest or {}).get("eta0"), n_boot=n_boot)


def reference_scans(names=None, root=None, n_boot: int = 200) -> dict:
    """{name: stored_scan} of the reference studies present (default ``gallery.REFERENCE_REGIMES``), read-only;
    a study with no scan, or missing, is left out."""
    from . import gallery

    out = {}
    for n in names or gallery.REFERENCE_REGIMES:
        try:
            s = reference_scan(n, root, n_boot)
        except Exception:  # noqa: BLE001  (not built in this checkout, or unreadable: a row without a scan)
            continue
        if s is not None:
            out[n] = s
    return out


# -- words ---------------------------------------------------------------------------------------------------
def _bound(x, edge: float, side: str) -> str:
    return f"{x:.2f}" if x is not None else ("< " if side == "lower" else "> ") + f"{edge:g}"


def crossing_text(s: dict, key: str = "q_drift") -> str:
    """A crossing with its CI, "1.30 [1.10, > 1.5]" (an open CI bound: past that grid edge), or where it does not
    cross inside the grid "none in [0, 1.5] (drift +0.27 at q = 1.5)"."""
    q, ci = s.get(key), s.get(key + "_ci")
    lo_q, hi_q = (min(s["qs"]), max(s["qs"])) if s.get("qs") else (math.nan, math.nan)
    if q is None:
        line = "drift" if key == "q_drift" else "σ_top exponent"
        rows = [r for r in s.get("rows", []) if r.get("drift" if key == "q_drift" else "sigma_exponent") is not None]
        edge = None
        if rows:
            v = [(r["q"], r["drift" if key == "q_drift" else "sigma_exponent"]) for r in rows]
            edge = min((v[0], v[-1]), key=lambda t: abs(t[1]))
        return f"none in [{lo_q:g}, {hi_q:g}]" + (f" ({line} {edge[1]:+.2f} at q = {edge[0]:g})" if edge else "")
    if not ci:
        return f"{q:.2f} (no CI: one seed)"
    return f"{q:.2f} [{_bound(ci[0], lo_q, 'lower')}, {_bound(ci[1], hi_q, 'upper')}]"


def headline(s: dict) -> list[str]:
    """The scan in plain sentences: where the drift and sigma_top cross zero, the mechanism, the named rules."""
    def one(key, what):
        return f"{what}: " + (crossing_text(s, key) if s[key] is not None
                              else f"none in the grid: {s[key + '_reason']}")
    out = [one("q_drift", "q_drift*, the λ exponent under which η0 transfers (the drift is zero)") + ".",
           one("q_sigma", "q_σ*, the λ exponent that keeps σ_top width-invariant") + "."]
    m = s.get("mechanism") or {}
    word = {True: "holds", False: "fails", None: "is not tested"}[m.get("holds")]
    out.append(f"The mechanism (σ_top matching predicts the λ that transfers) {word}: {m.get('reason') or ''}"
               + (f"; at q_σ* the drift is {m['drift_at_q_sigma']:+.2f}" if m.get("drift_at_q_sigma") is not None
                  else "") + ".")
    named = [r for r in s.get("rows", []) if r["rule"] != "custom"]
    if named and not s.get("named_transfer"):
        least = min(named, key=lambda r: abs(r["drift"]) if r["drift"] is not None else math.inf)
        out.append(f"No named rule transfers here (no drift CI of {', '.join(r['rule'] for r in named)} inside "
                   f"±{s['threshold']:g}); the least drift is {least['rule']}'s ({least['drift']:+.2f}).")
    return out


def format_run(res: dict) -> str:
    """``run_scan``'s result as the CLI's text: the proxy, ``format_scan`` (with the recipe), cost and notes."""
    p = res["proxy"]
    s = res["scan"]
    lines = [f"proxy d0 = {s['base_width']}: eta0 = {p['eta0']:.3g}, lam0 = {p['lam0']:g} (loss {p['loss']:.4f}; "
             f"{s.get('proxy_runs', 0)} runs)", format_scan(s)]
    lines += [f"note: {n}" for n in res.get("notes") or []]
    lines.append(f"{len(res['runs'])} scan runs and {res['n_proxy']} proxy runs: {res['n_trained']} members trained "
                 f"now, the rest read from the store; {res['n_twins']} of the scan's runs at d0 are mup's very members "
                 f"(twins, trained once); {res['seconds']:.1f} s")
    return "\n".join(lines)
