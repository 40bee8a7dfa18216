"""wdscale validate: the analysis step on a constructed store with known power laws (no training)."""
import math

import numpy as np
import pytest
import torch

from wdscale.train import RunConfig
from wdscale.validate import analyse, format_table

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
