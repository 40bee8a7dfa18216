"""The coordinate check on a model file: microsoft/mup's, through forward hooks on the user's own modules.

Each width and rule trains a ``Member`` exactly as the trainer does and records the RMS of every leaf module's
output (and of the logits after the readout multiplier) on a fixed batch; ``coord_slopes`` turns the rows into
the width exponent per module.  ``wdscale coord`` and the diagnostics read it.
"""
from __future__ import annotations

import numpy as np
import torch

from .mup import Member, check_loss
from .modelfile import _next_batch, batches_of, load, parse_overrides


def _tensor_of(out):
    if torch.is_tensor(out):
        return out
    for key in ("logits", "last_hidden_state"):
        v = getattr(out, key, None)
        if torch.is_tensor(v):
            return v
    if isinstance(out, (tuple, list)) and out and torch.is_tensor(out[0]):
        return out[0]
    return None


def coord_check(path: str, widths=(32, 64, 128), rules=("sp", "mup"), steps: int = 4, lr: float = 1e-2,
                wd: float = 0.0, base_width: int | None = None, seed: int = 0, init: str = "mup",
                overrides: str = "", modules=None) -> list[dict]:
    """RMS of each module's output on a fixed batch, after 0..steps AdamW updates, at each width and rule: rows
    dict(model, rule, width, step, module, rms), the shape ``diagnostics.coord_check`` returns.

    Hooks sit on the user's own modules (every leaf module, plus the readout's output *after* the 1/m multiplier,
    as ``logits``) and are removed after each measurement, so the model is trained exactly as ``Member`` trains it.
    Under SP a hidden module's RMS grows with width after the first update; under mu-P it stays flat.  A flat coord
    check says the first steps are right; it says nothing of the steady state weight decay sets later."""
    mf = load(path)
    ov = parse_overrides(overrides)
    base_width = int(base_width or min(widths))
    rows = []
    from ..config import RunConfig

    for width in widths:
        for rule in rules:
            cfg = RunConfig(model=mf.name, model_file=str(path), width=int(width), base_width=base_width, rule=rule,
                            lr=float(lr), wd=float(wd), steps=max(1, int(steps)), seed=int(seed), init=init,
                            overrides=overrides)
            with torch.random.fork_rng(devices=[]):
                mem = Member(mf, cfg, ov, torch.device("cpu"))
                it = batches_of(mf, cfg.data_seed)
                probe = _next_batch(mf, it, cfg.data_seed, 0)  # measured on; training batches follow it
                names = {m: n for n, m in mem.model.named_modules() if n and not list(m.children())}
                for step in range(int(steps) + 1):
                    seen: dict = {}

                    def hook(mod, args, out, _seen=seen):
                        t = _tensor_of(out)
                        if t is not None and t.is_floating_point():
                            _seen[names[mod]] = float(t.detach().float().pow(2).mean().sqrt())
                    hs = [m.register_forward_hook(hook) for m in names]
                    try:
                        with torch.no_grad():
                            mem.model.eval()
                            out = mf.loss(mem.model, probe)
                            mem.model.train()
                    finally:
                        for h in hs:
                            h.remove()
                    for r in mem.readouts:  # registered after the readout hook, ours saw the scaled logits
                        if r in seen:
                            seen["logits"] = seen[r]
                    del out
                    for name, v in seen.items():
                        if modules and not any(name == m or name.startswith(m) for m in modules):
                            continue
                        rows.append({"model": mf.name, "rule": rule, "width": int(width), "step": step,
                                     "module": name, "rms": v})
                    if step == steps:
                        break
                    loss = mf.loss(mem.model, _next_batch(mf, it, cfg.data_seed, step + 1))
                    check_loss(mf, loss, f"step {step}").backward()
                    mem.opt.step()
                    mem.opt.zero_grad(set_to_none=True)
                for h in mem.hooks:
                    h.remove()
    return rows


def coord_slopes(rows: list[dict]) -> list[dict]:
    """Per rule and module: the width exponent of the output RMS at the last step (log-log slope over widths).
    ~0 is what mu-P's coordinate check asks; SP's hidden modules grow (~+1 after an Adam step)."""
    last = max(r["step"] for r in rows)
    out = []
    for rule in sorted({r["rule"] for r in rows}):
        for mod in sorted({r["module"] for r in rows}):
            pts = [(r["width"], r["rms"]) for r in rows if r["rule"] == rule and r["module"] == mod
                   and r["step"] == last and r["rms"] > 0]
            if len({w for w, _ in pts}) < 2:
                continue
            x = np.log([w for w, _ in pts])
            y = np.log([v for _, v in pts])
            out.append({"rule": rule, "module": mod, "slope": float(np.polyfit(x, y, 1)[0]), "step": last})
    return out
