"""What the Train page plans and says before (and around) Train, as plain functions without Streamlit.

Why this module: a page is a thin view (widgets, layout and calls).  The decisions behind the Train page — which
runs a form means, what a model-file study will train and in which ensembles, how long that takes here, what
each of the user's parameters gets, which label the button wears, and the sentences that say so — are functions
of plain data.  Here they are tested directly (tests/test_planning.py) instead of only through a browser, and a
second caller (the CLI, another page) can reuse them.  This is the ``show`` layer, next to ``jobs`` (the job
manager that then trains the plan); like the rest of the package it never imports Streamlit.  The slow steps (a
model file's classes, its step timings) are plain functions too: the page wraps them in its own caches.

Every error a user can cause is a ValueError (``BadInput`` included) with one line that says what to change: the
page shows it as one ``st.error``.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
from pathlib import Path

import numpy as np

from ..core.rules import decay_problem, resolve
from ..models import presets
from ..models.config import parse_numbers
from ..science import study
from ..science.verdict import horizon_warnings, sweep_horizon_warnings
from ..training.sweep import plan
from .jobs import LR_RANGE, MAX_RUNS, MAX_WIDTH, WD_RANGE, check_study

# -- the form's choices ----------------------------------------------------------------------------------------
LOG_GRID = [float(f"{m * 10 ** e:.3g}") for e in range(-5, 2) for m in (1, 2, 3, 5)]  # the η₀, λ₀ sliders
# ×√2 first: the default grid (η₀/2 … 2η₀ at 5 points) keeps every default run >= 3 τ (tests/test_tour.py)
SPACING = {"×√2": math.sqrt(2), "×2": 2.0, "×√10": math.sqrt(10), "×10": 10.0}
# the preset studies (wdscale.models.presets), the Transformer study of each regime run as study.run_study; the last:
# the lm design on a file of $WDSCALE_MODELS (wdscale.models.own)
PRESET_CHOICES = {"Your own grid": None, "LM regime (lm)": "lm", "Multi-epoch control (lm-epochs)": "lm-epochs",
                  "Your model file": None}
# Model files: only files listed in the server's $WDSCALE_MODELS folder (named when the server starts) can run:
# never a path typed into the browser, never uploaded code, never anything read from a store or the gallery.
# Listing reads names only; a file is imported when the user presses Load (to show its classes) or Train.
MODELS_ENV = "WDSCALE_MODELS"
MODEL_FILE = "Your model file"
OWN_DESIGN = "lm"  # the preset whose design (schedule, rules + fitted, lr octaves) a model-file study runs
ETA_MEMBERS = 4  # members timed per width for a model file's ETA
INIT_LABELS = {"mup": "mup: each class re-drawn as μP says", "keep": "keep: build()'s own init"}
# the columns the tables show as %.4g (the rest are text or integers)
TABLE_NUMBERS = ("lr η", "wd λ (torch)", "decay/step η·λ", "τ = 1/(ηλ) steps", "steps/τ")
RESOLVED_NUMBERS = TABLE_NUMBERS + ("m", "readout ×")
CLASS_NUMBERS = TABLE_NUMBERS + ("init std", "forward ×")
CORPUS_ERROR = "corpus is not usable text: upload a UTF-8 text file of at least 1000 characters"
# the form's help and notes: long sentences, kept here so the page reads as its layout
PRESET_HELP = ("the Transformer study of each regime (wdscale/models/presets.py; `wdscale study --preset NAME`), or "
               "the lm design on your own model file (`wdscale study --model FILE.py`)")
CUDA_NOTE = ("CUDA path: checked once on an H200 (docs/gpu/gpu_check.md): bf16 trains; synthetic ensemble vs "
             "alone agrees to 2e-3, not 1e-5, on CUDA. Rerun scripts/gpu_check.py on your GPU.")
OVERRIDES_HELP = ("give a parameter (name or regex) its class: matrix, vector, embedding or readout, e.g. "
                  "`lm_head.weight=readout; .*norm.*=vector`")
MEMBERS_HELP = ("auto: whichever of loop (each member its own module) and batched (torch.func vmap) is measured "
                "faster here")
# after a study's summary: the pages that show it in depth, (page, label, icon)
LINKS = {"preset": [("pages/regimes.py", "Regimes: this regime beside the other", ":material/compare_arrows:"),
                    ("pages/transfer.py", "Transfer: loss vs lr per width and rule", ":material/target:")],
         "own": [("pages/spectra.py", "Spectra: this study's matrices, under your parameter names",
                  ":material/show_chart:"),
                 ("pages/transfer.py", "Transfer: loss vs lr per width and rule", ":material/target:")]}
CANCELLED = {"preset": "Cancelled. Finished ensembles are stored and the interrupted one keeps a checkpoint: "
                       "**Resume** continues from there.",
             "own": "Cancelled. Finished ensembles are stored: **Resume** continues with the rest."}


def devices() -> list[str]:
    """The devices a study may ask for: cpu, auto, and cuda only where torch sees a GPU (so no choice fails)."""
    import torch

    return ["cpu", "auto"] + (["cuda"] if torch.cuda.is_available() else [])


def nums(xs) -> str:
    """Numbers as the page prints them: ``0.01, 0.02`` (``%g``: no float noise, no trailing zeros)."""
    return ", ".join(f"{x:g}" for x in xs)


def grid(center: float, n: int, factor: float) -> list[float]:
    """``n`` values spaced by ``factor`` around ``center`` (center in the middle), at 4 significant digits so the
    same grid gives the same floats, hence the same run ids (cached in the store, never retrained)."""
    k = np.arange(n) - (n - 1) / 2
    return [float(f"{center * factor ** i:.4g}") for i in k]


def study_button_label(state: dict) -> str:
    """Train, Resume (what is stored) or Show the summary, from a study's ``preset_state``: the button says what
    pressing it will do, so a finished study is never mistaken for one that trains again."""
    if state["complete"]:
        return "Show the summary (every run is in the store; nothing trains)"
    if state["stored"] or state["partial"]:
        return f"Resume ({state['stored']} of {state['n_runs']} runs stored)"
    return "Train"


def store_line(state: dict, phases: bool = False) -> str:
    """How much of a study (``preset_state``) is stored; ``phases``: a preset study, which also names its phases."""
    if not phases:
        return (f"{state['stored']} of {state['n_runs']} runs are in the store"
                + (f"; {state['partial']} cancelled mid-ensemble" if state["partial"] else "") + ".")
    return (f"{state['stored']} of {state['n_runs']} runs are in the store"
            + (f"; {state['partial']} cancelled mid-ensemble (resumed from a checkpoint)" if state["partial"] else "")
            + ". Phases: the proxy's η₀ × λ₀ grid → its optimum → transfer at the two smallest widths → "
              "the fitted rule's b from them → the rest.")


# -- your own grid: the form's values -> checked configs, and what to say about them before Train --------------------
def fmt_table(res, steps: int) -> list[dict]:
    """Rows of ``Resolved.table(steps)`` for a table: per class its lr, torch weight_decay, per-step decay and τ
    (an infinite τ, no decay, as an empty cell)."""
    rows = []
    for cls, r in res.table(steps).items():
        rows.append({"class": cls, "lr η": r["lr"], "wd λ (torch)": r["wd"], "decay/step η·λ": r["decay_per_step"],
                     "τ = 1/(ηλ) steps": None if math.isinf(r["tau"]) else r["tau"],
                     "steps/τ": r.get("steps_over_tau")})
    return rows


def save_corpus(raw: bytes, folder) -> str:
    """An uploaded corpus written once under ``folder`` by content hash (the same upload is the same file, so the
    same run ids); ValueError unless it is UTF-8 text of at least 1000 characters without NUL bytes."""
    try:
        text = raw.decode("utf-8")
        if "\x00" in text or len(text) < 1000:
            raise UnicodeDecodeError("utf-8", raw, 0, 1, "binary or too short")
    except UnicodeDecodeError:
        raise ValueError(CORPUS_ERROR) from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(raw).hexdigest()[:12]}.txt"
    if not path.exists():
        path.write_bytes(raw)
    return str(path)


def custom_study(model: str, widths: str, base_width, rules, steps, eta0: float, n_lr: int, spacing: str,
                 lrs: str = "", lam0: float = 0.0, n_wd: int = 1, wds: str = "", seeds: str = "0", a=None, b=None,
                 schedule: str = "constant", warmup: float = 0.0, corpus: str | None = "stdlib") -> dict:
    """The study the Train form describes, checked (``jobs.check_study``): explicit lr/λ lists win over the grids
    around η₀, λ₀ (spaced by ``SPACING[spacing]``; λ₀ = 0 is the single λ 0).  Returns configs, widths, lrs, wds
    and seeds; ValueError, one line, on bad input (a transformer needs a corpus: ``None`` is a failed upload)."""
    ws = parse_numbers(widths, int)
    lr_list = parse_numbers(lrs, float) if lrs.strip() else grid(eta0, n_lr, SPACING[spacing])
    if wds.strip():
        wd_list = parse_numbers(wds, float)
    else:
        wd_list = grid(lam0, n_wd, SPACING[spacing]) if lam0 > 0 else [0.0]
    seed_list = parse_numbers(seeds, int) or [0]
    if model == "transformer" and corpus is None:
        raise ValueError("upload a corpus file, or choose the stdlib corpus")
    common = dict(a=a, b=b, schedule=schedule, warmup=float(warmup))
    if model == "transformer":
        common["corpus"] = corpus
    configs = check_study(model, ws, int(base_width), rules, lr_list, wd_list, int(steps), seed_list, **common)
    return {"configs": configs, "widths": ws, "lrs": lr_list, "wds": wd_list, "seeds": seed_list}


def study_line(s: dict) -> str:
    """One line naming a ``custom_study``: how many runs, over which widths, grids and seeds."""
    return (f"**{len(s['configs'])} runs**: widths {s['widths']}, η₀ ∈ {{{nums(s['lrs'])}}}, "
            f"λ₀ ∈ {{{nums(s['wds'])}}}, seeds {s['seeds']}.")


def decay_warning(configs) -> str | None:
    """The per-step decays η·λ that are large but allowed (check_study refused those above 1), three named, or
    None: a large decay shrinks the weights faster than the loss can shape them."""
    msgs = list(dict.fromkeys(p[1] for p in (decay_problem(c.resolved()) for c in configs)
                              if p and p[0] == "warning"))
    if not msgs:
        return None
    return ("Large per-step decay η·λ: " + "; ".join(msgs[:3])
            + (f"; and {len(msgs) - 3} more" if len(msgs) > 3 else ""))


def resolved_rows(rule: str, widths, base_width: int, eta0: float, lam0: float, a, b, steps: int
                  ) -> tuple[list[dict], list[str]]:
    """One rule's per-class settings at every width (at η₀, λ₀), before anything trains, and its horizon
    warnings (the first per width): what the rule does to lr and weight decay is visible before paying for it."""
    rows, warnings, warned = [], [], set()
    for w in widths:
        res = resolve(rule, w, int(base_width), eta0, lam0, a, b)
        for row in fmt_table(res, int(steps)):
            rows.append({"width": w, "m": res.m, "readout ×": res.readout_mult, **row})
        for msg in horizon_warnings(res, int(steps)):
            if w not in warned:
                warned.add(w)
                warnings.append(f"{rule}, d={w}: {msg}")
    return rows, warnings


def horizon_check(configs) -> tuple[str, str, str]:
    """(kind, text, icon): a "warning" when some run of the grid (every run, not only η₀, λ₀) stops before 3 τ of
    its matrix class, so its result is not steady-state evidence; else a "success" naming the shortest horizon."""
    grid_warnings = sweep_horizon_warnings(configs)
    if grid_warnings:
        return "warning", "Horizon check: " + " ".join(grid_warnings), ":material/hourglass_empty:"
    short = min(c.resolved().table(c.steps)["matrix"]["steps_over_tau"] for c in configs)
    return "success", (f"Horizon check: every run reaches ≥ 3 τ of its matrix class (shortest {short:.1f} τ): "
                       "steady-state evidence."), ":material/check_circle:"


def store_plan(configs, store) -> dict:
    """What Train would do with these configs: n_todo runs to train, a line saying so, and the button's label
    (Show when every run is already stored)."""
    cached, todo = plan(configs, store)
    n_todo = sum(len(c) for c in todo)
    return {"n_todo": n_todo, "label": "Train" if n_todo else "Show (all runs are in the store)",
            "line": f"{len(cached)} of {len(configs)} runs are already in the store; {n_todo} to train "
                    f"in {len(todo)} ensemble(s)."}


def session_records(snap: dict | None, cached_ids, store) -> list[dict]:
    """This session's results only: its job's own records, else the stored runs it asked to Show (``cached_ids``);
    two sessions training at once never see each other's study here."""
    recs = snap["records"] if snap else []
    if not recs and cached_ids:
        recs = [r for r in (store.get(i) for i in cached_ids) if r]
    return recs


