"""Diagnostics on real activations: sublayer gains of stored runs, and mu-P coordinate checks.

* ``sublayer_gains(store, records)``: rebuild each stored run as a one-member model, load its final weights,
  push a validation batch through it and measure, per matrix W with input x, the gain RMS(W x) / RMS(x)
  (Fan et al.'s sublayer gain) next to sigma_top(W).  If sigma_top grows with width, so does the gain: that is
  what lam ~ sqrt(d) is meant to stop.
* ``coord_check(...)``: the microsoft/mup coordinate check.  Train a few Adam steps at several widths and record
  the RMS of every module's output after each step.  Under SP the RMS grows with width after the first update
  (an Adam step moves each entry by ~eta, so W x moves by ~eta * d); under mu-P it stays flat.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..models.ensemble import activations
from ..core.rules import resolve


def _rms(t: torch.Tensor) -> torch.Tensor:
    """RMS per member over everything but the leading member dim."""
    t = t.detach().float()
    return t.pow(2).reshape(t.shape[0], -1).mean(1).sqrt()


def config_from_record(rec: dict):
    from ..models.config import RunConfig

    names = {f.name for f in dataclasses.fields(RunConfig)}
    return RunConfig(**{k: rec[k] for k in names if k in rec})


def _inputs(batch):
    """The model's input in a batch: transformer token windows (B, T+1), or synthetic (x, y)."""
    return batch[:, :-1] if isinstance(batch, torch.Tensor) else batch[0]


def _activations_on(model, batch) -> dict:
    with torch.no_grad(), activations(model) as seen:
        model(_inputs(batch))
    return seen


def sublayer_gains(store, records: list[dict], device: str = "cpu") -> list[dict]:
    """Per run and matrix: gain = RMS(W x)/RMS(x) on a validation batch, and top_sv = sigma_top(W).

    Works for synthetic and transformer records.  Embedding rows are looked up, not multiplied: its input is
    a one-hot vector (RMS 1/sqrt(vocab)), so its gain is RMS(row) * sqrt(vocab).  Diverged runs and runs
    without stored weights are skipped."""
    from ..training.train import build

    out = []
    for rec in records:
        if rec.get("diverged") or not rec.get("weights"):
            continue
        cfg = config_from_record(rec)
        model, data = build(cfg, 1, torch.device(device))
        model.init_member(0, cfg.seed, cfg.resolved())
        weights = store.weights(rec["run_id"])
        model.load_member(0, weights)
        val = data.val[0] if isinstance(data.val, list) else data.val
        mats = model.matrices()
        for name, (x, y) in _activations_on(model, val).items():
            if name not in mats:
                continue
            w = weights[name].float()
            if x.dtype in (torch.int64, torch.int32, torch.uint8):
                rms_in = 1.0 / math.sqrt(w.shape[0])  # one-hot over the vocab
            else:
                rms_in = float(_rms(x)[0])
            rms_out = float(_rms(y)[0])
            out.append({"run_id": rec["run_id"], "model": rec["model"], "rule": rec["rule"], "width": rec["width"],
                        "lr": rec["lr"], "wd": rec["wd"], "param": name, "param_class": model.param_class[name],
                        "gain": rms_out / rms_in, "rms_in": rms_in, "rms_out": rms_out,
                        "top_sv": float(torch.linalg.svdvals(w)[0])})
    return out


def coord_check(model: str = "synthetic", widths=(64, 128, 256), rules=("sp", "mup"), steps: int = 4,
                lr: float = 1e-2, wd: float = 0.0, base_width: int = 64, seed: int = 0, modules=None,
                batch_size: int | None = None, seq_len: int = 32, depth: int | None = None,
                head_dim: int = 16) -> list[dict]:
    """RMS of every module's output at each width, after 0..steps Adam updates (microsoft/mup's coord check).

    All rules at one width train together as one ensemble (same init seed and batches).  Returns rows
    dict(model, rule, width, step, module, rms); ``modules`` (names or prefixes) keeps only those.
    Modules (``ensemble.activations``): synthetic ``w_in``, ``w1_{l}``, ``w2_{l}``, ``w_out`` (before the 1/m
    multiplier), ``logits``; transformer ``emb``, ``l{i}_wq`` ... ``l{i}_w2``, ``l{i}_block`` (residual stream after
    block i), ``readout`` (before the 1/m multiplier), ``logits``.
    Defaults keep a transformer check to a few seconds on a CPU (seq_len 32, batch 8, head_dim 16).
    ``model`` may be a model file (path.py): then ``wdscale.models.own.coord_check`` measures the user's own modules."""
    if str(model).endswith(".py"):
        from ..models.own import coord_check as own_coord_check

        return own_coord_check(model, widths, rules, steps, lr, wd, base_width, seed, modules=modules)
    from ..models.ensemble import EnsembleAdamW
    from ..training.train import RunConfig, build

    rules = list(rules)
    rows = []
    for width in widths:
        kw = dict(model=model, width=int(width), base_width=int(base_width), lr=float(lr), wd=float(wd),
                  steps=int(steps), seed=int(seed), depth=depth)
        if model == "transformer":
            kw.update(seq_len=seq_len, head_dim=head_dim, batch_size=batch_size or 8)
        else:
            kw.update(batch_size=batch_size)
        cfgs = [RunConfig(rule=r, **kw) for r in rules]
        net, data = build(cfgs[0], len(rules), torch.device("cpu"))
        resolved = [resolve(r, int(width), int(base_width), float(lr), float(wd)) for r in rules]
        for i, res in enumerate(resolved):
            net.init_member(i, seed, res)
        opt = EnsembleAdamW(net, resolved)
        probe = next(data)  # fixed batch for the measurements; training batches follow it
        one = torch.ones(len(rules), dtype=torch.float64)
        alive = torch.ones(len(rules), dtype=torch.bool)
        for step in range(steps + 1):
            for name, (_, y) in _activations_on(net, probe).items():
                if modules and not any(name == m or name.startswith(m) for m in modules):
                    continue
                for i, r in enumerate(rules):
                    rows.append({"model": model, "rule": r, "width": int(width), "step": step, "module": name,
                                 "rms": float(_rms(y)[i])})
            if step == steps:
                break
            net.loss(next(data)).sum().backward()
            opt.step(one, alive)
            opt.zero_grad()
    return rows


