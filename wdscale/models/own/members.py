"""The two ways members train, and the measured choice between them.

``loop``: each member its own module and torch AdamW, stepped in turn on the same batch (literally the plain loop).
``batched``: torch.func, ``stack_module_state`` + ``vmap`` over the members, per-member AdamW on the stacked tensors.
Both expose the same small interface (step, val_losses, state/load, stacked_matrices, member_state, close), so the
trainer (``train``) never asks which one runs.  ``choose_path`` times a few steps of each on the machine at hand and
caches the choice; a model vmap cannot batch falls back to ``loop`` with a one-line notice.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ...core.errors import BadInput
from .mup import Member, check_loss
from .modelfile import ModelFile, _exc_line, _next_batch, batches_of

PATHS = ("auto", "loop", "batched")
BATCHED_MIN_SPEEDUP = 1.2  # adopt the batched path only where it is measured at least this much faster
PROBE_STEPS = 3  # timed steps per path when choosing (after one untimed warm-up step)


class _LoopPath:
    """Each member its own module and torch AdamW; members stepped in turn on the same batch."""

    name = "loop"

    def __init__(self, mf, configs, overrides, device):
        self.mf = mf
        self.members = [Member(mf, c, overrides, device) for c in configs]
        self.cls_of = self.members[0].cls_of

    def step(self, batch, factors: list[float], alive: list[bool]) -> list[float]:
        losses = []
        for mem, f, ok in zip(self.members, factors, alive):
            if not ok:
                losses.append(float("nan"))
                continue
            torch.set_rng_state(mem.rng)  # this member's own stream (dropout), as if trained alone
            mem.set_lr_factor(f)
            loss = self.mf.loss(mem.model, batch)
            if not torch.is_tensor(loss) or loss.numel() != 1:
                check_loss(self.mf, loss, "a training step")
            loss = loss.reshape(())
            lv = float(loss.detach())
            if math.isfinite(lv):
                loss.backward()
                mem.opt.step()
            mem.opt.zero_grad(set_to_none=True)
            mem.rng = torch.get_rng_state()
            losses.append(lv)
        return losses

    @torch.no_grad()
    def val_losses(self, val: list) -> list[float]:
        out = []
        for mem in self.members:
            mem.model.eval()
            out.append(float(np.mean([float(self.mf.loss(mem.model, b)) for b in val])))
            mem.model.train()
        return out

    def state(self) -> dict:
        """What a resume needs: each member's weights, AdamW state and RNG stream."""
        return {"members": [{"model": m.model.state_dict(), "opt": m.opt.state_dict(), "rng": m.rng}
                            for m in self.members]}

    def load(self, st: dict) -> None:
        for m, s in zip(self.members, st["members"]):
            m.model.load_state_dict(s["model"])
            m.opt.load_state_dict(s["opt"])
            m.rng = s["rng"]

    def stacked_matrices(self) -> dict[str, torch.Tensor]:
        names = list(self.members[0].matrices())
        return {n: torch.stack([dict(m.model.named_parameters())[n].detach() for m in self.members]) for n in names}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", torch.float32).clone() for n, p in self.members[i].model.named_parameters()}

    def close(self):
        for m in self.members:
            for h in m.hooks:
                h.remove()


class _StackedParams:
    """What ``EnsembleAdamW`` reads of a model: stacked (E, ...) parameters by name and their classes."""

    def __init__(self, params: dict, cls_of: dict):
        self._p, self.param_class = params, cls_of

    def named_parameters(self):
        return iter(self._p.items())

    def parameters(self):
        return iter(self._p.values())


class _BatchedPath:
    """torch.func: the members' weights stacked on a leading dim, one vmapped forward and backward for all of
    them, per-member AdamW on the stacked tensors (the same maths as torch.optim.AdamW)."""

    name = "batched"

    def __init__(self, mf, configs, overrides, device):
        from torch.func import stack_module_state

        from ..ensemble import EnsembleAdamW

        self.mf = mf
        members = [Member(mf, c, overrides, device) for c in configs]
        self.base = members[0].model  # its own tensors are swapped out for the stacked ones in each call
        for m in members[1:]:
            for h in m.hooks:
                h.remove()
        self.mult = members[0].mult
        self.mults = torch.tensor([m.mult.value for m in members], dtype=torch.float32, device=device)
        params, buffers = stack_module_state([m.model for m in members])
        self.params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self.names = [n for n, _ in self.base.named_parameters()]
        self.cls_of = members[0].cls_of
        self.opt = EnsembleAdamW(_StackedParams(self.params, self.cls_of), [m.res for m in members])
        self.E = len(members)
        self.hooks = members[0].hooks
        self._fn = torch.func.vmap(self._member_loss, in_dims=(0, 0, 0, None), randomness="error")

    def _member_loss(self, params, buffers, mult, batch):
        from torch.nn.utils.stateless import _reparametrize_module

        self.mult.value = mult
        try:
            with _reparametrize_module(self.base, {**params, **buffers}, tie_weights=True):
                return self.mf.loss(self.base, batch).reshape(())
        finally:
            self.mult.value = 1.0

    def step(self, batch, factors: list[float], alive: list[bool]) -> list[float]:
        losses = self._fn(self.params, self.buffers, self.mults, batch)
        live = torch.tensor(alive, dtype=torch.bool)
        fin = torch.isfinite(losses.detach())
        ok = live & fin
        torch.where(ok, losses, torch.zeros_like(losses)).sum().backward()
        self.opt.step(torch.tensor(factors, dtype=torch.float64), ok)
        self.opt.zero_grad()
        return [float(x) if a else float("nan") for x, a in zip(losses.detach().tolist(), alive)]

    @torch.no_grad()
    def val_losses(self, val: list) -> list[float]:
        self.base.eval()
        try:
            per = torch.stack([self._fn(self.params, self.buffers, self.mults, b) for b in val])
        finally:
            self.base.train()
        return per.mean(0).tolist()

    def state(self) -> dict:
        return {"params": {n: p.detach() for n, p in self.params.items()}, "buffers": dict(self.buffers),
                "opt": self.opt.state()}

    @torch.no_grad()
    def load(self, st: dict) -> None:
        for n, p in self.params.items():
            p.copy_(st["params"][n])
        for n, b in self.buffers.items():
            b.copy_(st["buffers"][n])
        self.opt.load_state(st["opt"])

    def stacked_matrices(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.params.items() if p.ndim == 3}

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        return {n: self.params[n][i].detach().to("cpu", torch.float32).clone() for n in self.names}

    def close(self):
        for h in self.hooks:
            h.remove()


