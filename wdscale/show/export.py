"""Export: figures as PNG/SVG/HTML, their data as CSV, and a zip bundle that reproduces a study.

Static images go through kaleido, which drives a headless Chrome (Debian's /usr/bin/chromium here).  A cold
export starts a browser (~3 s), so batches run inside one ``kaleido.start_sync_server()`` session.  HTML
needs no browser.  No Streamlit here: the app wraps these in download buttons.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shlex
import threading
import zipfile
from collections import defaultdict

FORMATS = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html", "csv": "text/csv"}
# Settings one `wdscale sweep` command cannot vary: records differing in these are separate studies.
STUDY_FIELDS = ("model", "base_width", "steps", "schedule", "warmup", "batch_size", "depth", "seq_len", "head_dim",
                "corpus", "train_bytes", "model_version")  # a changed model (or data slice) is another study;
# a custom or fitted rule's exponents (a, b) are not: verdicts group by them, so those runs sit beside the named rules
_kaleido_lock = threading.Lock()  # one kaleido server per process; sessions take turns


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def figure_csv(fig) -> bytes:
    """A figure's plotted data as long-format CSV: trace, panel, x, y (one row per point)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["trace", "panel", "x", "y"])
    for tr in fig.data:
        x = getattr(tr, "x", None)
        y = getattr(tr, "y", None)
        if y is None:
            continue
        x = list(x) if x is not None else list(range(len(y)))
        panel = getattr(tr, "xaxis", None) or "x"
        for a, b in zip(x, y):
            w.writerow([tr.name or "", panel, _num(a), _num(b)])
    return buf.getvalue().encode()


def _num(v):
    try:
        return repr(float(v))
    except (TypeError, ValueError):
        return str(v)


def figure_html(fig) -> bytes:
    # plotly.js embedded: the file opens offline, nothing is fetched from a CDN.
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def figure_image(fig, fmt: str = "png", scale: float = 2.0) -> bytes:
    """PNG or SVG through kaleido (uses the running sync server if there is one)."""
    if fmt not in ("png", "svg"):
        raise ValueError(f"image format must be png or svg, got {fmt!r}")
    return fig.to_image(format=fmt, scale=scale if fmt == "png" else 1.0,
                        width=fig.layout.width or 1000, height=fig.layout.height or 550)


def figure_bytes(fig, fmt: str) -> bytes:
    if fmt == "html":
        return figure_html(fig)
    if fmt == "csv":
        return figure_csv(fig)
    return figure_image(fig, fmt)


def export_figures(figs: dict, formats=("png", "svg", "html", "csv")) -> dict[str, bytes]:
    """{name: fig} -> {"name.fmt": bytes}; the browser starts once for all static images."""
    out: dict[str, bytes] = {}
    for name, fig in figs.items():
        for fmt in formats:
            if fmt in ("html", "csv"):
                out[f"{slug(name)}.{fmt}"] = figure_bytes(fig, fmt)
    static = [f for f in formats if f in ("png", "svg")]
    if static and figs:
        with _kaleido_session():
            for name, fig in figs.items():
                for fmt in static:
                    out[f"{slug(name)}.{fmt}"] = figure_image(fig, fmt)
    return out


class _kaleido_session:
    """One kaleido browser for a batch; serialised across threads (the server is a process singleton)."""

    def __enter__(self):
        import kaleido

        _kaleido_lock.acquire()
        try:
            kaleido.start_sync_server(silence_warnings=True)
        except Exception:
            _kaleido_lock.release()
            raise
        return self

    def __exit__(self, *exc):
        import kaleido

        try:
            kaleido.stop_sync_server(silence_warnings=True)
        finally:
            _kaleido_lock.release()
        return False


# ---------------------------------------------------------------------------------------------
# Records, studies and the command that reproduces them
# ---------------------------------------------------------------------------------------------
def study_key(rec: dict) -> tuple:
    return tuple((k, rec.get(k)) for k in STUDY_FIELDS)


def study_label(rec: dict) -> str:
    s = f"{rec['model']}, d₀={rec['base_width']}, {rec['steps']} steps"
    if rec.get("schedule", "constant") != "constant":
        s += f", {rec['schedule']} {rec.get('warmup', 0):g}"
    if rec.get("rule") == "custom" or rec.get("a") is not None:
        s += f", a={rec.get('a')}, b={rec.get('b')}"
    for k in ("depth", "batch_size"):
        if rec.get(k) is not None:
            s += f", {k}={rec[k]}"
    if rec.get("model") == "transformer" and rec.get("corpus") not in (None, "stdlib"):
        s += f", corpus={str(rec['corpus']).rsplit('/', 1)[-1]}"
    if rec.get("model_version") is None:  # stored before run ids carried the model version
        s += ", earlier model version"
    return s


