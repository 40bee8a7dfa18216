"""Study presets: the synthetic demo and the Transformer studies of the two regimes, as data.

A preset is everything ``wdscale.science.study.run_study`` needs: the model and its fixed settings (``common``: depth, batch,
schedule, data slice), the proxy's eta x lam grid at d0, the lr octaves of the transfer phase, the widths, rules
and seeds.  One code path trains them all (cached in the store like every sweep).

* ``synthetic``  the demo: the normalized residual MLP on a finite set revisited for ~60 epochs (docs/synthetic.md).
* ``lm``         the paper's regime, sized for a 2-core laptop: a LLaMA-style byte-level Transformer, at most one
                 pass over the stdlib corpus (random windows of the 7.2 MB training split; ~1 M bytes are read),
                 warmup then cosine decay to 10%.  Weight decay earns its place through the effective lr and the
                 loss after the decay, not as a regularizer (D'Angelo et al. 2024).
* ``lm-epochs``  the control on the same model and budget: the first 100 kB of the training split revisited for
                 ~10 epochs (Wang & Aitchison's regime, where tau = 1/(eta lam) fixed in epochs transfers).

The Transformer presets fix the proxy's seeds (``proxy_seeds``): the proxy optimum and the fitted rule's b are
measured on seed 0, and more seeds (``wdscale study --seeds 0,1,2``) add transfer runs only, so a 3-seed study
extends a 1-seed one instead of moving its grid.

Every study, including the demo, runs the ``fitted`` rule beside the named ones: ``custom`` with b = 2 alpha_hat - 1,
alpha_hat measured on the study's own two smallest widths under ``mup`` at (eta0, lam0) (``wdscale.science.regimes``).
Design search and what each design measured: docs/transformer.md (``scripts/explore_transformer.py``).
"""
from __future__ import annotations

# One half-octave lr ladder for every phase, so a transfer lr that the proxy grid already has is the very same
# float (the same run id: cached, not retrained).
LADDER = tuple(round(1e-3 * 2 ** (k / 2), 7) for k in range(0, 24))  # 1e-3 .. 2.9

_LM_COMMON = dict(depth=2, seq_len=64, head_dim=16, batch_size=8, schedule="cosine", warmup=0.05)
LM_STEPS = 2000
LM_TRAIN_BYTES = 100_000  # the epochs control: 2000 steps x 8 windows x 65 bytes = 1.04 MB read = 10.4 epochs

PRESETS: dict[str, dict] = {
    "synthetic": dict(
        model="synthetic", regime="multi-epoch (finite set, ~60 epochs), constant lr",
        base_width=32, widths=(32, 64, 128), rules=("mup", "wd", "indep"), fitted=True, steps=1000, seeds=(0, 1),
        # phase 1: seven half-octave lrs x three lams at d0 (every run >= 3 tau)
        proxy_lrs=LADDER[4:11],  # 4e-3 .. 3.2e-2: the corner (4e-3, lam 1) is still 4 tau at 1000 steps
        proxy_wds=(1.0, 3.0, 10.0),
        # phase 2: lr = eta0 * 2^octave, on the ladder; under mup the optimum moves up with width here
        lr_octaves=(-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5), common={},
        # phase 3 above d0: the fitted rule's lrs, around eta0 where its optimum is (measured: +0.45 and +0.88
        # octaves at 2 d0 and 4 d0, each seed's grid minimum at +0.5 and +1.0, so +1.5 keeps a point above it);
        # at d0 it keeps lr_octaves, whose runs there are mup's twins (read, not trained)
        fitted_octaves=(-0.5, 0.0, 0.5, 1.0, 1.5),
    ),
    "lm": dict(
        model="transformer", regime="LM pretraining: at most one pass, warmup + cosine decay",
        base_width=32, widths=(32, 64, 128), rules=("mup", "wd", "indep"), fitted=True, steps=LM_STEPS, seeds=(0,),
        proxy_seeds=(0,),  # (eta0, lam0) and the fitted b come from seed 0; --seeds adds transfer seeds only
        proxy_lrs=LADDER[4:12], proxy_wds=(0.03, 0.1, 0.3, 1.0),  # 4e-3 .. 4.5e-2
        lr_octaves=(-1.0, -0.5, 0.0, 0.5, 1.0, 1.5), common=dict(_LM_COMMON),
    ),
    "lm-epochs": dict(
        model="transformer", regime=f"multi-epoch control: {LM_TRAIN_BYTES // 1000} kB revisited ~10 epochs",
        base_width=32, widths=(32, 64, 128), rules=("mup", "wd", "indep"), fitted=True, steps=LM_STEPS, seeds=(0,),
        proxy_seeds=(0,),  # (eta0, lam0) and the fitted b come from seed 0; --seeds adds transfer seeds only
        proxy_lrs=LADDER[4:12], proxy_wds=(0.03, 0.1, 0.3, 1.0),
        # over epochs the optimum moves up with width (measured: +0.5 to +1.2 octaves per doubling), so the grid
        # reaches 3 octaves above eta0: with 1.5 the widest optima of mup/wd/fitted sat on the top edge, with 2.5
        # wd's (its d=128 curve is flat within 0.02 nats from eta0*2^1.5 to eta0*2^2.5)
        lr_octaves=(-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0), common=dict(_LM_COMMON, train_bytes=LM_TRAIN_BYTES),
    ),
}

for _k, _v in PRESETS.items():
    _v["name"] = _k


def get(name: str) -> dict:
    """A preset by name; ValueError (one line) naming the choices."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def step_bytes(model: str, settings: dict) -> int:
    """Bytes of text one training step reads (windows of seq_len + 1) for a preset's ``common`` or a run record
    (the same keys); 0 for the synthetic model."""
    if model != "transformer":
        return 0
    return int(settings.get("batch_size") or 16) * (int(settings.get("seq_len") or 128) + 1)


def train_bytes(settings: dict) -> int:
    """The training bytes a Transformer run draws from: its slice, or the corpus's whole training split."""
    from .data import load_corpus, split

    return int(settings.get("train_bytes") or len(split(load_corpus(settings.get("corpus") or "stdlib"))[0]))


def bytes_per_step(spec: dict) -> int:
    """Bytes of text one training step of a preset reads; 0 for the synthetic model."""
    return step_bytes(spec["model"], spec.get("common", {}))


def epochs(spec: dict, steps: int | None = None) -> float | None:
    """Passes over the training bytes a run makes (None for the synthetic model)."""
    if spec["model"] != "transformer":
        return None
    return bytes_per_step(spec) * (steps or spec["steps"]) / train_bytes(spec["common"])


def data_slice(spec: dict, steps: int | None = None) -> dict | None:
    """What a Transformer preset reads: bytes per step, bytes read by one run, the training bytes it draws from
    (the slice, or the whole training split) and the passes over them (``epochs``); None for the synthetic
    model."""
    if spec["model"] != "transformer":
        return None
    c = spec["common"]
    n = train_bytes(c)
    s = steps or spec["steps"]
    return {"bytes_per_step": bytes_per_step(spec), "bytes_read": bytes_per_step(spec) * s, "train_bytes": int(n),
            "sliced": bool(c.get("train_bytes")), "epochs": epochs(spec, s)}
