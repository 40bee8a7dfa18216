"""The Kosson et al. (arXiv 2510.19093) lens: measures of how updates act on representations during training.

For a matrix W (out x C, C = fan-in) with input X (rows = samples) and output Y = X W^T, one optimizer step
changes W by dW (AdamW: the Adam step *and* the decay -lr*wd*W).  Per matrix and ensemble member:

* relative update          ||dW|| / ||W||
* relative repr. change    ||dY|| / ||Y||,   dY = X dW^T
* update alignment         alpha_dW = ||X dW^T|| / (||dW|| ||X||)
* weight alignment         alpha_W  = ||X W^T|| / (||W|| ||X||)
* their ratio              alpha_dW / alpha_W, so ||dY||/||Y|| = ratio * ||dW||/||W|| exactly.

All norms are Frobenius.  A random W against random high-dimensional X gives alpha ~ 1/sqrt(C); an update
aligned with the inputs (a rank-1 gradient step on one sample) gives alpha = 1.  mu-P's lr scaling assumes
alpha_dW / alpha_W ~ sqrt(C) throughout; Kosson et al. report it falls towards 1 early in training, after
which weight decay, not mu-P, sets the relative update size (science.md).  Here W is the weight *before* the
step and X the layer input on the step's batch (read with the updated upstream weights).
"""
from __future__ import annotations

import dataclasses

import torch

from ..models.ensemble import activations

FIELDS = ("rel_update", "rel_rep_change", "alpha_dw", "alpha_w", "ratio")


def alignment(W, dW, X) -> dict:
    """Kosson measures of one step.  W, dW: (out, C) or (E, out, C); X: (N, C) or (E, ..., C).

    Returns {rel_update, rel_rep_change, alpha_dw, alpha_w, ratio, fan_in}: floats for 2-D W, (E,) tensors
    for a batch of members."""
    W, dW, X = (torch.as_tensor(t).detach().double() for t in (W, dW, X))
    single = W.ndim == 2
    if single:
        W, dW = W[None], dW[None]
        X = X.reshape(1, -1, X.shape[-1])
    else:
        X = X.reshape(W.shape[0], -1, X.shape[-1])
    if X.shape[-1] != W.shape[-1]:
        raise ValueError(f"input dim {X.shape[-1]} does not match the fan-in {W.shape[-1]} of W")
    nW = torch.linalg.vector_norm(W, dim=(1, 2))
    ndW = torch.linalg.vector_norm(dW, dim=(1, 2))
    nX = torch.linalg.vector_norm(X, dim=(1, 2))
    nY = torch.linalg.vector_norm(torch.bmm(X, W.transpose(1, 2)), dim=(1, 2))
    ndY = torch.linalg.vector_norm(torch.bmm(X, dW.transpose(1, 2)), dim=(1, 2))
    with torch.no_grad():
        out = {
            "rel_update": ndW / nW,
            "rel_rep_change": ndY / nY,
            "alpha_dw": ndY / (ndW * nX),  # 0/0 = nan for a frozen (diverged) member: no update to align
            "alpha_w": nY / (nW * nX),
        }
        out["ratio"] = out["alpha_dw"] / out["alpha_w"]
    if single:
        out = {k: float(v[0]) for k, v in out.items()}
    out["fan_in"] = int(W.shape[-1])
    return out


def monitored_update(u: int, every: int, early: bool) -> bool:
    """Is update number u (1-based) measured?  Every ``every`` updates, plus (early) u = 2, 4, 8, ...: the
    alignment ratio moves fastest at the start.  Update 1 cannot be measured: the callback first runs after it,
    when the initial weights are gone."""
    if u < 2:
        return False
    return u % every == 0 or (early and (u & (u - 1)) == 0)