def study_figures(recs: list[dict]) -> list[tuple]:
    """(figure, name) of a finished study's two first answers: loss vs lr per width (does the optimum move?) and
    the top singular value vs width (does the rule keep the matrices' scale?); finished runs only."""
    from ..science import analysis
    from . import plots

    ok = [r for r in recs if r.get("status") == "done"]
    return [(plots.loss_vs_param(ok, "lr", analysis.lr_optima(ok, param="lr")), "train_loss_vs_lr"),
            (plots.top_sv_vs_width(ok, analysis.width_exponents(ok, n_boot=200)), "train_top_sv_vs_width")]


# -- preset studies --------------------------------------------------------------------------------------------
def preset_plan(name: str, store) -> dict:
    """A preset study (``presets.get(name)``; ValueError naming the choices) at its steps (``WDSCALE_DEMO_STEPS``
    shrinks them) and where it stands in the store (``study.preset_state``: phases, stored, optimum used)."""
    spec = presets.get(name)
    steps = study._steps(None, spec)
    return {"spec": spec, "steps": steps, "state": study.preset_state(spec, store, steps)}


def study_result(snap: dict | None) -> dict | None:
    """What a finished study job (``study.run_study``'s result) says: its sentence, whether that is conclusive, the
    plain reading and the summary table as text; None while it runs, after a cancel (a partial result says
    nothing yet) or without a job."""
    res = (snap or {}).get("result")
    if not res or res.get("partial"):
        return None
    return {"conclusive": bool(res.get("conclusive")), "sentence": res["sentence"], "reading": res.get("reading"),
            "table": study.format_summary(res)}


