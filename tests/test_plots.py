"""Plot functions return figures whose traces carry the data they were given; export helpers round-trip."""
import csv
import io
import json
import zipfile

import numpy as np
import pytest

from wdscale.science import analysis

from wdscale.show import export

from wdscale.show import plots


def rec(rule, width, lr, wd=1.0, loss=0.3, sv=1.0, diverged=False, steps=100, seed=0):
    return {"run_id": f"{rule}-{width}-{lr}-{wd}-{seed}", "model": "synthetic", "rule": rule, "width": width,
            "base_width": 64, "lr": lr, "wd": wd, "steps": steps, "seed": seed, "data_seed": seed,
            "schedule": "constant", "warmup": 0.0, "batch_size": None, "depth": None, "status": "done",
            "matrix_lr": lr, "matrix_wd": wd, "final_loss": None if diverged else loss, "diverged": diverged,
            "diverged_step": 7 if diverged else None, "param_class": {"h0": "matrix", "w_out": "readout"},
            "top_sv": {"h0": sv, "w_out": 1.0}, "train_loss": [[1, 1.0], [steps, loss]], "evals": {}}


def test_top_sv_vs_width_traces_and_fit():
    recs = [rec("mup", w, 0.01, sv=(w / 64) ** 0.25) for w in (64, 128, 256)]
    recs += [rec("wd", w, 0.01, sv=1.0) for w in (64, 128, 256)]
    fits = analysis.width_exponents(recs, n_boot=50)
    fig = plots.top_sv_vs_width(recs, fits)
    data = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(data) == 2
    mup = next(t for t in data if "mup" in t.name)
    assert list(mup.x) == [64, 128, 256]
    assert np.allclose(mup.y, [(w / 64) ** 0.25 for w in (64, 128, 256)])
    assert "d^0.25" in mup.name  # fitted exponent in the legend
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert len(fig.data) == 4  # + one dashed fit line per rule


def test_loss_vs_lr_panels_diverged_and_optimum():
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    recs = []
    for rule in ("mup", "wd"):
        for w in (64, 256):
            for lr in lrs:
                loss = 0.2 + (np.log(lr) - np.log(3e-3)) ** 2 * 0.01
                recs.append(rec(rule, w, lr, loss=loss, diverged=(lr == 3e-2 and w == 256)))
    opt = analysis.lr_optima(recs, param="lr")
    fig = plots.loss_vs_param(recs, "lr", opt)
    assert [a.text for a in fig.layout.annotations][:2] == [plots.rule_label("mup"), plots.rule_label("wd")]
    div = [t for t in fig.data if t.name == "diverged"]
    assert len(div) == 2 and all(list(t.x) == [3e-2] for t in div)  # one per rule panel, at its lr
    top = max(r["final_loss"] for r in recs if not r["diverged"])
    assert all(t.y[0] > top for t in div)  # drawn above every finite loss
    stars = [t for t in fig.data if t.name == "optimum"]
    assert len(stars) == 4
    assert all(abs(np.log(t.x[0] / 3e-3)) < 0.3 for t in stars)
    lines = [t for t in fig.data if t.name == "d=256" and t.xaxis == "x"]
    assert list(lines[0].x) == [1e-3, 3e-3, 1e-2]  # the diverged point is not on the line


def test_loss_vs_wd_axis_title_and_empty():
    recs = [rec("wd", 64, 0.01, wd=w, loss=0.3 + w) for w in (0.1, 0.3, 1.0)]
    fig = plots.loss_vs_param(recs, "wd")
    assert "weight decay" in fig.layout.xaxis.title.text
    assert plots.loss_vs_param([], "lr").layout.annotations[0].text == "no runs to show"


def test_spectra_and_training_plots():
    sv = np.sort(np.random.default_rng(0).random((5, 16)), axis=1)[:, ::-1]
    fig = plots.spectrum_steps([0, 10, 20, 30, 40], sv, upto=2)
    assert len(fig.data) == 3 and fig.data[-1].name == "step 20"
    assert np.allclose(fig.data[-1].y, sv[2])
    s = {"name": "d=64", "width": 64, "steps": [0, 10, 20], "top_sv": [1, 2, 3], "fro": [2, 3, 4],
         "fro_pred": 3.5, "tau": 10.0}
    fig = plots.top_sv_over_training([s])
    assert [t.name for t in fig.data] == ["d=64: σ_top", "d=64: ‖W‖_F", "d=64: √(ηN/2λ)"]
    assert any(sh.x0 == 10.0 for sh in fig.layout.shapes)  # tau marked
    fig = plots.spectra_plot([{"name": "a", "x": [1, 2], "y": [3, 1], "width": 64}])
    assert list(fig.data[0].y) == [3, 1]


