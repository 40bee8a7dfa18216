"""`wdscale inspect` on models wdscale never trained: nn.Embedding, LayerNorm, Linear with and without bias, tied
and untied heads, GPT-2's transposed Conv1D weights and names, nested state dicts; σ_top against
torch.linalg.svdvals; ratios and exponents on matrices with a known σ_top; refusal of a malicious pickle."""
import json
import math
import os
import pickle

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from wdscale.science import inspect as ck
from wdscale.show import inspect_plots
from wdscale.cli import main
from wdscale.core.theory import implied_wd_exponent


class Tiny(nn.Module):
    """Nothing wdscale has seen: embedding, LayerNorm, Linear with and without bias, tied or untied head."""

    def __init__(self, d=48, vocab=97, tied=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight


def gpt2_sd(d, layers=2, vocab=300, ctx=32, scale=1.0, seed=0, orth=False):
    """GPT-2 names and Conv1D layout (weights stored (in, out)).  orth=True: every hidden matrix has all singular
    values equal to ``scale`` (so σ_top is known exactly)."""
    g = torch.Generator().manual_seed(seed)

    def mat(i, o):
        if orth:
            q = torch.linalg.qr(torch.randn(max(i, o), min(i, o), generator=g))[0] * scale
            return q.contiguous() if i >= o else q.T.contiguous()
        return torch.randn(i, o, generator=g) * 0.02

    sd = {"transformer.wte.weight": torch.randn(vocab, d, generator=g) * 0.02,
          "transformer.wpe.weight": torch.randn(ctx, d, generator=g) * 0.01}
    for i in range(layers):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": torch.ones(d), p + "ln_1.bias": torch.zeros(d),
                   p + "attn.c_attn.weight": mat(d, 3 * d), p + "attn.c_attn.bias": torch.zeros(3 * d),
                   p + "attn.c_proj.weight": mat(d, d), p + "attn.c_proj.bias": torch.zeros(d),
                   p + "attn.bias": torch.tril(torch.ones(ctx, ctx)).view(1, 1, ctx, ctx),  # a mask, not a weight
                   p + "mlp.c_fc.weight": mat(d, 4 * d), p + "mlp.c_proj.weight": mat(4 * d, d)})
    sd["transformer.ln_f.weight"] = torch.ones(d)
    return sd


@pytest.mark.parametrize("shape", [(40, 70), (300, 900), (1200, 260), (513, 513)])
def test_top_sv_matches_svdvals(shape, one_thread):
    torch.manual_seed(0)
    W = torch.randn(*shape)
    W[:, :3] += 0.5  # a mild outlier direction, as trained matrices have; plain noise is tested too
    for M in (W, torch.randn(*shape)):
        exact = float(torch.linalg.svdvals(M)[0])
        assert ck.top_sv(M) == pytest.approx(exact, rel=1e-5)


def test_top_sv_low_rank_and_degenerate():
    u, v = torch.randn(600, 1), torch.randn(1, 400)
    assert ck.top_sv(u @ v) == pytest.approx(float(u.norm() * v.norm()), rel=1e-5)  # rank 1: Krylov exhausts
    assert ck.top_sv(torch.zeros(500, 300)) == 0.0
    assert ck.top_sv(torch.eye(300) * 3) == pytest.approx(3.0, rel=1e-6)


@pytest.mark.parametrize("tied", [False, True])
def test_unknown_model_classes_and_sigma(tmp_path, tied):
    torch.manual_seed(1)
    m = Tiny(tied=tied)
    path = tmp_path / "tiny.pt"
    torch.save(m.state_dict(), path)
    rep = ck.inspect([str(path)])
    c = rep["checkpoints"][0]
    classes = {n: r["class"] for n, r in c["matrices"].items()}
    assert classes == {"wte.weight": "embedding", "fc.weight": "matrix", "proj.weight": "matrix",
                       "lm_head.weight": "readout"}
    assert set(c["vectors"]) == {"ln.weight", "ln.bias", "fc.bias"}
    assert c["width"] == 48
    sd = m.state_dict()
    for n, r in c["matrices"].items():
        W = sd[n].float()
        assert r["top_sv"] == pytest.approx(float(torch.linalg.svdvals(W)[0]), rel=1e-5)
        assert r["fro"] == pytest.approx(float(W.norm()), rel=1e-6)
        assert r["stable_rank"] == pytest.approx(r["fro"] ** 2 / r["top_sv"] ** 2)
    assert (c["matrices"]["lm_head.weight"].get("tied_to") == "wte.weight") is tied


