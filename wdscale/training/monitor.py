"""``SpectralMonitor``: the paper's quantities, live, in any torch training loop.

    mon = SpectralMonitor(model, optimizer, every=100, log_dir="runs/monitor")
    for batch in data:
        loss = model(batch); loss.backward(); optimizer.step(); optimizer.zero_grad()
        mon.step()

Every ``every`` steps, per optimizer param group and matrix (>= 2-D parameter), it records

* ``top_sv``: σ_top by (block) power iteration warm-started from the previous call's vectors (W moves little
  in ``every`` steps, so a few iterations keep it converged; the first call iterates longer);
* ``fro`` next to ``fro_pred`` = √(η·N/(2λ)), the steady-state norm with the group's *actual* lr η and torch
  weight_decay λ (Kosson et al.; Fan et al.), and their ratio;
* ``rel_update`` = ‖W_t − W_{t−1}‖_F / ‖W_t‖_F over the last optimizer step;
* ``steps_over_tau`` = Σ_t η_t λ_t: steps measured in τ = 1/(ηλ), integrated so lr schedules count right.
  Below ~3 the norm has not reached its steady state yet and ``fro`` should not match ``fro_pred``.

It writes ``log_dir/monitor.csv`` (one row per matrix per record, flushed each time) and, if tensorboard is
installed, scalars ``<group>/<name>/<quantity>``.  Nothing here imports Streamlit; ``load_csv`` and
``series`` turn a log back into rows and the series that ``plots.top_sv_over_training`` draws.
"""
from __future__ import annotations

import csv
import math
import os
import re
import time
from pathlib import Path

import torch

from ..core.rules import CLASSES, classify_model, infer_width

BATCH_BYTES = 256 * 2**20  # at most this much stacked copy of same-shape matrices at a time
COLUMNS = ["step", "group", "name", "class", "shape", "lr", "weight_decay", "top_sv", "fro", "fro_pred",
           "fro_over_pred", "rel_update", "steps_over_tau", "tau", "stable_rank"]


