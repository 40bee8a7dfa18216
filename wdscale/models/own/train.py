"""The member training loop of a model file: one ensemble (one model file at one width), start to finish.

Whichever member path runs (``members.choose_path``), this loop is the same: batches from ``batches(data_seed)``,
the lr schedule, divergence, evals, spectra snapshots, progress events, and a checkpoint (weights, AdamW state, RNG
streams, histories) written atomically every ``checkpoint_seconds`` and on cancel, so a killed or cancelled
ensemble resumes where it stopped.  Its results have ``train.train_ensemble``'s keys, so the store and every
reader take them unchanged.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ...core.errors import BadInput
from ...core.files import atomic_save
from .members import _make_path, choose_path
from .modelfile import _next_batch, _val, batches_of, load, parse_overrides


def _resume_state(path: Path | None, run_ids: list[str], kind: str) -> dict | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception:  # noqa: BLE001 (unreadable: start over)
        return None
    return st if st.get("run_ids") == run_ids and st.get("kind") == kind else None


def train_members(configs: list, opts=None, on_event=None, cancel=None, ckpt: Path | None = None) -> list[dict]:
    """Train the runs of one model file at one width (one ``group_key``); one result dict per config, the same
    keys as ``train.train_ensemble``'s, so the store and every reader take them unchanged.  ``opts.members``
    (``auto`` | ``loop`` | ``batched``) picks the path; the result's ``extra`` says which ran and why.

    ``ckpt``: a checkpoint file, written every ``opts.checkpoint_seconds`` and on cancel (weights, AdamW state, RNG
    streams, histories, spectra), so a killed or cancelled ensemble resumes where it stopped; the batches are
    replayed from ``batches(data_seed)`` up to that step (the file's contract: the same batches for a seed)."""
    from ..config import MIN_SPECTRA_GAP, SPECTRA_SNAPSHOTS, eval_steps, lr_factor, pick_device
    from ..ensemble import singular_values

    if opts is None:  # train.TrainOptions' defaults, without importing the trainer above this module
        from types import SimpleNamespace

        opts = SimpleNamespace(device="cpu", spectra_every=None, n_evals=8, blowup=4.0, event_every=None,
                               members="auto")
    emit = on_event or (lambda e: None)
    c0 = configs[0]
    mf = load(c0.model_file)
    if mf.sha256 != c0.canonical().get("model_file_sha256"):
        raise BadInput(f"{mf.name}: the file changed while the study was being planned; run it again")
    overrides = parse_overrides(c0.overrides)
    dev = pick_device(opts.device)
    E, steps, width = len(configs), c0.steps, c0.width
    kind, reason = choose_path(mf, configs, overrides, dev, getattr(opts, "members", "auto"), emit)
    with torch.random.fork_rng(devices=[]):
        path = _make_path(kind, mf, configs, overrides, dev)
        val = _val(mf)
        it = batches_of(mf, c0.data_seed)
        spectra_every = opts.spectra_every or max(MIN_SPECTRA_GAP, steps // SPECTRA_SNAPSHOTS)
        event_every = opts.event_every or max(1, steps // 100)
        evals_at = set(eval_steps(steps, opts.n_evals))
        alive = [True] * E
        diverged_step: list = [None] * E
        init_loss: list = [None] * E
        loss_hist = np.full((steps, E), np.nan, dtype=np.float32)
        eval_hist: dict[int, list] = {}
        spectra: dict = {"steps": []}
        run_ids = [c.run_id for c in configs]
        t0 = time.perf_counter()

        def snapshot(step: int) -> None:
            spectra["steps"].append(step)
            for n, w in path.stacked_matrices().items():
                w = w.float()
                ok = torch.isfinite(w).flatten(1).all(1)
                sv = torch.full((E, min(w.shape[1:])), float("nan"))
                if bool(ok.any()):
                    sv[ok.cpu()] = singular_values(w[ok]).cpu()
                spectra.setdefault(n, []).append(sv)
                for i in torch.nonzero(~ok).flatten().tolist():
                    if diverged_step[i] is None:
                        diverged_step[i], alive[i] = step, False
            emit({"type": "spectra", "width": width, "step": step,
                  "top_sv": {n: spectra[n][-1][:, 0].tolist() for n in spectra if n != "steps"}})

        def save(done: int) -> None:
            atomic_save(Path(ckpt), {
                "run_ids": run_ids, "kind": kind, "step": done, "path": path.state(), "alive": list(alive),
                "diverged_step": list(diverged_step), "init_loss": list(init_loss),
                "loss_hist": torch.from_numpy(loss_hist[:done].copy()),
                "evals": {str(k): v for k, v in eval_hist.items()},
                "spectra": {"steps": list(spectra["steps"]),
                            **{n: torch.stack(v) for n, v in spectra.items() if n != "steps"}}})

        start = 0
        st = _resume_state(ckpt, run_ids, kind)
        if st is not None:
            start = int(st["step"])
            path.load(st["path"])
            alive[:], diverged_step[:], init_loss[:] = st["alive"], st["diverged_step"], st["init_loss"]
            loss_hist[:start] = st["loss_hist"].numpy()
            eval_hist.update({int(k): v for k, v in st["evals"].items()})
            spectra.update({"steps": list(st["spectra"]["steps"]),
                            **{n: list(v.unbind(0)) for n, v in st["spectra"].items() if n != "steps"}})
            for k in range(start):  # replay the batch order up to where the checkpoint stopped
                _next_batch(mf, it, c0.data_seed, k)
        emit({"type": "start", "width": width, "n_members": E, "steps": steps, "run_ids": run_ids,
              "resumed_from": start, "member_path": kind})
        if start == 0:
            snapshot(0)
        done = start
        last_ckpt = time.perf_counter()
        every_s = float(getattr(opts, "checkpoint_seconds", 120.0))
        try:
            for step in range(start, steps):
                if cancel is not None and cancel.is_set():
                    if ckpt is not None and done > start:
                        save(done)  # before the partial snapshot below: a resume keeps the cadence
                    break
                batch = _next_batch(mf, it, c0.data_seed, step)
                factors = [lr_factor(c, step) for c in configs]
                losses = path.step(batch, factors, list(alive))
                loss_hist[step] = losses
                for i, lv in enumerate(losses):
                    if not alive[i]:
                        continue
                    if init_loss[i] is None:
                        init_loss[i] = lv
                    if not math.isfinite(lv) or lv > opts.blowup * init_loss[i]:
                        diverged_step[i], alive[i] = step, False
                done = step + 1
                if done in evals_at:
                    eval_hist[done] = path.val_losses(val)
                if done % spectra_every == 0 or done == steps:
                    snapshot(done)
                if done % event_every == 0 or done == steps:
                    el = time.perf_counter() - t0
                    emit({"type": "step", "width": width, "step": done, "steps": steps, "loss": losses,
                          "alive": list(alive), "elapsed": el, "eta": el / (done - start) * (steps - done)})
                if ckpt is not None and done < steps and time.perf_counter() - last_ckpt >= every_s:
                    save(done)
                    last_ckpt = time.perf_counter()
            partial = done < steps
            if partial and done > 0 and spectra["steps"][-1] != done:
                snapshot(done)
            final = path.val_losses(val) if done > 0 else [float("nan")] * E
            emit({"type": "cancelled" if partial else "done", "width": width, "step": done})
            names = [n for n in spectra if n != "steps"]
            out = []
            for i, c in enumerate(configs):
                div = diverged_step[i] is not None
                out.append({
                    "config": c, "run_id": c.run_id, "status": "partial" if partial else "done", "steps_done": done,
                    "final_loss": float("nan") if div else final[i], "train_loss": loss_hist[:done, i].tolist(),
                    "diverged": div, "diverged_step": diverged_step[i],
                    "evals": {s: v[i] for s, v in eval_hist.items()},
                    "spectra": {"steps": list(spectra["steps"]),
                                **{n: torch.stack([s[i] for s in spectra[n]]).numpy() for n in names}},
                    "weights": path.member_state(i), "top_sv": {n: float(spectra[n][-1][i, 0]) for n in names},
                    "param_class": dict(path.cls_of), "resolved": c.resolved(), "seconds": time.perf_counter() - t0,
                    "extra": {"member_path": kind, "member_path_reason": reason},
                })
            return out
        finally:
            path.close()
