"""Build a Transformer regime reference study (gallery/tf-lm, gallery/tf-epochs) from a preset study.

    python scripts/build_tf_gallery.py tf-lm --preset lm [--seeds 0,1,2] [--work DIR] [--threads N]

Runs ``wdscale.science.study.run_study`` with the preset (the proxy's eta x lam grid at d0, then mup / wd / indep and the
fitted rule at every width; cached in the work store, so a second call only exports), records the wall time of
the first, uncached build in DIR/build.json, and exports the compact read-only reference with a manifest whose
grids (proxy, transfer, fitted) are explicit, so ``wdscale gallery reproduce NAME`` retrains exactly these runs.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wdscale.science import gallery  # noqa: E402
from wdscale.models import presets  # noqa: E402
from wdscale.science.study import proxy_seeds, run_study, transfer_lrs  # noqa: E402
from wdscale.training.store import RunStore  # noqa: E402
from wdscale.training.train import TrainOptions  # noqa: E402


def grids(spec: dict, s: dict) -> list[dict]:
    """The study as explicit grids: proxy, transfer (named rules), fitted."""
    common = dict(spec["common"])
    base = dict(model=spec["model"], base_width=spec["base_width"], steps=spec["steps"], seeds=list(spec["seeds"]),
                data_seed=0, **common)
    lrs = transfer_lrs(s["proxy"]["eta0"], spec)
    out = [dict(base, widths=[spec["base_width"]], rules=["mup"], lrs=list(spec["proxy_lrs"]),
                wds=list(spec["proxy_wds"]), seeds=list(proxy_seeds(spec))),
           dict(base, widths=list(spec["widths"]), rules=list(spec["rules"]), lrs=lrs, wds=[s["proxy"]["lam0"]])]
    if s.get("fitted"):
        out.append(dict(base, widths=list(spec["widths"]), rules=["fitted"], lrs=lrs, wds=[s["proxy"]["lam0"]],
                        a=1.0, b=s["fitted"]["b"]))
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("--preset", required=True, choices=[p for p in presets.PRESETS if p != "synthetic"])
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dest", default=None)
    ap.add_argument("--wall-seconds", type=float, default=None,
                    help="the study was trained before, into --work, by `wdscale study`: its measured wall time")
    args = ap.parse_args()
    spec = dict(presets.get(args.preset))
    if args.seeds:
        spec["seeds"] = tuple(int(x) for x in args.seeds.split(","))
    work = Path(args.work or f"/tmp/wdscale-gallery-build/{args.name}")
    store = RunStore(work)
    info = work / "build.json"
    torch.set_num_threads(args.threads)
    load_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    s = run_study(store, TrainOptions(), spec=spec)
    seconds = time.perf_counter() - t0
    if info.is_file():
        build = json.loads(info.read_text())
    else:
        if args.wall_seconds is None and seconds < 60:
            sys.exit(f"{work} already held the study: give --wall-seconds (the first build's wall time)")
        build = gallery.build_info(args.wall_seconds or seconds, args.threads, load_start)
        info.write_text(json.dumps(build, indent=1))
    gs = grids(spec, s)
    recs = []
    seen = set()
    for c in gallery.configs({"grid": gs[0], "extra_grids": gs[1:]}):
        if c.run_id not in seen:
            seen.add(c.run_id)
            recs.append(store.get(c.run_id))
    if any(r is None for r in recs):
        sys.exit("some runs of the study are missing from the work store")
    seeds = len(spec["seeds"])
    man = {"title": f"Transformer, {spec['regime']}: widths {list(spec['widths'])} (base {spec['base_width']}), "
                    f"mup / wd / indep / fitted, {len(transfer_lrs(s['proxy']['eta0'], spec))} lrs, {seeds} seed(s), "
                    f"{spec['steps']} steps",
           "grid": gs[0], "extra_grids": gs[1:], "eta0": s["proxy"]["eta0"], "threads": args.threads,
           "weights_shipped": False, "spectra_snapshots": 1, "loss_points": 30,  # the final spectrum: the gallery stays <= 20 MB
           "notes": (f"preset {args.preset} ({spec['regime']}); proxy optimum eta0 = {s['proxy']['eta0']:g}, lam0 = "
                     f"{s['proxy']['lam0']:g}; fitted rule b = {(s.get('fitted') or {}).get('b')}. {s['sentence']}"),
           "manifest_extra": {"regime": spec["regime"], "preset": args.preset, "lam0": s["proxy"]["lam0"],
                              "spectra_snapshots": 1, "loss_points": 30,
                              "fitted": s.get("fitted"), "proxy": s["proxy"]}}
    dest = Path(args.dest or ROOT / "gallery" / args.name)
    m = gallery.export(store, recs, dest, args.name, man, build)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{args.name}: {m['n_runs']} runs, {size / 2**20:.1f} MiB, build {build['wall_seconds']:.0f} s "
          f"({build['threads']} threads) -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