def preset_settings(spec: dict, steps: int, ds: dict | None = None) -> list[dict]:
    """A preset's settings as (setting, value) rows; ``ds`` is ``presets.data_slice(spec, steps)`` (what a run
    reads, and how many epochs that is: the regime's defining number), None for the synthetic model."""
    c = spec["common"]
    rows = [("model", f"{spec['model']}, depth {c.get('depth')}, head dim {c.get('head_dim')}"),
            ("regime", spec["regime"]),
            ("widths", f"{nums(spec['widths'])} (proxy d₀ = {spec['base_width']})"),
            ("sequence, batch", f"seq {c.get('seq_len')} bytes, batch {c.get('batch_size')}"),
            ("schedule", f"{c.get('schedule')}, warmup {c.get('warmup', 0):.0%} of the steps"),
            ("steps", f"{steps}" + (f" (preset: {spec['steps']}; WDSCALE_DEMO_STEPS)" if steps != spec["steps"] else "")),
            ("seeds", nums(spec["seeds"])),
            ("proxy grid", f"η₀ ∈ {{{nums(spec['proxy_lrs'])}}} × λ₀ ∈ {{{nums(spec['proxy_wds'])}}} at d₀"),
            ("transfer", f"rules {', '.join(spec['rules'])}{' + fitted (λ ∝ d^b, b = e/b̂ from the measured law)' if spec.get('fitted') else ''}"
                         f" at λ₀, lr = η₀·2^k, k ∈ {{{nums(spec['lr_octaves'])}}} octaves")]
    if ds:
        src = (f"the first {ds['train_bytes']:,} bytes of the training split" if ds["sliced"]
               else f"the whole training split ({ds['train_bytes']:,} bytes)")
        rows.append(("data", f"{ds['bytes_per_step']} bytes per step, {ds['bytes_read']:,} bytes per run from {src}: "
                             f"{ds['epochs']:.2f} epochs"))
    return [{"setting": k, "value": v} for k, v in rows]


