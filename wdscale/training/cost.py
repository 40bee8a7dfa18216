"""The one cost model of a study: FLOPs and memory per model, and its wall time (ETA) on this machine.

Per model (``synthetic``, ``transformer``) this module owns

* ``member_step_flops(cfg)``  counted matmul FLOPs of one training step of one member (forward + backward);
* ``memory_estimate(cfg, n)``  bytes an ensemble of n members needs (the trainers' own estimates, re-exported);
  (the matmul peak stays in bench, which reads its FLOP counts from here: imports run one way);
* ``svd_units(cfg, n)``        sum of min(m, k)^2 * max(m, k) over the matrices a spectra snapshot decomposes.

``study_eta(configs)`` turns them into seconds with constants measured on this machine: a few timed steps of
two small ensembles per model (``calibrate``), cached per machine, thread count and device in the data cache
(``$WDSCALE_CACHE`` or ``~/.cache/wdscale``), so a page pays for the measurement once.  The step time is fitted
as ``a + b * FLOPs`` (a: per-step overhead that does not grow with the model, Python and elementwise work; b:
seconds per counted FLOP at the sizes measured); snapshots and evals are added from their own counts.  It is an
estimate for planning (within 2x of the measured time on the grids in docs/app.md), not a benchmark.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import time
from pathlib import Path

from ..models.transformer import flops_per_step as transformer_flops_per_step  # noqa: F401 (re-exported)
from ..models.transformer import memory_estimate as transformer_memory_estimate
from ..models.transformer import mlp_hidden
from .train import MIN_SPECTRA_GAP, SPECTRA_SNAPSHOTS, eval_steps, synthetic_memory_estimate

VERSION = 1  # part of the calibration cache key: a change in what is measured invalidates old files
# (width, members, timed steps): small enough to take about a second each, far enough apart in FLOPs to fit a slope
CALIBRATION = {"synthetic": [(64, 4, 30), (256, 8, 16)], "transformer": [(32, 1, 10), (128, 1, 6)]}
TRANSFORMER_VAL_SEQS = 64  # data.VAL_SEQS: windows in the fixed validation set


# -- counts ------------------------------------------------------------------------------------------------
def _synthetic_dims(cfg) -> tuple:
    from ..models.synthetic import SyntheticConfig

    sc = SyntheticConfig()
    return sc.d_in, sc.d_out, cfg.depth or sc.depth, cfg.batch_size or sc.batch_size, sc.n_val


def matrix_shapes(cfg) -> list[tuple[int, int]]:
    """Shapes of the matrices a run tracks (spectra), per member, without building the model."""
    d = cfg.width
    if cfg.model == "synthetic":
        d_in, d_out, depth, _, _ = _synthetic_dims(cfg)
        return [(d, d_in)] + [(d, d)] * (2 * depth) + [(d_out, d)]
    from ..models.transformer import DEFAULT_DEPTH, VOCAB

    depth, f = cfg.depth or DEFAULT_DEPTH, mlp_hidden(d)
    return [(VOCAB, d)] + [(d, d)] * (4 * depth) + [(f, d), (f, d), (d, f)] * depth + [(VOCAB, d)]


def member_step_flops(cfg) -> float:
    """Counted FLOPs of one training step of one member: 6 x batch x matrix weights for the synthetic core
    (``bench.member_flops`` counts the same), ``transformer.flops_per_step`` for the Transformer."""
    if cfg.model == "synthetic":
        d_in, d_out, depth, batch, _ = _synthetic_dims(cfg)
        d = cfg.width
        return 6.0 * batch * (d_in * d + 2 * depth * d * d + d_out * d)
    return transformer_flops_per_step(cfg, 1)


def step_flops(cfg, n_members: int = 1) -> float:
    return n_members * member_step_flops(cfg)


def eval_flops(cfg, n_members: int = 1) -> float:
    """FLOPs of one validation pass (forward only, a third of a training step per example)."""
    if cfg.model == "synthetic":
        _, _, _, batch, n_val = _synthetic_dims(cfg)
        return step_flops(cfg, n_members) / 3 * n_val / batch
    from ..models.transformer import DEFAULT_BATCH

    return step_flops(cfg, n_members) / 3 * TRANSFORMER_VAL_SEQS / (cfg.batch_size or DEFAULT_BATCH)


def svd_units(cfg, n_members: int = 1) -> float:
    return float(n_members * sum(min(m, k) ** 2 * max(m, k) for m, k in matrix_shapes(cfg)))


def memory_estimate(cfg, n_members: int) -> int:
    if cfg.model == "synthetic":
        return synthetic_memory_estimate(cfg, n_members)
    return transformer_memory_estimate(cfg, n_members)


def study_flops(configs) -> float:
    """Counted training FLOPs of a list of configs (twins counted once, as they train)."""
    seen, total = set(), 0.0
    for c in configs:
        if c.run_id not in seen:
            seen.add(c.run_id)
            total += member_step_flops(c) * c.steps
    return total


def n_snapshots(steps: int) -> int:
    """Spectra snapshots the trainer takes at its default cadence (train.py: step 0, every gap, the end)."""
    gap = max(MIN_SPECTRA_GAP, steps // SPECTRA_SNAPSHOTS)
    return 1 + steps // gap + (1 if steps % gap else 0)


# -- calibration -------------------------------------------------------------------------------------------
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def machine_key(model: str, device: str = "cpu", threads: int | None = None) -> dict:
    import torch

    threads = threads or torch.get_num_threads()
    dev = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    return {"version": VERSION, "model": model, "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": int(threads),
            "device": dev, "torch": torch.__version__}


def _cache_path(key: dict) -> Path:
    from ..models.data import cache_dir

    h = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"cost-{key['model']}-{h}.json"


def _time_steps(cfg, n: int, steps: int, device: str) -> tuple[float, float]:
    """(median seconds per step, best seconds per spectra snapshot) of an n-member ensemble, through the trainer.

    Timed here, not with bench's clock: bench reads its FLOP counts from this module (imports run one way)."""
    import dataclasses

    import torch

    from ..models.ensemble import singular_values
    from .train import TrainOptions, build, train_ensemble

    dev = torch.device(device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    stamps = []

    def clock(step, model, batch, opt):
        sync()
        stamps.append(time.perf_counter())

    configs = [dataclasses.replace(cfg, steps=steps, lr=cfg.lr * (1 + 0.01 * i)) for i in range(n)]
    train_ensemble(configs, TrainOptions(device=device, spectra_every=10 ** 9, n_evals=1, callbacks=[clock]))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][2:]  # the first steps pay one-off allocations
    model, _ = build(configs[0], n, dev)
    snap = float("inf")
    for _ in range(2):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            for p in model.matrices().values():
                singular_values(p.detach()).cpu()
        sync()
        snap = min(snap, time.perf_counter() - t0)
    return statistics.median(gaps), snap


