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
6. ``synthetic``    synthetic ensemble step time at d=64/256/1024 with 30 members (fp32);
7. ``flash``        whether the Transformer's attention can take the flash SDPA kernel under bf16 autocast: the
                    q/k/v it hands SDPA (dtype, strides), ``can_use_flash_attention`` on CUDA, and one forward +
                    backward with only the flash backend allowed;
8. ``mfu_compile``  MFU at d=1024 with 8 members (depth 4, seq 128, batch 16), bf16 autocast, flash SDPA: eager,
                    and ``TrainOptions(compile=True)`` in mode ``default`` (inductor) and ``reduce-overhead``
                    (inductor + CUDA graphs); compile time (first step over eager's) and forward + backward alone;
                    target MFU >= 40% of the measured bf16 peak;
9. ``study_lm``     the LM preset's 3-seed study on this GPU: every ensemble of its plan (``demo.proxy_configs`` /
                    ``transfer_configs``, seeds 0, 1, 2) timed for a few steps, fp32 eager, bf16 eager and bf16
                    compiled (CUDA graphs), plus one spectra snapshot and one eval; extrapolated to the preset's
                    steps, and through ``wdscale.training.cost`` with constants fitted to these measurements;
10. ``mfu_autotune`` the d=1024 x 8 step compiled with ``max-autotune-no-cudagraphs`` (last: its autotuning is the
                    slowest compile; a run cut short loses only this).

Compiled kernels go to a scratch inductor cache (``WDSCALE_CACHE`` is set to a temporary folder unless given), so
every compile time here is a cold one: what a first-time user waits.

Nothing here claims a GPU number it did not measure: a section that failed or was skipped says so.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
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
        mc=dict(width=1024, depth=4, seq_len=128, batch_size=16), mc_members=8, mc_steps=30,
        mc_modes=("default", "reduce-overhead"), autotune_mode="max-autotune-no-cudagraphs",
        study_preset="lm", study_seeds=(0, 1, 2), study_steps=24, study_cap=None, study_compile=True,
    ),
    "cpu-smoke": dict(
        peak_n=(128,), peak_reps=2,
        tf=dict(width=32, depth=1, seq_len=16, batch_size=4), tf_steps=12, tf_members=2,
        eq_syn=dict(width=32, steps=4), eq_tf=dict(width=32, depth=1, seq_len=16, batch_size=2, steps=3),
        mfu_widths=(32, 64), mfu_members=(1, 2), mfu_steps=4,
        syn_widths=(16, 32, 64), syn_members=4, syn_steps=4,
        # compile on the CPU costs ~40 s per shape cold: only with --smoke-compile (tests mark that run slow)
        mc=dict(width=32, depth=1, seq_len=16, batch_size=2), mc_members=2, mc_steps=6,
        mc_modes=(), autotune_mode=None,
        study_preset="lm", study_seeds=(0,), study_steps=4, study_cap=1, study_compile=False,
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
           "python": platform.python_version(), "host": platform.node(), "cpu_threads": torch.get_num_threads(),
           "wdscale_cache": os.environ.get("WDSCALE_CACHE")}
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
    from wdscale.cli.bench import matmul_peak_gflops

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
    from wdscale.training.train import RunConfig

    shape = ctx["S"]["tf"]
    return [RunConfig(model="transformer", base_width=min(64, shape["width"]), rule=TF_MEMBERS[i % 4][0],
                      lr=TF_MEMBERS[i % 4][1], wd=0.1, steps=ctx["S"]["tf_steps"], seed=i, corpus=ctx["corpus"],
                      **shape) for i in range(n)]


def sec_transformer_bf16(ctx) -> dict:
    from wdscale.training.train import TrainOptions, build, train_ensemble

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
    from wdscale.training.train import TrainOptions, train_ensemble

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
    from wdscale.training.train import RunConfig

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
    from wdscale.models import transformer
    from wdscale.training.train import RunConfig, TrainOptions, train_ensemble

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
    from wdscale.training.train import RunConfig, TrainOptions, train_ensemble

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


def left_s(ctx) -> float:
    """Seconds of the time budget left (sections with several compiles stop early instead of overrunning)."""
    return ctx["deadline"] - time.perf_counter()


