"""`wdscale inspect`: the paper's top-σ diagnostic on checkpoints wdscale never trained.

Fan et al. 2025 end their recipe with a check: the top singular value of every matrix should be the same at the
proxy and at the target width, so that each sublayer's gain is width-invariant.  This module reads a user's own
checkpoints (safetensors, or a torch state dict), lists per matrix σ_top, ‖W‖_F and the stable rank
‖W‖_F²/σ_top², matches matrices by name across widths, fits σ_top ∝ d^α and turns α into the λ exponent that
would hold σ_top flat.

Safety: nothing from a user file is unpickled with code.  safetensors has no code at all; torch files go through
``torch.load(weights_only=True)``, whose unpickler refuses any global outside a small allow-list *before* calling
it, and that refusal becomes a one-line ValueError.

Speed: σ_top comes from a randomized block Krylov method (block Lanczos on WᵀW with Rayleigh-Ritz, block size 8,
full reorthogonalisation), which needs ~20 passes over W and agrees with ``torch.linalg.svdvals`` to ~1e-6
relative even on random matrices, whose top gap is the smallest there is.  Small matrices go to the exact SVD.
"""
from __future__ import annotations

import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch

from ..core.rules import CLASSES, classify_tensor, infer_width, rule_exponents
from ..core.spectra import top_sv  # noqa: F401 (also read as inspect.top_sv)
from ..core.theory import implied_wd_exponent

# Keys under which training scripts nest the model's state dict (nanoGPT: "model"; Lightning: "state_dict").
NEST_KEYS = ("model", "state_dict", "model_state_dict", "module", "net", "network", "params", "weights", "ema")
# Prefixes that torch.compile and DDP add to every name; stripped so compiled and plain runs match by name.
STRIP_PREFIXES = ("_orig_mod.", "module.")
CKPT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


# ---------------------------------------------------------------------------------------------
# Loading, with no code execution
# ---------------------------------------------------------------------------------------------
def _is_safetensors(head: bytes) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON object."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _refusal(where: str, err: Exception) -> ValueError:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    why = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler error" in ln),
               lines[0] if lines else type(err).__name__)
    why = why.replace("WeightsUnpickler error: ", "")
    return ValueError(f"refused {where}: unpickling it would need code ({why[:160]}); wdscale runs no code from "
                      "a file. Save the weights with safetensors or torch.save(model.state_dict())")


def _torch_load(src, where: str):
    import pickle

    if isinstance(src, (bytes, bytearray)):
        f, zipped = io.BytesIO(src), src[:4] == b"PK\x03\x04"
    else:
        with open(src, "rb") as fh:
            zipped = fh.read(4) == b"PK\x03\x04"
        f = src
    import warnings

    try:
        # mmap: a multi-GB checkpoint is paged in one tensor at a time (zip format only).
        with warnings.catch_warnings():  # torch warns about pickle protocols: not the user's business here
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True, mmap=zipped and not isinstance(src, bytes))
    except pickle.UnpicklingError as e:  # the weights-only unpickler refused a global: nothing was called
        raise _refusal(where, e) from None
    except Exception as e:  # noqa: BLE001  garbage makes the unpickler raise anything (IndexError, EOFError...)
        msg = " ".join(str(e).split())[:200]
        if "weights_only" in msg or "Unsupported global" in msg:
            raise _refusal(where, e) from None
        raise ValueError(f"{where} is not a readable torch or safetensors checkpoint ({msg})") from None


