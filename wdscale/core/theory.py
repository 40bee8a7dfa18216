"""Closed-form predictions of AdamW's steady state (shared/science.md), used by pages and `wdscale validate`.

Notation: eta = lr, lam = torch ``weight_decay``; the per-step decay factor is a = 1 - eta*lam.
"""
from __future__ import annotations

import numpy as np


def equilibrium_rms(lr, wd):
    """Steady-state RMS of one entry, rho_inf = sqrt(eta / (2 lam)) (Kosson et al. 2023; Wang & Aitchison)."""
    return np.sqrt(np.asarray(lr, float) / (2.0 * np.asarray(wd, float)))


def equilibrium_fro(lr, wd, n_entries):
    """Steady-state Frobenius norm of a matrix with N entries: sqrt(eta N / (2 lam))."""
    return equilibrium_rms(lr, wd) * np.sqrt(n_entries)


def tau(lr, wd):
    """Timescale of the approach to equilibrium, 1/(eta lam) steps (inf without decay)."""
    d = np.asarray(lr, float) * np.asarray(wd, float)
    with np.errstate(divide="ignore"):
        return np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf)


def angular_update(lr, wd, beta1: float = 0.9):
    """Expected angular update per step at equilibrium: sqrt(2 eta lam (1 - beta1) / (1 + beta1))."""
    return np.sqrt(2.0 * np.asarray(lr, float) * np.asarray(wd, float) * (1 - beta1) / (1 + beta1))


def norm_trajectory(t, lr, wd, rho0):
    """Predicted entry RMS over steps: rho_t^2 = rho_inf^2 + (rho0^2 - rho_inf^2) a^(2t).

    The deviation from equilibrium decays like a^(2t) (science.md), a = 1 - eta lam.
    """
    t = np.asarray(t, float)
    rinf2 = equilibrium_rms(lr, wd) ** 2
    a2t = (1.0 - lr * wd) ** (2 * t)
    return np.sqrt(rinf2 + (rho0 ** 2 - rinf2) * a2t)


def implicit_warmup_factor(t, m, lr, wd, rho0_over_rhoinf: float = 1.0):
    """mu-P's lr scaling seen as a warmup (Kosson et al. 2025, secondary): the update-size multiplier
    s_t = sqrt[(1 + (r^2 - 1) a^(2t)) / (1 + (m^2 r^2 - 1) a^(2t))], r = rho0/rho_inf, a = 1 - eta lam.
    With r = 1: 1/sqrt(1 + (m^2 - 1) a^(2t)), starting at 1/m and returning to 1."""
    t = np.asarray(t, float)
    a2t = (1.0 - lr * wd) ** (2 * t)
    r2 = rho0_over_rhoinf ** 2
    return np.sqrt((1 + (r2 - 1) * a2t) / (1 + (m ** 2 * r2 - 1) * a2t))


def exp_warmup_factor(t, m, t_warmup):
    """Kosson et al.'s replacement: s_hat_t = m^min(0, t/T_W - 1), from 1/m to 1 over T_W steps."""
    t = np.asarray(t, float)
    if t_warmup <= 0:
        return np.ones_like(t)
    return np.power(float(m), np.minimum(0.0, t / t_warmup - 1.0))


def implied_wd_exponent(alpha: float) -> float:
    """lam exponent that keeps sigma_top width-invariant under eta ~ 1/d: lam ~ d^(2 alpha - 1)."""
    return 2 * alpha - 1
