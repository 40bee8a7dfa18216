"""``wdscale tour --out FILE.html``: the guided tour as one self-contained file (show.tour)."""
from __future__ import annotations

from pathlib import Path

from ..show.tour import DEFAULT_STUDY, write_html


# -- CLI plugin: ``wdscale tour --out FILE.html [--store DIR | --study NAME]`` -------------------------------------
def configure(p) -> None:
    p.description = ("The guided tour (the app's Tour page) as one self-contained HTML file: eight steps, every "
                     "figure interactive, plotly.js inlined once, nothing fetched from the network.")
    p.add_argument("--out", required=True, help="the HTML file to write")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--store", default=None, help="a run store holding the demo (wdscale demo --out DIR)")
    src.add_argument("--study", default=None, help=f"a reference study (default {DEFAULT_STUDY}; `wdscale gallery list`)")


def run(args) -> int:
    from ..training.store import RunStore

    store = RunStore(args.store, create=False) if args.store else None
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name such as tour.html")
    res = write_html(out, study=args.study, store=store)
    print(f"wrote {res['path']}: {res['bytes'] / 1e6:.2f} MB, {res['figures']} figures, plotly.js inlined once, "
          f"{res['network_references']} network references ({res['source']})")
    return 0