def measure(model: str, device: str = "cpu") -> dict:
    """Time the calibration ensembles of ``model`` now (about a second or two each); the fitted constants."""
    from ..models.config import RunConfig

    pts = []
    for width, n, steps in CALIBRATION[model]:
        cfg = RunConfig(model=model, width=width, base_width=32, rule="mup", lr=3e-3, wd=0.1, steps=steps)
        t_step, t_snap = _time_steps(cfg, n, steps, device)
        pts.append({"width": width, "members": n, "flops": step_flops(cfg, n), "step_s": t_step,
                    "snapshot_s": t_snap, "svd_units": svd_units(cfg, n)})
    (f1, t1), (f2, t2) = ((p["flops"], p["step_s"]) for p in pts)
    if t2 > t1 and f2 > f1:
        b = (t2 - t1) / (f2 - f1)
        a = max(0.0, t1 - b * f1)
    else:  # a noisy machine measured the larger model faster: fall back to a pure rate through the larger one
        a, b = 0.0, t2 / f2
    c_svd = statistics.median(p["snapshot_s"] / p["svd_units"] for p in pts)
    return {"a_s": a, "b_s_per_flop": b, "c_s_per_svd_unit": c_svd, "points": pts, "measured": time.time()}


def cached_calibration(model: str, device: str = "cpu", threads: int | None = None) -> dict | None:
    """The cached constants of ``model`` on this machine and thread count, or None (nothing measured yet)."""
    key = machine_key(model, device, threads)
    try:
        cal = json.loads(_cache_path(key).read_text())
    except (OSError, ValueError):
        return None
    return cal if cal.get("key") == key else None


def save_calibration(cal: dict) -> Path:
    path = _cache_path(cal["key"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cal, indent=1))
    os.replace(tmp, path)
    return path


