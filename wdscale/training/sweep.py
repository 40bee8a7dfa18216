"""Sweeps: expand a grid into run configs, train what the store lacks, one ensemble per width.

Resuming is the same code path as caching: every finished run is in the store under its config hash, so a
rerun of an interrupted sweep trains only the runs that are missing.
"""
from __future__ import annotations

import dataclasses
import functools
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


# Rules a stored twin is looked for under: at the proxy width (m = 1) every mu-P rule resolves to the same member,
# so a run of ``wd``, ``indep`` or the fitted rule there is the ``mup`` run of the same lr, wd and seed.
TWIN_RULES = ("mup", "wd", "indep", "sp")


def plan(configs: list[RunConfig], store: RunStore | None) -> tuple[list[dict], list[list[RunConfig]]]:
    """(cached records, ensembles still to train) for a list of configs.  A config the store lacks whose twin it
    holds (``stored_twin``: the same member under another rule) is cached too: its record is the twin's under its
    own id and fields (``run_sweep`` stores it so)."""
    cached, twins, chunks = _plan(configs, store)
    return cached + [rec for _c, _tid, rec in twins], chunks


def _plan(configs, store):
    cached, twins, todo = [], [], defaultdict(list)
    seen = set()
    for c in configs:
        if c.run_id in seen:
            continue
        seen.add(c.run_id)
        rec = store.get(c.run_id) if store is not None else None
        if rec is not None:
            cached.append(rec)
            continue
        twin = stored_twin(c, store) if store is not None else None
        if twin is not None:
            twins.append((c, twin["run_id"], twin_record(c, twin)))
        else:
            todo[c.group_key()].append(c)
    chunks = []
    for group in todo.values():
        for i in range(0, len(group), MAX_MEMBERS):
            chunks.append(group[i:i + MAX_MEMBERS])
    return cached, twins, chunks


def twin_configs(c: RunConfig) -> list[RunConfig]:
    """The configs of the very same member as ``c`` under the other named rules (the trainer's ``_twins`` rule:
    same seeds, schedule and every per-class number): at m = 1 every mu-P rule's, elsewhere usually none."""
    from ..core.rules import FREE_RULES, resolve
    from .train import _twins

    if c.width != c.base_width and c.rule not in FREE_RULES:  # named rules part above m = 1: no twin to look for
        return []
    mine, out = c.resolved(), []
    for r in TWIN_RULES:
        if r == c.rule:
            continue
        try:
            if _twins([c, c], [mine, resolve(r, c.width, c.base_width, c.lr, c.wd)])[1] == 0:
                out.append(dataclasses.replace(c, rule=r, a=None, b=None))
        except ValueError:  # e.g. a per-step decay the other rule cannot use
            continue
    return out


@functools.lru_cache(maxsize=8192)
def _twin_ids(c: RunConfig) -> tuple[str, ...]:
    return tuple(t.run_id for t in twin_configs(c))  # run ids hash the config: worth keeping for a page's reruns


def stored_twin(c: RunConfig, store) -> dict | None:
    """The stored record of a twin of ``c`` (``twin_configs``), or None: trained once, read for every rule."""
    # a model file's run id holds the file's content, which may change between calls: never cached
    ids = _twin_ids(c) if c.model_file is None else tuple(t.run_id for t in twin_configs(c))
    for rid in ids:
        rec = store.get(rid)
        if rec is not None:
            return rec
    return None


def twin_record(c: RunConfig, twin: dict) -> dict:
    """``c``'s record read from its twin's: the same numbers under ``c``'s id and config fields."""
    rec = {k: v for k, v in twin.items() if k not in ("a", "b", "twin_of")}
    rec.update(c.canonical(), run_id=c.run_id, twin_of=twin.get("twin_of") or twin["run_id"], seconds=0.0)
    return rec


def run_sweep(configs: list[RunConfig], store: RunStore | None, opts: TrainOptions | None = None,
              on_event: Callable[[dict], None] | None = None, cancel: threading.Event | None = None,
              on_record: Callable[[dict], None] | None = None, executor: str = "local",
              address: str | None = None) -> list[dict]:
    """Train every config the store does not hold yet; return all records (cached ones included).

    Records are returned in the order of ``configs``; each has ``cached`` True when it came from the store.
    ``on_event`` sees the trainer's events plus ``{"type": "chunk", ...}`` between ensembles.
    """
    cached, twins, chunks = _plan(configs, store)
    emit = on_event or (lambda e: None)
    if twins and not getattr(store, "readonly", False):  # a member another rule trained: stored, not retrained
        cached += [store.put_twin(c, tid) for c, tid, _rec in twins]
    else:
        cached += [rec for _c, _tid, rec in twins]
    by_id = {}
    for rec in cached:
        rec["cached"] = True
        by_id[rec["run_id"]] = rec
        if on_record:
            on_record(rec)
    if chunks:  # the CLI's first line: threads and the wait policy chosen at start (nothing outside the CLI)
        from ..core.threads import announce

        announce()
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
