"""The ensemble trainer: one batched model per width, per-member AdamW settings, live events.

``train_ensemble(configs)`` trains every config (same model, width, steps, data) as one ensemble and returns
one result dict per config.  Members whose loss goes non-finite or blows up are frozen and marked diverged;
the rest go on.  A ``cancel`` event stops early and the results are marked ``partial``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .config import (MAX_BATCH, MAX_DEPTH, MAX_MEMBERS, MAX_SEED, MAX_STEPS, MAX_WIDTH,  # noqa: F401 (re-exported)
                     MODEL_VERSIONS, MODELS, SCHEDULES, RunConfig, pick_device, validate_config)

MIN_SPECTRA_GAP = 50  # steps between default spectra snapshots, at least
SPECTRA_SNAPSHOTS = 10  # default snapshots per run (plus step 0): enough to see the spectrum settle

def lr_factor(cfg: RunConfig, step: int) -> float:
    """Schedule multiplier on every lr of a member at ``step`` (0-based).

    ``exp_warmup`` is Kosson et al.'s replacement for mu-P's implicit warmup: s_t = m^min(0, t/T_W - 1),
    rising from 1/m to 1 over T_W = warmup * steps (use it with the ``sp`` rule, no mu-P lr scaling)."""
    T = cfg.steps
    tw = cfg.warmup * T
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "exp_warmup":
        m = cfg.width / cfg.base_width
        return m ** min(0.0, step / tw - 1.0) if tw > 0 else 1.0
    warm = min(1.0, (step + 1) / tw) if tw > 0 else 1.0
    if cfg.schedule == "warmup":
        return warm
    # cosine: linear warmup, then cosine decay to 10% of the peak
    prog = 0.0 if T <= tw else max(0.0, (step - tw) / (T - tw))
    return warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))


def build(cfg: RunConfig, n_members: int, device: torch.device):
    """(model, data) for a config: data is an iterator of batches with a ``val`` attribute."""
    if cfg.model == "synthetic":
        from .synthetic import SyntheticConfig, SyntheticData, SyntheticFFN

        sc = SyntheticConfig()
        if cfg.batch_size:
            sc.batch_size = cfg.batch_size
        if cfg.depth:
            sc.depth = cfg.depth
        return SyntheticFFN(n_members, cfg.width, sc).to(device), SyntheticData(sc, cfg.data_seed, device)
    from . import transformer

    return transformer.build(cfg, n_members, device)


def eval_steps(steps: int, n: int = 8) -> list[int]:
    """Steps after which the validation loss is measured: n evenly spaced points, the last one = steps."""
    return sorted({max(1, round(steps * k / n)) for k in range(1, n + 1)})


@torch.no_grad()
def val_loss(model, data) -> torch.Tensor:
    val = data.val
    batches = val if isinstance(val, list) else [val]
    return torch.stack([model.loss(b) for b in batches]).mean(0)


@dataclass
class TrainOptions:
    device: str = "cpu"
    spectra_every: int | None = None  # None: SPECTRA_SNAPSHOTS per run, at least MIN_SPECTRA_GAP steps apart
    n_evals: int = 8
    blowup: float = 4.0  # a member whose loss exceeds blowup * its initial loss is diverged
    amp: bool = False  # bf16 autocast (CUDA)
    event_every: int | None = None
    callbacks: list = field(default_factory=list)  # f(step, model, batch, opt) -> None, after each step
    # Mid-ensemble checkpoints (weights, Adam moments, step, data order, histories): written every
    # checkpoint_seconds of wall time and on cancel, so kill -9 or a cancelled study resumes instead of restarting.
    # run_sweep puts them in <store>/checkpoints and deletes one once its runs are stored.
    checkpoint_dir: str | None = None
    checkpoint_seconds: float = field(default_factory=lambda: float(os.environ.get("WDSCALE_CHECKPOINT_SECONDS",
                                                                                  120)))


def checkpoint_path(directory, configs: list[RunConfig]) -> Path:
    """One file per ensemble, named by its members' run ids (order-free)."""
    key = hashlib.sha1(",".join(sorted(c.run_id for c in configs)).encode()).hexdigest()[:20]
    return Path(directory) / f"{key}.pt"


