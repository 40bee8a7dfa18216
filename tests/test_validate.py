"""wdscale validate: the analysis step on a constructed store with known power laws (no training)."""
import math

import numpy as np
import pytest
import torch

from wdscale.training.train import RunConfig
from wdscale.science.validate import analyse, format_table

ALPHA = 0.75  # sigma_top = sqrt(eta/lam) * d^ALPHA, as Fan et al. report


def fake_result(cfg: RunConfig, loss: float, jitter: float = 1.0):
    """A trainer result whose hidden matrix has sigma_top = sqrt(eta2/lam2) d^ALPHA and a fixed spectrum shape."""
    res = cfg.resolved()
    eta, lam = res.groups["matrix"]["lr"], res.groups["matrix"]["wd"]
    d = cfg.width
    top = math.sqrt(eta / lam) * d ** ALPHA * jitter
    shape = np.linspace(1.0, 0.1, d)  # width-invariant shape in rank/d
    sv = (top * shape).astype(np.float32)
    w = torch.diag(torch.from_numpy(sv))  # a matrix with exactly these singular values
    return {"config": cfg, "run_id": cfg.run_id, "status": "done", "steps_done": cfg.steps, "final_loss": loss,
            "train_loss": [loss], "diverged": False, "diverged_step": None, "evals": {cfg.steps: loss},
            "spectra": {"steps": [0, cfg.steps], "h0": np.stack([sv, sv])}, "weights": {"h0": w},
            "top_sv": {"h0": float(sv[0])}, "param_class": {"h0": "matrix"}, "resolved": res, "seconds": 0.0}


def build_store(store):
    rng = np.random.default_rng(0)
    recs = []
    for rule in ("mup", "wd", "indep"):
        for w in (64, 128, 256):
            for lr in (1e-2, 2e-2, 4e-2):
                c = RunConfig(model="synthetic", width=w, base_width=64, rule=rule, lr=lr, wd=1.0, steps=1000)
                # loss minimised at lr = 2e-2 at every width: no drift
                loss = 1.0 + (math.log2(lr / 2e-2)) ** 2
                recs.append(store.put(fake_result(c, loss, jitter=float(np.exp(rng.normal(0, 0.01))))))
    for lr in (1e-2, 4e-2):
        for wd in (2.0, 4.0):
            c = RunConfig(model="synthetic", width=128, base_width=64, rule="mup", lr=lr, wd=wd, steps=1000)
            recs.append(store.put(fake_result(c, 2.0)))
    return recs


def test_analysis_recovers_the_constructed_exponents(store):
    recs = build_store(store)
    res = analyse(recs, store.spectra, eta_lam_width=128)
    assert res["eta_lam"]["exponent"] == pytest.approx(0.5, abs=0.02)
    assert res["eta_lam"]["agrees"]
    # under eta2 ~ 1/d: exponent = ALPHA - (1 + b)/2 with b = 0, 0.5, 1
    for rule, b in (("mup", 0.0), ("wd", 0.5), ("indep", 1.0)):
        s = res["width_exponent"][rule]
        assert s["exponent"] == pytest.approx(ALPHA - (1 + b) / 2, abs=0.03), rule
        assert s["implied_lambda_exponent"] == pytest.approx(2 * ALPHA - 1, abs=0.06), rule
        assert s["agrees"]
    for d in res["lr_drift"].values():
        assert d["drift_octaves_per_doubling"] == pytest.approx(0.0, abs=1e-6)
        assert d["width_ratio"] == 4
    # the spectra differ only by sqrt(eta/lam) at fixed width and by a scale across widths: both collapse
    c = res["collapse_fixed_width"]
    assert c["rescaled"] < 0.02 and c["raw"] > 0.2  # jitter is 1% in sigma_top
    for v in res["collapse_shape_across_widths"].values():
        assert v["all"] < 0.02 and v["top"] < 0.02
    table = format_table(res, "constructed")
    assert "| 0.5 | 0.5" in table and "DIFFERS" not in table