def mc_configs(ctx, n: int, steps: int | None = None):
    """The MFU-with-compile shape: d=1024, depth 4, seq 128, batch 16 on the GPU (tiny in smoke mode)."""
    from wdscale.training.train import RunConfig

    S = ctx["S"]
    return [RunConfig(model="transformer", base_width=min(64, S["mc"]["width"]), rule="mup", lr=3e-3 * (1 + i / 8),
                      wd=0.1, steps=steps or S["mc_steps"], seed=i, corpus=ctx["corpus"], **S["mc"])
            for i in range(n)]


def timed_train(cs, dev, skip: int = 5, **opt_kw) -> dict:
    """Train cs once through train_ensemble: median step after ``skip`` (compiled code and CUDA graphs are
    built and recorded on the first calls), the first step's wall time (compile included), last losses."""
    from wdscale.training.train import TrainOptions, train_ensemble

    clock = Clock(dev)
    t0 = time.perf_counter()
    with NoSpectra():
        r = train_ensemble(cs, TrainOptions(device=str(dev), n_evals=1, spectra_every=10 ** 9, callbacks=[clock],
                                            **opt_kw))
    return {"step_s": clock.median(skip), "first_step_s": clock.stamps[0] - t0, "wall_s": time.perf_counter() - t0,
            "last_loss": [x["train_loss"][-1] for x in r]}


def fwd_bwd_s(cs, dev, reps: int = 8) -> float:
    """Forward + backward alone (bf16 autocast, eager), no optimizer: how much of a step is the model."""
    from wdscale.training.train import build

    model, data = build(cs[0], len(cs), dev)
    for i, c in enumerate(cs):
        model.init_member(i, c.seed, c.resolved())
    batch = next(data)
    for i in range(reps + 3):
        if i == 3:
            sync(dev)
            t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model.loss(batch)
        loss.sum().backward()
        model.zero_grad(set_to_none=True)
    sync(dev)
    return (time.perf_counter() - t0) / reps


def sec_flash(ctx) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wdscale.training.train import build

    dev = ctx["dev"]
    c = mc_configs(ctx, 1)[0]
    model, data = build(c, 1, dev)
    model.init_member(0, c.seed, c.resolved())
    batch = next(data)
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *a, **kw):
        seen.append((q.detach(), k.detach(), v.detach(), kw))
        return real(q, k, v, *a, **kw)

    torch.nn.functional.scaled_dot_product_attention = spy
    try:
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            model.loss(batch)
    finally:
        torch.nn.functional.scaled_dot_product_attention = real
    q, k, v, kw = seen[0]
    out = {"config": {"width": c.width, "head_dim": c.head_dim, "seq_len": c.seq_len},
           "dtypes": sorted({str(t.dtype) for t in (q, k, v)}), "shape": list(q.shape),
           "last_dim_strides": [t.stride(-1) for t in (q, k, v)], "attn_mask": kw.get("attn_mask") is not None,
           "is_causal": bool(kw.get("is_causal")), "scale": kw.get("scale")}
    del seen
    if dev.type == "cuda":
        try:
            params = torch.backends.cuda.SDPAParams(q, k, v, None, 0.0, True, False)
        except TypeError:  # older torch: no enable_gqa
            params = torch.backends.cuda.SDPAParams(q, k, v, None, 0.0, True)
        for name in ("flash", "efficient", "cudnn"):
            fn = getattr(torch.backends.cuda, f"can_use_{name}_attention", None)
            if fn is not None:
                out[f"can_use_{name}"] = bool(fn(params, debug=True))
    # only the flash backend allowed: an input it cannot take raises here instead of falling back to math
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast(dev.type, dtype=torch.bfloat16):
        loss = model.loss(batch)
    loss.sum().backward()
    out["flash_forward_backward"] = bool(torch.isfinite(loss).all())
    out["pass"] = bool(out["flash_forward_backward"] and out["dtypes"] == ["torch.bfloat16"]
                       and out.get("can_use_flash", True))
    return out


