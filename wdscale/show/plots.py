"""Plot functions of the explorer: data in (records, arrays, rows), a plotly figure out.

No Streamlit here, so the same figures serve the app, the export bundle and the tests.  Conventions:
log axes wherever a quantity spans decades (lr, wd, width, singular values), units in axis titles,
``lam`` is always torch's ``weight_decay`` (per-step decay eta*lam).
"""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from ..core.rules import RULE_SHORT

RULE_COLORS = {"sp": "#7f7f7f", "mup": "#d62728", "indep": "#2ca02c", "wd": "#1f77b4", "custom": "#9467bd",
               "fitted": "#ff7f0e", "fitted-sqrt": "#8c564b"}
RULE_NAMES = RULE_SHORT  # one table: wdscale.core.rules
LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), hovermode="closest",
              legend=dict(orientation="v"))


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def width_colors(widths) -> dict:
    """One colour per width, light (small) to dark (large), so 'bigger' reads the same on every plot."""
    ws = sorted(set(widths))
    if len(ws) == 1:
        return {ws[0]: "rgb(31,119,180)"}
    return dict(zip(ws, sample_colorscale("Viridis_r", _ramp(len(ws), 0.25, 1.0))))


def _ramp(n: int, lo: float, hi: float) -> list[float]:
    """n points in [lo, hi] for sample_colorscale (clipped: it rejects 1.0000000000000002)."""
    return [min(1.0, max(0.0, float(v))) for v in (np.linspace(lo, hi, n) if n > 1 else [hi])]


def rule_label(rule: str) -> str:
    return f"{rule} ({RULE_NAMES.get(rule, rule)})"


def _empty(title: str, msg: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=msg, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, **LAYOUT)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _top_sv(rec: dict, params=None):
    from ..science.analysis import matrix_top_sv

    return matrix_top_sv(rec, params)


def _seed_means(rs: list[dict], param: str, metric: str) -> tuple[list[dict], list[dict]]:
    """(ok, diverged) points of one curve, seeds averaged per x (as every optimum is taken); an x where any
    seed diverged is drawn as diverged."""
    by_x = defaultdict(list)
    for r in rs:
        by_x[r[param]].append(r)
    ok, bad = [], []
    for x in sorted(by_x):
        g = by_x[x]
        if any(r.get("diverged") or not _finite(r.get(metric)) for r in g):
            bad.append(next(r for r in g if r.get("diverged") or not _finite(r.get(metric))))
        else:
            ok.append({**g[0], metric: float(np.mean([r[metric] for r in g])), "n_seeds": len(g)})
    return ok, bad


# ---------------------------------------------------------------------------------------------
# The headline plots
# ---------------------------------------------------------------------------------------------
def drift_plot(rules: dict, threshold: float, title: str = "Where the optimal lr goes, per rule") -> go.Figure:
    """Optimum drift (octaves per width doubling) per rule with its 95% CI, and the ±threshold band.

    ``rules``: {rule: {"drift", "drift_ci": [lo, hi], "verdict"}} (``demo.summarize``'s ``rules``)."""
    if not rules:
        return _empty(title, "no verdict yet")
    names = list(rules)
    fig = go.Figure()
    fig.add_hrect(y0=-threshold, y1=threshold, fillcolor="green", opacity=0.08, line_width=0,
                  annotation_text=f"transfers: CI within ±{threshold:g}", annotation_position="top left")
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"))
    for r in names:
        v = rules[r]
        lo, hi = v.get("drift_ci") or [None, None]
        err = dict(type="data", symmetric=False, array=[hi - v["drift"]], arrayminus=[v["drift"] - lo]) \
            if _finite(lo) and _finite(hi) else None
        fig.add_trace(go.Scatter(x=[rule_label(r)], y=[v["drift"]], mode="markers", name=rule_label(r),
                                 marker=dict(size=14, color=RULE_COLORS.get(r, "black")), error_y=err,
                                 hovertemplate=f"{r}: drift %{{y:+.2f}} octaves/doubling<br>verdict "
                                               f"{v.get('verdict', '')}<extra></extra>"))
    fig.update_yaxes(title_text="optimum drift (octaves of η₀ per width doubling)", zeroline=False)
    fig.update_layout(title=title, showlegend=False, **LAYOUT)
    return fig


def proxy_grid_plot(proxy: dict, title: str = "The proxy's own optimum: loss over η₀ × λ₀ at d₀") -> go.Figure:
    """Heat map of the proxy's seed-mean loss over (η₀, λ₀) with its minimum starred and the η·λ ridge visible.

    ``proxy``: ``demo.proxy_optimum``'s dict (lrs, wds, grid[lr][wd], eta0, lam0)."""
    z = np.array([[np.nan if v is None else v for v in row] for row in proxy["grid"]], float).T  # (wds, lrs)
    fig = go.Figure(go.Heatmap(
        x=[f"{x:.3g}" for x in proxy["lrs"]], y=[f"{y:g}" for y in proxy["wds"]], z=z, colorscale="Viridis_r",
        colorbar=dict(title="val loss"),
        hovertemplate="η₀ %{x}<br>λ₀ %{y}<br>loss %{z:.4f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[f"{proxy['eta0']:.3g}"], y=[f"{proxy['lam0']:g}"], mode="markers",
                             marker=dict(symbol="star", size=18, color="white", line=dict(color="black", width=1)),
                             name="optimum", hovertemplate="proxy optimum<extra></extra>"))
    fig.update_xaxes(title_text="proxy lr η₀ (log grid)")
    fig.update_yaxes(title_text="proxy λ₀ (torch weight_decay; log grid)")
    fig.update_layout(title=title, **LAYOUT)
    return fig