def preset_note(spec: dict, state: dict) -> str:
    """The end of a preset's ETA line: at which (η₀, λ₀, b) the later phases are counted, measured or assumed,
    because the transfer phases' size depends on an optimum that may not be known yet."""
    if state["optimum_known"]:
        return (f" The proxy optimum is measured: η₀ = {state['eta0']:.3g}, λ₀ = {state['lam0']:g}"
                + (f", fitted b = {state['b']:+.2f}." if state["b_known"] and state["b"] is not None else
                   "; the fitted rule's b could not be measured on the two smallest widths (no fitted phase)."
                   if state["b_known"] and spec.get("fitted") else
                   f"; the fitted rule's b is assumed {state['b']:g} until the two smallest widths are trained."
                   if spec.get("fitted") else "."))
    return (f" An estimate before the proxy optimum is known: transfer counted at the proxy grid's middle, "
            f"η₀ = {state['eta0']:.3g}, λ₀ = {state['lam0']:g}"
            + (f", fitted b = {state['b']:g}." if spec.get("fitted") else "."))


# -- your model file (wdscale.models.own): the lm preset's design on a file of the server's $WDSCALE_MODELS folder ---
def models_folder() -> str | None:
    """The folder of model files this server may run ($WDSCALE_MODELS), or None: model files are off."""
    return os.environ.get(MODELS_ENV) or None


