"""Build a reference study of wdscale.gallery.STUDIES into gallery/NAME (with its manifest).

    python scripts/build_gallery.py NAME [--work DIR]

Trains the study's grid into a work store (timed, on the study's torch thread count; run it with the machine
otherwise idle), writes DIR/build.json (wall time, date, machine, commit), then exports the compact read-only
reference to gallery/NAME.  A second call with the same --work reuses the trained runs and their build.json,
so a re-export never claims the wall time of a cached rerun.
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wdscale import gallery  # noqa: E402
from wdscale.store import RunStore  # noqa: E402


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
    if info_path.is_file():
        build = json.loads(info_path.read_text())
        recs, _ = gallery.train(spec["grid"], store, spec["threads"])  # all cached
        if any(not r.get("cached") for r in recs):
            sys.exit(f"{work}: runs were missing and got retrained; delete {info_path} and build again")
    else:
        from wdscale.demo import _bar

        bar = _bar()
        try:
            recs, seconds = gallery.train(spec["grid"], store, spec["threads"], on_event=bar)
        finally:
            bar.close()
        if any(r.get("cached") for r in recs):
            sys.exit(f"{work} already held runs of this study: its wall time would be wrong; use a fresh --work")
        build = gallery.build_info(seconds, spec["threads"])
        info_path.write_text(json.dumps(build, indent=1))
    dest = Path(args.dest or ROOT / "gallery" / args.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    m = gallery.export(store, recs, dest, args.name, spec, build)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{args.name}: {m['n_runs']} runs, {m['wall_seconds']:.1f} s, {size / 1e6:.2f} MB -> {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