def test_analysis_flags_a_wrong_exponent(store):
    """Records with sigma_top ~ d^1 under mup must be reported as disagreeing with the paper's 0.25."""
    recs = []
    for w in (64, 128, 256):
        c = RunConfig(model="synthetic", width=w, base_width=64, rule="mup", lr=1e-2, wd=1.0, steps=1000)
        r = fake_result(c, 1.0, jitter=(w / 64) ** 0.75)  # extra d^0.75 on top of the 0.25
        recs.append(store.put(r))
    res = analyse(recs, store.spectra)
    assert res["width_exponent"]["mup"]["exponent"] == pytest.approx(1.0, abs=0.02)
    assert res["width_exponent"]["mup"]["agrees"] is False
    assert "DIFFERS" in format_table(res, "wrong")


# -- the law's range: eta and lam apart, with S at every point ---------------------------------------------
def bent_result(cfg: RunConfig, knee: float = 2.0, low: float = 0.35):
    """sigma_top = sqrt(eta2) * lam^-k with k = 0.5 above lam = knee and ``low`` below it (continuous at the
    knee): the law holds for eta everywhere and for lam only above the knee."""
    res = cfg.resolved()
    eta, lam = res.groups["matrix"]["lr"], res.groups["matrix"]["wd"]
    k_lam = 0.5 if lam >= knee else None
    sv_top = math.sqrt(eta) * (lam ** -0.5 if k_lam else knee ** -0.5 * (lam / knee) ** -low)
    r = fake_result(cfg, 1.0)
    sv = (np.linspace(1.0, 0.1, cfg.width) * sv_top).astype(np.float32)
    r.update(spectra={"steps": [0, cfg.steps], "h0": np.stack([sv, sv])}, top_sv={"h0": float(sv[0])},
             weights={"h0": torch.diag(torch.from_numpy(sv))})
    return r


def test_law_range_measures_eta_and_lam_apart_with_S_and_local_slopes(store):
    from wdscale.science.validate import RANGE_ETAS, RANGE_LAM_ETAS, RANGE_LAMS, format_law_range, law_range, range_configs
    from wdscale.science.verdict import record_taus

    cs = range_configs(1000, (0, 1))
    assert len({c.run_id for c in cs}) == 2 * (5 + 5 * 2 - 2)  # (8e-3, 4) and (1.6e-2, 4) are in both sweeps
    assert max(RANGE_ETAS) / min(RANGE_ETAS) >= 16 and max(RANGE_LAMS) / min(RANGE_LAMS) >= 16
    recs = [store.put(bent_result(c)) for c in cs]
    rng = law_range(recs)
    eta, *lams = rng["sweeps"]
    assert eta["vary"] == "eta" and [s["at"] for s in lams] == list(RANGE_LAM_ETAS)
    assert eta["exponent"] == pytest.approx(0.5, abs=1e-6) and eta["span"] == pytest.approx(16)
    for sw in lams:
        assert sw["n"] == 10  # 5 lams x 2 seeds, pooled
        locals_ = [p["local"] for p in sw["points"][1:]]
        # below the knee (0.5 -> 1 -> 2) the planted 0.35, above it (2 -> 4 -> 8) 0.5
        assert locals_ == pytest.approx([0.35, 0.35, 0.5, 0.5], abs=1e-6)
        assert 0.35 < sw["exponent"] < 0.5 and sw["ci"][0] <= sw["exponent"] <= sw["ci"][1]
        for p in sw["points"]:  # S = sum_t eta_t lam of the matrix class: 1000 steps x eta0/2 x lam (constant lr)
            assert p["S"] == pytest.approx(1000 * p["lr"] / 2 * p["wd"], rel=1e-9)
            assert p["S"] == pytest.approx(record_taus(next(r for r in recs if (r["lr"], r["wd"]) ==
                                                            (p["lr"], p["wd"]))), rel=1e-12)
    # at eta 8e-3, lam 0.5 has S = 2 < 3: left out of the steady-state fit, which then sees less of the bend
    lo = lams[0]
    assert lo["points"][0]["S"] == pytest.approx(2.0)
    assert lo["steady_exponent"] > lo["exponent"]
    table = format_law_range(rng)
    assert "| lam | (0.008, 0.5) -> (0.008, 1) | 0.008 -> 0.004 | 2.0 -> 4.0 (S < 3) | 0.350 | DIFFERS |" in table
    assert "| lam | (0.016, 2) -> (0.016, 4) |" in table and "| 0.500 | agrees |" in table


