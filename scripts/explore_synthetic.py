"""Design search for the synthetic core (docs/synthetic.md keeps the table this writes).

For each candidate design: a proxy eta x lam sweep at d0 (seed-averaged; the proxy's own optimum), then a transfer
study at several widths under mup / wd / indep around that optimum.  Reports, per design, whether the proxy's
optimum is interior in both eta and lam, steps/tau of the slowest member, the LR optimum per (rule, width), the
drift (octaves per width doubling) and the sigma_top width exponent of W1 and W2 per rule.

    python scripts/explore_synthetic.py --device cuda --out DIR          # the full search (GPU: minutes)
    python scripts/explore_synthetic.py --smoke                          # tiny, CPU, checks the script runs
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wdscale.models.ensemble import EnsembleAdamW  # noqa: E402
from wdscale.core.rules import resolve  # noqa: E402
from wdscale.models.synthetic import SyntheticConfig, SyntheticData, SyntheticFFN  # noqa: E402


def train(width, base, members, cfg, steps, device, data_seed=0):
    """members: list of (rule, lr, wd, seed). Returns val loss (E,), top_sv {name: (E,)}, min steps/tau."""
    E = len(members)
    model = SyntheticFFN(E, width, cfg).to(device)
    res = [resolve(r, width, base, lr, wd) for r, lr, wd, _ in members]
    for i, ((_, _, _, s), r) in enumerate(zip(members, res)):
        model.init_member(i, s, r)
    opt = EnsembleAdamW(model, res)
    data = SyntheticData(cfg, data_seed, device)
    alive = torch.ones(E, dtype=torch.bool, device=device)
    ones = torch.ones(E, dtype=torch.float64, device=device)
    init = None
    for step in range(steps):
        loss = model.loss(next(data))
        if init is None:
            init = loss.detach().clone()
        if step % 20 == 0:
            alive &= torch.isfinite(loss) & (loss < 4 * init)
        torch.where(alive, loss, 0.0).sum().backward()
        opt.step(ones, alive)
        opt.zero_grad()
    with torch.no_grad():
        val = model.loss(data.val)
        alive &= torch.isfinite(val)
        val = torch.where(alive, val, float("nan")).cpu().numpy()
        svs = {n: torch.linalg.matrix_norm(p.float(), ord=2).cpu().numpy() for n, p in model.matrices().items()
               if n != "w_in" and n != "w_out"}
    tau = min(steps * r.groups["matrix"]["lr"] * r.groups["matrix"]["wd"] for r in res)
    return val, svs, tau


def lr_opt(lrs, losses):
    """log2 of the optimal lr: a parabola through the best point and its neighbours (grid point at an edge)."""
    lx = np.log2(lrs)
    y = np.asarray(losses, float)
    if not np.isfinite(y).any():
        return float("nan"), True
    j = int(np.nanargmin(y))
    if j == 0 or j == len(y) - 1 or not np.isfinite(y[j - 1:j + 2]).all():
        return float(lx[j]), True
    a, b, _ = np.polyfit(lx[j - 1:j + 2], y[j - 1:j + 2], 2)
    return float(-b / (2 * a)) if a > 0 else float(lx[j]), False


def study(name, cfg, steps, widths, base, eta_grid, lam_grid, seeds, device, n_lr=9):
    t0 = time.time()
    out = {"design": name, "cfg": cfg.__dict__, "steps": steps, "widths": widths}
    # 1. the proxy's own optimum
    mem = [("mup", lr, wd, s) for lr in eta_grid for wd in lam_grid for s in seeds]
    val, _, _ = train(base, base, mem, cfg, steps, device)
    grid = np.nanmean(val.reshape(len(eta_grid), len(lam_grid), len(seeds)), axis=2)
    i, j = np.unravel_index(np.nanargmin(grid), grid.shape)
    eta0, lam0 = eta_grid[i], lam_grid[j]
    out["proxy"] = {"grid": grid.tolist(), "eta0": eta0, "lam0": lam0, "best": float(grid[i, j]),
                    "eta_interior": 0 < i < len(eta_grid) - 1, "lam_interior": 0 < j < len(lam_grid) - 1,
                    "eta0_lam0": eta0 * lam0}
    print(f"[{name}] proxy best eta0={eta0:.3g} lam0={lam0:.3g} loss={grid[i, j]:.4f} "
          f"interior eta={out['proxy']['eta_interior']} lam={out['proxy']['lam_interior']}", flush=True)
    print(np.array2string(grid, precision=3), flush=True)
    # 2. transfer around it
    lrs = [eta0 * 2 ** ((k - n_lr // 2) / 2) for k in range(n_lr)]
    rules = ["mup", "wd", "indep"]
    per = {r: {"opt": {}, "edge": {}, "curves": {}, "top_sv": {}} for r in rules}
    min_tau = math.inf
    for w in widths:
        mem = [(r, lr, lam0, s) for r in rules for lr in lrs for s in seeds]
        val, svs, tau = train(w, base, mem, cfg, steps, device)
        min_tau = min(min_tau, tau)
        v = val.reshape(len(rules), len(lrs), len(seeds))
        for a, r in enumerate(rules):
            curve = np.nanmean(v[a], axis=1)
            o, edge = lr_opt(lrs, curve)
            per[r]["opt"][w], per[r]["edge"][w] = o, edge
            per[r]["curves"][w] = curve.tolist()
            # sigma_top at the proxy's eta0 (middle of the grid), seed mean, per matrix kind
            mid = n_lr // 2
            per[r]["top_sv"][w] = {k: float(np.mean([svs[n].reshape(len(rules), len(lrs), len(seeds))[a, mid]
                                                     for n in svs if n.startswith(k)]))
                                   for k in ("w1", "w2")}
    lw = np.log2(widths)
    for r in rules:
        opts = np.array([per[r]["opt"][w] for w in widths])
        per[r]["drift"] = float(np.polyfit(lw, opts, 1)[0])
        for k in ("w1", "w2"):
            sv = np.log2([per[r]["top_sv"][w][k] for w in widths])
            per[r][f"alpha_{k}"] = float(np.polyfit(lw, sv, 1)[0])
        per[r]["best_loss"] = {w: float(np.nanmin(per[r]["curves"][w])) for w in widths}
        print(f"[{name}] {r:5} drift {per[r]['drift']:+.2f} oct/doubling  opt(log2) "
              f"{[round(per[r]['opt'][w], 2) for w in widths]} edge {[per[r]['edge'][w] for w in widths]}  "
              f"alpha w1 {per[r]['alpha_w1']:+.2f} w2 {per[r]['alpha_w2']:+.2f}  best "
              f"{[round(x, 4) for x in per[r]['best_loss'].values()]}", flush=True)
    out.update(rules=per, lrs=lrs, min_steps_over_tau=min_tau, seconds=time.time() - t0)
    print(f"[{name}] min steps/tau {min_tau:.2f}  {time.time() - t0:.0f}s", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=".")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    base = SyntheticConfig()
    eta_grid = [2 ** (k / 2) * 1e-3 for k in range(0, 13)]  # 1e-3 .. 6.4e-2, half octaves
    lam_grid = [0.1, 0.3, 1.0, 3.0, 10.0]
    designs = [
        ("finite2048_n0.5", base, 1000),
        ("finite2048_n0.5_2k", base, 2000),
        ("finite1024_n0.3", replace(base, n_train=1024, noise=0.3), 1000),
        ("finite4096_n0.5", replace(base, n_train=4096), 1000),
        ("finite2048_n0.5_p1", replace(base, power=1.0), 1000),
        ("fresh", replace(base, n_train=None, noise=0.0), 1000),
        # the demo's size: proxy d0 = 32, widths 32/64/128
        ("demo32_b128", base, 1000),
        ("demo32_b64", replace(base, batch_size=64), 1000),
    ]
    widths, seeds = [64, 128, 256, 512], [0, 1, 2]
    if args.smoke:
        designs = [("smoke", replace(base, n_train=256, n_features=64, d_in=64), 20)]
        widths, seeds, eta_grid, lam_grid = [16, 32], [0], eta_grid[::4], [0.3, 3.0]
    results = []
    for name, cfg, steps in designs:
        if args.only and args.only not in name:
            continue
        ws = [32, 64, 128] if name.startswith("demo") else widths
        try:
            results.append(study(name, cfg, steps, ws, ws[0], eta_grid, lam_grid, seeds, dev,
                                 n_lr=9 if not args.smoke else 3))
        except Exception as e:  # one failing design must not lose the others
            print(f"[{name}] FAILED: {e!r}", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        Path(args.out, "explore.json").write_text(json.dumps(results, default=str, indent=1))


if __name__ == "__main__":
    main()