class SpectralMonitor:
    """Record σ_top, ‖W‖_F vs √(ηN/2λ), ‖ΔW‖/‖W‖ and steps/τ of every matrix every ``every`` optimizer steps.

    Call ``step()`` once after each ``optimizer.step()``.  Cost between records: one float sum per group.  At a
    record: ``power_iters`` products of W and Wᵀ with a ``block`` of vectors per matrix, plus one copy of every matrix one step earlier (for
    the relative update), so the overhead falls as 1/every.

    The ``class`` column: a group named by its class (``rules.param_groups``'s are) gives it; otherwise
    ``rules.classify_model`` infers it from which dims scale with ``width`` (default: the most common dim of the
    model's weights) or against ``base_model``, with ``overrides`` (name or regex -> class) first."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, every: int = 100,
                 log_dir: str | os.PathLike | None = None, power_iters: int = 3, first_iters: int = 10,
                 block: int = 8, tensorboard: bool = True, overrides: dict | None = None, seed: int = 0,
                 width: int | None = None, base_model: torch.nn.Module | None = None):
        if int(every) < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        self.model, self.optimizer, self.every = model, optimizer, int(every)
        self.power_iters, self.first_iters, self.block = int(power_iters), int(first_iters), max(1, int(block))
        self.t = 0
        self.rows: list[dict] = []
        self.seconds = 0.0  # time spent inside step(), for the overhead check
        names = {id(p): n for n, p in model.named_parameters()}
        inferred = None
        self.groups = []  # [(label, group dict, [(name, param, class)])]
        for gi, g in enumerate(optimizer.param_groups):
            label = str(g.get("name", f"group{gi}"))
            mats = []
            for p in g["params"]:
                if p.ndim < 2:
                    continue
                n = names.get(id(p), f"{label}.param{len(mats)}")
                if label in CLASSES and not any(pat == n or re.search(pat, n) for pat in overrides or {}):
                    cls = label
                else:
                    if inferred is None:
                        inferred = classify_model(model, width or infer_width(dict(model.named_parameters())),
                                                  base_model, overrides, strict=False)
                    cls = inferred.get(n, "matrix")
                mats.append((n, p, cls))
            self.groups.append((label, g, mats))
        self.decay_sum = [0.0] * len(self.groups)  # Σ η_t λ_t per group
        self._v: dict[int, torch.Tensor] = {}  # warm-start right singular vectors
        self._prev: dict[int, torch.Tensor] | None = None
        self._gen = torch.Generator().manual_seed(seed)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._csv = self._writer = self._tb = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._csv = open(self.log_dir / "monitor.csv", "w", newline="")
            self._writer = csv.DictWriter(self._csv, fieldnames=COLUMNS)
            self._writer.writeheader()
            self._csv.flush()
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
                except ImportError:
                    SummaryWriter = None
                if SummaryWriter is not None:
                    self._tb = SummaryWriter(str(self.log_dir))
        if self.every == 1:
            self._prev = self._snapshot()

    # -- the per-step hook ---------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[dict] | None:
        """Call after optimizer.step(); returns the rows recorded at this step (None between records)."""
        t0 = time.perf_counter()
        self.t += 1
        for i, (_, g, _) in enumerate(self.groups):
            self.decay_sum[i] += float(g["lr"]) * float(g.get("weight_decay", 0.0))
        rows = None
        if self.t % self.every == 0:
            rows = self._record()
            self._prev = None
        if (self.t + 1) % self.every == 0:
            self._prev = self._snapshot()  # W one step before the next record: for ‖ΔW‖/‖W‖
        self.seconds += time.perf_counter() - t0
        return rows

    def _snapshot(self) -> dict[int, torch.Tensor]:
        return {id(p): p.detach().clone() for _, _, mats in self.groups for _, p, _ in mats}

    def _top_svs(self, params: list) -> dict[int, float]:
        """σ_top of every matrix by block Krylov (``core.spectra.krylov_top_sv``) from the last record's Ritz
        vectors, ``power_iters`` passes (``first_iters`` the first time).

        A single warm vector stalls at %-level errors when σ₁ ≈ σ₂ and W rotates between records (early
        training); a block of ``block`` warm vectors and their Krylov space with Rayleigh-Ritz reach ~1e-4 for
        the same few passes.  Matrices of one shape go through together (one host round trip per pass for
        all of them: on a GPU the round trips, not the flops, are the cost).  Each value is a lower bound."""
        from ..core.spectra import krylov_top_sv

        out, by_shape = {}, {}
        for p in params:
            W = p.detach().reshape(p.shape[0], -1)
            if min(W.shape) <= 2 * self.block:  # tiny: exact
                out[id(p)] = float(torch.linalg.svdvals(W.float())[0])
                continue
            by_shape.setdefault((tuple(W.shape), W.device), []).append((p, W))
        for (shape, _), items in by_shape.items():
            n, k = min(shape), self.block
            per = max(1, int(BATCH_BYTES // (4 * shape[0] * shape[1])))  # cap the stacked copy's memory
            for i in range(0, len(items), per):
                chunk = items[i:i + per]
                warm = [self._v.get(id(p)) for p, _ in chunk]
                cold = any(v is None or v.shape != (n, k) for v in warm)
                V0 = torch.randn(len(chunk), n, k, generator=self._gen) if cold else torch.stack(warm)
                W = torch.stack([w.float() for _, w in chunk])
                est, ritz = krylov_top_sv(W, V0, max_steps=self.first_iters if cold else self.power_iters,
                                          tol=1e-7)
                for j, (p, _) in enumerate(chunk):
                    out[id(p)] = est[j]
                    self._v[id(p)] = ritz[j]
        return out

    def _record(self) -> list[dict]:
        # Norms first, as tensors, then one device->host copy (on a GPU each float() is a sync).
        mats = [(gi, n, p, cls) for gi, (_, _, ms) in enumerate(self.groups) for n, p, cls in ms]
        norms = []
        for _, _, p, _ in mats:
            w = p.detach()
            norms.append(w.float().norm())
            prev = self._prev.get(id(p)) if self._prev is not None else None
            norms.append((w - prev).float().norm() if prev is not None else torch.full_like(norms[-1], -1.0))
        vals = torch.stack(norms).cpu().tolist() if norms else []
        top = self._top_svs([p for _, _, p, _ in mats])
        rows = []
        for i, (gi, n, p, cls) in enumerate(mats):
            label, g, _ = self.groups[gi]
            lr, wd = float(g["lr"]), float(g.get("weight_decay", 0.0))
            decay = lr * wd
            fro, dnorm = vals[2 * i], vals[2 * i + 1]
            s = top[id(p)]
            pred = math.sqrt(lr * p.numel() / (2 * wd)) if decay > 0 else None
            rows.append({"step": self.t, "group": label, "name": n, "class": cls,
                         "shape": "x".join(map(str, p.shape)), "lr": lr, "weight_decay": wd, "top_sv": s,
                         "fro": fro, "fro_pred": pred, "fro_over_pred": fro / pred if pred else None,
                         "rel_update": dnorm / fro if dnorm >= 0 and fro > 0 else None,
                         "steps_over_tau": self.decay_sum[gi], "tau": 1.0 / decay if decay > 0 else None,
                         "stable_rank": fro * fro / (s * s) if s > 0 else None})
        self.rows.extend(rows)
        if self._writer is not None:
            self._writer.writerows(rows)
            self._csv.flush()
        if self._tb is not None:
            for r in rows:
                for k in ("top_sv", "fro", "fro_over_pred", "rel_update", "steps_over_tau"):
                    if r[k] is not None:
                        self._tb.add_scalar(f"{r['group']}/{r['name']}/{k}", r[k], r["step"])
            self._tb.flush()
        return rows

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()
            self._csv = self._writer = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------------------------
# Reading a log back (the app's Monitor tab)
# ---------------------------------------------------------------------------------------------
def load_csv(src) -> list[dict]:
    """Rows of a monitor.csv (path, bytes or text), numbers parsed; a ValueError if it is not one."""
    import io

    if isinstance(src, (bytes, bytearray)):
        text = bytes(src).decode("utf-8", errors="replace")
    elif isinstance(src, str) and "\n" in src:
        text = src
    else:
        text = Path(src).read_text()
    reader = csv.DictReader(io.StringIO(text))
    missing = {"step", "group", "name", "top_sv", "fro"} - set(reader.fieldnames or [])
    if missing:
        raise ValueError(f"not a wdscale monitor log: missing columns {', '.join(sorted(missing))}")
    rows = []
    for r in reader:
        out = {}
        for k, v in r.items():
            if k in ("group", "name", "class", "shape"):
                out[k] = v
            elif k == "step":
                out[k] = int(float(v))
            else:
                try:
                    out[k] = float(v) if v not in ("", None) else None
                except ValueError:
                    out[k] = None
        rows.append(out)
    return rows


def series(rows: list[dict]) -> list[dict]:
    """One series per (group, matrix) for ``plots.top_sv_over_training``: steps, top_sv, fro, fro_pred (the
    last record's), tau, and the matrix's larger dimension as ``width`` (for the colour)."""
    by: dict = {}
    for r in rows:
        by.setdefault((r["group"], r["name"]), []).append(r)
    out = []
    for (g, n), rs in by.items():
        rs.sort(key=lambda r: r["step"])
        try:
            width = max(int(x) for x in str(rs[-1].get("shape") or "1").split("x"))
        except ValueError:
            width = 1
        out.append({"name": f"{n} [{g}]", "steps": [r["step"] for r in rs], "top_sv": [r["top_sv"] for r in rs],
                    "fro": [r["fro"] for r in rs], "fro_pred": rs[-1].get("fro_pred"), "tau": rs[-1].get("tau"),
                    "width": width})
    return out


def norm_rows(rows: list[dict]) -> list[dict]:
    """The last record per matrix as rows for ``plots.norm_pred_vs_measured`` (group as the 'rule')."""
    last: dict = {}
    for r in rows:
        k = (r["group"], r["name"])
        if k not in last or r["step"] >= last[k]["step"]:
            last[k] = r
    return [{"rule": r["group"], "width": max(1, int(str(r.get("shape") or "1").split("x")[0])),
             "param": r["name"], "measured": r["fro"], "predicted": r.get("fro_pred"),
             "steps_over_tau": r.get("steps_over_tau") or 0.0, "run_id": f"step {r['step']}"} for r in last.values()]
