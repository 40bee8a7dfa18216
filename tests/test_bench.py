"""wdscale bench: the JSON contract, in the test-only tiny mode (a few steps; nothing here is timed)."""
import json
import math

import pytest

from wdscale.cli import main

KEYS = ["peak_gflops", "mfu_d64", "mfu_d128", "mfu_d256", "ensemble_speedup_d64", "ensemble_speedup_d128",
        "ensemble_speedup_d256", "ensemble_max_abs_diff", "spectra_overhead_pct", "demo_seconds", "device"]


def test_bench_json_has_every_key_with_sane_types(capsys):
    assert main(["bench", "--json", "--test-tiny"]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in KEYS:
        assert k in r, k
    assert r["device"] == "cpu"
    for k in ("peak_gflops", "mfu_d64", "ensemble_speedup_d64", "spectra_overhead_pct", "demo_seconds"):
        assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    assert r["mfu_d128"] is None and r["ensemble_speedup_d256"] is None  # tiny mode measures d=64 only
    # the ensemble trains exactly what the members would train alone
    assert r["ensemble_max_abs_diff"] <= 1e-5
    for k, t in r["targets"].items():
        assert set(t) >= {"target", "value", "pass"}, k
        assert t["pass"] is None if t["value"] is None else isinstance(t["pass"], bool)
    # pass/fail agrees with the value and the threshold
    for k in ("tf_study_flop_ratio", "tf_study_eta_s"):
        t = r["targets"][k]
        assert t["value"] == r[k] and t["pass"] == (r[k] <= {"tf_study_flop_ratio": 2.0, "tf_study_eta_s": 1200}[k])
    # the ensemble speedups are measured but retired as targets
    assert not any(k.startswith("ensemble_speedup") for k in r["targets"])
    # issue 24: the roofline ratio, and the timings moved here from tests
    assert r["demo_roofline_s"] > 0 and r["mem_bandwidth_gbs"] > 0
    assert r["demo_roofline_ratio"] == pytest.approx(r["demo_seconds"] / r["demo_roofline_s"])
    for k in ("demo_roofline_ratio", "calibration_cache_read_s", "bounds_refusal_s", "huge_corpus_refusal_s",
              "ui_rerun_s_while_training"):
        assert k in r["targets"], k
    assert r["ui_rerun_s_while_training"] is None and r["ui_rerun_reason"]  # tiny mode opens no browser
    # issue 27: the model-file trainer against the plain loop, and what batching the members buys
    assert r["own_model"] == "nanogpt" and r["own_overhead_ratio"] == pytest.approx(r["own_sweep_s"] / r["own_plain_loop_s"])
    assert r["own_batched_speedup"] is None or r["own_batched_speedup"] > 0
    assert "own_overhead_ratio" in r["targets"] and "own_batched_speedup" not in r["targets"]  # reported, no target


def test_bench_times_the_lm_preset_widest_and_narrowest_ensembles(capsys):
    """The ratio's denominator is the one cost model's FLOPs of the ensemble the lm study really trains."""
    from wdscale.training import cost
    from wdscale.models import presets
    from wdscale.cli.bench import TF_LAM0, format_report, tf_study_configs
    from wdscale.science.study import proxy_configs
    from wdscale.training.sweep import plan

    spec = presets.get("lm")
    cs = tf_study_configs()
    _, chunks = plan(cs, None)
    widest = max(chunks, key=lambda c: c[0].width)
    # the widest ensemble: rules incl. fitted x lr octaves x seeds
    assert widest[0].width == max(spec["widths"]) and cost.members(widest) == \
        (len(spec["rules"]) + 1) * len(spec["lr_octaves"]) * len(spec["seeds"])
    assert {c.rule for c in widest} == {"mup", "wd", "indep", "fitted"} and {c.wd for c in widest} == {TF_LAM0}
    assert all(c.schedule == "cosine" and c.depth == 2 and c.seq_len == 64 for c in cs)
    narrow = min(chunks, key=lambda c: c[0].width)
    assert cost.members(narrow) == len(proxy_configs(spec=spec))  # every d=32 transfer run is a twin of the grid's
    assert main(["bench", "--json", "--test-tiny"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["tf_study_width"] == 128 and r["tf_study_width_narrow"] == 32
    for k in ("tf_study_flop_ratio", "tf_study_flop_ratio_narrow", "tf_study_eta_s"):
        assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r[k])
    # tiny times four members: the ratio is that step over those members' FLOPs at the measured peak
    four = widest[:4]
    flops = cost.step_flops(four[0], cost.members(four))
    assert r["tf_study_gflop_per_step"] == pytest.approx(flops / 1e9)
    assert r["tf_study_flop_ratio"] == pytest.approx(r["tf_study_step_ms"] / 1e3 / (flops / (r["peak_gflops"] * 1e9)))
    assert r["tf_study_runs"] == len({c.run_id for c in cs}) and r["tf_study_eta_s"] == pytest.approx(
        sum(r["tf_study_eta_per_width_s"].values()))
    text = format_report(r)
    assert "lm study ETA (1 seed, cost model)" in text and "lm study: widest step / its FLOPs at peak" in text


def test_bench_rejects_unknown_device(capsys):
    assert main(["bench", "--device", "tpu", "--test-tiny"]) == 2
    assert "unknown device" in capsys.readouterr().err


def test_roofline_counts_a_matmul_at_peak_and_an_elementwise_op_at_bandwidth():
    from wdscale.cli.bench import op_roofline_seconds

    # (64 x 128) @ (128 x 32) at 1 GFLOP/s and 1 GB/s: 2*64*128*32 FLOPs vs (64*128 + 128*32 + 64*32) * 4 bytes
    flops = 2 * 64 * 128 * 32
    assert op_roofline_seconds("aten::mm", [[64, 128], [128, 32]], flops, 1.0, 1.0) == pytest.approx(flops / 1e9)
    assert op_roofline_seconds("aten::mm", [[64, 128], [128, 32]], flops, 1e6, 1.0) == pytest.approx(
        4 * (64 * 128 + 128 * 32 + 64 * 32) / 1e9)
    # a mul reads two inputs and writes one of their size; a view moves nothing
    assert op_roofline_seconds("aten::mul", [[10, 10], [10, 10]], 0, 1.0, 1.0) == pytest.approx(4 * 300 / 1e9)
    assert op_roofline_seconds("aten::view", [[10, 10], [2]], 0, 1.0, 1.0) == 0.0