def top_sv_vs_width(records: list[dict], fits: list[dict] | None = None, params=None,
                    title: str = "σ_top of the hidden matrices vs width") -> go.Figure:
    """σ_top (geometric mean over hidden matrices) vs width, one line per (rule, η₀, λ₀), log-log.

    ``fits`` (from ``analysis.width_exponents``) add the fitted power law as a dashed line and the exponent
    with its CI to the legend."""
    groups = defaultdict(list)
    for r in records:
        if r.get("diverged"):
            continue
        sv = _top_sv(r, params)
        if sv is not None:
            groups[(r["rule"], r["lr"], r["wd"])].append((r["width"], sv, r["run_id"]))
    if not groups:
        return _empty(title, "no finished runs to show")
    fit_by = {(f["rule"], f["lr"], f["wd"]): f for f in (fits or [])}
    several_lr = len({k[1] for k in groups}) > 1 or len({k[2] for k in groups}) > 1
    fig = go.Figure()
    dashes = ["solid", "dot", "dashdot", "longdash"]
    lr_rank = {lr: i for i, lr in enumerate(sorted({k[1] for k in groups}))}
    for (rule, lr, wd), pts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        pts.sort()
        ws = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        name = rule_label(rule) + (f", η₀={lr:.3g}, λ₀={wd:.3g}" if several_lr else "")
        f = fit_by.get((rule, lr, wd))
        if f and _finite(f.get("exponent")):
            name += f": d^{f['exponent']:.2f}"
        color = RULE_COLORS.get(rule, "#333")
        fig.add_trace(go.Scatter(
            x=ws, y=ys, mode="lines+markers", name=name, legendgroup=f"{rule}{lr}{wd}",
            line=dict(color=color, dash=dashes[lr_rank[lr] % len(dashes)] if several_lr else "solid"),
            customdata=[[lr, wd, p[2]] for p in pts],
            hovertemplate="width %{x}<br>σ_top %{y:.4g}<br>η₀ %{customdata[0]:.3g}, λ₀ %{customdata[1]:.3g}"
                          "<br>run %{customdata[2]}<extra>" + rule + "</extra>"))
        if f and _finite(f.get("exponent")) and _finite(f.get("prefactor")):
            xs = np.geomspace(min(ws), max(ws), 20)
            ci = (f" [{f['ci_low']:.2f}, {f['ci_high']:.2f}]" if _finite(f.get("ci_low")) else "")
            fig.add_trace(go.Scatter(
                x=xs, y=f["prefactor"] * xs ** f["exponent"], mode="lines", showlegend=False,
                legendgroup=f"{rule}{lr}{wd}", line=dict(color=color, dash="dash", width=1),
                hovertemplate=f"fit: σ_top ∝ d^{f['exponent']:.3f}{ci} (95% CI)<extra>{rule}</extra>"))
    fig.update_layout(title=title, xaxis_title="width d", yaxis_title="σ_top (geometric mean over matrices)",
                      **LAYOUT)
    fig.update_xaxes(type="log", tickvals=sorted({r["width"] for r in records}))
    fig.update_yaxes(type="log")
    return fig