def model_files_caption(folder: str) -> str:
    """What the model-file form runs and when a file is imported (never by listing it)."""
    return (f"Files of `{folder}` (`{MODELS_ENV}`, named when the server started), listed by name only: a file is "
            "imported when you press **Load** or **Train**. A model file defines `build(width)`, `batches(seed)`, "
            "`val_batches()` and optionally `loss(model, batch)` (docs/own-model.md). The study runs the "
            f"`{OWN_DESIGN}` preset's design on it, as `wdscale study --model FILE.py` does: the proxy's η₀ × λ₀ "
            "grid at the smallest width, then rules mup, wd, indep and the fitted rule at lr = η₀·2^k.")


def models_off_text() -> str:
    """Without $WDSCALE_MODELS: how to turn model files on (off unless the server names a folder, so a browser can
    never make the server import code of its choosing)."""
    return (f"Model files are off: start the server with a folder of them, `{MODELS_ENV}=examples streamlit run "
            "app.py`.")


def no_models_text(folder: str) -> str:
    """The folder is set but offers no file: name it, so the fix (put a ``*.py`` there) is plain."""
    return f"No model files (`*.py`) in `{folder}` (`{MODELS_ENV}`)."


def load_prompt(name: str) -> str:
    """Before Load: the file is named, not imported (importing runs its code in the server)."""
    return (f"`{name}` is not imported yet. **Load** imports it (its code runs in this server) and shows which "
            "parameter gets which class, lr and weight decay.")


def own_defaults() -> dict:
    """The model-file form's defaults, as text: the ``lm`` design's widths, steps and proxy grid."""
    spec = presets.get(OWN_DESIGN)
    return {"widths": ",".join(map(str, spec["widths"])), "steps": spec["steps"],
            "lrs": ",".join(f"{x:g}" for x in spec["proxy_lrs"]), "wds": ",".join(f"{x:g}" for x in spec["proxy_wds"])}


def override_text(overrides: str) -> str:
    """The overrides as one ``NAME=CLASS; …`` string, "" when blank (the form's field as the study stores it)."""
    return ";".join([overrides] if overrides.strip() else [])


def own_study_spec(path, widths: str, steps, proxy_lrs: str, proxy_wds: str, init: str = "mup",
                   overrides: str = "") -> dict:
    """The `lm` preset's design on a model file, as `wdscale study --model FILE --widths W --steps N --proxy-lrs L
    --proxy-wds D` builds it (``study.own_spec``, which imports the file).  ValueError (BadInput too), one line:
    the form's limits are checked first, so a typo never costs an import."""
    ws = parse_numbers(widths, int)
    if len(set(ws)) < 2:
        raise ValueError("give at least two widths, e.g. 32,64,128: the smallest is the proxy d₀, and the fitted "
                         "rule is measured on the two smallest")
    if min(ws) <= 0 or max(ws) > MAX_WIDTH:
        raise ValueError(f"widths must be positive integers up to {MAX_WIDTH}, got {ws}")
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    lrs, wds = parse_numbers(proxy_lrs, float), parse_numbers(proxy_wds, float)
    if not lrs or not wds:
        raise ValueError("the proxy grid needs at least one lr η₀ and one weight decay λ₀")
    for v in lrs:
        if not (LR_RANGE[0] <= v <= LR_RANGE[1]):
            raise ValueError(f"learning rate η₀={v:g} is out of range [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}]")
    for v in wds:
        if not (0 < v <= WD_RANGE[1]):
            raise ValueError(f"weight decay λ₀={v:g} is out of range (0, {WD_RANGE[1]:g}] (torch weight_decay)")
    args = argparse.Namespace(model=str(path), override=[overrides] if overrides.strip() else [], init=init,
                              widths=widths, steps=int(steps), proxy_lrs=proxy_lrs, proxy_wds=proxy_wds)
    return study.own_spec(presets.get(OWN_DESIGN), args)


