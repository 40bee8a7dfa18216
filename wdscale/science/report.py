"""``wdscale report DIR``: the transfer verdict of a stored sweep, as markdown, CSV or JSON.

For each rule (and fixed wd): the optimal lr per width, its drift in octaves per doubling of width, the regret
of training every width at the proxy's optimal lr, PASS/FAIL against the threshold, and the horizon check
(the same optima read at 1/4, 1/2 and all of the run, from the stored evals); the measured law
sigma ~ eta^a lam^-b per matrix class (``wdscale.science.law``; JSON key ``law``); and where the store holds a lam
scan (>= 2 values of q in lam ~ d^q with >= 2 widths each, the named rules included: ``scan_run.stored_scan``)
its crossings, mechanism verdict and scoreboard (JSON key ``scan``).
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .verdict import DEFAULT_THRESHOLD, MIN_TAUS, compare_rules, horizon_check, transfer_verdict


def load_records(dir_: str, model: str | None = None) -> list[dict]:
    """Records of a store; a one-line ValueError when there is no store or it is empty (does not create one)."""
    from ..training.store import RunStore

    root = Path(dir_)
    if not (root / "index.sqlite").is_file():
        raise ValueError(f"no run store in {dir_} (expected {root / 'index.sqlite'}; create one with wdscale sweep "
                         f"--out {dir_})")
    # Summaries only: a run whose files are damaged still has its losses (the verdict needs nothing else).
    recs = RunStore(root, create=False).records(check=False, **({"model": model} if model else {}))
    if not recs:
        raise ValueError(f"no runs in {dir_}" + (f" for model {model}" if model else ""))
    return recs


def _fmt(x, spec=".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    return format(x, spec)


def _drift(x) -> str:
    """Signed octaves per doubling; fit round-off (-1e-15) prints as +0.000, not -0.000."""
    return _fmt(0.0 if x is not None and math.isfinite(x) and abs(x) < 5e-4 else x, "+.3f")


def _label(v: dict, param: str) -> str:
    other = "wd" if param == "lr" else "lr"
    return f"rule {v['rule']}, {other} {v[other]:g} (torch), model {v['model']}, base width {v['base_width']}, " \
           f"{v['steps']} steps"


def _md_table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |"
                                                                            for r in rows[1:]]


def _ci(v: dict) -> str:
    lo, hi = v.get("drift_ci") or (None, None)
    return f"[{_drift(lo)}, {_drift(hi)}]" if lo is not None and math.isfinite(lo) else "-"


def to_markdown(verdicts: list[dict], horizons: list[dict], param: str) -> str:
    v0 = verdicts[0]
    rt = v0["regret_threshold"]
    lines = [f"# Transfer verdict: optimal {param} across widths", ""]
    lines += [f"**{c['sentence']}**" for c in compare_rules(verdicts) if len(c["ranking"]) > 1]
    lines += ["",
              f"PASS when the drift's 95% CI lies within ±{v0['threshold']:g} octaves of the optimal {param} per "
              f"doubling of width" + (f" and max regret <= {rt:g}" if rt is not None else "")
              + "; FAIL when it lies outside; INCONCLUSIVE otherwise, or when an optimum is on the grid edge or a "
              f"run is below {MIN_TAUS:g} tau. Seeds are averaged before any optimum. Regret = loss when trained at "
              f"the proxy's (smallest width's) optimal {param} minus that width's best loss. Per-step decay of a "
              f"matrix is lr*wd (torch AdamW), tau = 1/(lr*wd).", "",
              "| rule | fixed | drift (oct/doubling) | 95% CI | seeds | max regret | verdict |",
              "|---|---|---|---|---|---|---|"]
    other = "wd" if param == "lr" else "lr"
    for v in verdicts:
        lines.append(f"| {v['rule']} | {other}={v[other]:g}, {v['steps']} steps | {_drift(v['drift'])} | {_ci(v)} | "
                     f"{v.get('n_seeds', '-')} | {_fmt(v['max_regret'])} | **{v['verdict']}** |")
    for v in verdicts:
        lines += ["", f"## {_label(v, param)}", ""]
        rows = [["width", f"optimal {param}", "method", "best loss", f"loss at proxy {param}", "regret"]]
        for w in v["widths"]:
            o = v["optima"][w]
            at = None if o["best_loss"] is None or math.isinf(v["regret"][w]) else o["best_loss"] + v["regret"][w]
            rows.append([str(w), _fmt(o["x_opt"]), o["method"], _fmt(o["best_loss"]), _fmt(at),
                         _fmt(v["regret"][w])])
        lines += _md_table(rows)
        lines += ["", f"drift {_drift(v['drift'])} octaves per doubling (threshold {v['threshold']:g}), "
                      f"max regret {_fmt(v['max_regret'])}"
                  + (f" (threshold {rt:g})" if rt is not None else "") + f": **{v['verdict']}**"]
        if v["min_steps_over_tau"] is not None:
            S = ", ".join(f"{w}: {o['steps_over_tau']:.3g}" for w, o in v["optima"].items()
                          if o.get("steps_over_tau") is not None)
            lines.append(f"steady state at the optima: S = sum_t lr_t*wd of the matrix class = {S} "
                         f"(smallest {'>=' if v['min_steps_over_tau'] >= MIN_TAUS else '<'} {MIN_TAUS:g} tau; the "
                         f"grid's shortest run: {_fmt(v.get('min_steps_over_tau_grid'), '.3g')})")
        lines += [f"- note: {n}" for n in v["notes"]]
    if horizons:
        widths = sorted({w for h in horizons for w in h["opt"]})
        lines += ["", f"## Horizon check: optimal {param} at 1/4, 1/2 and all of the run (stored evals)", ""]
        rows = [["rule", other, "fraction", "step"] + [f"opt @ {w}" for w in widths] + ["drift", "verdict"]]
        for h in horizons:
            rows.append([h["rule"], f"{h[other]:g}", f"{h['fraction']:g}", str(h["step"])]
                        + [_fmt(h["opt"].get(w)) for w in widths] + [_drift(h["drift"]), h["verdict"]])
        lines += _md_table(rows)
    return "\n".join(lines)


def to_csv(verdicts: list[dict], param: str) -> str:
    """One row per (rule, fixed param, width)."""
    other = "wd" if param == "lr" else "lr"
    buf = io.StringIO()
    wr = csv.writer(buf)
    wr.writerow(["model", "rule", other, "steps", "base_width", "width", f"opt_{param}", "method", "best_loss",
                 "regret", "drift", "max_regret", "threshold", "regret_threshold", "verdict"])
    for v in verdicts:
        for w in v["widths"]:
            o = v["optima"][w]
            wr.writerow([v["model"], v["rule"], v[other], v["steps"], v["base_width"], w, o["x_opt"], o["method"],
                         o["best_loss"], v["regret"][w], v["drift"], v["max_regret"], v["threshold"],
                         "" if v["regret_threshold"] is None else v["regret_threshold"], v["verdict"]])
    return buf.getvalue().rstrip("\n")


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def build_report(records: list[dict], param: str = "lr", threshold: float = DEFAULT_THRESHOLD,
                 regret_threshold: float | None = None) -> tuple[list[dict], list[dict]]:
    verdicts = transfer_verdict(records, param=param, threshold=threshold, regret_threshold=regret_threshold)
    if not verdicts:
        widths = sorted({r["width"] for r in records})
        xs = sorted({r[param] for r in records})
        raise ValueError(f"too few runs for a verdict: need >= 2 widths and >= 3 values of {param} per rule "
                         f"(same wd, steps and model); found widths {widths} and {param} values "
                         f"{[float(f'{x:.4g}') for x in xs]}")
    return verdicts, horizon_check(records, param=param)


def store_law(dir_: str, records: list[dict]) -> dict | None:
    """The measured law sigma ~ eta^a lam^-b of a store (``law.measure_law``): per matrix class and ``pooled``, a and
    b with CIs, the run count and the S filter; ||W||_F and the bulk from the stored spectra where they read.
    None when the records cannot say (no hidden matrices, or no spectra and no sigma_top)."""
    from .law import measure_law, snapshot_steps
    from ..training.store import RunStore

    try:
        store = RunStore(Path(dir_), create=False)
        spectra = store.spectra
    except Exception:  # noqa: BLE001  (the summaries alone still carry sigma_top)
        spectra = None
    try:
        law = measure_law(records, spectra)
        if not (law.get("pooled") or {}).get("n"):  # nothing at S >= 3: fit every run, and say so (min_S 0)
            law = measure_law(records, spectra, min_S=0.0)
            law["below_steady_state"] = True
    except (KeyError, ValueError):
        return None
    law["snapshots"] = len(snapshot_steps(records, spectra)) if spectra is not None else 0
    return law


def law_markdown(law: dict | None) -> list[str]:
    if not law:
        return []
    from .law import format_law

    return ["", format_law({"this store": law})]




def store_scan(records: list[dict], threshold: float = DEFAULT_THRESHOLD) -> dict | None:
    """The lam scan a store holds (``scan_run.stored_scan``: both crossings, the mechanism, the scoreboard), or None
    where it holds none."""
    from .scan_run import stored_scan

    return stored_scan(records, threshold=threshold)


def scan_markdown(scan: dict | None) -> list[str]:
    if not scan:
        return []
    from .scan_run import headline

    return ["", f"## Which λ transfers: λ ∝ d^q under η ∝ 1/d (q = {', '.join(f'{q:g}' for q in scan['qs'])})",
            ""] + [f"- {line}" for line in headline(scan)]
