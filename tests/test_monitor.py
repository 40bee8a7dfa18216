"""SpectralMonitor in a plain torch loop on a model wdscale never built: σ_top against svdvals, ‖W‖_F against
√(ηN/2λ) with each group's own lr and weight_decay, ‖ΔW‖/‖W‖, Σηλ under a schedule, the CSV and its reader."""
import math

import pytest
import torch
import torch.nn as nn

from wdscale.training.monitor import COLUMNS, SpectralMonitor, load_csv, norm_rows, series


class Conv1D(nn.Module):
    """GPT-2's Conv1D: the weight is stored (in, out), transposed against nn.Linear."""

    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Net(nn.Module):
    def __init__(self, d=32, vocab=50, tied=True):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.c_fc = Conv1D(d, 4 * d)
        self.proj = nn.Linear(4 * d, d, bias=False)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        h = self.wte(idx)
        h = h + self.proj(torch.relu(self.c_fc(self.ln(h))))
        return self.lm_head(h)


def groups(model, lr=1e-2, wd=0.1):
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return [{"params": decay, "weight_decay": wd, "name": "decay", "lr": lr},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay", "lr": lr}]


def train(model, opt, mon, steps, sched=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, 50, (8, 16), generator=g)
        loss = nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.roll(1, 1).flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        mon.step()  # after optimizer.step(), before the scheduler moves the lr on
        if sched:
            sched.step()


def test_records_every_n_with_the_groups_own_lr_and_wd(tmp_path, one_thread):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.AdamW(groups(model, lr=1e-2, wd=0.1))
    mon = SpectralMonitor(model, opt, every=5, log_dir=tmp_path)
    train(model, opt, mon, 20)
    mon.close()
    steps = sorted({r["step"] for r in mon.rows})
    assert steps == [5, 10, 15, 20]
    last = [r for r in mon.rows if r["step"] == 20]
    # one matrix per parameter: tied head counted once (named_parameters dedups); vectors not monitored
    assert {r["name"] for r in last} == {"wte.weight", "c_fc.weight", "proj.weight"}
    assert {r["class"] for r in last} == {"embedding", "matrix"}
    assert all(r["group"] == "decay" for r in last)
    sd = model.state_dict()
    for r in last:
        W = sd[r["name"]].float()
        assert r["fro"] == pytest.approx(float(W.norm()), rel=1e-6)
        exact = float(torch.linalg.svdvals(W)[0])
        assert r["top_sv"] <= exact * (1 + 1e-5)           # power iteration: a lower bound
        assert r["top_sv"] == pytest.approx(exact, rel=1e-3)  # warm-started block iteration keeps it close
        assert r["fro_pred"] == pytest.approx(math.sqrt(1e-2 * W.numel() / (2 * 0.1)))
        assert r["steps_over_tau"] == pytest.approx(20 * 1e-2 * 0.1)
        assert r["tau"] == pytest.approx(1 / (1e-2 * 0.1))
    rows = load_csv(tmp_path / "monitor.csv")
    assert len(rows) == len(mon.rows) and list(rows[0]) == COLUMNS
    assert rows[-1]["top_sv"] == pytest.approx(mon.rows[-1]["top_sv"])
    s = series(rows)
    assert len(s) == 3 and s[0]["steps"] == [5, 10, 15, 20] and s[0]["fro_pred"] > 0
    assert len(norm_rows(rows)) == 3


def test_relative_update_is_the_last_steps_change(one_thread):
    torch.manual_seed(1)
    model = Net(tied=False)
    opt = torch.optim.AdamW(groups(model, lr=3e-3, wd=0.0))
    mon = SpectralMonitor(model, opt, every=4)
    train(model, opt, mon, 3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, opt, mon, 1, seed=1)
    rows = {r["name"]: r for r in mon.rows if r["step"] == 4}
    for n, p in model.named_parameters():
        if p.ndim >= 2:
            want = float((p.detach() - before[n]).norm() / p.detach().norm())
            assert rows[n]["rel_update"] == pytest.approx(want, rel=1e-5)
            assert rows[n]["fro_pred"] is None and rows[n]["tau"] is None  # no weight decay: no steady state
    assert "lm_head.weight" in rows and rows["lm_head.weight"]["class"] == "readout"


def test_every_one_and_a_schedule_integrates_eta_lam(one_thread):
    torch.manual_seed(2)
    model = Net()
    opt = torch.optim.AdamW(groups(model, lr=1e-2, wd=0.5))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    mon = SpectralMonitor(model, opt, every=1)
    train(model, opt, mon, 6, sched=sched)
    want = sum(1e-2 / (1 + t) for t in range(6)) * 0.5  # the lr each step actually used

    assert mon.rows[-1]["steps_over_tau"] == pytest.approx(want)
    assert all(r["rel_update"] is not None for r in mon.rows)
    assert mon.rows[-1]["lr"] == pytest.approx(1e-2 / 6)


def test_overrides_bad_every_and_csv_errors(tmp_path):
    model = Net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    mon = SpectralMonitor(model, opt, every=1, overrides={r"c_fc": "readout"})
    mon.step()
    assert {r["name"]: r["class"] for r in mon.rows}["c_fc.weight"] == "readout"
    assert mon.rows[0]["group"] == "group0"
    with pytest.raises(ValueError, match="every"):
        SpectralMonitor(model, opt, every=0)
    with pytest.raises(ValueError, match="monitor log"):
        load_csv(b"a,b\n1,2\n")


def test_same_shape_matrices_go_through_together(one_thread):
    """Layers of one shape share the batched Krylov pass; a zero matrix among them stays 0 and the rest exact."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(40, 80), nn.Linear(40, 80), nn.Linear(40, 80), nn.Linear(80, 40))
    with torch.no_grad():
        model[1].weight.zero_()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    mon = SpectralMonitor(model, opt, every=1, block=4)
    mon.step()
    for r in mon.rows:
        W = dict(model.named_parameters())[r["name"]].detach()
        assert r["top_sv"] == pytest.approx(float(torch.linalg.svdvals(W)[0]), rel=1e-4, abs=1e-9)
    assert {r["name"]: r["top_sv"] for r in mon.rows}["1.weight"] == 0.0


def test_readme_loop_with_param_groups(tmp_path, one_thread):
    """The README's loop: param_groups' groups are named by class, and each group's lr/wd reach the prediction."""
    from wdscale.core.rules import param_groups

    torch.manual_seed(4)
    model = Net(d=64)
    groups = param_groups(model, width=64, base_width=16, rule="wd", lr=3e-3, wd=0.1)
    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    mon = SpectralMonitor(model, optimizer, every=2, log_dir=tmp_path)
    train(model, optimizer, mon, 4)
    last = {r["name"]: r for r in mon.rows if r["step"] == 4}
    assert last["c_fc.weight"]["group"] == "matrix" and last["wte.weight"]["group"] == "embedding"
    m = last["c_fc.weight"]
    assert m["lr"] == pytest.approx(3e-3 / 4) and m["weight_decay"] == pytest.approx(0.1 * 2)  # eta/m, lam*sqrt(m)
    assert m["fro_pred"] == pytest.approx(math.sqrt(m["lr"] * 64 * 256 / (2 * m["weight_decay"])))
