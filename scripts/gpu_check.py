"""The prepared GPU check: run it whenever a CUDA GPU is at hand (a few minutes), commit what it writes.

    python scripts/gpu_check.py --out DIR                 # on a CUDA machine, from the repository root
    python scripts/gpu_check.py --out DIR --cpu-smoke     # tiny sizes on the CPU: checks the script, no figures

It needs only torch, numpy and this repository (no pip install: the repo root goes on ``sys.path``), no network.
It writes ``DIR/gpu_check.json`` and ``DIR/gpu_check.md`` (for docs/bench.md) after *every* section, so a run cut
short keeps what it measured.  Each section runs in its own try/except; one failure does not lose the others.

Sections, all through the project's own code (``train_ensemble``, the ensemble models, ``flops_per_step``):

1. ``env``          device name (``torch.cuda.get_device_name``), torch / CUDA versions, capability, memory;
2. ``peak``         measured dense matmul peak, bf16 and fp32 (TF32 off), plus the NVIDIA datasheet dense bf16 peak
                    of the H100/H200 variants for reference (datasheet figures, not measured);
3. ``transformer_bf16``  the Transformer ensemble trained a few dozen steps under bf16 autocast on CUDA: losses
                    finite and decreasing, dtypes of logits / loss / weights / grads, and the same run in fp32;
4. ``equality``     ensemble vs each member trained alone, fp32 (TF32 off), synthetic and Transformer members:
                    largest relative weight difference and final-loss difference (the CPU tests demand <= 1e-5);
5. ``mfu``          Transformer MFU at d=512 and d=1024 (depth 4, seq 128, batch 16, as ``wdscale bench``), 1 and
                    8 members, bf16 autocast: ``transformer.flops_per_step`` / median step time / measured bf16 peak
                    (and / the datasheet peak);
6. ``synthetic``    synthetic ensemble step time at d=64/256/1024 with 30 members (fp32).

Nothing here claims a GPU number it did not measure: a section that failed or was skipped says so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import torch
except ImportError:  # pragma: no cover - the device machine may lack torch
    print("gpu_check: torch is not importable in this Python; install torch (a CUDA build) first", flush=True)
    raise SystemExit(2)

# NVIDIA datasheet dense (no sparsity) BF16 tensor-core peaks, TFLOP/s.  Reference only: never reported as measured.
NOMINAL_BF16_TFLOPS = (  # (substring of the device name, TFLOP/s, variant); first match wins
    ("H200 NVL", 835.0, "H200 NVL"),
    ("H200", 989.5, "H200 SXM"),
    ("H100 NVL", 835.0, "H100 NVL"),
    ("H100 PCIe", 756.0, "H100 PCIe"),
    ("H100", 989.5, "H100 SXM"),
)

SIZES = {
    "gpu": dict(
        peak_n=(4096, 8192), peak_reps=5,
        tf=dict(width=256, depth=4, seq_len=128, batch_size=16), tf_steps=40, tf_members=4,
        eq_syn=dict(width=128, steps=30), eq_tf=dict(width=128, depth=2, seq_len=64, batch_size=8, steps=8),
        mfu_widths=(512, 1024), mfu_members=(1, 8), mfu_steps=25,
        syn_widths=(64, 256, 1024), syn_members=30, syn_steps=60,
    ),
    "cpu-smoke": dict(
        peak_n=(128,), peak_reps=2,
        tf=dict(width=32, depth=1, seq_len=16, batch_size=4), tf_steps=12, tf_members=2,
        eq_syn=dict(width=32, steps=4), eq_tf=dict(width=32, depth=1, seq_len=16, batch_size=2, steps=3),
        mfu_widths=(32, 64), mfu_members=(1, 2), mfu_steps=4,
        syn_widths=(16, 32, 64), syn_members=4, syn_steps=4,
    ),
}


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Clock:
    """train_ensemble callback: a device-synchronised time stamp after every optimizer step."""

    def __init__(self, dev):
        self.dev, self.stamps = dev, []

    def __call__(self, step, model, batch, opt):
        sync(self.dev)
        self.stamps.append(time.perf_counter())

    def median(self, skip: int = 2) -> float:
        d = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        d = d[min(skip, max(0, len(d) - 1)):]  # first steps pay allocations and kernel selection
        return statistics.median(d) if d else float("nan")


class NoTF32:
    """fp32 means fp32: TF32 off for matmuls inside the block (restored after)."""

    def __enter__(self):
        self.old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.old


class NoSpectra:
    """Stub out the singular values inside the block (zeros of the right shape).

    train_ensemble always snapshots the spectra at step 0 and at the last step, outside the timed steps; at
    d=1024 x 8 members that is hundreds of large SVDs, which would eat the time budget without changing a
    step time.  Used by the timing sections only; ``transformer_bf16`` and ``equality`` keep the real SVDs."""

    def __enter__(self):
        self.real = torch.linalg.svdvals

        def zeros(a, *args, **kw):
            return torch.zeros(*a.shape[:-2], min(a.shape[-2:]), device=a.device, dtype=a.dtype)

        torch.linalg.svdvals = zeros

    def __exit__(self, *exc):
        torch.linalg.svdvals = self.real


def rel_diff(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ---------------------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------------------
def sec_env(ctx) -> dict:
    dev = ctx["dev"]
    out = {"device": str(dev), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "python": platform.python_version(), "host": platform.node(), "cpu_threads": torch.get_num_threads()}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        out.update(device_name=torch.cuda.get_device_name(dev), capability=f"{p.major}.{p.minor}",
                   memory_gib=p.total_memory / 2**30, sm_count=p.multi_processor_count,
                   cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
    else:
        out["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or "unknown"
    except Exception:
        out["commit"] = "unknown"
    name = out["device_name"]
    for key, tflops, variant in NOMINAL_BF16_TFLOPS:
        if key.lower() in name.lower():
            out["nominal_bf16_tflops"], out["nominal_variant"] = tflops, variant
            break
    ctx["nominal"] = out.get("nominal_bf16_tflops")
    return out


def matmul_tflops(dev, dtype, n: int, reps: int) -> float:
    from wdscale.bench import matmul_peak_gflops

    return matmul_peak_gflops(dev, n, reps, dtype) / 1e3


def sec_peak(ctx) -> dict:
    dev, S = ctx["dev"], ctx["S"]
    out = {}
    with NoTF32():
        for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
            by_n = {n: matmul_tflops(dev, dtype, n, S["peak_reps"]) for n in S["peak_n"]}
            out[f"{name}_tflops_by_n"] = by_n
            out[f"{name}_tflops"] = max(by_n.values())
            say(f"  {name} matmul peak {out[f'{name}_tflops']:.1f} TFLOP/s (best of n = {list(by_n)})")
    ctx["peak_bf16"], ctx["peak_fp32"] = out["bf16_tflops"], out["fp32_tflops"]
    if ctx.get("nominal"):
        out["nominal_bf16_tflops"] = ctx["nominal"]
        out["measured_over_nominal"] = out["bf16_tflops"] / ctx["nominal"]
    return out


TF_MEMBERS = (("sp", 3e-3), ("mup", 1e-2), ("wd", 1e-2), ("indep", 1e-2))  # (rule, proxy lr)


def tf_configs(ctx, n: int):
    from wdscale.train import RunConfig

    shape = ctx["S"]["tf"]
    return [RunConfig(model="transformer", base_width=min(64, shape["width"]), rule=TF_MEMBERS[i % 4][0],
                      lr=TF_MEMBERS[i % 4][1], wd=0.1, steps=ctx["S"]["tf_steps"], seed=i, corpus=ctx["corpus"],
                      **shape) for i in range(n)]


def sec_transformer_bf16(ctx) -> dict:
    from wdscale.train import TrainOptions, build, train_ensemble

    dev, S = ctx["dev"], ctx["S"]
    cs = tf_configs(ctx, S["tf_members"])
    # dtype plumbing on this device, one forward + backward under autocast
    model, data = build(cs[0], len(cs), dev)
    for i, c in enumerate(cs):
        model.init_member(i, c.seed, c.resolved())
    batch = next(data)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        logits = model(batch[:, :-1])
        loss = model.loss(batch)
    loss.sum().backward()
    dtypes = {"logits": str(logits.dtype), "loss": str(loss.dtype),
              "weights": sorted({str(p.dtype) for p in model.parameters()}),
              "grads": sorted({str(p.grad.dtype) for p in model.parameters() if p.grad is not None}),
              "grads_finite": bool(all(torch.isfinite(p.grad).all() for p in model.parameters()
                                       if p.grad is not None))}
    del model, data, logits, loss
    res = {}
    for amp in (True, False):
        clock = Clock(dev)
        t0 = time.perf_counter()
        with NoTF32():
            r = train_ensemble(cs, TrainOptions(device=str(dev), amp=amp, n_evals=1, spectra_every=10 ** 9,
                                                callbacks=[clock]))
        res["bf16" if amp else "fp32"] = (r, clock.median(), time.perf_counter() - t0)
    rb, step_b, wall_b = res["bf16"]
    rf, step_f, _ = res["fp32"]
    members = []
    ok = True
    for c, a, b in zip(cs, rb, rf):
        tl = a["train_loss"]
        k = max(1, len(tl) // 8)
        first, last = sum(tl[:k]) / k, sum(tl[-k:]) / k
        finite = all(math.isfinite(x) for x in tl) and not a["diverged"]
        dec = finite and last < first
        ok &= dec
        members.append({"rule": c.rule, "lr": c.lr, "loss_first": first, "loss_last": last,
                        "final_val_bf16": a["final_loss"], "final_val_fp32": b["final_loss"],
                        "finite": finite, "decreasing": dec})
    return {"config": {k: getattr(cs[0], k) for k in ("width", "depth", "seq_len", "batch_size", "steps")},
            "members": members, "pass": bool(ok and dtypes["logits"] == "torch.bfloat16"
                                              and dtypes["loss"] == "torch.float32" and dtypes["grads_finite"]),
            "dtypes": dtypes, "step_ms_bf16": 1e3 * step_b, "step_ms_fp32": 1e3 * step_f, "wall_s_bf16": wall_b,
            "max_final_val_rel_diff_bf16_vs_fp32": max(abs(m["final_val_bf16"] - m["final_val_fp32"])
                                                       / abs(m["final_val_fp32"]) for m in members)}


def _equality(cs, dev) -> dict:
    from wdscale.train import TrainOptions, train_ensemble

    opts = TrainOptions(device=str(dev), n_evals=1, spectra_every=10 ** 9)
    with NoTF32():
        together = train_ensemble(cs, opts)
        alone = [train_ensemble([c], opts)[0] for c in cs]
    w_rel, loss_rel, worst = 0.0, 0.0, None
    for c, r, a in zip(cs, together, alone):
        for n, w in a["weights"].items():
            d = rel_diff(r["weights"][n], w)
            if d > w_rel:
                w_rel, worst = d, f"{c.rule} {n}"
        loss_rel = max(loss_rel, abs(r["final_loss"] - a["final_loss"]) / abs(a["final_loss"]))
    return {"members": len(cs), "rules": [c.rule for c in cs], "steps": cs[0].steps, "width": cs[0].width,
            "max_weight_rel_diff": w_rel, "worst": worst, "max_final_loss_rel_diff": loss_rel,
            "pass_1e-5": bool(w_rel <= 1e-5 and loss_rel <= 1e-5)}


def sec_equality(ctx) -> dict:
    from wdscale.train import RunConfig

    dev, S = ctx["dev"], ctx["S"]
    syn = dict(model="synthetic", base_width=32, **S["eq_syn"])
    cs_syn = [RunConfig(rule="mup", lr=3e-3, wd=0.5, seed=1, **syn),
              RunConfig(rule="wd", lr=1e-2, wd=0.2, seed=2, **syn),
              RunConfig(rule="sp", lr=1e-3, wd=0.0, seed=3, **syn),
              RunConfig(rule="custom", lr=2e-2, wd=1.0, a=0.5, b=1.0, seed=4, **syn)]
    out = {"synthetic": _equality(cs_syn, dev)}
    say(f"  synthetic: max weight rel diff {out['synthetic']['max_weight_rel_diff']:.2e}")
    tf = dict(model="transformer", base_width=32, corpus=ctx["corpus"], **S["eq_tf"])
    cs_tf = [RunConfig(rule="mup", lr=1e-2, wd=0.1, seed=1, **tf),
             RunConfig(rule="sp", lr=3e-3, wd=0.0, seed=2, **tf), RunConfig(rule="wd", lr=2e-2, wd=0.5, seed=3, **tf)]
    out["transformer"] = _equality(cs_tf, dev)
    say(f"  transformer: max weight rel diff {out['transformer']['max_weight_rel_diff']:.2e}")
    out["pass_1e-5"] = out["synthetic"]["pass_1e-5"] and out["transformer"]["pass_1e-5"]
    return out


def sec_mfu(ctx) -> dict:
    from wdscale import transformer
    from wdscale.train import RunConfig, TrainOptions, train_ensemble

    dev, S = ctx["dev"], ctx["S"]
    peak = ctx.get("peak_bf16")
    if not peak:
        raise RuntimeError("no measured bf16 peak (the peak section failed)")
    rows = []
    for d in S["mfu_widths"]:
        for E in S["mfu_members"]:
            shape = dict(depth=4, seq_len=128) if ctx["mode"] == "gpu" else dict(depth=1, seq_len=16, batch_size=2)
            cs = [RunConfig(model="transformer", width=d, base_width=min(64, d), rule="mup",
                            lr=3e-3 * (1 + i / 8), wd=0.1, steps=S["mfu_steps"], seed=i, corpus=ctx["corpus"],
                            **shape) for i in range(E)]
            clock = Clock(dev)
            with NoSpectra():
                train_ensemble(cs, TrainOptions(device=str(dev), amp=True, n_evals=1, spectra_every=10 ** 9,
                                                callbacks=[clock]))
            t = clock.median()
            flops = transformer.flops_per_step(cs[0], E)
            row = {"width": d, "members": E, "depth": cs[0].depth, "seq_len": cs[0].seq_len,
                   "batch": cs[0].batch_size or transformer.DEFAULT_BATCH, "step_ms": 1e3 * t,
                   "model_tflop_per_step": flops / 1e12, "achieved_tflops": flops / t / 1e12,
                   "mfu_vs_measured_bf16_peak": flops / t / 1e12 / peak}
            if ctx.get("nominal"):
                row["mfu_vs_nominal_bf16_peak"] = flops / t / 1e12 / ctx["nominal"]
            rows.append(row)
            say(f"  d={d} E={E}: {row['step_ms']:.2f} ms/step, {row['achieved_tflops']:.2f} TFLOP/s, "
                f"MFU {row['mfu_vs_measured_bf16_peak']:.1%} of measured bf16 peak")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return {"flop_count": "transformer.flops_per_step (6 N_matmul tokens + 12 depth T d tokens)",
            "precision": "bf16 autocast, fp32 master weights",
            "step": "median wall time of a train_ensemble step (forward, backward, EnsembleAdamW), device-synced",
            "peak_bf16_tflops_measured": peak,
            "peak_bf16_tflops_nominal": ctx.get("nominal"), "rows": rows}


def sec_synthetic(ctx) -> dict:
    from wdscale.train import RunConfig, TrainOptions, train_ensemble

    dev, S = ctx["dev"], ctx["S"]
    rows = []
    rules = ("mup", "wd", "sp")
    for d in S["syn_widths"]:
        E = S["syn_members"]
        cs = [RunConfig(model="synthetic", width=d, base_width=min(64, d), rule=rules[i % 3],
                        lr=3e-3 * 10 ** (i / E), wd=0.5, steps=S["syn_steps"], seed=i) for i in range(E)]
        clock = Clock(dev)
        t0 = time.perf_counter()
        with NoTF32(), NoSpectra():
            train_ensemble(cs, TrainOptions(device=str(dev), n_evals=1, spectra_every=10 ** 9, callbacks=[clock]))
        t = clock.median()
        rows.append({"width": d, "members": E, "steps": S["syn_steps"], "step_ms": 1e3 * t,
                     "step_ms_per_member": 1e3 * t / E, "wall_s": time.perf_counter() - t0})
        say(f"  d={d}: {1e3 * t:.2f} ms/step for {E} members")
    return {"precision": "fp32 (TF32 off)",
            "step": "median wall time of a train_ensemble step (forward, backward, EnsembleAdamW), device-synced",
            "rows": rows}


SECTIONS = (("env", sec_env), ("peak", sec_peak), ("transformer_bf16", sec_transformer_bf16),
            ("equality", sec_equality), ("mfu", sec_mfu), ("synthetic", sec_synthetic))


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------
def _f(x, fmt="{:.3g}"):
    return "-" if x is None else (fmt.format(x) if isinstance(x, (int, float)) else str(x))


def markdown(rep: dict) -> str:
    s = rep["sections"]
    env = s.get("env", {})
    L = [f"## GPU check: {env.get('device_name', '?')}", "",
         f"`{rep['command']}` at commit {env.get('commit', '?')}, {rep['date']}, mode {rep['mode']}, "
         f"torch {env.get('torch', '?')} (CUDA build {env.get('cuda_build')}), wall time {rep['wall_s']:.0f} s.", ""]
    if rep["mode"] != "gpu":
        L += ["**CPU smoke run: tiny sizes, the numbers below say nothing about a GPU.**", ""]
    for name, _ in SECTIONS:
        r = s.get(name)
        if r is None:
            continue
        if "error" in r or "skipped" in r:
            L += [f"### {name}", "", f"**{'FAILED' if 'error' in r else 'SKIPPED'}**: "
                  f"{r.get('error') or r.get('skipped')}", ""]
            continue
        L += [f"### {name} ({r.get('seconds', 0):.1f} s)", ""]
        if name == "env":
            for k in ("device_name", "capability", "memory_gib", "sm_count", "torch", "cuda_build", "cudnn",
                      "bf16_supported", "nominal_variant", "nominal_bf16_tflops"):
                if k in r:
                    L.append(f"- {k}: {_f(r[k])}")
        elif name == "peak":
            L.append(f"- measured dense matmul peak: bf16 **{r['bf16_tflops']:.1f} TFLOP/s**, "
                     f"fp32 (TF32 off) {r['fp32_tflops']:.1f} TFLOP/s")
            if r.get("nominal_bf16_tflops"):
                L.append(f"- datasheet dense bf16 peak {r['nominal_bf16_tflops']:.1f} TFLOP/s (reference, not "
                         f"measured); measured / datasheet = {r['measured_over_nominal']:.0%}")
            L.append("- datasheet dense bf16 (no sparsity), for reference: H100 SXM 989.5, H100 PCIe 756, "
                     "H100 NVL 835, H200 SXM 989.5, H200 NVL 835 TFLOP/s")
        elif name == "transformer_bf16":
            c, dt, verdict = r["config"], r["dtypes"], "PASS" if r["pass"] else "FAIL"
            L += [f"Transformer d={c['width']}, depth {c['depth']}, seq {c['seq_len']}, batch {c['batch_size']}, "
                  f"{c['steps']} steps, {len(r['members'])} members, bf16 autocast: **{verdict}** (every member "
                  f"finite and decreasing; logits {dt['logits']}, loss {dt['loss']}, weights {dt['weights']}, "
                  f"grads {dt['grads']}).",
                  f"Step {r['step_ms_bf16']:.2f} ms (bf16) vs {r['step_ms_fp32']:.2f} ms (fp32); final val loss "
                  f"bf16 vs fp32 differs by at most {r['max_final_val_rel_diff_bf16_vs_fp32']:.2%}.", "",
                  "| rule | lr | loss first steps | loss last steps | val bf16 | val fp32 | ok |",
                  "|---|---|---|---|---|---|---|"]
            for m in r["members"]:
                L.append(f"| {m['rule']} | {m['lr']:g} | {m['loss_first']:.3f} | {m['loss_last']:.3f} | "
                         f"{m['final_val_bf16']:.3f} | {m['final_val_fp32']:.3f} | "
                         f"{'yes' if m['decreasing'] else 'NO'} |")
        elif name == "equality":
            L += ["| model | width | members | steps | max weight rel diff | max final-loss rel diff | <= 1e-5 |",
                  "|---|---|---|---|---|---|---|"]
            for k in ("synthetic", "transformer"):
                e = r[k]
                L.append(f"| {k} | {e['width']} | {e['members']} | {e['steps']} | {e['max_weight_rel_diff']:.2e} "
                         f"({e['worst'] or '-'}) | {e['max_final_loss_rel_diff']:.2e} | "
                         f"{'yes' if e['pass_1e-5'] else 'NO'} |")
            L.append("")
            L.append("fp32 with TF32 off; each member trained alone vs in the ensemble (the CPU tests demand 1e-5).")
        elif name == "mfu":
            nominal = r.get("peak_bf16_tflops_nominal")
            L += [f"{r['flop_count']}; {r['precision']}; {r['step']}; measured bf16 peak "
                  f"{r['peak_bf16_tflops_measured']:.1f} TFLOP/s" + (f", datasheet {nominal:.1f}" if nominal else "")
                  + ".", "",
                  "| d | members | depth | seq | batch | ms/step | TFLOP/step | TFLOP/s | MFU (measured peak) | "
                  "MFU (datasheet) |", "|---|---|---|---|---|---|---|---|---|---|"]
            for x in r["rows"]:
                L.append(f"| {x['width']} | {x['members']} | {x['depth']} | {x['seq_len']} | {x['batch']} | "
                         f"{x['step_ms']:.2f} | {x['model_tflop_per_step']:.4g} | {x['achieved_tflops']:.4g} | "
                         f"{x['mfu_vs_measured_bf16_peak']:.1%} | {_f(x.get('mfu_vs_nominal_bf16_peak'), '{:.1%}')} |")
        elif name == "synthetic":
            L += [f"Synthetic ensemble, {r['precision']}; {r['step']}:", "",
                  "| d | members | ms/step | ms/step per member |", "|---|---|---|---|"]
            for x in r["rows"]:
                L.append(f"| {x['width']} | {x['members']} | {x['step_ms']:.2f} | {x['step_ms_per_member']:.3f} |")
        L.append("")
    return "\n".join(L)


def _ensure_corpus(ctx) -> str:
    """'stdlib' when this Python has its sources; else a text file made of this repository's own sources."""
    from wdscale.data import check_corpus

    need = max(ctx["S"]["tf"]["seq_len"], 128)
    try:
        check_corpus("stdlib", need, 16)
        return "stdlib"
    except Exception as e:  # a Python without its .py sources
        say(f"stdlib corpus unusable ({e}); using the repository's own sources")
        text = "\n".join(p.read_text(errors="replace") for p in sorted(ROOT.rglob("*.py"))
                         if ".venv" not in p.parts)
        path = Path(ctx["tmp"]) / "corpus.txt"
        path.write_text(text * max(1, 400_000 // max(1, len(text))))
        return str(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: checks the script only")
    ap.add_argument("--only", default="", help="comma list of sections to run (env and peak always run)")
    ap.add_argument("--budget-s", type=float, default=220.0, help="skip sections that would start after this")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        say("no CUDA GPU visible to torch (torch.cuda.is_available() is False); use --cpu-smoke on a CPU")
        return 2
    tmp = tempfile.mkdtemp(prefix="wdscale-gpu-check-")  # only for a fallback corpus
    ctx = {"dev": torch.device("cuda" if mode == "gpu" else "cpu"), "S": SIZES[mode], "mode": mode, "tmp": tmp}
    only = {x.strip() for x in args.only.split(",") if x.strip()} | {"env", "peak"}
    rep = {"command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "mode": mode,
           "sections": {}, "wall_s": 0.0}
    t_start = time.perf_counter()

    def write():
        rep["wall_s"] = time.perf_counter() - t_start
        (out_dir / "gpu_check.json").write_text(json.dumps(rep, indent=1, default=str))
        (out_dir / "gpu_check.md").write_text(markdown(rep))

    say(f"mode {mode}, writing to {out_dir}")
    for name, fn in SECTIONS:
        if args.only and name not in only:
            continue
        if time.perf_counter() - t_start > args.budget_s:
            rep["sections"][name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
            say(f"{name}: skipped (budget)")
            write()
            continue
        say(f"{name} ...")
        t0 = time.perf_counter()
        try:
            if name in ("transformer_bf16", "equality", "mfu") and "corpus" not in ctx:
                ctx["corpus"] = _ensure_corpus(ctx)
            r = fn(ctx)
            r["seconds"] = time.perf_counter() - t0
            say(f"{name}: done in {r['seconds']:.1f} s" + (f", pass={r['pass']}" if "pass" in r else ""))
        except Exception as e:
            r = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8),
                 "seconds": time.perf_counter() - t0}
            say(f"{name}: FAILED {r['error']}")
        finally:
            if ctx["dev"].type == "cuda":
                torch.cuda.empty_cache()
        rep["sections"][name] = r
        write()
    write()
    failed = [n for n, r in rep["sections"].items() if "error" in r]
    say(f"finished in {rep['wall_s']:.0f} s; wrote {out_dir / 'gpu_check.json'} and {out_dir / 'gpu_check.md'}"
        + (f"; FAILED sections: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