def loss_vs_param(records: list[dict], param: str = "lr", optima: dict | None = None, metric: str = "final_loss",
                  title: str | None = None) -> go.Figure:
    """Loss vs proxy η₀ (param='lr') or λ₀ (param='wd'), one panel per rule, one line per width.

    Diverged runs are drawn as ✕ markers along the top of each panel; ``optima`` (``analysis.lr_optima`` with the
    same ``param``) marks each width's interpolated optimum with a star."""
    other = "wd" if param == "lr" else "lr"
    xname = "proxy lr η₀" if param == "lr" else "proxy weight decay λ₀ (torch weight_decay)"
    title = title or ("Loss vs learning rate, per rule" if param == "lr" else "Loss vs weight decay, per rule")
    if not records:
        return _empty(title, "no runs to show")
    rules = sorted({r["rule"] for r in records}, key=lambda r: list(RULE_COLORS).index(r) if r in RULE_COLORS else 9)
    fixed = sorted({r[other] for r in records})
    colors = width_colors([r["width"] for r in records])
    fig = make_subplots(rows=1, cols=len(rules), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[rule_label(r) for r in rules])
    finite = [r[metric] for r in records if not r.get("diverged") and _finite(r.get(metric))]
    y_top = (max(finite) * 1.05) if finite else 1.0
    shown = set()
    dashes = ["solid", "dot", "dash", "dashdot"]
    for col, rule in enumerate(rules, start=1):
        for k, fv in enumerate(fixed):
            by_w = defaultdict(list)
            for r in records:
                if r["rule"] == rule and r[other] == fv:
                    by_w[r["width"]].append(r)
            for w, rs in sorted(by_w.items()):
                ok, bad = _seed_means(rs, param, metric)
                lname = f"d={w}" + (f", {other}₀={fv:.3g}" if len(fixed) > 1 else "")
                leg = lname not in shown
                shown.add(lname)
                fig.add_trace(go.Scatter(
                    x=[r[param] for r in ok], y=[r[metric] for r in ok], mode="lines+markers", name=lname,
                    legendgroup=lname, showlegend=leg, line=dict(color=colors[w], dash=dashes[k % len(dashes)]),
                    customdata=[[r["matrix_lr"], r["matrix_wd"], r["run_id"], r["n_seeds"]] for r in ok],
                    hovertemplate=f"d={w}<br>{param}₀ %{{x:.3g}}<br>loss %{{y:.4g}} (mean of %{{customdata[3]}} seeds)"
                                  f"<br>matrix η %{{customdata[0]:.3g}}, λ %{{customdata[1]:.3g}}"
                                  f"<br>run %{{customdata[2]}}<extra>{rule}</extra>"),
                    row=1, col=col)
                if bad:
                    fig.add_trace(go.Scatter(
                        x=[r[param] for r in bad], y=[y_top] * len(bad), mode="markers", name="diverged",
                        legendgroup="diverged", showlegend="diverged" not in shown,
                        marker=dict(symbol="x", size=10, color=colors[w], line=dict(width=1)),
                        customdata=[[r.get("diverged_step"), r["run_id"]] for r in bad],
                        hovertemplate=f"d={w}<br>{param}₀ %{{x:.3g}}<br>diverged at step %{{customdata[0]}}"
                                      f"<br>run %{{customdata[1]}}<extra>{rule}</extra>"),
                        row=1, col=col)
                    shown.add("diverged")
                opt = ((optima or {}).get((rule, fv)) or {}).get(w)
                if opt and _finite(opt.get("x_opt")) and _finite(opt.get("loss_opt")):
                    fig.add_trace(go.Scatter(
                        x=[opt["x_opt"]], y=[opt["loss_opt"]], mode="markers", name="optimum",
                        legendgroup="optimum", showlegend="optimum" not in shown,
                        marker=dict(symbol="star", size=14, color=colors[w], line=dict(color="black", width=1)),
                        hovertemplate=f"d={w}: optimum {param}₀ %{{x:.3g}} ({opt.get('method')})<br>"
                                      f"loss %{{y:.4g}}<extra>{rule}</extra>"),
                        row=1, col=col)
                    shown.add("optimum")
        fig.update_xaxes(type="log", title_text=xname, row=1, col=col)
    ylabel = "final validation loss" if metric == "final_loss" else metric
    fig.update_yaxes(title_text=ylabel, row=1, col=1)
    fig.update_layout(title=title, **LAYOUT)
    return fig


# ---------------------------------------------------------------------------------------------
# Spectra
# ---------------------------------------------------------------------------------------------
def spectra_plot(curves: list[dict], title: str = "Singular-value spectrum", x_title: str = "rank i",
                 y_title: str = "σ_i", log_x: bool = False, log_y: bool = True) -> go.Figure:
    """Generic spectrum plot; each curve is dict(name, x, y, width=None, color=None, dash=None)."""
    if not curves:
        return _empty(title, "no spectra stored for this selection")
    colors = width_colors([c["width"] for c in curves if c.get("width")] or [1])
    fig = go.Figure()
    for c in curves:
        color = c.get("color") or colors.get(c.get("width"), None)
        fig.add_trace(go.Scatter(x=np.asarray(c["x"]), y=np.asarray(c["y"]), mode="lines", name=c["name"],
                                 line=dict(color=color, dash=c.get("dash", "solid")),
                                 hovertemplate=f"{x_title} %{{x:.4g}}<br>{y_title} %{{y:.4g}}<extra>{c['name']}</extra>"))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, **LAYOUT)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def spectrum_steps(steps, sv: np.ndarray, upto: int | None = None, title: str = "Spectrum settling over training",
                   name: str = "") -> go.Figure:
    """Spectra of one matrix at each snapshot (light = early, dark = late); ``upto`` highlights that snapshot."""
    sv = np.asarray(sv)
    steps = list(np.asarray(steps).tolist())
    if sv.size == 0:
        return _empty(title, "no spectra")
    upto = len(steps) - 1 if upto is None else int(upto)
    cols = sample_colorscale("Blues", _ramp(len(steps), 0.2, 1.0))
    fig = go.Figure()
    rank = np.arange(1, sv.shape[1] + 1)
    for i, s in enumerate(steps[:upto + 1]):
        last = i == upto
        fig.add_trace(go.Scatter(x=rank, y=sv[i], mode="lines", name=f"step {s}", showlegend=last or i == 0,
                                 line=dict(color="black" if last else cols[i], width=3 if last else 1),
                                 opacity=1.0 if last else 0.6,
                                 hovertemplate=f"step {s}<br>rank %{{x}}<br>σ %{{y:.4g}}<extra>{name}</extra>"))
    fig.update_layout(title=title, xaxis_title="rank i", yaxis_title="σ_i", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


def top_sv_over_training(series: list[dict], title: str = "σ_top and ‖W‖_F over training") -> go.Figure:
    """Per run: measured σ_top (solid) and ‖W‖_F (dotted) vs step, predicted equilibrium ‖W‖_F (dashed, flat)
    and a vertical mark at τ = 1/(ηλ).  Each series: dict(name, steps, top_sv, fro, fro_pred, tau, width)."""
    if not series:
        return _empty(title, "no spectra stored for this selection")
    colors = width_colors([s.get("width", 1) for s in series])
    fig = go.Figure()
    xmax = max(max(s["steps"]) for s in series if len(s["steps"]))
    for s in series:
        c = colors[s.get("width", 1)]
        fig.add_trace(go.Scatter(x=s["steps"], y=s["top_sv"], mode="lines+markers", name=f"{s['name']}: σ_top",
                                 line=dict(color=c), legendgroup=s["name"],
                                 hovertemplate="step %{x}<br>σ_top %{y:.4g}<extra>" + s["name"] + "</extra>"))
        if s.get("fro") is not None:
            fig.add_trace(go.Scatter(x=s["steps"], y=s["fro"], mode="lines", name=f"{s['name']}: ‖W‖_F",
                                     line=dict(color=c, dash="dot"), legendgroup=s["name"],
                                     hovertemplate="step %{x}<br>‖W‖_F %{y:.4g}<extra>" + s["name"] + "</extra>"))
        if _finite(s.get("fro_pred")):
            fig.add_trace(go.Scatter(x=[0, xmax], y=[s["fro_pred"]] * 2, mode="lines", legendgroup=s["name"],
                                     name=f"{s['name']}: √(ηN/2λ)", line=dict(color=c, dash="dash", width=1),
                                     hovertemplate="predicted equilibrium ‖W‖_F %{y:.4g}<extra></extra>"))
        if _finite(s.get("tau")) and s["tau"] <= xmax:
            fig.add_vline(x=s["tau"], line=dict(color=c, dash="dashdot", width=1),
                          annotation_text=f"τ={s['tau']:.0f}", annotation_position="top")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="σ_top, ‖W‖_F", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


def norm_pred_vs_measured(rows: list[dict], title: str = "Frobenius norm: measured vs steady-state prediction"):
    """Scatter of measured ‖W‖_F vs √(ηN/(2λ)) per (run, matrix); the diagonal is agreement.

    rows: dict(rule, width, param, measured, predicted, steps_over_tau, run_id)."""
    rows = [r for r in rows if _finite(r.get("measured")) and _finite(r.get("predicted"))]
    if not rows:
        return _empty(title, "no runs with weight decay > 0 to compare")
    fig = go.Figure()
    for rule in sorted({r["rule"] for r in rows}):
        rs = [r for r in rows if r["rule"] == rule]
        fig.add_trace(go.Scatter(
            x=[r["predicted"] for r in rs], y=[r["measured"] for r in rs], mode="markers", name=rule_label(rule),
            marker=dict(color=RULE_COLORS.get(rule), size=[6 + 2 * math.log2(max(1, r["width"] / 32)) for r in rs],
                        opacity=[1.0 if r.get("steps_over_tau", 0) >= 3 else 0.35 for r in rs]),
            customdata=[[r["width"], r["param"], r.get("steps_over_tau", float("nan")), r["run_id"]] for r in rs],
            hovertemplate="d=%{customdata[0]}, %{customdata[1]}<br>predicted %{x:.4g}<br>measured %{y:.4g}"
                          "<br>steps/τ %{customdata[2]:.2g}<br>run %{customdata[3]}<extra>" + rule + "</extra>"))
    lo = min(min(r["predicted"], r["measured"]) for r in rows) * 0.8
    hi = max(max(r["predicted"], r["measured"]) for r in rows) * 1.25
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="measured = predicted",
                             line=dict(color="black", dash="dash", width=1), hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="predicted √(η·N/(2λ))", yaxis_title="measured ‖W‖_F = √Σσ²",
                      **LAYOUT)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


