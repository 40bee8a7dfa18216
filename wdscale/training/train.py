"""The ensemble trainer: one batched model per width, per-member AdamW settings, live events.

``train_ensemble(configs)`` trains every config (same model, width, steps, data) as one ensemble and returns
one result dict per config.  Members whose loss goes non-finite or blows up are frozen and marked diverged;
the rest go on.  A ``cancel`` event stops early and the results are marked ``partial``.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core.files import atomic_save
from ..models.config import (MAX_BATCH, MAX_DEPTH, MAX_MEMBERS, MAX_SEED, MAX_STEPS, MAX_WIDTH,  # noqa: F401 (re-exported)
                     MODEL_VERSIONS, MODELS, SCHEDULES, RunConfig, check_fits, lr_factor, pick_device,
                     schedule_sum, validate_config)

from ..models.config import MIN_SPECTRA_GAP, SPECTRA_SNAPSHOTS, eval_steps  # noqa: E402,F401 (one cadence for every trainer)

def build(cfg: RunConfig, n_members: int, device: torch.device):
    """(model, data) for a config: data is an iterator of batches with a ``val`` attribute."""
    if cfg.model == "synthetic":
        from ..models.synthetic import SyntheticConfig, SyntheticData, SyntheticFFN

        sc = SyntheticConfig()
        if cfg.batch_size:
            sc.batch_size = cfg.batch_size
        if cfg.depth:
            sc.depth = cfg.depth
        return SyntheticFFN(n_members, cfg.width, sc).to(device), SyntheticData(sc, cfg.data_seed, device)
    from ..models import transformer

    return transformer.build(cfg, n_members, device)


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
    amp: bool = False  # bf16 autocast; weights, gradients and Adam moments stay fp32 (the master copy)
    # torch.compile of the training loss (forward and its backward).  Opt-in: on the CPU the LM study gains ~4%
    # including the cold compiles, within noise (docs/gpu/gpu_check.md); kernels are cached on disk for later runs.
    compile: bool = False
    compile_mode: str | None = None  # None: "reduce-overhead" (CUDA graphs) on CUDA, inductor's default elsewhere
    event_every: int | None = None
    callbacks: list = field(default_factory=list)  # f(step, model, batch, opt) -> None, after each step
    # Mid-ensemble checkpoints (weights, Adam moments, step, data order, histories): written every
    # checkpoint_seconds of wall time and on cancel, so kill -9 or a cancelled study resumes instead of restarting.
    # run_sweep puts them in <store>/checkpoints and deletes one once its runs are stored.
    checkpoint_dir: str | None = None
    members: str = "auto"  # model files (wdscale.models.own): "loop", "batched" (torch.func) or "auto" (measured here)
    checkpoint_seconds: float = field(default_factory=lambda: float(os.environ.get("WDSCALE_CHECKPOINT_SECONDS",
                                                                                  120)))


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_USER_INDUCTOR_DIR = os.environ.get("TORCHINDUCTOR_CACHE_DIR")  # a user's own choice wins over ours


def inductor_cache() -> Path:
    """Point torch.compile's on-disk caches (FX graphs, autograd graphs, generated kernels) into the wdscale
    cache, so the cold compile is paid once per machine and torch version, not once per run."""
    from ..models.data import cache_dir

    path = _USER_INDUCTOR_DIR or str(cache_dir() / "inductor")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
    os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # the env var is only read when torch._inductor is first imported
    return Path(path)


def compile_mode(opts: "TrainOptions", dev: torch.device) -> str:
    mode = opts.compile_mode or ("reduce-overhead" if dev.type == "cuda" else "default")
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; use one of {', '.join(COMPILE_MODES)}")
    return mode


def compiled_loss(model, mode: str):
    """``model.loss`` through torch.compile.  The model itself stays eager: evals, the spectra and callbacks
    that attach hooks (kosson, diagnostics) call it directly, so measurement never sees compiled code."""
    inductor_cache()
    # Each ensemble size is its own graph (the member dim is static).  Past dynamo's recompile limit (8) a study
    # or a long-lived app would silently fall back to eager; the shapes of a study are few, so allow more.
    import torch._dynamo.config as dynamo_config

    for knob in ("recompile_limit", "cache_size_limit"):  # the name changed across torch versions
        if hasattr(dynamo_config, knob):
            setattr(dynamo_config, knob, max(64, getattr(dynamo_config, knob)))
    return torch.compile(model.loss, mode=mode, dynamic=False)


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
               tuple(sorted((k, tuple(sorted(g.items()))) for k, g in r.groups.items())))  # every per-class number
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
    resolved = [c.resolved() for c in configs]
    twin = _twins(configs, resolved)
    uniq = sorted(set(twin))
    slot = {j: k for k, j in enumerate(uniq)}
    if configs[0].model_file is not None:  # a user's model file: its own trainer (loop or torch.func members)
        from ..models.own import train_members

        ckpt = checkpoint_path(opts.checkpoint_dir, configs) if opts.checkpoint_dir else None
        res = train_members([configs[j] for j in uniq], opts, on_event, cancel, ckpt)
    else:
        ckpt = checkpoint_path(opts.checkpoint_dir, configs) if opts.checkpoint_dir else None
        run = _EnsembleRun([configs[j] for j in uniq], opts, on_event or (lambda e: None), ckpt)
        res = run.results(run.loop(cancel))
    return [{**res[slot[t]], "config": c, "run_id": c.run_id, "resolved": r}
            for c, r, t in zip(configs, resolved, twin)]


class _EnsembleRun:
    """One ensemble's training state: model, optimizer, data, histories, spectra; each method one concern."""

    def __init__(self, configs: list[RunConfig], opts: TrainOptions, emit, ckpt: Path | None):
        from ..models.ensemble import EnsembleAdamW

        self.configs, self.opts, self.emit, self.ckpt = configs, opts, emit, ckpt
        c0 = configs[0]
        self.E, self.steps, self.width = len(configs), c0.steps, c0.width
        self.dev = pick_device(opts.device)
        self.model, self.data = build(c0, self.E, self.dev)
        self.resolved = [c.resolved() for c in configs]
        for i, (c, r) in enumerate(zip(configs, self.resolved)):
            self.model.init_member(i, c.seed, r)
        self.opt = EnsembleAdamW(self.model, self.resolved)
        self.loss_fn, self.graphs = self.model.loss, False
        if opts.compile:
            mode = compile_mode(opts, self.dev)
            self.loss_fn = compiled_loss(self.model, mode)
            self.graphs = self.dev.type == "cuda" and "no-cudagraphs" not in mode and mode != "default"
        # A fixed, step-only cadence keeps stored spectra identical between reruns and resumes.
        self.spectra_every = opts.spectra_every or max(MIN_SPECTRA_GAP, self.steps // SPECTRA_SNAPSHOTS)
        self.event_every = opts.event_every or max(1, self.steps // 100)
        self.check_every = 1 if self.dev.type == "cpu" else 10  # a divergence check is a host sync
        self.evals = set(eval_steps(self.steps, opts.n_evals))
        self.constant = all(c.schedule == "constant" for c in configs)
        self.ones = torch.ones(self.E, dtype=torch.float64, device=self.dev)
        self.alive = torch.ones(self.E, dtype=torch.bool, device=self.dev)
        self.diverged_step: list = [None] * self.E
        self.loss_hist = torch.full((self.steps, self.E), float("nan"), device=self.dev)
        self.eval_hist: dict[int, list] = {}
        self.spectra = {"steps": [], **{n: [] for n in self.model.matrices()}}
        self.init_loss = None
        self.run_ids = [c.run_id for c in configs]
        self.t0 = time.perf_counter()

    def factors(self, step: int) -> torch.Tensor:
        """Per step, never a (steps x members) table: steps may be large."""
        if self.constant:
            return self.ones
        return torch.tensor([lr_factor(c, step) for c in self.configs], dtype=torch.float64, device=self.dev)

    @torch.no_grad()
    def snapshot(self, step: int) -> None:
        from ..models.ensemble import singular_values

        self.spectra["steps"].append(step)
        for n, p in self.model.matrices().items():
            w = p.detach().float()
            ok = torch.isfinite(w).flatten(1).all(1)
            if bool(ok.all()):
                sv = singular_values(w).cpu()
            else:  # a member with inf/NaN weights: no SVD (it would fail for all), and it is diverged
                sv = torch.full((w.shape[0], min(w.shape[1:])), float("nan"))
                if bool(ok.any()):
                    sv[ok.cpu()] = singular_values(w[ok]).cpu()
                for i in torch.nonzero(~ok).flatten().tolist():
                    if self.diverged_step[i] is None:
                        self.diverged_step[i] = step
                self.alive.logical_and_(ok)
            self.spectra[n].append(sv)
        self.emit({"type": "spectra", "width": self.width, "step": step,
                   "top_sv": {n: self.spectra[n][-1][:, 0].tolist() for n in self.model.matrices()}})

    def resume(self) -> int:
        """Load this ensemble's checkpoint if there is one; the step to start from.  Everything a step depends on
        comes back, so the numbers equal those of an unbroken run."""
        st = _load_checkpoint(self.ckpt, self.run_ids) if self.ckpt else None
        if st is None:
            return 0
        start = int(st["step"])
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                p.copy_(st["params"][n])
            self.model.readout_mult.copy_(st["readout_mult"])
        self.opt.load_state(st["opt"])
        _load_data_state(self.data, st["data"])
        self.alive.copy_(st["alive"])
        self.diverged_step[:] = st["diverged_step"]
        self.init_loss = st["init_loss"]
        self.loss_hist[:start] = st["loss_hist"]
        self.eval_hist.update({int(k): v for k, v in st["evals"].items()})
        self.spectra.update({"steps": list(st["spectra"]["steps"]),
                             **{n: list(st["spectra"][n].unbind(0)) for n in self.model.matrices()}})
        return start

    def save(self, done: int) -> None:
        m = self.model
        atomic_save(self.ckpt, {
            "run_ids": self.run_ids, "step": done,
            "params": {n: p.detach().cpu() for n, p in m.named_parameters()},
            "readout_mult": m.readout_mult.detach().cpu(), "opt": self.opt.state(), "data": _data_state(self.data),
            "alive": self.alive.cpu(), "diverged_step": list(self.diverged_step), "init_loss": self.init_loss.cpu(),
            "loss_hist": self.loss_hist[:done].cpu(), "evals": {str(k): v for k, v in self.eval_hist.items()},
            "spectra": {"steps": list(self.spectra["steps"]),
                        **{n: torch.stack(self.spectra[n]) for n in m.matrices()}}})

    def train_step(self, step: int, autocast) -> torch.Tensor:
        batch = next(self.data)
        if self.graphs:  # CUDA graphs: the previous step's outputs are consumed, their memory may be reused
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            loss = self.loss_fn(batch).float()
        self.loss_hist[step] = loss.detach()
        if self.init_loss is None:
            self.init_loss = loss.detach().clone()
        if step % self.check_every == 0 or step == self.steps - 1:
            bad = self.alive & (~torch.isfinite(loss) | (loss > self.opts.blowup * self.init_loss))
            if bool(bad.any()):
                for i in torch.nonzero(bad).flatten().tolist():
                    self.diverged_step[i] = step
                self.alive &= ~bad
        torch.where(self.alive, loss, 0.0).sum().backward()
        self.opt.step(self.factors(step), self.alive)
        self.opt.zero_grad()
        for cb in self.opts.callbacks:
            cb(step, self.model, batch, self.opt)
        return loss

    def loop(self, cancel) -> int:
        """Train from the checkpoint (or step 0) to the end or to a cancel; the number of steps done."""
        start = self.resume()
        self.emit({"type": "start", "width": self.width, "n_members": self.E, "steps": self.steps,
                   "run_ids": self.run_ids, "resumed_from": start})
        if start == 0:
            self.snapshot(0)
        self.t0 = last_ckpt = time.perf_counter()
        done = start
        autocast = torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.opts.amp)
        for step in range(start, self.steps):
            if cancel is not None and cancel.is_set():
                if self.ckpt and done > start:
                    self.save(done)  # before the partial snapshot in results(): a resume keeps the cadence
                break
            loss = self.train_step(step, autocast)
            done = step + 1
            self.after_step(done, start, loss)
            if self.ckpt and done < self.steps and time.perf_counter() - last_ckpt >= self.opts.checkpoint_seconds:
                self.save(done)
                last_ckpt = time.perf_counter()
        return done

    def after_step(self, done: int, start: int, loss: torch.Tensor) -> None:
        if done in self.evals:
            self.eval_hist[done] = val_loss(self.model, self.data).float().cpu().tolist()
        if done % self.spectra_every == 0 or done == self.steps:
            self.snapshot(done)
        if done % self.event_every == 0 or done == self.steps:
            el = time.perf_counter() - self.t0
            self.emit({"type": "step", "width": self.width, "step": done, "steps": self.steps,
                       "loss": loss.detach().float().cpu().tolist(), "alive": self.alive.cpu().tolist(),
                       "elapsed": el, "eta": el / (done - start) * (self.steps - done)})

    def results(self, done: int) -> list[dict]:
        partial = done < self.steps
        sp = self.spectra
        if partial and done > 0 and (not sp["steps"] or sp["steps"][-1] != done):
            self.snapshot(done)
        final_eval = val_loss(self.model, self.data).float().cpu().tolist() if done > 0 else [float("nan")] * self.E
        self.emit({"type": "cancelled" if partial else "done", "width": self.width, "step": done})
        losses = self.loss_hist[:done].cpu()
        mats = self.model.matrices()
        out = []
        for i, (c, r) in enumerate(zip(self.configs, self.resolved)):
            div = self.diverged_step[i] is not None
            out.append({
                "config": c, "run_id": c.run_id, "status": "partial" if partial else "done", "steps_done": done,
                "final_loss": float("nan") if div else final_eval[i], "train_loss": losses[:, i].tolist(),
                "diverged": div, "diverged_step": self.diverged_step[i],
                "evals": {s: v[i] for s, v in self.eval_hist.items()},
                "spectra": {"steps": list(sp["steps"]),
                            **{n: torch.stack([s[i] for s in sp[n]]).numpy() for n in mats}},
                # the last snapshot is of the final weights: no extra SVD per member and matrix
                "weights": self.model.member_state(i), "top_sv": {n: float(sp[n][-1][i, 0]) for n in mats},
                "param_class": dict(self.model.param_class), "resolved": r, "seconds": time.perf_counter() - self.t0,
            })
        return out


def synthetic_memory_estimate(cfg: RunConfig, n_members: int) -> int:
    """Bytes for a synthetic ensemble: fp32 params + grads + two Adam moments, the activations kept for backward
    (a dozen width-d vectors per block and example) and the loss history (steps x members)."""
    from ..models.synthetic import SyntheticConfig

    sc = SyntheticConfig()
    d, depth = cfg.width, cfg.depth or sc.depth
    batch = cfg.batch_size or sc.batch_size
    params = getattr(sc, "d_in", 256) * d + 2 * depth * d * d + getattr(sc, "d_out", 8) * d + (2 * depth + 1) * d
    act = batch * d * (12 * depth + 4)
    return n_members * (16 * params + 4 * act + 4 * cfg.steps)


def preflight(configs: list[RunConfig], device: str = "cpu") -> None:
    """Checks that need no training: the device exists, the corpus reads, the model fits in memory."""
    dev = pick_device(device)
    own = [c for c in configs if c.model_file is not None]
    if own:
        from ..models.own import preflight as own_preflight

        own_preflight(own)
        configs = [c for c in configs if c.model_file is None]
    syn = [c for c in configs if c.model == "synthetic"]
    if syn:
        from ..models.transformer import available_memory

        check_fits(syn, synthetic_memory_estimate, available_memory(dev), dev.type,
                   lambda c: f"synthetic width {c.width} (depth {c.depth or 'default'})",
                   "use smaller widths, depth or batch, or fewer members")
    if any(c.model == "transformer" for c in configs):
        from ..models import transformer

        transformer.preflight([c for c in configs if c.model == "transformer"], device)