def own_study_state(spec: dict, store) -> dict:
    """Where a model-file study stands in the store (``study.preset_state``: its phases, what is stored, the
    optimum used for counting); ValueError when it has more than ``MAX_RUNS`` runs, before anything is timed."""
    state = study.preset_state(spec, store, spec["steps"])
    if state["n_runs"] > MAX_RUNS:
        raise ValueError(f"study too big: {state['n_runs']} runs (limit {MAX_RUNS}); use fewer widths or a "
                         "smaller proxy grid")
    return state


def own_settings(path, sha: str, spec: dict, init: str, overrides: str) -> list[dict]:
    """A model-file study's settings as (setting, value) rows: the file (and its digest: what the runs depend on),
    widths, steps, schedule, the proxy grid and the transfer design."""
    c = spec["common"]
    rows = [("model file", f"{path} (sha256 {sha[:12]}…; the runs are named {spec['model']})"),
            ("widths", f"{nums(spec['widths'])} (proxy d₀ = {spec['base_width']})"),
            ("steps", f"{spec['steps']}"),
            ("schedule", f"{c.get('schedule')}, warmup {c.get('warmup', 0):.0%} of the steps"),
            ("proxy grid", f"η₀ ∈ {{{nums(spec['proxy_lrs'])}}} × λ₀ ∈ {{{nums(spec['proxy_wds'])}}} at d₀"),
            ("transfer", f"rules {', '.join(spec['rules'])} + fitted (λ ∝ d^b, b = e/b̂ from the measured law) at λ₀, "
                         f"lr = η₀·2^k, k ∈ {{{nums(spec['lr_octaves'])}}} octaves"),
            ("init, overrides", f"{init}; {overrides.strip() or 'none'}")]
    return [{"setting": k, "value": v} for k, v in rows]


def class_config(spec: dict, width: int, rule: str, eta0: float, lam0: float):
    """The one run whose classes the table shows: this width and rule at (η₀, λ₀), seed 0."""
    from ..training.sweep import expand_grid

    return expand_grid(spec["model"], [width], spec["base_width"], [rule], [eta0], [lam0], spec["steps"], [0],
                       data_seed=0, **spec["common"])[0]


def class_rows(path: str, cfg, overrides: str = "") -> list[dict]:
    """``own.class_rows`` of the file at ``cfg`` (imports the file: only on the user's Load)."""
    from ..models.own import class_rows as rows_of, load, parse_overrides

    return rows_of(load(path), cfg, parse_overrides(overrides))


def class_table(rows: list[dict], steps: int) -> list[dict]:
    """own.class_rows for a table: one row per parameter (its own name), and the readout's output row, with
    steps/τ, so a class that never reaches steady state is visible before training."""
    out = []
    for r in rows:
        mult = r.get("mult")
        out.append({"parameter": r["name"], "shape": "×".join(map(str, r["shape"])) if r["shape"] else "",
                    "class": r["class"], "lr η": r["lr"], "wd λ (torch)": r["wd"],
                    "decay/step η·λ": r["decay_per_step"], "τ = 1/(ηλ) steps": r["tau"],
                    "steps/τ": steps / r["tau"] if r["tau"] else None, "init std": r["init_std"],
                    "forward ×": mult, "tied to": ", ".join(r["tied_to"]) or None})
    return out