def _data_state(data) -> dict:
    return {"gen": data.gen.get_state(), "perm": getattr(data, "perm", None), "pos": getattr(data, "pos", 0)}


def _load_data_state(data, st: dict) -> None:
    data.gen.set_state(st["gen"])
    if hasattr(data, "perm"):
        data.perm = None if st["perm"] is None else st["perm"].to(data.train[0].device)
        data.pos = int(st["pos"])


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint, never a torn one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:  # a read-only or full store: training goes on, only the crash insurance is lost
        pass


def _load_checkpoint(path: Path, run_ids: list[str]) -> dict | None:
    """The checkpoint of this very ensemble, or None (missing, unreadable or of other members)."""
    if not path.is_file():
        return None
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception:
        return None
    return st if st.get("run_ids") == run_ids else None


def _twins(configs: list[RunConfig], resolved: list) -> list[int]:
    """For each config, the index of the first config that is the same member: same seeds and the same
    parametrization.  At the proxy width (m = 1) every mu-P rule resolves to the same numbers, so a demo's
    mup/wd/indep members there are one training run, stored under each rule's id."""
    first: dict = {}
    out = []
    for i, (c, r) in enumerate(zip(configs, resolved)):
        key = (c.seed, c.data_seed, c.schedule, c.warmup, r.readout_mult,
               tuple(sorted((k, g["lr"], g["wd"]) for k, g in r.groups.items())))
        out.append(first.setdefault(key, i))
    return out


def train_ensemble(configs: list[RunConfig], opts: TrainOptions | None = None,
                   on_event: Callable[[dict], None] | None = None,
                   cancel: threading.Event | None = None) -> list[dict]:
    """Train configs (one group_key) as one ensemble; return a result dict per config (same order).

    Configs that resolve to the very same member (see ``_twins``) are trained once."""
    opts = opts or TrainOptions()
    if len({c.group_key() for c in configs}) != 1:
        raise ValueError("configs of one ensemble must share model, width, steps, schedule and data")
    resolved_all = [c.resolved() for c in configs]
    twin = _twins(configs, resolved_all)
    uniq = sorted(set(twin))
    ckpt = checkpoint_path(opts.checkpoint_dir, configs) if opts.checkpoint_dir else None
    if len(uniq) < len(configs):
        slot = {j: k for k, j in enumerate(uniq)}
        res = _train_unique([configs[j] for j in uniq], opts, on_event, cancel, ckpt)
        out = []
        for c, r, t in zip(configs, resolved_all, twin):
            out.append({**res[slot[t]], "config": c, "run_id": c.run_id, "resolved": r})
        return out
    return _train_unique(configs, opts, on_event, cancel, ckpt)