def test_analyse_reports_the_range_only_when_it_was_swept(store):
    recs = build_store(store)
    assert "law_range" not in analyse(recs, store.spectra, eta_lam_width=128)


# -- the regimes: Transformer studies read from a gallery, beside the paper ---------------------------------
TF_NAMES = {f"l{i}_{n}": "matrix" for i in range(2) for n in ("wq", "wk", "wv", "wo", "w1", "w3", "w2")}


def tf_result(cfg: RunConfig, loss: float, alpha: dict):
    """A Transformer trainer result whose matrix class k has sigma_top = sqrt(eta2/lam2) d^alpha[k]."""
    from wdscale.science.regimes import matrix_class

    res = cfg.resolved()
    ratio = res.groups["matrix"]["lr"] / res.groups["matrix"]["wd"]
    tops = {n: math.sqrt(ratio) * cfg.width ** alpha[matrix_class(n)] for n in TF_NAMES}
    spectra = {n: np.stack([np.array([t, t / 2], np.float32)] * 2) for n, t in tops.items()}
    return {"config": cfg, "run_id": cfg.run_id, "status": "done", "steps_done": cfg.steps, "final_loss": loss,
            "train_loss": [loss], "diverged": False, "diverged_step": None, "evals": {cfg.steps: loss},
            "spectra": {"steps": [0, cfg.steps], **spectra}, "weights": {"emb": torch.zeros(2, 2)},
            "top_sv": tops, "param_class": {**TF_NAMES, "emb": "embedding"}, "resolved": res, "seconds": 0.0}


def build_tf_gallery(tmp_path, name="tf-lm", alpha=None, drift=None, eta0=0.016):
    """A reference study as the gallery ships it (``gallery.export``), with planted alphas and lr-optimum drifts."""
    from wdscale.science import gallery
    from wdscale.training.store import RunStore

    alpha = alpha or {"attn q": 0.75, "attn k": 0.75, "attn v": 0.8, "attn o": 0.8, "mlp gate": 0.7,
                      "mlp up": 0.7, "mlp down": 0.9}
    drift = drift or {"mup": 0.6, "wd": 0.0, "indep": -0.4}
    st = RunStore(tmp_path / f"build-{name}")
    lrs = [round(eta0 * 2 ** (k / 2), 7) for k in range(-3, 5)]
    recs = []
    for rule, dr in drift.items():
        for w in (32, 64, 128):
            opt = eta0 * 2 ** (dr * math.log2(w / 32))
            for lr in lrs:
                c = RunConfig(model="transformer", width=w, base_width=32, rule=rule, lr=lr, wd=0.1, steps=2000,
                              depth=2, seq_len=64, head_dim=16, batch_size=8, schedule="cosine", warmup=0.05,
                              data_seed=0)
                recs.append(st.put(tf_result(c, 1.5 + 0.1 * math.log2(lr / opt) ** 2, alpha)))
    spec = dict(title=name, grid={}, threads=1, weights_shipped=False, eta0=eta0)
    (tmp_path / "gallery").mkdir(exist_ok=True)
    gallery.export(st, recs, tmp_path / "gallery" / name, name, spec, {"wall_seconds": 123.0,
                                                                        "machine": {"cpu": "test cpu"}})
    return tmp_path / "gallery", alpha, drift