def test_norm_pred_vs_measured_and_curves():
    rows = [{"rule": "mup", "width": 64, "param": "h0", "measured": 2.0, "predicted": 2.2, "steps_over_tau": 5,
             "run_id": "x"}]
    fig = plots.norm_pred_vs_measured(rows)
    assert fig.data[0].x[0] == 2.2 and fig.data[0].y[0] == 2.0
    assert fig.data[-1].name == "measured = predicted"
    fig = plots.loss_curves([{"name": "m", "steps": [1, 2], "loss": [1.0, 0.5], "width": 64}])
    assert list(fig.data[0].y) == [1.0, 0.5]
    t = np.linspace(0, 100, 11)
    fig = plots.warmup_factors(t, [{"name": "a", "s": t / 100}])
    assert len(fig.data[0].x) == 11


def test_coord_check_and_gain_plots():
    rows = [{"rule": r, "width": w, "step": s, "module": "h0", "rms": 1.0 + s * (w / 64 if r == "sp" else 1)}
            for r in ("sp", "mup") for w in (64, 128) for s in (0, 1)]
    fig = plots.coord_check_plot(rows, "h0")
    assert len(fig.data) == 4  # 2 rules x 2 steps
    sp1 = next(t for t in fig.data if t.name == "step 1" and t.xaxis == "x")
    assert list(sp1.y) == [2.0, 3.0]
    g = [{"rule": "mup", "param": "h0", "lr": 0.01, "wd": 1.0, "width": w, "gain": w / 64} for w in (64, 128)]
    assert list(plots.sublayer_gain_plot(g).data[0].y) == [1.0, 2.0]


def test_figure_csv_html_and_sweep_command():
    recs = [rec("mup", w, lr) for w in (64, 128) for lr in (1e-3, 1e-2)]
    fig = plots.loss_vs_param(recs, "lr")
    rows = list(csv.DictReader(io.StringIO(export.figure_csv(fig).decode())))
    assert len(rows) == 4 and {r["trace"] for r in rows} == {"d=64", "d=128"}
    assert float(rows[0]["x"]) == 1e-3
    html = export.figure_html(fig)
    assert b"<html>" in html[:200] and b"Plotly.newPlot" in html
    cmds = export.sweep_commands(recs)
    assert cmds == ["wdscale sweep --model synthetic --widths 64,128 --base-width 64 --rules mup "
                    "--lrs 0.001,0.01 --wds 1.0 --steps 100 --seed 0"]
    from wdscale.cli import build_parser  # the command parses with the real CLI
    args = build_parser().parse_args(cmds[0].split()[1:])
    assert args.widths == [64, 128] and args.lrs == [1e-3, 1e-2]


def test_group_studies_separates_settings():
    a = [rec("mup", 64, 0.01, steps=100), rec("wd", 128, 0.01, steps=100)]
    b = [rec("mup", 64, 0.01, steps=200)]
    studies = export.group_studies(a + b)
    assert list(studies.values()) == [b, a]  # newest first


def test_study_bundle_without_images():
    recs = [rec("mup", w, lr) for w in (64, 128) for lr in (1e-3, 1e-2)]
    z = zipfile.ZipFile(io.BytesIO(export.study_bundle("s", {"loss": plots.loss_vs_param(recs, "lr")}, recs,
                                                        formats=("html", "csv"))))
    names = set(z.namelist())
    assert {"figures/loss.html", "data/loss.csv", "data/runs.csv", "config.json", "reproduce.sh"} <= names
    assert len(json.loads(z.read("config.json"))["runs"]) == 4
    assert b"wdscale sweep" in z.read("reproduce.sh")


@pytest.mark.slow
def test_static_export_png_svg():
    figs = {"a": plots.loss_curves([{"name": "m", "steps": [1, 2], "loss": [1.0, 0.5], "width": 64}])}
    out = export.export_figures(figs, ("png", "svg"))
    assert out["a.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in out["a.svg"][:400]


@pytest.mark.parametrize("n", [1, 2, 7, 17, 33])
def test_colour_ramps_any_length(n):
    # 0.2 + 0.8 * 6/6 is 1.0000000000000002 in floats; sample_colorscale must never see that
    fig = plots.spectrum_steps(list(range(n)), np.ones((n, 4)))
    assert len(fig.data) == n
    assert len(plots.width_colors(range(1, n + 1))) == n