def classes_caption(state: dict) -> str:
    """Under the classes table: at which (η₀, λ₀) it is drawn, and how to read τ and the output row."""
    return (f"At η₀ = {state['eta0']:.3g}, λ₀ = {state['lam0']:g} ({'the proxy optimum' if state['optimum_known'] else 'the proxy grid’s middle until its optimum is measured'}). "
            "torch's AdamW multiplies weight_decay by the lr: each step p ← p·(1 − η·λ), so τ = 1/(η·λ) steps. "
            "The readout's output row is μP's 1/m logit multiplier, a forward hook on the module that makes the "
            "logits.")


def own_plan(phases, store) -> list[list]:
    """The ensembles ``run_study`` trains for these phases, as the sweep plans them; a run an earlier phase trains
    counts as stored for the later ones (``cost.phases_eta``'s rule), so nothing is counted twice."""
    seen: set = set()

    class _View:
        def get(self, run_id):
            return {"run_id": run_id} if run_id in seen else store.get(run_id)

    out = []
    for phase in phases:
        out += plan(phase, _View())[1]
        seen.update(c.run_id for c in phase)
    return out


def member_step_times(path: str, configs, device: str, threads: int, overrides: str = "") -> dict:
    """Seconds per member-step of each member path, measured here on these members (``own.measure_paths``: one
    untimed step, then a few timed ones; the models are thrown away) with ``threads`` torch threads, as the job
    trains.  A model file's cost has no formula: only timing it says what it costs."""
    import torch

    from ..models.config import pick_device
    from ..models.own import load, measure_paths, parse_overrides

    n = len(configs)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t = measure_paths(load(path), list(configs), parse_overrides(overrides), pick_device(device))
    finally:
        torch.set_num_threads(before)
    return {"loop": t["loop"] / n, "batched": None if t["batched"] is None else t["batched"] / n,
            "batched_error": t["batched_error"]}


def own_eta(ensembles: list[list], how: str, measure) -> dict:
    """ETA of a model-file study: each width's member-step time (``measure(members)``: ``member_step_times`` on up
    to ETA_MEMBERS members of its first ensemble, the page's cached call) on the path ``own.choose_path`` would
    take for ``how`` (loop, batched or auto), times the study's member-steps.  The dict ``_ui.submit_study``
    reads: seconds, per_width, member_steps; and to_train, ensembles, rate, paths."""
    from ..models.own import BATCHED_MIN_SPEEDUP
    from ..training import cost

    out = {"seconds": 0.0, "per_width": {}, "member_steps": {}, "rate": {}, "paths": {},
           "to_train": sum(len(ch) for ch in ensembles), "ensembles": len(ensembles)}
    for ch in ensembles:
        w = ch[0].width
        if w not in out["rate"]:
            t = measure(tuple(ch[:min(ETA_MEMBERS, len(ch))]))
            if how == "loop" or t["batched"] is None:
                out["rate"][w], out["paths"][w] = t["loop"], "loop"
            elif how == "batched" or t["loop"] / t["batched"] >= BATCHED_MIN_SPEEDUP:
                out["rate"][w], out["paths"][w] = t["batched"], "batched"
            else:
                out["rate"][w], out["paths"][w] = t["loop"], "loop"
        n = cost.members(ch) * ch[0].steps
        out["member_steps"][w] = out["member_steps"].get(w, 0) + n
        out["per_width"][w] = out["per_width"].get(w, 0.0) + n * out["rate"][w]
    out["seconds"] = sum(out["per_width"].values())
    return out


def own_eta_text(eta: dict, optimum_known: bool) -> str:
    """The ETA line of a model-file study: total, per width (ms per member-step and the path), and what it
    leaves out, so the number is read as a measured plan, not a promise."""
    from ..training.cost import format_seconds

    per = ", ".join(f"d={w}: {format_seconds(s)} ({eta['rate'][w] * 1e3:.1f} ms per member-step, "
                    f"{eta['paths'][w]})" for w, s in sorted(eta["per_width"].items()))
    return (f"**ETA ≈ {format_seconds(eta['seconds'])}** for {eta['to_train']} runs in {eta['ensembles']} "
            f"ensembles, measured here: a few steps of up to {ETA_MEMBERS} members timed at each width "
            f"(own.measure_paths; {per}), times the study's member-steps. Evals and spectra snapshots come on "
            "top; the transfer phases are counted at "
            + ("the measured proxy optimum." if optimum_known else "the proxy grid's middle until its optimum is known."))
