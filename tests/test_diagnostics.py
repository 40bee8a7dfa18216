import pytest
import torch
from safetensors.torch import save_file

from wdscale.diagnostics import coord_check, sublayer_gains
from wdscale.sweep import expand_grid, run_sweep
from wdscale.train import TrainOptions


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows_by(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


@pytest.mark.parametrize("model", ["synthetic", "transformer"])
def test_sublayer_gains_of_stored_runs(store, model):
    extra = dict(seq_len=16, head_dim=16, batch_size=4, depth=1) if model == "transformer" else {}
    cfgs = expand_grid(model, [32, 64], 32, ["mup"], [1e-2], [0.1], steps=5, **extra)
    recs = run_sweep(cfgs, store, TrainOptions(n_evals=1, spectra_every=100))
    rows = sublayer_gains(store, recs)
    for rec in recs:
        mine = _rows_by(rows, run_id=rec["run_id"])
        expected = {"w1_0", "w2_0", "w1_1", "w2_1"} if model == "synthetic" else {"emb", "l0_wq", "l0_wk", "l0_wv", "l0_wo", "l0_w1",
                                                              "l0_w2", "l0_w3", "readout"}
        assert {r["param"] for r in mine} == expected
        for r in mine:
            assert r["gain"] > 0 and r["top_sv"] == pytest.approx(rec["top_sv"][r["param"]], rel=1e-4)
            if r["param"] in ("w1_0", "w2_1", "l0_wq", "l0_wo"):  # square: RMS gain <= spectral norm
                assert r["gain"] <= r["top_sv"] * (1 + 1e-5)
    # the gain is a property of the stored weights: doubling one matrix doubles its gain and sigma_top
    rec = recs[0]
    name = "w2_1" if model == "synthetic" else "l0_wo"
    w = store.weights(rec["run_id"])
    w[name] = w[name] * 2
    save_file(w, rec["weights"])
    before = _rows_by(rows, run_id=rec["run_id"], param=name)[0]
    after = _rows_by(sublayer_gains(store, [rec]), param=name)[0]
    assert after["gain"] == pytest.approx(2 * before["gain"], rel=1e-4)
    assert after["top_sv"] == pytest.approx(2 * before["top_sv"], rel=1e-4)


def _growth(rows, rule, module, step):
    by_w = {r["width"]: r["rms"] for r in _rows_by(rows, rule=rule, module=module, step=step)}
    ws = sorted(by_w)
    return by_w[ws[-1]] / by_w[ws[0]]


def test_coord_check_synthetic_sp_blows_up_mup_flat():
    rows = coord_check("synthetic", widths=(64, 128, 256), rules=("sp", "mup"), steps=4, lr=1e-2)
    assert {r["step"] for r in rows} == set(range(5))
    assert {"w_in", "w1_0", "w2_1", "logits"} <= {r["module"] for r in rows}
    sp, mup = _growth(rows, "sp", "logits", 4), _growth(rows, "mup", "logits", 4)
    assert sp > 1.8 and sp > 1.5 * mup
    assert _growth(rows, "sp", "w2_1", 4) > 1.5 * _growth(rows, "mup", "w2_1", 4)


def test_coord_check_transformer_and_module_filter():
    rows = coord_check("transformer", widths=(32, 64, 128), base_width=32, rules=("sp", "mup"), steps=6,
                       lr=1e-2, depth=2, modules=["logits", "l1_block", "emb"])
    assert {r["module"] for r in rows} == {"logits", "l1_block", "emb"}
    assert _growth(rows, "sp", "logits", 6) > 1.3 * _growth(rows, "mup", "logits", 6)
    assert _growth(rows, "sp", "l1_block", 6) > 1.3 * _growth(rows, "mup", "l1_block", 6)
    # before any update both rules share the init: same residual stream
    s0 = _rows_by(rows, step=0, module="l1_block", width=128)
    assert s0[0]["rms"] == pytest.approx(s0[1]["rms"], rel=0.1)