# ---------------------------------------------------------------------------------------------
# Training progress
# ---------------------------------------------------------------------------------------------
def loss_curves(curves: list[dict], title: str = "Training loss per member", log_y: bool = True) -> go.Figure:
    """Live/stored loss curves; each curve dict(name, steps, loss, rule=None, width=None, diverged=False)."""
    if not curves:
        return _empty(title, "waiting for the first steps")
    colors = width_colors([c.get("width") or 1 for c in curves])
    fig = go.Figure()
    for c in curves:
        # SVG, not WebGL: headless or GPU-less browsers render WebGL in software, slowly
        fig.add_trace(go.Scatter(
            x=c["steps"], y=c["loss"], mode="lines", name=c["name"], legendgroup=c.get("rule"),
            line=dict(color=colors.get(c.get("width") or 1), width=1, dash="dot" if c.get("diverged") else "solid"),
            hovertemplate="step %{x}<br>loss %{y:.4g}<extra>" + c["name"] + "</extra>"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="training loss (batch)", **LAYOUT)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


# ---------------------------------------------------------------------------------------------
# Theory and diagnostics
# ---------------------------------------------------------------------------------------------
def norm_theory(t, curves: list[dict], title: str = "Approach to the steady state") -> go.Figure:
    """Predicted per-entry RMS ρ_t vs step for a few (η, λ); each curve dict(name, rho, rho_inf, tau)."""
    fig = go.Figure()
    for i, c in enumerate(curves):
        color = list(RULE_COLORS.values())[i % len(RULE_COLORS)]
        fig.add_trace(go.Scatter(x=t, y=c["rho"], mode="lines", name=c["name"], line=dict(color=color),
                                 hovertemplate="step %{x}<br>RMS %{y:.4g}<extra>" + c["name"] + "</extra>"))
        fig.add_hline(y=c["rho_inf"], line=dict(color=color, dash="dash", width=1))
        if _finite(c.get("tau")) and c["tau"] <= max(t):
            fig.add_vline(x=c["tau"], line=dict(color=color, dash="dot", width=1),
                          annotation_text=f"τ={c['tau']:.0f}")
    fig.update_layout(title=title, xaxis_title="step t", yaxis_title="entry RMS ρ_t", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


def warmup_factors(t, curves: list[dict], title: str = "μP as an implicit warmup (Kosson et al. 2025)") -> go.Figure:
    """Update-size multipliers s_t vs step; curves dict(name, s, dash=None)."""
    fig = go.Figure()
    for i, c in enumerate(curves):
        fig.add_trace(go.Scatter(x=t, y=c["s"], mode="lines", name=c["name"], line=dict(dash=c.get("dash", "solid")),
                                 hovertemplate="step %{x}<br>s_t %{y:.3g}<extra>" + c["name"] + "</extra>"))
    fig.update_layout(title=title, xaxis_title="step t", yaxis_title="update-size multiplier s_t", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


def sublayer_gain_plot(rows: list[dict], title: str = "Sublayer gain RMS(Wx)/RMS(x) vs width") -> go.Figure:
    """Gain vs width per (rule, lr, wd), one panel per matrix class... kept simple: one line per (rule, param)."""
    rows = [r for r in rows if _finite(r.get("gain"))]
    if not rows:
        return _empty(title, "no stored weights to measure")
    groups = defaultdict(list)
    for r in rows:
        groups[(r["rule"], r["param"], r["lr"], r["wd"])].append(r)
    params = sorted({k[1] for k in groups})
    dashes = ["solid", "dot", "dash", "dashdot", "longdash", "longdashdot"]
    several = len({(k[2], k[3]) for k in groups}) > 1
    fig = go.Figure()
    for (rule, param, lr, wd), rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        by_w = defaultdict(list)
        for r in rs:
            by_w[r["width"]].append(r["gain"])
        ws = sorted(by_w)
        ys = [float(np.exp(np.mean(np.log(by_w[w])))) for w in ws]
        name = f"{rule} {param}" + (f" η₀={lr:.3g} λ₀={wd:.3g}" if several else "")
        fig.add_trace(go.Scatter(x=ws, y=ys, mode="lines+markers", name=name,
                                 line=dict(color=RULE_COLORS.get(rule), dash=dashes[params.index(param) % len(dashes)]),
                                 hovertemplate="width %{x}<br>gain %{y:.4g}<extra>" + name + "</extra>"))
    fig.update_layout(title=title, xaxis_title="width d", yaxis_title="sublayer gain RMS(Wx)/RMS(x)", **LAYOUT)
    fig.update_xaxes(type="log", tickvals=sorted({r["width"] for r in rows}))
    fig.update_yaxes(type="log")
    return fig


def coord_check_plot(rows: list[dict], module: str | None = None,
                     title: str = "Coordinate check: activation RMS vs width") -> go.Figure:
    """RMS of a module's output vs width, one panel per rule, one line per step (microsoft/mup coord check)."""
    if module is not None:
        rows = [r for r in rows if r["module"] == module]
    if not rows:
        return _empty(title, "no coordinate-check rows")
    rules = sorted({r["rule"] for r in rows}, key=lambda r: list(RULE_COLORS).index(r) if r in RULE_COLORS else 9)
    steps = sorted({r["step"] for r in rows})
    cols = sample_colorscale("Plasma_r", _ramp(len(steps), 0.15, 0.85))
    fig = make_subplots(rows=1, cols=len(rules), shared_yaxes=True, subplot_titles=[rule_label(r) for r in rules])
    for ci, rule in enumerate(rules, start=1):
        for si, s in enumerate(steps):
            by_w = defaultdict(list)
            for r in rows:
                if r["rule"] == rule and r["step"] == s:
                    by_w[r["width"]].append(r["rms"])
            ws = sorted(by_w)
            fig.add_trace(go.Scatter(x=ws, y=[float(np.mean(by_w[w])) for w in ws], mode="lines+markers",
                                     name=f"step {s}", legendgroup=f"step {s}", showlegend=ci == 1,
                                     line=dict(color=cols[si]),
                                     hovertemplate=f"step {s}<br>width %{{x}}<br>RMS %{{y:.4g}}<extra>{rule}</extra>"),
                          row=1, col=ci)
        fig.update_xaxes(type="log", title_text="width d", row=1, col=ci)
    fig.update_yaxes(type="log", title_text="output RMS" + (f" of {module}" if module else ""), row=1, col=1)
    fig.update_layout(title=title, **LAYOUT)
    return fig


# ---------------------------------------------------------------------------------------------
# The guided tour (wdscale/show/tour.py): one figure per step
# ---------------------------------------------------------------------------------------------
def update_rms_plot(rows: list[dict], lr: float, title: str = "AdamW's update is ~η per entry, whatever the gradient's scale"):
    """Update RMS per entry vs the gradient's RMS, one line per optimizer; rows dict(optimizer, grad_rms, update_rms)."""
    if not rows:
        return _empty(title, "nothing measured")
    fig = go.Figure()
    colors = [RULE_COLORS["wd"], RULE_COLORS["indep"], RULE_COLORS["sp"], RULE_COLORS["mup"]]
    for k, opt in enumerate(dict.fromkeys(r["optimizer"] for r in rows)):
        rs = sorted((r for r in rows if r["optimizer"] == opt), key=lambda r: r["grad_rms"])
        fig.add_trace(go.Scatter(x=[r["grad_rms"] for r in rs], y=[r["update_rms"] for r in rs], mode="lines+markers",
                                 name=f"{opt} (lr {lr:g})", line=dict(color=colors[k % len(colors)]),
                                 hovertemplate="gradient RMS %{x:.3g}<br>update RMS %{y:.3g}<extra>" + opt + "</extra>"))
    fig.add_hline(y=lr, line=dict(color="black", dash="dash", width=1), annotation_text=f"η = {lr:g}",
                  annotation_position="bottom right")
    fig.update_layout(title=title, xaxis_title="gradient RMS per entry (log)", yaxis_title="update RMS per entry (log)",
                      **LAYOUT)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return fig


def norm_settling_plot(series: list[dict], title: str = "‖W‖_F settles at √(ηN/(2λ)) after a few τ = 1/(ηλ)"):
    """Measured ‖W‖_F vs step per (η, λ) with its predicted level (dashed) and τ (dotted);
    series dict(name, steps, fro, fro_pred, tau)."""
    if not series:
        return _empty(title, "nothing measured")
    fig = go.Figure()
    palette = [RULE_COLORS[k] for k in ("wd", "mup", "indep", "custom")]
    for i, s in enumerate(series):
        c = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=s["steps"], y=s["fro"], mode="lines", name=f"{s['name']}: measured",
                                 legendgroup=s["name"], line=dict(color=c),
                                 hovertemplate="step %{x}<br>‖W‖_F %{y:.4g}<extra>" + s["name"] + "</extra>"))
        fig.add_trace(go.Scatter(x=[s["steps"][0], s["steps"][-1]], y=[s["fro_pred"]] * 2, mode="lines",
                                 name=f"{s['name']}: √(ηN/(2λ)) = {s['fro_pred']:.3g}", legendgroup=s["name"],
                                 line=dict(color=c, dash="dash", width=1),
                                 hovertemplate="predicted %{y:.4g}<extra></extra>"))
        fig.add_vline(x=s["tau"], line=dict(color=c, dash="dot", width=1), annotation_text=f"τ={s['tau']:.0f}")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="‖W‖_F (log)", **LAYOUT)
    fig.update_yaxes(type="log")
    return fig