class KossonMonitor:
    """Training callback: ``TrainOptions(callbacks=[KossonMonitor(every=k)])``.

    Called as ``cb(step, model, batch, opt)`` after each optimizer step.  It copies the hidden matrices only
    right before a monitored step, and on that step re-runs the model on the step's batch (no grad) to read each
    matrix's input.  ``series`` is a list of dict(step, member, param, fan_in, rel_update, rel_rep_change,
    alpha_dw, alpha_w, ratio), ``step`` = number of updates done (the convention of evals and spectra).
    A new model (the next ensemble of a sweep) starts a new series; ``attach(results)`` puts each member's rows
    into ``result["extra"]["kosson"]`` so the store keeps them in the run record.
    """

    def __init__(self, every: int = 10, classes=("matrix",), early: bool = True):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.classes, self.early = int(every), tuple(classes), early
        self.series: list[dict] = []
        self._model_id = None
        self._prev: dict[str, torch.Tensor] | None = None

    def _names(self, model) -> list[str]:
        pc = getattr(model, "param_class", {})
        return [n for n, p in model.named_parameters() if p.ndim == 3 and pc.get(n, "matrix") in self.classes]

    @torch.no_grad()
    def __call__(self, step: int, model, batch, opt=None) -> None:
        if id(model) != self._model_id:
            self._model_id, self._prev, self.series = id(model), None, []
        u = step + 1  # updates done
        if self._prev is not None and monitored_update(u, self.every, self.early):
            self._measure(u, model, batch)
        self._prev = None
        if monitored_update(u + 1, self.every, self.early):
            params = dict(model.named_parameters())
            self._prev = {n: params[n].detach().clone() for n in self._names(model)}

    def _measure(self, u: int, model, batch) -> None:
        with activations(model) as cap:
            model.loss(batch)  # the model's own loss reads any batch layout; the hooks see every layer's input
        params = dict(model.named_parameters())
        for n, W0 in self._prev.items():
            if n not in cap:
                continue
            X = cap[n][0].float()
            m = alignment(W0.float(), params[n].detach().float() - W0.float(), X)
            for i in range(W0.shape[0]):
                row = {"step": u, "member": i, "param": n, "fan_in": m["fan_in"]}
                row.update({k: float(m[k][i]) for k in FIELDS})
                self.series.append(row)

    def member_series(self, i: int) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "member"} for r in self.series if r["member"] == i]

    def attach(self, results: list[dict]) -> list[dict]:
        """Put member i's rows into results[i]["extra"]["kosson"] (results in ensemble order)."""
        for i, res in enumerate(results):
            res.setdefault("extra", {})["kosson"] = self.member_series(i)
        return results


def summarize(rows: list[dict]) -> dict:
    """{param: {field: [values over steps]}, "steps": [...]} from one run's rows (for plotting)."""
    out: dict = {}
    for r in rows:
        d = out.setdefault(r["param"], {"step": [], **{k: [] for k in FIELDS}})
        d["step"].append(r["step"])
        for k in FIELDS:
            v = r.get(k)
            d[k].append(float("nan") if v is None else v)
    return out


# ---------------------------------------------------------------------------------------------------------
# mu-P's implicit warmup vs an explicit exponential warmup without mu-P lr scaling
# ---------------------------------------------------------------------------------------------------------
def warmup_configs(widths, lrs, wd: float, steps: int, base_width: int, warmup: float = 0.5,
                   rules=("mup", "indep"), model: str = "synthetic", seed: int = 0, **common) -> list:
    """mu-P runs (``rules``, the schedule in ``common``, default constant) and, for the same proxy lrs, SP runs
    (no mu-P lr scaling) with Kosson et al.'s exponential warmup from 1/m to 1 over ``warmup`` of the steps."""
    from ..training.sweep import expand_grid

    if not 0 < warmup <= 1:
        raise ValueError(f"warmup is a fraction of the steps in (0, 1], got {warmup}")
    mu = expand_grid(model, widths, base_width, list(rules), lrs, [wd], steps, [seed], **common)
    sp_common = {**common, "schedule": "exp_warmup", "warmup": float(warmup)}
    sp = expand_grid(model, widths, base_width, ["sp"], lrs, [wd], steps, [seed], **sp_common)
    return mu + sp


def warmup_comparison(widths, lrs, wd: float, steps: int, base_width: int, store, warmup: float = 0.5,
                      rules=("mup", "indep"), model: str = "synthetic", seed: int = 0, opts=None,
                      monitor_every: int | None = None, on_event=None, cancel=None, **common) -> list[dict]:
    """Train (what the store lacks of) mu-P vs SP + exponential warmup; return their records.

    For a loss-vs-lr plot per width: records with ``rule`` in ``rules`` are mu-P, those with rule ``sp`` and
    schedule ``exp_warmup`` the replacement.  ``monitor_every`` also records the Kosson measures of newly
    trained runs in ``record["kosson"]``."""
    from ..training.sweep import plan, run_sweep
    from ..training.train import TrainOptions, train_ensemble

    configs = warmup_configs(widths, lrs, wd, steps, base_width, warmup, rules, model, seed, **common)
    opts = opts or TrainOptions()
    if not monitor_every:
        return run_sweep(configs, store, opts, on_event=on_event, cancel=cancel)
    cached, chunks = plan(configs, store)
    by_id = {r["run_id"]: {**r, "cached": True} for r in cached}
    for chunk in chunks:
        if cancel is not None and cancel.is_set():
            break
        mon = KossonMonitor(every=monitor_every)
        run_opts = dataclasses.replace(opts, callbacks=list(opts.callbacks) + [mon])
        results = mon.attach(train_ensemble(chunk, run_opts, on_event, cancel))
        for res in results:
            by_id[res["run_id"]] = {**store.put(res), "cached": False}
    seen, out = set(), []
    for c in configs:
        if c.run_id in by_id and c.run_id not in seen:
            seen.add(c.run_id)
            out.append(by_id[c.run_id])
    return out