def calibrate(model: str, device: str = "cpu", threads: int | None = None, refresh: bool = False) -> dict:
    """The cost constants of ``model`` on this machine: read from the cache, else measured (with ``threads``
    torch threads, the count the study will train with) and written there."""
    import torch

    if not refresh:
        cal = cached_calibration(model, device, threads)
        if cal is not None:
            return cal
    key = machine_key(model, device, threads)
    old = torch.get_num_threads()
    torch.set_num_threads(key["threads"])
    try:
        cal = {"key": key, **measure(model, device)}
    finally:
        torch.set_num_threads(old)
    try:  # a read-only home still gets an estimate, measured again next time
        save_calibration(cal)
    except OSError:
        pass
    return cal


def chunk_seconds(cfg, n_members: int, cal: dict) -> float:
    """Predicted wall time of one ensemble chunk: steps, evals and spectra snapshots."""
    step = cal["a_s"] + cal["b_s_per_flop"] * step_flops(cfg, n_members)
    ev = cal["a_s"] + cal["b_s_per_flop"] * eval_flops(cfg, n_members)
    snap = cal["c_s_per_svd_unit"] * svd_units(cfg, n_members)
    return cfg.steps * step + len(eval_steps(cfg.steps)) * ev + n_snapshots(cfg.steps) * snap


def members(chunk) -> int:
    """Members an ensemble chunk really trains: configs that resolve to the same member (twins, e.g. every
    mu-P rule at m = 1) train once (train_ensemble's own rule)."""
    from .train import _twins  # the trainer's definition of a twin, not a copy of it

    return len(set(_twins(chunk, [c.resolved() for c in chunk])))


def study_eta(configs, store=None, device: str = "cpu", threads: int | None = None, cals: dict | None = None) -> dict:
    """ETA of a study: {"seconds", "per_width": {width: s}, "to_train", "cached", "flops", "calibration"}.

    Only what ``store`` lacks is counted (the same plan the sweep follows: one ensemble per width, chunks of
    at most MAX_MEMBERS); ``cals`` ({model: constants}) overrides the machine's calibration (a page that
    measured in the background, tests)."""
    from .sweep import plan

    cached, chunks = plan(list(configs), store)
    out = {"seconds": 0.0, "per_width": {}, "to_train": sum(len(c) for c in chunks), "cached": len(cached),
           "flops": 0.0, "calibration": {}, "member_steps": {}}
    for chunk in chunks:
        c0 = chunk[0]
        cm = (cals or {}).get(c0.model) or out["calibration"].get(c0.model) or calibrate(c0.model, device, threads)
        out["calibration"][c0.model] = cm
        n = members(chunk)
        s = chunk_seconds(c0, n, cm)
        out["seconds"] += s
        out["per_width"][c0.width] = out["per_width"].get(c0.width, 0.0) + s
        out["flops"] += step_flops(c0, n) * c0.steps
        out["member_steps"][c0.width] = out["member_steps"].get(c0.width, 0) + n * c0.steps
    return out


def phases_eta(phases, store=None, device: str = "cpu", threads: int | None = None, cals: dict | None = None) -> dict:
    """ETA of a study trained phase after phase, one sweep each (``wdscale.science.study.run_study``): ``study_eta``'s dict
    summed over the phases.  A run an earlier phase trains counts as stored for the later ones, and twins
    (e.g. every mu-P rule at m = 1) merge only within a phase, as they train.  ``member_steps`` per width lets
    a live progress bar weigh a step at each width by its predicted cost."""
    seen: set = set()

    class _View:  # the store, plus what the earlier phases will have trained by then
        def get(self, run_id):
            return {"run_id": run_id} if run_id in seen else (store.get(run_id) if store is not None else None)

    out = {"seconds": 0.0, "per_width": {}, "to_train": 0, "cached": 0, "flops": 0.0, "calibration": {},
           "member_steps": {}, "phases": []}
    for phase in phases:
        e = study_eta(phase, _View(), device, threads, cals={**out["calibration"], **(cals or {})})
        out["phases"].append(e["seconds"])
        for k in ("seconds", "to_train", "flops"):
            out[k] += e[k]
        for k in ("per_width", "member_steps"):
            for w, v in e[k].items():
                out[k][w] = out[k].get(w, 0) + v
        out["calibration"].update(e["calibration"])
        seen.update(c.run_id for c in phase)
    ids = {c.run_id for phase in phases for c in phase}
    out["cached"] = sum(store.get(i) is not None for i in ids) if store is not None else 0
    return out


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