def test_gpt2_conv1d_nested_and_safetensors_agree(tmp_path):
    sd = gpt2_sd(64)
    # nanoGPT layout: {"model": {"_orig_mod." + name: tensor}, "optimizer": ..., "iter_num": ...}
    opt_state = {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    torch.save({"model": {"_orig_mod." + k: v for k, v in sd.items()}, "optimizer": opt_state, "iter_num": 7,
                "config": {"n_embd": 64}}, tmp_path / "ckpt.pt")
    save_file(sd, str(tmp_path / "model.safetensors"))
    a, b = (ck.inspect([str(tmp_path / f)])["checkpoints"][0] for f in ("ckpt.pt", "model.safetensors"))
    assert set(a["matrices"]) == set(b["matrices"])
    assert "transformer.h.0.attn.bias" in a["skipped"]  # the causal mask is not a matrix
    assert a["matrices"]["transformer.h.0.attn.c_attn.weight"]["shape"] == [64, 192]  # (in, out) as stored
    assert a["matrices"]["transformer.h.1.attn.c_attn.weight"]["class"] == "matrix"
    assert a["matrices"]["transformer.wpe.weight"]["class"] == "embedding"
    assert a["matrices"]["transformer.wte.weight"]["class"] == "embedding"
    assert a["width"] == b["width"] == 64
    for n, r in a["matrices"].items():
        exact = float(torch.linalg.svdvals(sd[n])[0])
        assert r["top_sv"] == pytest.approx(exact, rel=1e-5)
        assert b["matrices"][n]["top_sv"] == pytest.approx(exact, rel=1e-5)
    # an upload is bytes
    up = ck.inspect([(tmp_path / "ckpt.pt").read_bytes()], names=["ckpt.pt"])["checkpoints"][0]
    assert up["matrices"]["transformer.h.0.mlp.c_fc.weight"]["top_sv"] == \
        pytest.approx(a["matrices"]["transformer.h.0.mlp.c_fc.weight"]["top_sv"])


def test_lightning_nesting_ddp_prefix_and_shard_folder(tmp_path):
    sd = Tiny().state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 3}, tmp_path / "l.ckpt")
    got = ck.load_state_dict(tmp_path / "l.ckpt")
    assert set(got) == set(sd)
    shards = tmp_path / "hf"
    shards.mkdir()
    keys = list(sd)
    save_file({k: sd[k].contiguous() for k in keys[:3]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k].contiguous() for k in keys[3:]}, str(shards / "model-00002-of-00002.safetensors"))
    assert set(ck.load_state_dict(shards)) == set(sd)


def test_ratios_exponent_and_verdict_on_known_spectra(tmp_path):
    paths = []
    for d in (32, 64, 128):
        p = tmp_path / f"d{d}.safetensors"
        save_file(gpt2_sd(d, orth=True, scale=(d / 32) ** 0.25), str(p))  # σ_top = (d/32)^0.25 exactly
        paths.append(str(p))
    rep = ck.inspect(paths[::-1])  # order does not matter: the narrowest is the proxy
    assert rep["widths"] == [128, 64, 32]
    r = rep["ratios"]["transformer.h.0.mlp.c_fc.weight"]
    assert r == pytest.approx(4 ** 0.25, rel=1e-4)
    m = rep["classes"]["matrix"]
    assert m["n"] == 8 and m["alpha"] == pytest.approx(0.25, abs=1e-4)
    # trained as mu-P with lam fixed: sigma ~ sqrt(eta/lam) d^a0 with eta ~ 1/d, so a0 = 0.75 and lam ~ d^0.5
    assert m["lam_exponent"] == pytest.approx(implied_wd_exponent(0.75), abs=1e-4)
    assert "grows like d^0.25" in rep["verdict"] and "d^0.50" in rep["verdict"]
    # the same alpha read as SP-trained (eta, lam fixed): lam ~ d^(2 alpha - 1)
    sp = ck.compare(rep["checkpoints"], rule="sp")
    assert sp["classes"]["matrix"]["lam_exponent"] == pytest.approx(2 * 0.25 - 1, abs=1e-4)
    # flat under the paper's rule: matched; the same rule read back says lam ~ sqrt(d) already
    flat = [ck.summarize(gpt2_sd(d, orth=True, scale=1.5), f"d{d}") for d in (32, 64)]
    rep2 = ck.compare(flat, rule="wd")
    assert rep2["verdict"].startswith("sublayer gains matched within 0.0 %")
    assert rep2["classes"]["matrix"]["lam_exponent"] == pytest.approx(0.5, abs=1e-4)


def test_base_option_and_width_override(tmp_path):
    for d in (32, 64):
        save_file(gpt2_sd(d, orth=True, scale=d / 32), str(tmp_path / f"d{d}.safetensors"))
    a, b = str(tmp_path / "d32.safetensors"), str(tmp_path / "d64.safetensors")
    rep = ck.inspect([b], base=a)  # the proxy may be given only as --base
    assert rep["widths"] == [32, 64] and rep["ratios"]["transformer.h.1.attn.c_proj.weight"] == pytest.approx(2.0)
    rep = ck.inspect([a, b], widths=[100, 400])
    assert rep["classes"]["matrix"]["alpha"] == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(ValueError, match="--widths"):
        ck.inspect([a, b], widths=[100])


