"""The run store: an SQLite (WAL) index, safetensors weights and npz spectra under one data dir.

Layout of ``root`` (default ``./runs``; ``--out`` / ``$WDSCALE_DATA``)::

    index.sqlite            runs table: run_id, config (JSON), status, summary (JSON), created
    weights/<run_id>.safetensors   final weights, keyed by parameter name
    spectra/<run_id>.npz    'steps' and one (snapshots, k) array of singular values per matrix

A run is written once it finishes (or is cancelled: status ``partial``), files first and the index row last,
so a crash never leaves an index row pointing at missing files.  Only ``done`` rows count as cached.
Nothing is ever unpickled: safetensors and ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from pathlib import Path

import numpy as np

DEFAULT_ROOT = "runs"


def default_root() -> str:
    return os.environ.get("WDSCALE_DATA", DEFAULT_ROOT)


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> float."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


class RunStore:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or default_root())
        (self.root / "weights").mkdir(parents=True, exist_ok=True)
        (self.root / "spectra").mkdir(parents=True, exist_ok=True)
        self.db = self.root / "index.sqlite"
        with self._conn() as c:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("""CREATE TABLE IF NOT EXISTS runs (
                run_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL,
                summary TEXT NOT NULL, created REAL NOT NULL)""")

    def _conn(self) -> sqlite3.Connection:
        # A connection per call: the store is used from the app's worker threads and the CLI alike.
        c = sqlite3.connect(self.db, timeout=30)
        return c

    # -- writing -------------------------------------------------------------------------------------
    def put(self, result: dict) -> dict:
        """Store one trainer result; return its record (what ``sweep --json`` prints)."""
        from safetensors.torch import save_file

        from .train import RunConfig  # noqa: F401  (type of result["config"])

        cfg = result["config"]
        rid = result["run_id"]
        wpath = self.root / "weights" / f"{rid}.safetensors"
        spath = self.root / "spectra" / f"{rid}.npz"
        save_file({k: v.contiguous() for k, v in result["weights"].items()}, str(wpath))
        spec = result["spectra"]
        np.savez_compressed(spath, steps=np.asarray(spec["steps"]),
                            **{f"sv/{k}": np.asarray(v) for k, v in spec.items() if k != "steps"})
        record = make_record(result, str(wpath), str(spath))
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?)",
                      (rid, json.dumps(cfg.canonical(), sort_keys=True), result["status"],
                       json.dumps(_clean(record)), time.time()))
        return record

    def delete(self, run_id: str) -> None:
        with self._conn() as c:
            c.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
        for p in (self.root / "weights" / f"{run_id}.safetensors", self.root / "spectra" / f"{run_id}.npz"):
            p.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------------
    def get(self, run_id: str, status: str | None = "done") -> dict | None:
        q = "SELECT summary FROM runs WHERE run_id=?" + (" AND status=?" if status else "")
        with self._conn() as c:
            row = c.execute(q, (run_id, status) if status else (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def records(self, **where) -> list[dict]:
        """All run records, optionally filtered on record fields (e.g. model='synthetic', width=64)."""
        with self._conn() as c:
            rows = c.execute("SELECT summary FROM runs ORDER BY created").fetchall()
        recs = [json.loads(r[0]) for r in rows]
        return [r for r in recs if all(r.get(k) == v for k, v in where.items())]

    def spectra(self, run_id: str) -> dict[str, np.ndarray]:
        with np.load(self.root / "spectra" / f"{run_id}.npz", allow_pickle=False) as z:
            out = {"steps": z["steps"]}
            out.update({k[3:]: z[k] for k in z.files if k.startswith("sv/")})
        return out

    def weights(self, run_id: str) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.root / "weights" / f"{run_id}.safetensors"))


def make_record(result: dict, weights_path: str, spectra_path: str) -> dict:
    """The flat, JSON-safe summary of one run."""
    cfg = result["config"]
    res = result["resolved"]
    rec = dict(cfg.canonical())
    rec.update({
        "run_id": result["run_id"], "status": result["status"], "steps_done": result["steps_done"],
        "matrix_lr": res.groups["matrix"]["lr"], "matrix_wd": res.groups["matrix"]["wd"],
        "readout_mult": res.readout_mult, "groups": res.table(cfg.steps),
        "final_loss": result["final_loss"], "diverged": result["diverged"],
        "diverged_step": result["diverged_step"],
        "evals": {str(k): v for k, v in result["evals"].items()},
        "train_loss": _thin(result["train_loss"]),
        "top_sv": result["top_sv"], "param_class": result["param_class"],
        "weights": weights_path, "spectra": spectra_path, "seconds": result["seconds"],
    })
    rec.update(result.get("extra", {}))
    return _clean(rec)


def _thin(xs: list, n: int = 400) -> list:
    """At most ~n points of a loss curve, as [step, loss] pairs (step is 1-based)."""
    k = max(1, len(xs) // n)
    pts = [[i + 1, x] for i, x in enumerate(xs) if (i + 1) % k == 0]
    if xs and (not pts or pts[-1][0] != len(xs)):
        pts.append([len(xs), xs[-1]])
    return pts