def group_studies(records: list[dict]) -> dict[str, list[dict]]:
    """{label: records}, newest study first (records arrive oldest first from the store).

    Runs of one study differ only in width, rule, lr, wd and seed, i.e. what one sweep command varies."""
    groups: dict = defaultdict(list)
    labels = {}
    for r in records:
        k = study_key(r)
        groups[k].append(r)
        labels[k] = study_label(r)
    # same label for different keys (e.g. a custom rule with other a) gets a counter
    out, seen = {}, defaultdict(int)
    for k in reversed(list(groups)):
        lab = labels[k]
        seen[lab] += 1
        out[lab if seen[lab] == 1 else f"{lab} #{seen[lab]}"] = groups[k]
    return out


def _fmt(v) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def sweep_commands(records: list[dict], out: str | None = None) -> list[str]:
    """`wdscale sweep ...` lines that retrain ``records`` (one line per study; each trains its grid's product)."""
    by: dict = defaultdict(list)
    for r in records:
        by[study_key(r)].append(r)
    cmds = []
    for key, rs in by.items():
        s = dict(key)
        def lst(field):
            return ",".join(_fmt(v) for v in sorted({r[field] for r in rs}))
        rules = ",".join(sorted({r["rule"] for r in rs}))
        parts = ["wdscale", "sweep", "--model", s["model"], "--widths", lst("width"), "--base-width",
                 str(s["base_width"]), "--rules", rules, "--lrs", lst("lr"), "--wds", lst("wd"), "--steps",
                 str(s["steps"])]
        seeds = sorted({r.get("seed", 0) for r in rs})
        parts += ["--seeds", ",".join(map(str, seeds))] if len(seeds) > 1 else ["--seed", str(seeds[0])]
        if s.get("a") is not None:
            parts += ["-a", _fmt(s["a"])]
        if s.get("b") is not None:
            parts += ["-b", _fmt(s["b"])]
        if s.get("schedule") not in (None, "constant"):
            parts += ["--schedule", s["schedule"], "--warmup", _fmt(s.get("warmup") or 0.0)]
        if s.get("batch_size") is not None:
            parts += ["--batch-size", str(s["batch_size"])]
        if s.get("depth") is not None:
            parts += ["--depth", str(s["depth"])]
        if s["model"] == "transformer":
            parts += ["--seq-len", str(s.get("seq_len", 128)), "--head-dim", str(s.get("head_dim", 32)),
                      "--corpus", str(s.get("corpus") or "stdlib")]
        if out:
            parts += ["--out", out]
        cmds.append(" ".join(shlex.quote(p) for p in parts))
    return cmds


RECORD_COLUMNS = ["run_id", "model", "rule", "width", "base_width", "lr", "wd", "steps", "seed", "status",
                  "matrix_lr", "matrix_wd", "readout_mult", "final_loss", "diverged", "diverged_step", "seconds"]


def records_rows(records: list[dict]) -> list[dict]:
    """Flat rows (one per run) with σ_top per matrix as top_sv.<name> columns."""
    rows = []
    for r in records:
        row = {k: r.get(k) for k in RECORD_COLUMNS}
        for n, v in (r.get("top_sv") or {}).items():
            row[f"top_sv.{n}"] = v
        rows.append(row)
    return rows


def rows_csv(rows: list[dict]) -> bytes:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


def study_bundle(name: str, figs: dict, records: list[dict], tables: dict | None = None,
                 formats=("png", "svg", "html", "csv")) -> bytes:
    """Zip: figures/ (every format), data/ (runs.csv, figure data, extra tables), config.json (each run's config),
    reproduce.sh (the sweep commands) and README.txt."""
    files = export_figures(figs, formats)
    configs = [{k: r.get(k) for k in ("run_id", "model", "width", "base_width", "rule", "lr", "wd", "steps",
                                      "seed", "data_seed", "a", "b", "schedule", "warmup", "batch_size", "depth",
                                      "seq_len", "head_dim", "corpus")} for r in records]
    cmds = sweep_commands(records)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for fname, data in files.items():
            z.writestr(("data/" if fname.endswith(".csv") else "figures/") + fname, data)
        z.writestr("data/runs.csv", rows_csv(records_rows(records)))
        for tname, rows in (tables or {}).items():
            z.writestr(f"data/{slug(tname)}.csv", rows_csv(rows))
        z.writestr("config.json", json.dumps({"study": name, "runs": configs}, indent=1))
        z.writestr("reproduce.sh", "#!/bin/sh\n# Retrains this study (runs already in the store are skipped).\n"
                   + "\n".join(cmds) + "\n")
        z.writestr("README.txt", f"wdscale study: {name}\n{len(records)} runs.\n"
                   "figures/: PNG, SVG, HTML (self-contained); data/: CSV of every figure and of the runs;\n"
                   "config.json: every run's config; reproduce.sh: the `wdscale sweep` command(s).\n"
                   "lam/wd is torch AdamW's weight_decay: the per-step decay is lr*wd.\n")
    return buf.getvalue()