def unwrap(obj, where: str = "checkpoint") -> dict:
    """The tensors of a (possibly nested) state dict, by name.

    nanoGPT saves {"model": sd, "optimizer": ..., "iter_num": ...}, Lightning {"state_dict": sd}: a dict without
    tensors at its top level is searched under NEST_KEYS first, then in the nested dict holding the most
    tensors.  ``_orig_mod.`` (torch.compile) and ``module.`` (DDP) prefixes are dropped."""
    for _ in range(4):
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        nested = {k: v for k, v in obj.items() if isinstance(v, dict)}
        key = next((k for k in NEST_KEYS if k in nested), None)
        if key is None and nested:
            key = max(nested, key=lambda k: sum(isinstance(v, torch.Tensor) for v in nested[k].values()))
        if key is None:
            break
        obj = nested[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{where} holds no state dict (no name -> tensor mapping found)")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue
        k = str(k)
        changed = True
        while changed:
            changed = False
            for pre in STRIP_PREFIXES:
                if k.startswith(pre):
                    k, changed = k[len(pre):], True
        out[k] = v
    return out


def load_state_dict(src, where: str | None = None) -> dict:
    """name -> tensor from a safetensors or torch file (path or bytes), or a folder of shards."""
    if isinstance(src, (bytes, bytearray)):
        where = where or "upload"
        if _is_safetensors(bytes(src[:9])):
            from safetensors.torch import load as st_load

            try:
                return unwrap(st_load(bytes(src)), where)
            except Exception as e:  # safetensors raises its own error type
                raise ValueError(f"{where}: bad safetensors file ({' '.join(str(e).split())[:160]})") from None
        return unwrap(_torch_load(bytes(src), where), where)
    path = Path(src)
    where = where or str(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".safetensors") or \
            sorted(p for p in path.iterdir() if p.suffix in CKPT_SUFFIXES)
        if not files:
            raise ValueError(f"{where}: folder has no *.safetensors, *.pt, *.pth, *.bin or *.ckpt file")
        out = {}
        for f in files:  # Hugging Face shards: model-00001-of-00002.safetensors, ...
            out.update(load_state_dict(f))
        return out
    if not path.exists():
        raise ValueError(f"{where}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    if _is_safetensors(head):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return unwrap({k: f.get_tensor(k) for k in f.keys()}, where)
        except Exception as e:
            raise ValueError(f"{where}: bad safetensors file ({' '.join(str(e).split())[:160]})") from None
    return unwrap(_torch_load(str(path), where), where)


# ---------------------------------------------------------------------------------------------
# One checkpoint
# ---------------------------------------------------------------------------------------------
def class_of(name: str, t: torch.Tensor, width: int, overrides: dict | None = None) -> str:
    """The param_groups class of one tensor (``rules.classify_tensor``): which dims scale with ``width``; a state
    dict has no module types, so where an embedding table and a readout look alike, the name decides."""
    return "vector" if t.ndim < 2 else classify_tensor(name, t.shape, width, overrides=overrides)


def _is_buffer(name: str, t: torch.Tensor) -> bool:
    """Not a parameter: integer/bool tensors, attention masks (GPT-2's h.N.attn.bias is a 1x1xTxT mask)."""
    last = name.rsplit(".", 1)[-1]
    return (not t.is_floating_point()) or last in ("masked_bias", "mask", "causal_mask") or \
        (last == "bias" and t.ndim >= 2)


def layer_of(name: str) -> int | None:
    """The block index of a parameter: the first all-digit dotted component (h.3.attn... -> 3)."""
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def summarize(sd: dict, path: str = "", width: int | None = None, overrides: dict | None = None, **sv_kw) -> dict:
    """Per 2-D tensor: shape, class, top_sv, fro, stable_rank; 1-D tensors as vectors; buffers skipped.

    Tensors that share storage (a tied embedding/readout) are measured once and marked ``tied_to``."""
    t0 = time.perf_counter()
    if width is None:
        width = infer_width(sd)
    matrices, vectors, skipped, seen = {}, {}, [], {}
    for name, t in sd.items():
        if _is_buffer(name, t) or t.numel() == 0:
            skipped.append(name)
            continue
        if t.ndim < 2:
            x = t.detach().float().reshape(-1)
            vectors[name] = {"shape": list(t.shape), "class": "vector", "norm": float(x.norm()),
                             "rms": float(x.norm() / math.sqrt(max(x.numel(), 1)))}
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        row = {"shape": list(t.shape), "class": class_of(name, t, width, overrides), "layer": layer_of(name)}
        if key in seen and key[0] != 0:
            src = matrices[seen[key]]
            row.update(top_sv=src["top_sv"], fro=src["fro"], stable_rank=src["stable_rank"], tied_to=seen[key])
        else:
            seen[key] = name
            W = t.detach().reshape(t.shape[0], -1).float()
            s, fro = top_sv(W, **sv_kw), float(torch.linalg.vector_norm(W))
            row.update(top_sv=s, fro=fro, stable_rank=(fro * fro / (s * s)) if s > 0 else None)
        matrices[name] = row
    return {"path": path, "width": int(width), "matrices": matrices, "vectors": vectors, "skipped": skipped,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# Several widths: ratios, exponents, verdict
# ---------------------------------------------------------------------------------------------
def _slope(widths, values) -> float | None:
    x, y = np.log(np.asarray(widths, float)), np.asarray(values, float)
    if len(set(widths)) < 2 or not np.all(y > 0):
        return None
    return float(np.polyfit(x, np.log(y), 1)[0])


def lam_exponent(alpha: float, cls: str, rule: str = "mup", a: float | None = None, b: float | None = None) -> float:
    """λ exponent that would hold σ_top flat, given σ_top ∝ d^α measured under ``rule``.

    σ_top ∝ √(η/λ)·d^α₀ (α₀ = 0.75 in the paper).  Trained with η ∝ d^-a, λ ∝ d^b (the rule's matrix
    exponents), the measured α = α₀ - (a + b)/2, so α₀ = α + (a + b)/2.  For hidden matrices (η ∝ 1/d under
    μP) the flat-σ λ exponent is ``theory.implied_wd_exponent(α₀)`` = 2α₀ - 1.  Embedding and readout keep an
    unscaled η and λ in every rule (rules.resolve), so there it is 2α: σ ∝ λ^-1/2 at fixed η."""
    if cls != "matrix":
        return 2 * alpha
    ea, eb = rule_exponents(rule, a, b)
    return implied_wd_exponent(alpha + 0.5 * (ea + eb))


def compare(summaries: list[dict], base: int | None = None, rule: str = "mup", a: float | None = None,
            b: float | None = None, tol: float = 0.10, overrides: dict | None = None) -> dict:
    """Match matrices by name; target/proxy σ_top ratio, fitted α per matrix and class, λ exponent, verdict.

    The proxy is ``summaries[base]`` (default: the narrowest), the target the widest of the others.  ``tol``: the relative
    σ_top change that still counts as matched.  With two widths, a matrix's class is read again from which of its
    dims differ between proxy and target (as microsoft/mup's set_base_shapes), in every checkpoint's row."""
    widths = [s["width"] for s in summaries]
    if base is None:
        base = min(range(len(widths)), key=lambda i: widths[i])
    others = [i for i in range(len(widths)) if i != base] or [base]
    target = max(others, key=lambda i: (widths[i], i))  # the widest other checkpoint
    names = [n for n in summaries[base]["matrices"] if all(n in s["matrices"] for s in summaries)]
    matched, ratios = {}, {}
    for n in names:
        rows = [s["matrices"][n] for s in summaries]
        if widths[target] != widths[base]:
            cls = classify_tensor(n, rows[target]["shape"], widths[target], rows[base]["shape"], overrides)
            for r in rows:
                r["class"] = cls
        svs = [r["top_sv"] for r in rows]
        ok = svs[base] > 0
        r = svs[target] / svs[base] if ok else None
        alpha = _slope(widths, svs)
        cls = rows[base]["class"]
        matched[n] = {"class": cls, "layer": rows[base].get("layer"), "top_sv": svs, "ratio": r, "alpha": alpha,
                      "lam_exponent": None if alpha is None else lam_exponent(alpha, cls, rule, a, b),
                      "tied_to": rows[base].get("tied_to")}
        if r is not None:
            ratios[n] = r
    classes = {}
    for cls in CLASSES:
        ms = [m for n, m in matched.items() if m["class"] == cls and m["ratio"] is not None and not m["tied_to"]]
        if not ms:
            continue
        rs = np.array([m["ratio"] for m in ms])
        al = [m["alpha"] for m in ms if m["alpha"] is not None]
        alpha = float(np.median(al)) if al else None
        classes[cls] = {"n": len(ms), "ratio_median": float(np.median(rs)), "ratio_min": float(rs.min()),
                        "ratio_max": float(rs.max()), "max_dev_pct": float(100 * np.abs(rs - 1).max()),
                        "alpha": alpha, "lam_exponent": None if alpha is None else lam_exponent(alpha, cls, rule, a, b)}
    return {"base": base, "target": target, "widths": widths, "rule": rule, "tol": tol, "matched": matched,
            "ratios": ratios, "classes": classes, "unmatched": sum(len(s["matrices"]) for s in summaries)
            - len(summaries) * len(names),
            "verdict": verdict(classes, widths[base], widths[target], rule, tol)}


def verdict(classes: dict, d0: int, d1: int, rule: str, tol: float) -> str:
    """One line on the hidden matrices (all matrices if the checkpoints have none)."""
    cls = "matrix" if "matrix" in classes else next(iter(classes), None)
    if cls is None:
        return "no matrix is present under the same name in every checkpoint: nothing to compare"
    c = classes[cls]
    what = "hidden-matrix" if cls == "matrix" else f"{cls}"
    span = f"from d={d0} to d={d1}"
    if c["max_dev_pct"] <= 100 * tol:
        return f"sublayer gains matched within {c['max_dev_pct']:.1f} %: {what} σ_top ratio " \
               f"{c['ratio_min']:.3f}–{c['ratio_max']:.3f} {span} ({c['n']} matrices)"
    if d0 == d1:
        return f"same width d={d0}: {what} σ_top differs by up to {c['max_dev_pct']:.1f} % (median ratio " \
               f"{c['ratio_median']:.3f}); give checkpoints of different widths for an exponent"
    if abs(c["ratio_median"] - 1) <= tol:
        return f"{what} σ_top matched within {100 * abs(c['ratio_median'] - 1):.1f} % at the median {span}, but " \
               f"some matrices differ by up to {c['max_dev_pct']:.1f} % (see the table)"
    verb = "grows" if c["alpha"] > 0 else "shrinks"
    how = "η ∝ 1/d" if cls == "matrix" else "η unscaled"
    return f"{what} σ_top {verb} like d^{c['alpha']:.2f} (median ratio {c['ratio_median']:.3f} {span}): your λ " \
           f"should scale like d^{c['lam_exponent']:.2f} ({how}; read as trained with rule {rule}, see --rule)"


def inspect(sources: list, base=None, widths: list[int] | None = None, overrides: dict | None = None,
            rule: str = "mup", a: float | None = None, b: float | None = None, tol: float = 0.10,
            names: list[str] | None = None, **sv_kw) -> dict:
    """The whole report (what ``--json`` prints).  ``sources``: paths or bytes; ``base``: index or path of the
    proxy (added if not among the sources); ``widths``: one per source (else inferred)."""
    sources = list(sources)
    names = list(names) if names else [s if not isinstance(s, (bytes, bytearray)) else f"upload {i}"
                                       for i, s in enumerate(sources)]
    bi = None
    if base is not None and not isinstance(base, int):
        if str(base) in map(str, sources):
            bi = [str(s) for s in sources].index(str(base))
        else:
            sources.insert(0, base)
            names.insert(0, str(base))
            bi = 0
    elif isinstance(base, int):
        bi = base
    if widths is not None and len(widths) != len(sources):
        raise ValueError(f"--widths has {len(widths)} entries for {len(sources)} checkpoints")
    sums = []
    for i, src in enumerate(sources):
        t0 = time.perf_counter()
        sd = load_state_dict(src, str(names[i]))
        s = summarize(sd, str(names[i]), None if widths is None else widths[i], overrides, **sv_kw)
        s["seconds"] = time.perf_counter() - t0  # load + measure
        sums.append(s)
        del sd
    out = {"checkpoints": sums}
    if len(sums) >= 2:
        c = compare(sums, bi, rule, a, b, tol, overrides)
        out.update(c)
    else:
        out.update(ratios={}, classes={}, matched={}, rule=rule, tol=tol, widths=[sums[0]["width"]],
                   verdict="one checkpoint: give two or more (proxy and target width) to compare σ_top")
    return out


# ---------------------------------------------------------------------------------------------
# Output: text, rows, figures
# ---------------------------------------------------------------------------------------------
def _g(v, f=".4g") -> str:
    return "-" if v is None else format(v, f)


def matrix_rows(report: dict) -> list[dict]:
    """One row per matched matrix (the app's table, the CSV export)."""
    ws = report.get("widths", [])
    rows = []
    for n, m in report.get("matched", {}).items():
        row = {"name": n, "class": m["class"], "layer": m["layer"]}
        for w, s in zip(ws, m["top_sv"]):
            row[f"top_sv d={w}"] = s
        row.update(ratio=m["ratio"], alpha=m["alpha"], lam_exponent=m["lam_exponent"], tied_to=m["tied_to"])
        rows.append(row)
    return rows


def checkpoint_rows(ck: dict) -> list[dict]:
    rows = [{"name": n, "shape": "×".join(map(str, m["shape"])), "class": m["class"], "top_sv": m["top_sv"],
             "fro": m["fro"], "stable_rank": m["stable_rank"], "tied_to": m.get("tied_to")}
            for n, m in ck["matrices"].items()]
    rows += [{"name": n, "shape": "×".join(map(str, v["shape"])), "class": "vector", "top_sv": None,
              "fro": v["norm"], "stable_rank": None, "tied_to": None} for n, v in ck["vectors"].items()]
    return rows


def format_report(report: dict) -> str:
    out = []
    for ck in report["checkpoints"]:
        out.append(f"{ck['path']}: width {ck['width']}, {len(ck['matrices'])} matrices, {len(ck['vectors'])} "
                   f"vectors, {ck['seconds']:.2f} s" + (f", skipped buffers: {len(ck['skipped'])}"
                                                          if ck["skipped"] else ""))
        w = max([len(n) for n in ck["matrices"]] + [4])
        out.append(f"  {'name':{w}}  {'shape':>13}  {'class':9}  {'top_sv':>9}  {'fro':>9}  {'stable_rank':>11}")
        for n, m in ck["matrices"].items():
            shape = "x".join(map(str, m["shape"]))
            tie = f"  (tied to {m['tied_to']})" if m.get("tied_to") else ""
            out.append(f"  {n:{w}}  {shape:>13}  {m['class']:9}  {_g(m['top_sv']):>9}  {_g(m['fro']):>9}  "
                       f"{_g(m['stable_rank'], '.1f'):>11}{tie}")
        if ck["vectors"]:  # grouped over blocks: h.*.ln_1.weight stands for one per layer
            groups = {}
            for n, v in ck["vectors"].items():
                groups.setdefault((_pattern(n), tuple(v["shape"])), []).append(v["rms"])
            out.append(f"  {len(ck['vectors'])} vectors (1-D: gains, biases; not matrices): " + ", ".join(
                f"{p} ({'x'.join(map(str, sh))}{f', ×{len(r)}' if len(r) > 1 else ''}, rms {np.median(r):.3g})"
                for (p, sh), r in groups.items()))
    if report.get("matched"):
        ws = report["widths"]
        b, t = report["base"], report["target"]
        out.append(f"\nmatched by name: {len(report['matched'])} matrices; proxy d={ws[b]}, target d={ws[t]}"
                   + (f"; {report['unmatched']} unmatched" if report.get("unmatched") else ""))
        w = max(len(n) for n in report["matched"])
        head = "  ".join(f"{'σ d=' + str(x):>9}" for x in ws)
        out.append(f"  {'name':{w}}  {'class':9}  {head}  {'ratio':>7}  {'α':>6}  {'λ exp':>6}")
        for n, m in report["matched"].items():
            svs = "  ".join(f"{_g(s):>9}" for s in m["top_sv"])
            out.append(f"  {n:{w}}  {m['class']:9}  {svs}  {_g(m['ratio'], '.3f'):>7}  {_g(m['alpha'], '+.2f'):>6}  "
                       f"{_g(m['lam_exponent'], '+.2f'):>6}")
        out.append("per class (median over matrices; tied copies not counted):")
        for cls, c in report["classes"].items():
            out.append(f"  {cls:9} n={c['n']:<3} ratio {c['ratio_median']:.3f} [{c['ratio_min']:.3f}, "
                       f"{c['ratio_max']:.3f}]  α {_g(c['alpha'], '+.2f')}  λ ∝ d^{_g(c['lam_exponent'], '+.2f')}")
    out.append("verdict: " + report["verdict"])
    return "\n".join(out)


def _pattern(name: str) -> str:
    return re.sub(r"(^|\.)\d+(\.|$)", r"\1*\2", name, count=1)


def to_json(report: dict) -> str:
    from ..training.store import _clean

    return json.dumps(_clean(report))