def test_gallery_regimes_read_the_transformer_studies_beside_the_paper(tmp_path):
    from wdscale.science.validate import format_regimes, gallery_regimes

    root, alpha, drift = build_tf_gallery(tmp_path)
    studies, notes = gallery_regimes(root)
    (s,) = studies  # tf-lm only; synthetic-4w and tf-epochs are not in this gallery
    assert s["name"] == "tf-lm" and s["regime"].startswith("LM pretraining") and s["eta0"] == 0.016
    assert s["widths"] == [32, 64, 128] and s["wall_seconds"] == 123.0 and s["machine"] == "test cpu"
    for k, a in alpha.items():  # alpha per class recovered through every rule's sqrt(eta/lam)
        assert s["alpha"][k]["alpha"] == pytest.approx(a, abs=1e-6), k
        assert s["alpha"][k]["implied_lambda_exponent"] == pytest.approx(2 * a - 1, abs=1e-6)
    for rule, dr in drift.items():
        assert s["rules"][rule]["drift"] == pytest.approx(dr, abs=0.02), rule
    assert s["best_named_rule"] == "wd" and s["all_interior"]
    # S at the wd rule's d=128 optimum: eta0/4 * lam0*2 * sum of the cosine schedule's factors
    from wdscale.models.config import schedule_sum

    S = s["rules"]["wd"]["at_optimum"][128]["S"]
    assert S == pytest.approx(0.016 / 4 * 0.1 * 2 * schedule_sum("cosine", 0.05, 2000, 4.0), rel=0.02)
    assert len(notes) == 1 and "tf-epochs" in notes[0] and "build_tf_gallery.py tf-epochs --preset lm-epochs" in notes[0]
    table = format_regimes(studies, notes)
    assert "| alpha, mlp down (95% CI) | 0.75 | 0.90 [0.90, 0.90] |" in table
    assert "| best named rule (smallest |drift|) | wd (lam ~ sqrt(d)) | wd |" in table
    assert "build_tf_gallery.py tf-epochs" in table


def test_gallery_regimes_say_how_to_build_missing_studies(tmp_path):
    from wdscale.science.validate import format_regimes, gallery_regimes

    studies, notes = gallery_regimes(tmp_path / "empty")
    assert studies == [] and len(notes) == 2
    assert all("missing" in n and "wdscale gallery reproduce" in n for n in notes)
    assert "tf-lm" in format_regimes(studies, notes)


def test_regimes_pool_alpha_over_every_matrix_and_flag_short_runs(tmp_path, store):
    from wdscale.science.validate import gallery_regimes, range_configs

    root, alpha, _ = build_tf_gallery(tmp_path)
    (s,) = gallery_regimes(root)[0]
    # every class at eta0 pooled: the geometric mean over 14 matrices of C d^alpha_k grows as d^mean(alpha_k)
    assert s["alpha_pooled"]["alpha"] == pytest.approx(np.mean([alpha[k] for k in s["alpha"]
                                                                 for _ in range(2)]), abs=1e-6)
    cs = [c for c in range_configs(1000, (0,)) if c.wd == 0.5]
    recs = [store.put(bent_result(c)) for c in cs]
    res = analyse(recs, store.spectra)
    assert res["short_runs"] == [(64, "mup", 0.008, 0.5, 2.0)]  # S = 1000 * 0.004 * 0.5; eta0 0.016 gives 4
    assert "below 3 tau: d=64 mup eta0 0.008 lam 0.5 (S = 2)" in format_table(res, "short")


def test_validate_law_only_reads_the_gallery_and_trains_nothing(tmp_path, capsys):
    import json as _json

    from wdscale.cli import main as _main

    assert _main(["validate", "--law-only", "--json", "--out", str(tmp_path / "v")]) == 0
    laws = _json.loads(capsys.readouterr().out)["law"]
    assert {"synthetic-4w", "tf-lm", "tf-epochs"} <= set(laws)
    assert not (tmp_path / "v").exists()  # nothing trained, nothing written
    syn = laws["synthetic-4w"]
    assert syn["scope"] == "all" and {"W1", "W2"} == set(syn["classes"])  # its proxy grid has one lam
    assert len(syn["over_time"]) == 10 and laws["tf-lm"]["over_time"] == []  # snapshots vs the final spectrum only
    for name in ("tf-lm", "tf-epochs"):
        p = laws[name]["pooled"]
        assert p["b"] > p["a"] + 0.2 and p["fro"] is not None and p["bulk"] is not None


def test_analyse_reports_the_law_of_its_own_runs(store):
    recs = store.records()
    res = analyse(recs, store.spectra)
    assert "law" in res and res["law"]["min_S"] == 3 and "sentence" in res["law"]
