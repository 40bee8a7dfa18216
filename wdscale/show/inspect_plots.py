"""Figures of an ``inspect`` report: the σ_top ratio per layer and σ_top vs width per class.

Plot functions take the report (a dict from ``science.inspect.inspect``) and return a plotly figure.
"""
from __future__ import annotations

import numpy as np

from ..core.rules import CLASSES
from ..science.inspect import _pattern, _slope
from .plots import LAYOUT, _empty

CLASS_COLORS = {"matrix": "#1f77b4", "embedding": "#2ca02c", "readout": "#d62728", "vector": "#7f7f7f"}


def ratio_figure(report: dict, title: str | None = None):
    """σ_top target/proxy ratio per layer: one line per sublayer (name with the block index as *), coloured by
    class; the band is ±tol around 1 (matched)."""
    import plotly.graph_objects as go

    ws = report.get("widths", [])
    title = title or (f"σ_top ratio, d={ws[report['target']]} / d={ws[report['base']]}" if report.get("matched")
                      else "σ_top ratio")
    pts = [(n, m) for n, m in report.get("matched", {}).items() if m["ratio"] is not None]
    if not pts:
        return _empty(title, "give two or more checkpoints with matrices of the same names")
    layers = sorted({m["layer"] for _, m in pts if m["layer"] is not None})
    cats = ["other"] + [str(x) for x in layers]
    by = {}
    for n, m in pts:
        key = _pattern(n) if m["layer"] is not None else n
        by.setdefault((m["class"], key), []).append((n, m))
    symbols = ["circle", "square", "diamond", "triangle-up", "x", "cross", "star", "triangle-down", "pentagon"]
    fig = go.Figure()
    tol = report.get("tol", 0.1)
    fig.add_hrect(y0=1 - tol, y1=1 + tol, fillcolor="#2ca02c", opacity=0.08, line_width=0)
    fig.add_hline(y=1, line=dict(color="black", dash="dash", width=1))
    for i, ((cls, key), items) in enumerate(sorted(by.items())):
        xs = [str(m["layer"]) if m["layer"] is not None else "other" for _, m in items]
        fig.add_trace(go.Scatter(
            x=xs, y=[m["ratio"] for _, m in items], name=f"{key} ({cls})", mode="lines+markers" if len(items) > 1
            else "markers", line=dict(color=CLASS_COLORS.get(cls, "#333"), width=1),
            marker=dict(symbol=symbols[i % len(symbols)], size=8, color=CLASS_COLORS.get(cls, "#333")),
            customdata=[[n, m["alpha"] if m["alpha"] is not None else float("nan")] for n, m in items],
            hovertemplate="%{customdata[0]}<br>ratio %{y:.4f}<br>α %{customdata[1]:+.3f}<extra>" + cls + "</extra>"))
    fig.update_layout(title=title, xaxis_title="layer (block index; 'other' = outside the blocks)",
                      yaxis_title="σ_top(target) / σ_top(proxy)", **LAYOUT)
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=cats)
    return fig


def width_figure(report: dict, title: str = "σ_top vs width per class (geometric mean over matrices)"):
    """log-log σ_top vs width per class, with the fitted d^α in the legend (meaningful from 3 widths)."""
    import plotly.graph_objects as go

    ws = report.get("widths", [])
    if len(set(ws)) < 2:
        return _empty(title, "give checkpoints of two or more widths")
    order = sorted(range(len(ws)), key=lambda i: ws[i])
    fig = go.Figure()
    for cls in CLASSES:
        ms = [m for m in report["matched"].values() if m["class"] == cls and not m["tied_to"]
              and all(s > 0 for s in m["top_sv"])]
        if not ms:
            continue
        gm = np.exp(np.mean([np.log(m["top_sv"]) for m in ms], axis=0))
        a = _slope([ws[i] for i in order], [gm[i] for i in order])
        fig.add_trace(go.Scatter(x=[ws[i] for i in order], y=[float(gm[i]) for i in order], mode="lines+markers",
                                 name=f"{cls} (n={len(ms)}): d^{a:+.2f}" if a is not None else cls,
                                 line=dict(color=CLASS_COLORS.get(cls, "#333"))))
    fig.update_layout(title=title, xaxis_title="width d", yaxis_title="σ_top", **LAYOUT)
    fig.update_xaxes(type="log", tickvals=sorted(set(ws)))
    fig.update_yaxes(type="log")
    return fig
