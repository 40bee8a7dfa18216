"""Verdicts: is a run long enough to be steady-state evidence, does the LR transfer.

A run shorter than ``MIN_TAUS`` timescales tau = 1/(lr*wd) for a matrix class has not reached the AdamW
steady state, so its spectra and transfer curves say little about the weight-decay rule.
"""
from __future__ import annotations

import math

MIN_TAUS = 3.0


def horizon_warnings(res, steps: int | None, min_taus: float = MIN_TAUS) -> list[str]:
    """One message per matrix class whose planned steps are < min_taus * tau (empty when steps is None)."""
    if steps is None:
        return []
    out = []
    for cls, row in res.table(steps).items():
        if cls != "matrix":
            continue
        if row["steps_over_tau"] < min_taus:
            tau = "inf (no decay)" if math.isinf(row["tau"]) else f"{row['tau']:.0f}"
            out.append(f"{cls}: {steps} steps = {row['steps_over_tau']:.2g} tau (tau = 1/(lr*wd) = {tau} steps) "
                       f"< {min_taus:g} tau: not yet steady state, spectra and transfer are not steady-state evidence")
    return out
