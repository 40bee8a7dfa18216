"""Build a reference study of wdscale.science.gallery.STUDIES into gallery/NAME (with its manifest).

    python scripts/build_gallery.py NAME [--work DIR]

Trains the study's grid into a work store (timed, on the study's torch thread count; run it with the machine
otherwise idle), writes DIR/build.json (wall time, date, machine, commit), then exports the compact read-only
reference to gallery/NAME.  A second call with the same --work reuses the trained runs and their build.json,
so a re-export never claims the wall time of a cached rerun.
"""
import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wdscale.science import gallery  # noqa: E402
from wdscale.training.store import RunStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(gallery.STUDIES))
    ap.add_argument("--work", default=None, help="work store (default /tmp/wdscale-gallery-build/NAME)")
    ap.add_argument("--dest", default=None, help="reference folder (default gallery/NAME)")
    args = ap.parse_args()
    spec = gallery.STUDIES[args.name]
    work = Path(args.work or f"/tmp/wdscale-gallery-build/{args.name}")
    info_path = work / "build.json"
    store = RunStore(work)
    if info_path.is_file():  # a re-export, or the study grew (extra_grids): only the new runs train, timed
        build = json.loads(info_path.read_text())
        n_before = len(gallery.configs(build.get("spec") or {"grid": spec["grid"]}))
        recs, seconds = gallery.train(spec, store, spec["threads"])
        new = sum(not r.get("cached") for r in recs)
        if new:
            if new != len(recs) - n_before:
                sys.exit(f"{work}: {new} runs trained that the first build should have held; build afresh")
            parts = build.get("wall_parts") or [{"runs": n_before, "seconds": build["wall_seconds"]}]
            parts.append({"runs": new, "seconds": round(seconds, 1), "load_end": [round(x, 2) for x in os.getloadavg()]})
            build.update(wall_parts=parts, wall_seconds=round(sum(p["seconds"] for p in parts), 1), spec=spec)
            info_path.write_text(json.dumps(build, indent=1))
    else:
        from wdscale.cli.progress import progress_bar

        load_start = [round(x, 2) for x in os.getloadavg()]
        bar = progress_bar()
        try:
            recs, seconds = gallery.train(spec, store, spec["threads"], on_event=bar)
        finally:
            bar.close()
        if any(r.get("cached") for r in recs):
            sys.exit(f"{work} already held runs of this study: its wall time would be wrong; use a fresh --work")
        build = dict(gallery.build_info(seconds, spec["threads"], load_start), spec=spec)
        info_path.write_text(json.dumps(build, indent=1))
    dest = Path(args.dest or ROOT / "gallery" / args.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    m = gallery.export(store, recs, dest, args.name, spec, {k: v for k, v in build.items() if k != "spec"})
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{args.name}: {m['n_runs']} runs, {m['wall_seconds']:.1f} s, {size / 1e6:.2f} MB -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