def _train_unique(configs: list[RunConfig], opts: TrainOptions, on_event, cancel, ckpt: Path | None) -> list[dict]:
    emit = on_event or (lambda e: None)
    c0 = configs[0]
    E, steps = len(configs), c0.steps
    dev = pick_device(opts.device)
    model, data = build(c0, E, dev)
    resolved = [c.resolved() for c in configs]
    for i, (c, r) in enumerate(zip(configs, resolved)):
        model.init_member(i, c.seed, r)
    from .ensemble import EnsembleAdamW, singular_values

    opt = EnsembleAdamW(model, resolved)
    # A fixed, step-only cadence keeps stored spectra identical between reruns; the gap bounds the SVD cost of
    # short runs (a d=256 snapshot costs ~25 steps of training: 16 snapshots in 300 steps would be ~10%).
    spectra_every = opts.spectra_every or max(MIN_SPECTRA_GAP, steps // SPECTRA_SNAPSHOTS)
    event_every = opts.event_every or max(1, steps // 100)
    check_every = 1 if dev.type == "cpu" else 10  # a divergence check is a host sync
    evals = set(eval_steps(steps, opts.n_evals))
    constant = all(c.schedule == "constant" for c in configs)
    ones = torch.ones(E, dtype=torch.float64, device=dev)

    def factors(step):  # per step, never a (steps x members) table: steps may be large
        if constant:
            return ones
        return torch.tensor([lr_factor(c, step) for c in configs], dtype=torch.float64, device=dev)

    alive = torch.ones(E, dtype=torch.bool, device=dev)
    diverged_step = [None] * E
    loss_hist = torch.full((steps, E), float("nan"), device=dev)
    eval_hist: dict[int, list] = {}
    spectra = {"steps": [], **{n: [] for n in model.matrices()}}
    init_loss = None

    def snapshot(step):
        spectra["steps"].append(step)
        with torch.no_grad():
            for n, p in model.matrices().items():
                w = p.detach().float()
                ok = torch.isfinite(w).flatten(1).all(1)
                if bool(ok.all()):
                    sv = singular_values(w).cpu()
                else:  # a member with inf/NaN weights: no SVD (it would fail for all), and it is diverged
                    sv = torch.full((w.shape[0], min(w.shape[1:])), float("nan"))
                    if bool(ok.any()):
                        sv[ok.cpu()] = singular_values(w[ok]).cpu()
                    for i in torch.nonzero(~ok).flatten().tolist():
                        if diverged_step[i] is None:
                            diverged_step[i] = step
                    alive.logical_and_(ok)
                spectra[n].append(sv)
        emit({"type": "spectra", "width": c0.width, "step": step,
              "top_sv": {n: spectra[n][-1][:, 0].tolist() for n in model.matrices()}})

    run_ids = [c.run_id for c in configs]
    start = 0
    st = _load_checkpoint(ckpt, run_ids) if ckpt else None
    if st is not None:  # resume: everything a step depends on comes back, so the numbers equal an unbroken run
        start = int(st["step"])
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(st["params"][n])
            model.readout_mult.copy_(st["readout_mult"])
        opt.load_state(st["opt"])
        _load_data_state(data, st["data"])
        alive.copy_(st["alive"])
        diverged_step[:] = st["diverged_step"]
        init_loss = st["init_loss"]
        loss_hist[:start] = st["loss_hist"]
        eval_hist.update({int(k): v for k, v in st["evals"].items()})
        spectra.update({"steps": list(st["spectra"]["steps"]),
                        **{n: list(st["spectra"][n].unbind(0)) for n in model.matrices()}})

    def save_checkpoint(done_steps):
        _save_checkpoint(ckpt, {
            "run_ids": run_ids, "step": done_steps,
            "params": {n: p.detach().cpu() for n, p in model.named_parameters()},
            "readout_mult": model.readout_mult.detach().cpu(), "opt": opt.state(), "data": _data_state(data),
            "alive": alive.cpu(), "diverged_step": list(diverged_step), "init_loss": init_loss.cpu(),
            "loss_hist": loss_hist[:done_steps].cpu(), "evals": {str(k): v for k, v in eval_hist.items()},
            "spectra": {"steps": list(spectra["steps"]),
                        **{n: torch.stack(spectra[n]) for n in model.matrices()}}})

    emit({"type": "start", "width": c0.width, "n_members": E, "steps": steps, "run_ids": run_ids,
          "resumed_from": start})
    if st is None:
        snapshot(0)
    t0 = time.perf_counter()
    last_ckpt = t0
    done = start
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=opts.amp)
    for step in range(start, steps):
        if cancel is not None and cancel.is_set():
            if ckpt and done > start:
                save_checkpoint(done)  # before the partial snapshot below: a resume continues the cadence
            break
        batch = next(data)
        with autocast:
            loss = model.loss(batch).float()
        loss_hist[step] = loss.detach()
        if init_loss is None:
            init_loss = loss.detach().clone()
        if step % check_every == 0 or step == steps - 1:
            bad = alive & (~torch.isfinite(loss) | (loss > opts.blowup * init_loss))
            if bool(bad.any()):
                for i in torch.nonzero(bad).flatten().tolist():
                    diverged_step[i] = step
                alive &= ~bad
        torch.where(alive, loss, 0.0).sum().backward()
        opt.step(factors(step), alive)
        opt.zero_grad()
        for cb in opts.callbacks:
            cb(step, model, batch, opt)
        done = step + 1
        if done in evals:
            eval_hist[done] = val_loss(model, data).float().cpu().tolist()
        if done % spectra_every == 0 or done == steps:
            snapshot(done)
        if done % event_every == 0 or done == steps:
            el = time.perf_counter() - t0
            emit({"type": "step", "width": c0.width, "step": done, "steps": steps,
                  "loss": loss.detach().float().cpu().tolist(), "alive": alive.cpu().tolist(),
                  "elapsed": el, "eta": el / (done - start) * (steps - done)})
        if ckpt and done < steps and time.perf_counter() - last_ckpt >= opts.checkpoint_seconds:
            save_checkpoint(done)
            last_ckpt = time.perf_counter()
    partial = done < steps
    if partial and done > 0 and (not spectra["steps"] or spectra["steps"][-1] != done):
        snapshot(done)
    final_eval = val_loss(model, data).float().cpu().tolist() if done > 0 else [float("nan")] * E
    emit({"type": "cancelled" if partial else "done", "width": c0.width, "step": done})
    losses = loss_hist[:done].cpu()
    results = []
    for i, (c, r) in enumerate(zip(configs, resolved)):
        w = model.member_state(i)
        # The last snapshot is of the final weights (taken at done == steps, or on cancel): reuse it rather
        # than paying one more SVD per member and matrix.
        top_sv = {n: float(spectra[n][-1][i, 0]) for n in model.matrices()}
        div = diverged_step[i] is not None
        results.append({
            "config": c, "run_id": c.run_id, "status": "partial" if partial else "done", "steps_done": done,
            "final_loss": float("nan") if div else final_eval[i], "train_loss": losses[:, i].tolist(),
            "diverged": div, "diverged_step": diverged_step[i],
            "evals": {s: v[i] for s, v in eval_hist.items()},
            "spectra": {"steps": list(spectra["steps"]),
                        **{n: torch.stack([s[i] for s in spectra[n]]).numpy() for n in model.matrices()}},
            "weights": w, "top_sv": top_sv, "param_class": dict(model.param_class),
            "resolved": r, "seconds": time.perf_counter() - t0,
        })
    return results


def synthetic_memory_estimate(cfg: RunConfig, n_members: int) -> int:
    """Bytes for a synthetic ensemble: fp32 params + grads + two Adam moments, the activations kept for backward
    (a dozen width-d vectors per block and example) and the loss history (steps x members)."""
    from .synthetic import SyntheticConfig

    sc = SyntheticConfig()
    d, depth = cfg.width, cfg.depth or sc.depth
    batch = cfg.batch_size or sc.batch_size
    params = getattr(sc, "d_in", 256) * d + 2 * depth * d * d + getattr(sc, "d_out", 8) * d + (2 * depth + 1) * d
    act = batch * d * (12 * depth + 4)
    return n_members * (16 * params + 4 * act + 4 * cfg.steps)


def preflight(configs: list[RunConfig], device: str = "cpu") -> None:
    """Checks that need no training: the device exists, the corpus reads, the model fits in memory."""
    dev = pick_device(device)
    syn = [c for c in configs if c.model == "synthetic"]
    if syn:
        from .transformer import available_memory

        groups: dict = {}
        for c in syn:
            groups.setdefault(c.group_key(), []).append(c)
        avail = available_memory(dev)
        for group in groups.values():
            c, E = group[0], min(len(group), MAX_MEMBERS)
            need = synthetic_memory_estimate(c, E)
            if need > 0.9 * avail:
                raise ValueError(f"synthetic width {c.width} (depth {c.depth or 'default'}) x {E} members needs "
                                 f"~{need / 2**30:.1f} GiB but {dev.type} has {avail / 2**30:.1f} GiB free; use "
                                 "smaller widths, depth or batch, or fewer members")
    if any(c.model == "transformer" for c in configs):
        from . import transformer

        transformer.preflight([c for c in configs if c.model == "transformer"], device)