def test_cli_json_schema_and_text(tmp_path, capsys):
    for d in (32, 64):
        torch.save({"model": gpt2_sd(d)}, tmp_path / f"d{d}.pt")
    args = [str(tmp_path / "d32.pt"), str(tmp_path / "d64.pt")]
    assert main(["inspect", *args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert set(rep) >= {"checkpoints", "ratios", "classes", "verdict"}
    c0 = rep["checkpoints"][0]
    assert set(c0) >= {"path", "width", "matrices"} and c0["width"] == 32
    assert set(c0["matrices"]["transformer.h.0.attn.c_proj.weight"]) >= {"shape", "class", "top_sv", "fro",
                                                                          "stable_rank"}
    assert all(math.isfinite(v) for v in rep["ratios"].values())
    assert main(["inspect", *args, "--override", r"c_proj=readout"]) == 0
    out = capsys.readouterr().out
    assert "verdict:" in out and "readout" in out and "vectors (1-D" in out


def test_bad_input_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert main(["inspect", str(junk)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "junk.pt" in err
    assert main(["inspect", str(tmp_path / "missing.pt")]) == 2
    assert main(["inspect", str(junk), "--override", "x=banana"]) == 2
    torch.save({"step": 3, "note": "no tensors"}, tmp_path / "empty.pt")
    assert main(["inspect", str(tmp_path / "empty.pt")]) == 2
    assert "no state dict" in capsys.readouterr().err


class Evil:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", ["torch", "pickle", "module"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, capsys, fmt):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    if fmt == "torch":  # zip format, tensors next to the payload
        torch.save({"model": {"w": torch.randn(4, 4), "x": Evil(marker)}}, path)
    elif fmt == "pickle":  # a legacy plain pickle
        path.write_bytes(pickle.dumps({"w": Evil(marker)}))
    else:  # a whole pickled nn.Module needs its class: refused as well
        torch.save(Tiny(), path)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused" in err and "runs no code" in err
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        ck.load_state_dict(path.read_bytes())
    assert not marker.exists()


def test_figures_and_rows():
    sums = [ck.summarize(gpt2_sd(d, orth=True, scale=(d / 32) ** 0.5), f"d{d}") for d in (32, 64, 128)]
    rep = ck.compare(sums)
    fig = inspect_plots.ratio_figure(rep)
    assert len(fig.data) >= 4 and all(abs(y - 2.0) < 1e-3 for tr in fig.data if tr.name and "matrix" in tr.name
                                      for y in tr.y)
    wf = inspect_plots.width_figure(rep)
    assert any("d^+0.50" in tr.name for tr in wf.data)
    from wdscale.show.export import figure_csv

    assert figure_csv(fig).count(b"\n") > 8
    rows = ck.matrix_rows(rep)
    assert rows[0]["top_sv d=32"] > 0 and "ratio" in rows[0]
    assert ck.checkpoint_rows(sums[0])
    assert inspect_plots.ratio_figure({"checkpoints": sums[:1], "matched": {}}).layout.annotations  # empty state


def test_app_page_paths_on_disk(tmp_path, monkeypatch):
    """The page through the app's navigation: two paths on disk give the verdict, table and figures."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    for d in (32, 64):
        save_file(gpt2_sd(d, orth=True, scale=(d / 32) ** 0.25), str(tmp_path / f"d{d}.safetensors"))
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/inspect.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.text_area(key="in_paths").input(f"{tmp_path / 'd64.safetensors'}\n{tmp_path / 'd32.safetensors'}").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("grows like d^0.25" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 2
    at.text_input(key="in_over").input("c_fc=banana").run()
    assert any("banana" in e.value for e in at.error)
    at.text_input(key="in_over").input("").run()
    at.text_area(key="in_paths").input(str(tmp_path / "nope.pt")).run()
    assert any("no such file" in e.value for e in at.error)


def test_app_page_monitor_log(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from wdscale.training.monitor import SpectralMonitor

    monkeypatch.setenv("WDSCALE_DATA", str(tmp_path / "runs"))
    m = Tiny(d=24)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1)
    with SpectralMonitor(m, opt, every=2, log_dir=tmp_path / "log") as mon:
        for _ in range(4):
            opt.step()
            mon.step()
    at = AppTest.from_file("../app.py", default_timeout=60)
    at.run()
    at.switch_page("pages/inspect.py")
    at.run()
    at.text_input(key="mon_path").input(str(tmp_path / "log")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 2