def collapse_plot(raw: list[dict], rescaled: list[dict], before: float, after: float,
                  title: str = "Spectra before and after dividing by √(η/λ)"):
    """Two panels: σ_i vs rank/d, and σ_i/√(η/λ) vs rank/d; each curve dict(name, x, y); the collapse numbers
    (mean std of log σ across curves) in the panel titles."""
    if not raw:
        return _empty(title, "no spectra stored for this selection")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=[f"before: σ_i (spread {before:.2f})", f"after: σ_i / √(η/λ) (spread {after:.2f})"])
    cols = sample_colorscale("Viridis_r", _ramp(len(raw), 0.25, 1.0))
    for col, curves in ((1, raw), (2, rescaled)):
        for i, c in enumerate(curves):
            fig.add_trace(go.Scatter(x=np.asarray(c["x"]), y=np.asarray(c["y"]), mode="lines", name=c["name"],
                                     legendgroup=c["name"], showlegend=col == 1, line=dict(color=cols[i % len(cols)]),
                                     hovertemplate="rank/d %{x:.3g}<br>%{y:.4g}<extra>" + c["name"] + "</extra>"),
                          row=1, col=col)
        fig.update_xaxes(type="log", title_text="rank / d (log)", row=1, col=col)
        fig.update_yaxes(type="log", row=1, col=col)
    fig.update_yaxes(title_text="σ_i (log)", row=1, col=1)
    fig.update_yaxes(title_text="σ_i / √(η/λ) (log)", row=1, col=2)
    fig.update_layout(title=title, **LAYOUT)
    return fig