def _mfu_row(name: str, t: dict, flops: float, ctx, eager_first: float | None) -> dict:
    peak = ctx["peak_bf16"]
    row = {"variant": name, "step_ms": 1e3 * t["step_s"], "achieved_tflops": flops / t["step_s"] / 1e12,
           "mfu_vs_measured_bf16_peak": flops / t["step_s"] / 1e12 / peak, "first_step_s": t["first_step_s"],
           "wall_s": t["wall_s"], "last_loss": t["last_loss"]}
    if eager_first is not None:
        row["compile_s"] = t["first_step_s"] - eager_first
    say(f"  {name}: {row['step_ms']:.2f} ms/step, MFU {row['mfu_vs_measured_bf16_peak']:.1%}"
        + (f", compile {row['compile_s']:.1f} s" if "compile_s" in row else ""))
    return row


def sec_mfu_compile(ctx) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wdscale.models import transformer

    dev, S = ctx["dev"], ctx["S"]
    if not ctx.get("peak_bf16"):
        raise RuntimeError("no measured bf16 peak (the peak section failed)")
    E = S["mc_members"]
    cs = mc_configs(ctx, E)
    flops = transformer.flops_per_step(cs[0], E)
    rows = [_mfu_row("eager, SDPA's own kernel choice", timed_train(cs, dev, amp=True), flops, ctx, None)]
    out = {"config": {**S["mc"], "members": E, "steps": S["mc_steps"]}, "model_tflop_per_step": flops / 1e12,
           "peak_bf16_tflops_measured": ctx["peak_bf16"], "target_mfu": 0.40,
           "fwd_bwd_ms_eager": 1e3 * fwd_bwd_s(cs, dev), "rows": rows}
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # flash only: an ineligible input fails instead of falling back
        eager = timed_train(cs, dev, amp=True)
        rows.append(_mfu_row("eager, flash SDPA", eager, flops, ctx, None))
        for mode in S["mc_modes"]:
            name = f"compile {mode}, flash SDPA"
            if left_s(ctx) < 60:
                rows.append({"variant": name, "skipped": "time budget spent"})
                continue
            t = timed_train(cs, dev, amp=True, compile=True, compile_mode=mode)
            row = _mfu_row(name, t, flops, ctx, eager["first_step_s"])
            row["max_last_loss_rel_diff_vs_eager"] = max(abs(a - b) / abs(b) for a, b in
                                                         zip(t["last_loss"], eager["last_loss"]))
            rows.append(row)
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    best = max((r for r in rows if "step_ms" in r), key=lambda r: r["mfu_vs_measured_bf16_peak"])
    out.update(best=best["variant"], best_mfu=best["mfu_vs_measured_bf16_peak"],
               target_met=bool(best["mfu_vs_measured_bf16_peak"] >= 0.40))
    return out


def sec_mfu_autotune(ctx) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from wdscale.models import transformer

    dev, S = ctx["dev"], ctx["S"]
    mode = S["autotune_mode"]
    if not mode:
        return {"skipped": "no autotune in this mode"}
    if left_s(ctx) < 150:
        return {"skipped": f"less than 150 s of the time budget left ({left_s(ctx):.0f} s)"}
    E = S["mc_members"]
    cs = mc_configs(ctx, E)
    flops = transformer.flops_per_step(cs[0], E)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        eager = timed_train(cs, dev, amp=True)
        t = timed_train(cs, dev, amp=True, compile=True, compile_mode=mode)
    return {"config": {**S["mc"], "members": E}, "rows": [_mfu_row(f"compile {mode}, flash SDPA", t, flops, ctx,
                                                                    eager["first_step_s"])]}


