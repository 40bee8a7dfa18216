"""Speed and accuracy of `wdscale inspect` on GPT-2-shaped checkpoints (12 layers, vocab 50257, context 1024).

    OMP_NUM_THREADS=1 python docs/inspect_measure.py /tmp/gpt2_ckpts

Writes two random GPT-2-initialised state dicts (d=768 as Hugging Face-style safetensors, 0.5 GB; d=1536 as a
nanoGPT-style torch file {"model": ..., "iter_num": ...} with a tied head, 1.7 GB), times `wdscale inspect`
on both (a fresh process, as a user runs it), then compares every top_sv with torch.linalg.svdvals.  Random
matrices are the hardest case for a top-σ solver: their σ₁ and σ₂ are closest."""
import json, os, subprocess, sys, time
import torch
from safetensors.torch import save_file
torch.set_num_threads(1)
def gpt2(d, L=12, V=50257, T=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.02: torch.randn(*s, generator=g) * std
    sd = {"transformer.wte.weight": r(V, d), "transformer.wpe.weight": r(T, d, std=0.01)}
    for i in range(L):
        p = f"transformer.h.{i}."
        sd.update({p + "ln_1.weight": torch.ones(d), p + "ln_1.bias": torch.zeros(d),
                   p + "attn.c_attn.weight": r(d, 3 * d), p + "attn.c_attn.bias": torch.zeros(3 * d),
                   p + "attn.c_proj.weight": r(d, d, std=0.02 / (2 * L) ** 0.5), p + "attn.c_proj.bias": torch.zeros(d),
                   p + "ln_2.weight": torch.ones(d), p + "ln_2.bias": torch.zeros(d),
                   p + "mlp.c_fc.weight": r(d, 4 * d), p + "mlp.c_fc.bias": torch.zeros(4 * d),
                   p + "mlp.c_proj.weight": r(4 * d, d, std=0.02 / (2 * L) ** 0.5), p + "mlp.c_proj.bias": torch.zeros(d)})
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = torch.ones(d), torch.zeros(d)
    return sd
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
a, b = f"{out}/gpt2_768.safetensors", f"{out}/gpt2_1536.pt"
if not os.path.exists(a):
    save_file(gpt2(768), a)
if not os.path.exists(b):
    sd = gpt2(1536, seed=1); sd["lm_head.weight"] = sd["transformer.wte.weight"]
    torch.save({"model": sd, "iter_num": 0}, b)
    del sd
env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
t = time.perf_counter()
r = subprocess.run([sys.executable, "-m", "wdscale", "inspect", a, b, "--json"], capture_output=True, text=True, env=env)
wall = time.perf_counter() - t
rep = json.loads(r.stdout)
print(f"wall {wall:.1f} s (both, incl. python start); per checkpoint load+measure: "
      + ", ".join(f"d={c['width']} {c['seconds']:.1f} s ({sum(1 for _ in c['matrices'])} matrices)" for c in rep["checkpoints"]))
print("verdict:", rep["verdict"])
from wdscale.science.inspect import load_state_dict
worst = 0.0; tsvd = 0.0
for c in rep["checkpoints"]:
    sd = load_state_dict(c["path"])
    errs = []
    for n, m in c["matrices"].items():
        t0 = time.perf_counter(); ex = float(torch.linalg.svdvals(sd[n].float())[0]); tsvd += time.perf_counter() - t0
        errs.append(abs(m["top_sv"] - ex) / ex)
    worst = max(worst, max(errs))
    print(f"d={c['width']}: max rel err {max(errs):.2e}, median {sorted(errs)[len(errs)//2]:.2e}")
print(f"full SVD of the same matrices: {tsvd:.1f} s; worst rel err {worst:.2e}")