def _make_path(kind: str, mf, configs, overrides, device):
    return (_BatchedPath if kind == "batched" else _LoopPath)(mf, configs, overrides, device)


def _path_cache() -> Path:
    from ..data import cache_dir

    return cache_dir() / "own_paths.json"


def _path_key(mf, configs, device) -> str:
    c = configs[0]
    return (f"{mf.sha256[:16]}|w{c.width}|E{len(configs)}|{device}|torch {torch.__version__}|"
            f"threads {torch.get_num_threads()}")


def measure_paths(mf: ModelFile, configs: list, overrides: dict, device, steps: int = PROBE_STEPS) -> dict:
    """Seconds per step of each path on fresh copies of these members (thrown away after), and why the batched
    path cannot run, if it cannot.  One untimed warm-up step each."""
    it = batches_of(mf, configs[0].data_seed)
    batches = [_next_batch(mf, it, configs[0].data_seed, k) for k in range(steps + 1)]
    out = {"loop": None, "batched": None, "batched_error": None}
    ones, alive = [1.0] * len(configs), [True] * len(configs)
    for kind in ("loop", "batched"):
        with torch.random.fork_rng(devices=[]):
            try:
                path = _make_path(kind, mf, configs, overrides, device)
                path.step(batches[0], ones, alive)
                t0 = time.perf_counter()
                for b in batches[1:]:
                    path.step(b, ones, alive)
                out[kind] = (time.perf_counter() - t0) / steps
                path.close()
            except BadInput:
                raise
            except Exception as e:  # noqa: BLE001 (no batching rule, random ops, in-place buffers, ...)
                if kind == "loop":
                    raise
                out["batched_error"] = _exc_line(e)
    return out


def choose_path(mf: ModelFile, configs: list, overrides: dict, device, how: str = "auto",
                emit=lambda e: None) -> tuple[str, str]:
    """(path, one-line reason).  ``how``: ``loop``, ``batched`` or ``auto`` (time a few steps of each here, adopt
    batched where it is >= BATCHED_MIN_SPEEDUP x faster; the choice is cached per file, width, members, device,
    torch and threads)."""
    if how not in PATHS:
        raise BadInput(f"unknown member path {how!r}; choose from {', '.join(PATHS)}")
    if how == "loop":
        emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: one member at "
                                        "a time (asked for)"})
        return "loop", "one member at a time (asked for)"
    key = _path_key(mf, configs, device)
    cache = _path_cache()
    try:
        known = json.loads(cache.read_text()) if cache.is_file() else {}
    except (OSError, ValueError):
        known = {}
    if how == "auto" and key in known:
        k = known[key]
        emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: "
                                        f"{k['reason']} (cached choice)"})
        return k["path"], k["reason"] + " (cached choice)"
    t = measure_paths(mf, configs, overrides, device)
    if t["batched"] is None:
        if how == "batched":
            raise BadInput(f"{mf.name}: the batched path cannot run this model ({t['batched_error']}); use --members "
                           "loop")
        path, reason = "loop", f"one member at a time: vmap cannot batch this model ({t['batched_error']})"
    else:
        speedup = t["loop"] / t["batched"]
        if how == "batched":
            path = "batched"
        else:
            path = "batched" if speedup >= BATCHED_MIN_SPEEDUP else "loop"
        reason = (f"{'batched (torch.func vmap)' if path == 'batched' else 'one member at a time'}: measured "
                  f"{t['loop'] * 1e3:.1f} ms/step looped vs {t['batched'] * 1e3:.1f} ms batched for {len(configs)} "
                  f"members (batched x{speedup:.2f}; adopted at >= x{BATCHED_MIN_SPEEDUP})")
    emit({"type": "notice", "text": f"{mf.name} width {configs[0].width}, {len(configs)} members: {reason}"})
    if how == "auto":
        known[key] = {"path": path, "reason": reason, "loop_s": t["loop"], "batched_s": t["batched"]}
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(known, indent=1))
            os.replace(tmp, cache)
        except OSError:
            pass
    return path, reason