def study_chunks(spec: dict, corpus: str):
    """The ensembles the preset's study trains, in its order: proxy grid, transfer at the two smallest widths,
    then the fitted rule at every width with the widest widths (as ``demo.run_study``; a later phase reuses the
    runs an earlier one stored).  (eta0, lam0) and the fitted b are placeholders: the plan's shapes do not
    depend on them."""
    import dataclasses

    from wdscale.science import study as demo
    from wdscale.training.sweep import plan

    eta0, lam0 = spec["proxy_lrs"][len(spec["proxy_lrs"]) // 2], spec["proxy_wds"][len(spec["proxy_wds"]) // 2]
    small = sorted(spec["widths"])[:2]
    rest = [w for w in spec["widths"] if w not in small]
    phases = [demo.proxy_configs(spec=spec), demo.transfer_configs(eta0, lam0, spec=spec, widths=small),
              demo.transfer_configs(eta0, lam0, spec=spec, rules=["fitted"], a=1.0, b=0.3)
              + (demo.transfer_configs(eta0, lam0, spec=spec, widths=rest) if rest else [])]
    seen, chunks = set(), []
    for ph in phases:
        ph = [dataclasses.replace(c, corpus=corpus) for c in ph]
        chunks += plan([c for c in ph if c.run_id not in seen], None)[1]
        seen |= {c.run_id for c in ph}
    return chunks


def _snapshot_and_eval_s(cs, dev) -> tuple[float, float]:
    from wdscale.models.ensemble import singular_values
    from wdscale.training.train import build, val_loss

    model, data = build(cs[0], len(cs), dev)
    snap = ev = float("inf")
    for _ in range(2):  # the first call pays solver and kernel set-up
        sync(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            for w in model.matrices().values():
                singular_values(w.detach()).cpu()
        sync(dev)
        t1 = time.perf_counter()
        val_loss(model, data).cpu()
        sync(dev)
        snap, ev = min(snap, t1 - t0), min(ev, time.perf_counter() - t1)
    return snap, ev


def sec_study_lm(ctx) -> dict:
    import dataclasses

    from wdscale.training import cost

    from wdscale.models import presets
    from wdscale.training.cost import format_seconds, members
    from wdscale.training.train import eval_steps

    dev, S = ctx["dev"], ctx["S"]
    spec = dict(presets.get(S["study_preset"]), seeds=tuple(S["study_seeds"]))
    chunks = study_chunks(spec, ctx["corpus"])
    variants = [("fp32 eager", {}), ("bf16 eager", {"amp": True})]
    if S["study_compile"]:
        variants.append(("bf16 compiled (CUDA graphs)" if dev.type == "cuda" else "bf16 compiled",
                         {"amp": True, "compile": True}))
    shapes = {}
    for ch in chunks:
        shapes.setdefault((ch[0].width, members(ch)), ch)
    rows = []
    for (width, n), ch in sorted(shapes.items()):
        cs = [dataclasses.replace(c, steps=S["study_steps"]) for c in ch[:S["study_cap"] or len(ch)]]
        row = {"width": width, "members": n, "members_timed": len(cs), "flops_per_step": cost.step_flops(cs[0], n),
               "svd_units": cost.svd_units(cs[0], len(cs))}
        row["snapshot_s"], row["eval_s"] = _snapshot_and_eval_s(cs, dev)
        eager_first = None
        for name, kw in variants:
            if kw.get("compile") and left_s(ctx) < 45:
                row[name] = {"skipped": "time budget spent"}
                continue
            t = timed_train(cs, dev, skip=min(5, S["study_steps"] - 2), **kw)
            row[name] = {"step_ms": 1e3 * t["step_s"], "first_step_s": t["first_step_s"]}
            if kw.get("amp") and not kw.get("compile"):
                eager_first = t["first_step_s"]
            if kw.get("compile") and eager_first is not None:
                row[name]["compile_s"] = t["first_step_s"] - eager_first
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        say(f"  d={width} x {n}: " + ", ".join(f"{k} {v['step_ms']:.1f} ms" for k, v in row.items()
                                               if isinstance(v, dict) and "step_ms" in v))
    by_shape = {(r["width"], r["members"]): r for r in rows}
    steps = spec["steps"]
    totals = {}
    for name, _ in variants:
        if any("step_ms" not in r[name] for r in rows):
            totals[name] = {"not measured": "a shape was skipped (time budget)"}
            continue
        train = sum(steps * by_shape[(ch[0].width, members(ch))][name]["step_ms"] / 1e3 for ch in chunks)
        extra = sum(cost.n_snapshots(steps) * by_shape[(ch[0].width, members(ch))]["snapshot_s"]
                    + len(eval_steps(steps)) * by_shape[(ch[0].width, members(ch))]["eval_s"] for ch in chunks)
        comp = sum(r[name].get("compile_s", 0.0) for r in rows)  # each shape compiles once per cold cache
        tot = {"train_s": train, "snapshots_evals_s": extra, "compile_s": comp, "study_s": train + extra + comp}
        # wdscale.training.cost's model (a + b FLOPs per step, SVD units per snapshot) fitted to these measurements
        pts = [(r["flops_per_step"], r[name]["step_ms"] / 1e3) for r in rows]
        if len(pts) >= 2:
            import numpy as np

            b, a = np.polyfit([f for f, _ in pts], [t for _, t in pts], 1)
            cal = {"a_s": max(0.0, float(a)), "b_s_per_flop": max(0.0, float(b)),
                   "c_s_per_svd_unit": statistics.median(r["snapshot_s"] / r["svd_units"] for r in rows)}
            tot["cost_model_s"] = sum(cost.chunk_seconds(dataclasses.replace(ch[0], steps=steps), members(ch), cal)
                                      for ch in chunks) + comp
            tot["cost_model_fit"] = {"a_s": cal["a_s"], "b_s_per_flop": cal["b_s_per_flop"]}
        tot["study"] = format_seconds(tot["study_s"])
        totals[name] = tot
        say(f"  {name}: study {tot['study']} ({tot['study_s']:.0f} s)")
    return {"preset": spec["name"], "seeds": list(spec["seeds"]), "steps": steps, "steps_timed": S["study_steps"],
            "ensembles": [(ch[0].width, len(ch), members(ch)) for ch in chunks],
            "capped": S["study_cap"], "rows": rows, "totals": totals,
            "placeholder": "(eta0, lam0) at the middle of the proxy grid and fitted b = 0.3: shapes do not depend "
                           "on them"}


SECTIONS = (("env", sec_env), ("peak", sec_peak), ("transformer_bf16", sec_transformer_bf16),
            ("equality", sec_equality), ("mfu", sec_mfu), ("synthetic", sec_synthetic), ("flash", sec_flash),
            ("mfu_compile", sec_mfu_compile), ("study_lm", sec_study_lm), ("mfu_autotune", sec_mfu_autotune))
NEEDS_CORPUS = {"transformer_bf16", "equality", "mfu", "flash", "mfu_compile", "study_lm", "mfu_autotune"}


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
        elif name == "flash":
            L.append(f"Attention of the d={r['config']['width']} model (head dim {r['config']['head_dim']}) under bf16 "
                     f"autocast hands SDPA q/k/v of {', '.join(r['dtypes'])}, shape {r['shape']}, last-dim strides "
                     f"{r['last_dim_strides']}, mask {'yes' if r['attn_mask'] else 'none'}, causal "
                     f"{r['is_causal']}, scale {r['scale']} (folded into q).")
            if "can_use_flash" in r:
                L.append(f"can_use_flash_attention: **{r['can_use_flash']}**; efficient: {r.get('can_use_efficient')}; "
                         f"cudnn: {r.get('can_use_cudnn')}.")
            L.append(f"Forward + backward with only the flash backend allowed: "
                     f"{'ran, finite' if r['flash_forward_backward'] else 'NOT finite'}. **{'PASS' if r['pass'] else 'FAIL'}**")
        elif name in ("mfu_compile", "mfu_autotune"):
            c = r["config"]
            if name == "mfu_compile":
                L += [f"Transformer d={c['width']}, {c['members']} members, depth {c['depth']}, seq {c['seq_len']}, "
                      f"batch {c['batch_size']}, bf16 autocast (fp32 master weights); {r['model_tflop_per_step']:.4g} "
                      f"TFLOP/step; measured bf16 peak {r['peak_bf16_tflops_measured']:.1f} TFLOP/s; forward + backward "
                      f"alone (eager) {r['fwd_bwd_ms_eager']:.2f} ms.  Best: {r['best']}, MFU **{r['best_mfu']:.1%}** "
                      f"(target >= 40%: {'met' if r['target_met'] else 'NOT met'}).", ""]
            L += ["| variant | ms/step | TFLOP/s | MFU (measured peak) | compile s (cold) | first step s |",
                  "|---|---|---|---|---|---|"]
            for x in r["rows"]:
                if "skipped" in x:
                    L.append(f"| {x['variant']} | skipped: {x['skipped']} | | | | |")
                    continue
                L.append(f"| {x['variant']} | {x['step_ms']:.2f} | {x['achieved_tflops']:.4g} | "
                         f"{x['mfu_vs_measured_bf16_peak']:.1%} | {_f(x.get('compile_s'), '{:.1f}')} | "
                         f"{x['first_step_s']:.1f} |")
        elif name == "study_lm":
            names = [k for k in r["totals"]]
            L += [f"Preset `{r['preset']}`, seeds {r['seeds']}, {r['steps']} steps; its ensembles (width, configs, "
                  f"trained members): {r['ensembles']}.  Each distinct (width, members) timed for {r['steps_timed']} "
                  f"steps" + (f" (members capped at {r['capped']}: not a study time)" if r["capped"] else "")
                  + f"; {r['placeholder']}.", "",
                  "| d | members | " + " | ".join(f"{n} ms/step" for n in names) + " | snapshot s | eval s |",
                  "|---|---|" + "---|" * len(names) + "---|---|"]
            for x in r["rows"]:
                cells = [f"{x[n]['step_ms']:.1f}" + (f" (+{x[n]['compile_s']:.0f} s compile)" if "compile_s" in x[n]
                                                      else "") if "step_ms" in x[n] else "skipped" for n in names]
                L.append(f"| {x['width']} | {x['members']} | " + " | ".join(cells)
                         + f" | {x['snapshot_s']:.3f} | {x['eval_s']:.3f} |")
            L += ["", "| variant | study (train + snapshots/evals + compile) | train s | snapshots+evals s | compile s | "
                  "wdscale.training.cost fit s |", "|---|---|---|---|---|---|"]
            for n, t in r["totals"].items():
                if "study_s" not in t:
                    L.append(f"| {n} | not measured ({t.get('not measured')}) | | | | |")
                    continue
                L.append(f"| {n} | **{t['study']}** | {t['train_s']:.0f} | {t['snapshots_evals_s']:.0f} | "
                         f"{t['compile_s']:.0f} | {_f(t.get('cost_model_s'), '{:.0f}')} |")
        elif name == "synthetic":
            L += [f"Synthetic ensemble, {r['precision']}; {r['step']}:", "",
                  "| d | members | ms/step | ms/step per member |", "|---|---|---|---|"]
            for x in r["rows"]:
                L.append(f"| {x['width']} | {x['members']} | {x['step_ms']:.2f} | {x['step_ms_per_member']:.3f} |")
        L.append("")
    return "\n".join(L)


def _ensure_corpus(ctx) -> str:
    """'stdlib' when this Python has its sources; else a text file made of this repository's own sources."""
    from wdscale.models.data import check_corpus

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
    ap.add_argument("--budget-s", type=float, default=480.0,
                    help="skip sections (and compiles) that would start after this; the run stays under ~9 min")
    ap.add_argument("--smoke-compile", action="store_true",
                    help="with --cpu-smoke: also run the compiled variants (~1 min per shape on one CPU thread)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "cpu-smoke" if args.cpu_smoke else "gpu"
    if mode == "gpu" and not torch.cuda.is_available():
        say("no CUDA GPU visible to torch (torch.cuda.is_available() is False); use --cpu-smoke on a CPU")
        return 2
    tmp = tempfile.mkdtemp(prefix="wdscale-gpu-check-")  # a fallback corpus; the inductor cache
    # an empty compile cache: every compile time measured here is the cold one a first-time user waits
    os.environ.setdefault("WDSCALE_CACHE", str(Path(tmp) / "cache"))
    S = dict(SIZES[mode])
    if mode == "cpu-smoke" and args.smoke_compile:
        S.update(mc_modes=("default",), study_compile=True)
    ctx = {"dev": torch.device("cuda" if mode == "gpu" else "cpu"), "S": S, "mode": mode, "tmp": tmp}
    only = {x.strip() for x in args.only.split(",") if x.strip()} | {"env", "peak"}
    rep = {"command": "python scripts/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "mode": mode,
           "sections": {}, "wall_s": 0.0}
    t_start = time.perf_counter()
    ctx["deadline"] = t_start + args.budget_s

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
            if name in NEEDS_CORPUS and "corpus" not in ctx:
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
