"""Overhead of wdscale.training.monitor.SpectralMonitor(every=100) on a d=256 nanoGPT-style model.

    OMP_NUM_THREADS=1 python docs/monitor_overhead.py --steps 300            # CPU, one thread
    python docs/monitor_overhead.py --device cuda --steps 2000               # GPU

Reports the time spent inside mon.step() as a share of the training time (robust on a shared machine) and
the wall-clock difference against the same loop without the monitor (alternating runs, best of each)."""
import argparse
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from wdscale.training.monitor import SpectralMonitor


class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, 2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, d=256, layers=4, heads=4, vocab=256, ctx=128):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as in GPT-2

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.h:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def run(steps, monitor, device, batch, seed=0):
    torch.manual_seed(seed)
    model = GPT().to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3)
    mon = SpectralMonitor(model, opt, every=100, log_dir=tempfile.mkdtemp()) if monitor else None
    data = torch.randint(0, 256, (steps, batch, 129), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    in_mon = 0.0
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = data[i, :, :-1], data[i, :, 1:]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if mon:
            if (i + 1) % mon.every == 0:
                sync()  # charge pending training kernels to training, not to the monitor
            t1 = time.perf_counter()
            mon.step()
            in_mon += time.perf_counter() - t1
    sync()
    wall = time.perf_counter() - t0
    n_rec = len({r["step"] for r in mon.rows}) if mon else 0
    return wall, in_mon, n_rec, (len(mon.rows) // max(n_rec, 1)) if mon else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    n = sum(p.numel() for p in GPT().parameters())
    name = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"cpu, {torch.get_num_threads()} thread(s)"
    print(f"d=256, 4 layers, batch {a.batch}x128 tokens, {n / 1e6:.2f}M params, {a.steps} steps, every=100, {name}")
    run(min(a.steps, 20), True, a.device, a.batch)  # warm-up (kernels, allocator)
    base, mon = [], []
    for _ in range(a.repeats):
        base.append(run(a.steps, False, a.device, a.batch)[0])
        mon.append(run(a.steps, True, a.device, a.batch))
    b = min(base)
    wall, in_mon, n_rec, n_mat = min(mon)
    print(f"step time without monitor {1e3 * b / a.steps:.2f} ms (runs: {', '.join(f'{x:.1f}' for x in base)} s); "
          f"with monitor {1e3 * wall / a.steps:.2f} ms")
    print(f"inside mon.step(): {in_mon:.3f} s = {1e3 * in_mon / max(n_rec, 1):.1f} ms per record of {n_mat} matrices "
          f"({n_rec} records) -> {100 * in_mon / wall:.2f} % of training time; wall vs best baseline "
          f"{100 * (wall - b) / b:+.2f} %")


if __name__ == "__main__":
    main()