def implied_rule_plot(alpha: float | None, ci=None, title: str = "The rule that follows: λ ∝ d^(2α−1) under η ∝ 1/d"):
    """The line b = 2α − 1, the named rules on it, and this setting's measured α (with its CI)."""
    a = np.linspace(0.4, 1.1, 2)
    fig = go.Figure(go.Scatter(x=a, y=2 * a - 1, mode="lines", name="b = 2α − 1", line=dict(color="gray"),
                               hoverinfo="skip"))
    for rule, al in (("mup", 0.5), ("wd", 0.75), ("indep", 1.0)):
        fig.add_trace(go.Scatter(x=[al], y=[2 * al - 1], mode="markers+text", name=rule_label(rule),
                                 text=[rule], textposition="top left", marker=dict(size=12, color=RULE_COLORS[rule]),
                                 hovertemplate=f"{rule}: flat when α = {al}<extra></extra>"))
    if _finite(alpha):
        err = None
        if ci is not None and all(_finite(v) for v in ci):
            err = dict(type="data", symmetric=False, array=[ci[1] - alpha], arrayminus=[alpha - ci[0]])
        fig.add_trace(go.Scatter(x=[alpha], y=[2 * alpha - 1], mode="markers", name=f"measured α = {alpha:.2f}",
                                 marker=dict(symbol="star", size=18, color="black"), error_x=err,
                                 hovertemplate="measured α %{x:.3f}<br>λ ∝ d^%{y:.2f}<extra></extra>"))
    fig.update_layout(title=title, xaxis_title="α in σ_top ∝ √(η/λ)·d^α", yaxis_title="λ exponent b (λ ∝ d^b)",
                      **LAYOUT)
    return fig


