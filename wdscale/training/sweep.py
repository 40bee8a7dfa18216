"""Sweeps: expand a grid into run configs, train what the store lacks, one ensemble per width.

Resuming is the same code path as caching: every finished run is in the store under its config hash, so a
rerun of an interrupted sweep trains only the runs that are missing.
"""
from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import defaultdict
from typing import Callable, Iterable

from ..models.config import MAX_MEMBERS, RunConfig
from .store import RunStore
from .train import TrainOptions, checkpoint_path, train_ensemble


def expand_grid(model: str, widths: Iterable[int], base_width: int, rules: Iterable[str], lrs: Iterable[float],
                wds: Iterable[float], steps: int, seeds: Iterable[int] = (0,), data_seed: int | None = None,
                **common) -> list[RunConfig]:
    """All RunConfigs of a grid. ``common`` holds the other RunConfig fields (schedule, depth, ...).

    Each seed draws its own batches (data_seed = seed) unless ``data_seed`` fixes one batch order for all: then
    every seed of a width trains in one ensemble (seeds differ in their init only)."""
    out = []
    for w, r, lr, wd, s in itertools.product(widths, rules, lrs, wds, seeds):
        out.append(RunConfig(model=model, width=int(w), base_width=int(base_width), rule=r, lr=float(lr),
                             wd=float(wd), steps=int(steps), seed=int(s),
                             data_seed=int(s if data_seed is None else data_seed), **common))
    return out


def plan(configs: list[RunConfig], store: RunStore | None) -> tuple[list[dict], list[list[RunConfig]]]:
    """(cached records, ensembles still to train) for a list of configs."""
    cached, todo = [], defaultdict(list)
    seen = set()
    for c in configs:
        if c.run_id in seen:
            continue
        seen.add(c.run_id)
        rec = store.get(c.run_id) if store is not None else None
        if rec is not None:
            cached.append(rec)
        else:
            todo[c.group_key()].append(c)
    chunks = []
    for group in todo.values():
        for i in range(0, len(group), MAX_MEMBERS):
            chunks.append(group[i:i + MAX_MEMBERS])
    return cached, chunks


def run_sweep(configs: list[RunConfig], store: RunStore | None, opts: TrainOptions | None = None,
              on_event: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
              on_record: Callable[[dict], None] | None = None, executor: str = "local",
              address: str | None = None) -> list[dict]:
    """Train every config the store does not hold yet; return all records (cached ones included).

    Records are returned in the order of ``configs``; each has ``cached`` True when it came from the store.
    ``on_event`` sees the trainer's events plus ``{"type": "chunk", ...}`` between ensembles.
    """
    cached, chunks = plan(configs, store)
    emit = on_event or (lambda e: None)
    by_id = {}
    for rec in cached:
        rec["cached"] = True
        by_id[rec["run_id"]] = rec
        if on_record:
            on_record(rec)
    emit({"type": "plan", "cached": len(cached), "to_train": sum(len(c) for c in chunks), "chunks": len(chunks)})
    if store is not None and executor != "ray":  # mid-ensemble checkpoints live beside the runs they become
        opts = opts or TrainOptions()
        if not opts.checkpoint_dir:
            opts = dataclasses.replace(opts, checkpoint_dir=str(store.root / "checkpoints"))
    if executor == "ray":
        from .ray_executor import run_chunks_ray

        results_iter = run_chunks_ray(chunks, opts, emit, cancel, address)
    else:
        results_iter = _run_chunks_local(chunks, opts, emit, cancel)
    for results in results_iter:
        for res in results:
            rec = store.put(res) if store is not None else _record_nostore(res)
            rec["cached"] = False
            by_id[res["run_id"]] = rec
            if on_record:
                on_record(rec)
        if opts is not None and opts.checkpoint_dir and results and all(r["status"] == "done" for r in results):
            # stored for good: the checkpoint has done its job (a cancelled ensemble keeps it, to resume)
            checkpoint_path(opts.checkpoint_dir, [r["config"] for r in results]).unlink(missing_ok=True)
    return [by_id[c.run_id] for c in _unique(configs) if c.run_id in by_id]


def _run_chunks_local(chunks, opts, emit, cancel):
    for k, chunk in enumerate(chunks):
        if cancel is not None and cancel.is_set():
            break
        emit({"type": "chunk", "index": k, "of": len(chunks), "width": chunk[0].width, "n_members": len(chunk)})
        yield train_ensemble(chunk, opts, emit, cancel)


def _unique(configs):
    seen = set()
    for c in configs:
        if c.run_id not in seen:
            seen.add(c.run_id)
            yield c


def _record_nostore(res: dict) -> dict:
    from .store import make_record

    return make_record(res, "", "")