def regime_drifts_plot(studies: dict, threshold: float = 0.25,
                       title: str = "Optimum drift per rule, in each reference study"):
    """Drift (octaves per width doubling) with its 95% CI per rule, one marker series per study.

    ``studies``: {label: {rule: {"drift", "drift_ci"}}} (``gallery.summary``'s ``rules``)."""
    studies = {k: v for k, v in studies.items() if v}
    if not studies:
        return _empty(title, "no reference study with a transfer verdict")
    fig = go.Figure()
    fig.add_hrect(y0=-threshold, y1=threshold, fillcolor="green", opacity=0.08, line_width=0,
                  annotation_text=f"transfers: CI within ±{threshold:g}", annotation_position="top left")
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"))
    symbols = ["circle", "diamond", "square", "triangle-up", "x"]
    for i, (label, rules) in enumerate(studies.items()):
        names = [r for r in RULE_COLORS if r in rules] + [r for r in rules if r not in RULE_COLORS]
        ys = [rules[r]["drift"] for r in names]
        lo = [(rules[r].get("drift_ci") or [None, None])[0] for r in names]
        hi = [(rules[r].get("drift_ci") or [None, None])[1] for r in names]
        ok = all(_finite(v) for v in lo + hi)
        fig.add_trace(go.Scatter(
            x=[rule_label(r) for r in names], y=ys, mode="markers", name=label,
            marker=dict(size=13, symbol=symbols[i % len(symbols)], color=[RULE_COLORS.get(r, "black") for r in names]),
            error_y=dict(type="data", symmetric=False, array=[h - y for h, y in zip(hi, ys)],
                         arrayminus=[y - l for l, y in zip(lo, ys)]) if ok else None,
            hovertemplate="%{x}: drift %{y:+.2f} octaves/doubling<extra>" + label + "</extra>"))
    fig.update_yaxes(title_text="optimum drift (octaves of η₀ per width doubling)", zeroline=False)
    fig.update_layout(title=title, scattermode="group", **LAYOUT)
    return fig


# ---------------------------------------------------------------------------------------------
# Regimes: the same model, two data regimes, side by side (wdscale.science.regimes.study_regime dicts)
# ---------------------------------------------------------------------------------------------
REGIME_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]


def regime_alpha_plot(regimes: list[dict], title: str = "α per matrix class, read through the √(η/λ) law: σ_top ∝ √(η/λ)·d^α") -> go.Figure:
    """α (the width exponent of σ_top at fixed η/λ) per matrix class with its 95% CI, one colour per regime; the
    paper's α = 0.75 dotted.  The right axis reads the same number as the λ exponent 2α − 1 that holds σ_top flat
    under μP's η ∝ 1/d (0.5 = the paper's λ ∝ √d, 1 = ηλ fixed)."""
    if not regimes or not any(r.get("alpha") for r in regimes):
        return _empty(title, "no regime study yet")
    fig = go.Figure()
    for k, reg in enumerate(regimes):
        a = reg.get("alpha") or {}
        cls = list(a)
        lo = [a[c]["alpha"] - a[c]["ci"][0] if _finite(a[c]["ci"][0]) else 0 for c in cls]
        hi = [a[c]["ci"][1] - a[c]["alpha"] if _finite(a[c]["ci"][1]) else 0 for c in cls]
        fig.add_trace(go.Scatter(
            x=cls, y=[a[c]["alpha"] for c in cls], mode="markers", name=reg.get("regime") or reg.get("name"),
            marker=dict(size=12, color=REGIME_COLORS[k % len(REGIME_COLORS)]), offsetgroup=str(k),
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
            customdata=[[2 * a[c]["alpha"] - 1] for c in cls],
            hovertemplate="%{x}: α %{y:.2f} → λ ∝ d^%{customdata[0]:.2f}<extra>%{fullData.name}</extra>"))
    fig.add_hline(y=0.75, line=dict(color="gray", dash="dot"), annotation_text="paper α = 0.75 (λ ∝ √d)",
                  annotation_position="top left")
    fig.add_hline(y=1.0, line=dict(color="#2ca02c", dash="dot"), annotation_text="α = 1 (λ ∝ d, ηλ fixed)",
                  annotation_position="bottom left")
    fig.update_yaxes(title_text="α (σ_top ∝ √(η/λ)·d^α); λ exponent = 2α − 1")
    fig.update_xaxes(title_text="matrix class (layers pooled)")
    fig.update_layout(title=title, scattermode="group", **{**LAYOUT, "legend": dict(orientation="h", y=-0.25)})
    return fig


def regime_drift_plot(regimes: list[dict], threshold: float = 0.25,
                      title: str = "Where the optimal η₀ goes, per rule and regime") -> go.Figure:
    """Drift of the optimal η₀ (octaves per width doubling) per rule with its 95% CI, one colour per regime, and
    the ±threshold band where a rule transfers."""
    if not regimes or not any(r.get("rules") for r in regimes):
        return _empty(title, "no regime study yet")
    fig = go.Figure()
    fig.add_hrect(y0=-threshold, y1=threshold, fillcolor="green", opacity=0.08, line_width=0,
                  annotation_text=f"transfers: CI within ±{threshold:g}", annotation_position="top left")
    fig.add_hline(y=0, line=dict(color="gray", dash="dot"))
    order = [r for r in ("mup", "wd", "indep", "fitted", "custom", "sp") if any(r in g["rules"] for g in regimes)]
    for k, reg in enumerate(regimes):
        rs = [r for r in order if r in reg["rules"]]
        v = reg["rules"]
        lo = [v[r]["drift"] - v[r]["drift_ci"][0] if _finite(v[r]["drift_ci"][0]) else 0 for r in rs]
        hi = [v[r]["drift_ci"][1] - v[r]["drift"] if _finite(v[r]["drift_ci"][1]) else 0 for r in rs]
        fig.add_trace(go.Scatter(
            x=[rule_label(r) for r in rs], y=[v[r]["drift"] for r in rs], mode="markers",
            name=reg.get("regime") or reg.get("name"), offsetgroup=str(k),
            marker=dict(size=12, color=REGIME_COLORS[k % len(REGIME_COLORS)]),
            error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo),
            customdata=[[v[r]["verdict"]] for r in rs],
            hovertemplate="%{x}: drift %{y:+.2f} oct/doubling (%{customdata[0]})<extra>%{fullData.name}</extra>"))
    fig.update_yaxes(title_text="optimum drift (octaves of η₀ per width doubling)", zeroline=False)
    fig.update_layout(title=title, scattermode="group", **{**LAYOUT, "legend": dict(orientation="h", y=-0.25)})
    return fig


# ---------------------------------------------------------------------------------------------
# The lam scan: which lam ~ d^q transfers (wdscale.science.scan.scan_summary dicts)
# ---------------------------------------------------------------------------------------------
SCAN_LINES = (("drift", "#d62728", "drift of the optimal η₀ (octaves per width doubling)", "q_drift", "q_drift*"),
              ("sigma_exponent", "#1f77b4", "σ_top's width exponent at η₀ (σ_top ∝ d^e)", "q_sigma", "q_σ*"))


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def scan_figure(summary: dict, title: str = "Which λ transfers: the drift and σ_top's exponent against q"):
    """The scan: the drift of the optimal η₀ and σ_top's width exponent against q (λ = λ₀·(d/d₀)^q under η ∝ 1/d),
    each with its 95% CI band; the zero line and the ±threshold band where a drift transfers; both crossings,
    q_drift* and q_σ*, marked on the zero line with their CIs (an open CI bound drawn to the grid's edge); the named
    rules' q (mup 0, wd ½, indep 1) as dotted lines.  A crossing outside the grid is named in the legend as such."""
    rows = [r for r in (summary or {}).get("rows") or [] if r.get("q") is not None]
    if len(rows) < 2:
        return _empty(title, "no scan: fewer than two q values with two widths each")
    qs = [r["q"] for r in rows]
    lo_q, hi_q = min(qs), max(qs)
    fig = go.Figure()
    t = summary.get("threshold") or 0.25
    fig.add_hrect(y0=-t, y1=t, fillcolor="green", opacity=0.07, line_width=0,
                  annotation_text=f"drift within ±{t:g}: η₀ transfers", annotation_position="top left")
    fig.add_hline(y=0, line=dict(color="gray", width=1))
    for rule, q in (("mup", 0.0), ("wd", 0.5), ("indep", 1.0)):
        if lo_q <= q <= hi_q:
            fig.add_vline(x=q, line=dict(color=RULE_COLORS[rule], dash="dot", width=1), annotation_text=rule,
                          annotation_position="bottom right")
    for key, color, name, cross, label in SCAN_LINES:
        pts = [(r["q"], r[key], (r.get(key + "_ci") or [None, None])) for r in rows if _finite(r.get(key))]
        band = [(q, ci[0], ci[1]) for q, _v, ci in pts if _finite(ci[0]) and _finite(ci[1])]
        if len(band) >= 2:
            xs = [b[0] for b in band]
            fig.add_trace(go.Scatter(x=xs + xs[::-1], y=[b[2] for b in band] + [b[1] for b in band][::-1],
                                     fill="toself", mode="lines", fillcolor=_rgba(color, 0.15), line=dict(width=0),
                                     hoverinfo="skip", name=f"95% CI ({label.split('*')[0].replace('q_', '')})",
                                     legendgroup=key))
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name,
                                 line=dict(color=color, width=2), marker=dict(size=8), legendgroup=key,
                                 hovertemplate="q = %{x:g}: %{y:+.2f}<extra>" + name + "</extra>"))
        q = summary.get(cross)
        if q is None:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker=dict(color=color, symbol="x"),
                                     name=f"{label}: none in [{lo_q:g}, {hi_q:g}] (not extrapolated)"))
            continue
        ci = summary.get(cross + "_ci") or [None, None]
        lo = ci[0] if _finite(ci[0]) else lo_q
        hi = ci[1] if _finite(ci[1]) else hi_q
        ci_s = "" if not summary.get(cross + "_ci") else " [" + ", ".join(
            f"{v:.2f}" if _finite(v) else ("< " if i == 0 else "> ") + f"{e:g}"
            for i, (v, e) in enumerate(zip(ci, (lo_q, hi_q)))) + "]"
        fig.add_trace(go.Scatter(
            x=[q], y=[0], mode="markers", name=f"{label} = {q:.2f}{ci_s}",
            marker=dict(size=16, symbol="diamond", color=color, line=dict(color="black", width=1)),
            error_x=dict(type="data", symmetric=False, array=[max(0.0, hi - q)], arrayminus=[max(0.0, q - lo)],
                         color=color, thickness=3, width=8) if summary.get(cross + "_ci") else None,
            hovertemplate=f"{label} = %{{x:.2f}}{ci_s}<extra></extra>"))
    fig.update_xaxes(title_text="q, the λ exponent: λ = λ₀·(d/d₀)^q under μP's η ∝ 1/d",
                     range=[lo_q - 0.05 * (hi_q - lo_q), hi_q + 0.05 * (hi_q - lo_q)])
    fig.update_yaxes(title_text="per width doubling: drift (octaves of η₀) / exponent e", zeroline=False)
    fig.update_layout(title=title, **{**LAYOUT, "legend": dict(orientation="h", y=-0.22)}, height=520)
    return fig
