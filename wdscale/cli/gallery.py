"""``wdscale gallery``: list, open and reproduce the shipped reference studies (science.gallery)."""
from __future__ import annotations

import json

from ..science.gallery import (GalleryError, format_summary, gallery_dir, names, open_reference, read_manifest,
                               reproduce, summary)
from .progress import progress_bar


# -- CLI plugin: ``wdscale gallery list|open|reproduce`` -------------------------------------------------------------
def configure(p) -> None:
    p.description = ("Reference studies that ship with wdscale (read-only stores under gallery/): list them, "
                     "open one (its summary and where it lives), or retrain one and compare its numbers.")
    sub = p.add_subparsers(dest="gallery_cmd", required=True, parser_class=type(p))
    ls = sub.add_parser("list", help="the reference studies, with their command, machine, date and wall time")
    ls.add_argument("--json", action="store_true")
    op = sub.add_parser("open", help="check one (sha256 of every file) and print what it holds")
    op.add_argument("name")
    op.add_argument("--json", action="store_true")
    rp = sub.add_parser("reproduce", help="retrain one into a fresh store and compare final losses")
    rp.add_argument("name")
    rp.add_argument("--out", default=None, help="store to train into (default: a new temporary folder; runs "
                                                "already in DIR are reused, not retrained)")
    rp.add_argument("--json", action="store_true")


def _fmt_m(m: dict) -> str:
    mc = m.get("machine") or {}
    wall = m.get("wall_seconds")
    return (f"{m.get('n_runs')} runs, {m.get('date', '?')}, {wall:.0f} s on {mc.get('cpu', '?')} "
            f"({mc.get('cores', '?')} cores, {m.get('threads')} threads), commit {str(m.get('commit'))[:10]}"
            if wall is not None else f"{m.get('n_runs')} runs")


def run(args) -> int:
    if args.gallery_cmd == "list":
        out = []
        for n in names():
            try:
                m = read_manifest(n)
            except GalleryError as e:
                m = {"name": n, "error": str(e)}
            out.append(m)
        if args.json:
            print(json.dumps([{k: v for k, v in m.items() if k != "files"} for m in out]))
            return 0
        if not out:
            print(f"no reference studies in {gallery_dir()}")
        for m in out:
            if "error" in m:
                print(f"{m['name']}: {m['error']}")
                continue
            print(f"{m['name']}: {m['title']}\n    {_fmt_m(m)}\n    reproduce: {m['command']}")
        return 0
    if args.gallery_cmd == "open":
        ref = open_reference(args.name)
        m = ref.manifest
        recs = ref.records()
        if args.json:
            print(json.dumps({"path": str(ref.root), **{k: v for k, v in m.items() if k != "files"}}))
            return 0
        print(f"{m['name']}: {m['title']}\n  {_fmt_m(m)}\n  at {ref.root} (read-only; every file matches its sha256)"
              f"\n  {m.get('notes', '')}\n  in the app: sidebar 'Data' -> reference study {m['name']}"
              f"\n  verdict: wdscale report {ref.root}\n  reproduce: {m['command']}")
        losses = [r["final_loss"] for r in recs if r.get("final_loss") is not None]
        if losses:
            print(f"  {len(recs)} runs, final loss {min(losses):.4g} .. {max(losses):.4g}")
        if len({r["width"] for r in recs}) >= 2 and len({r["lr"] for r in recs}) >= 3:
            print(format_summary(summary(recs, m.get("eta0"))))
        return 0
    bar = progress_bar()
    try:
        res = reproduce(args.name, args.out, on_event=bar)
    finally:
        bar.close()
    if args.json:
        from ..training.store import _clean

        print(json.dumps(_clean(res)))
    else:
        print(f"{'rule':6} {'width':>5} {'lr':>9} {'wd':>5} {'seed':>4} {'reference':>12} {'reproduced':>12} "
              f"{'rel diff':>9}")
        for r in res["runs"]:
            fmt = lambda x: "diverged" if x is None else f"{x:.8g}"  # noqa: E731
            rel = "-" if r["rel_diff"] is None else f"{r['rel_diff']:.1e}"
            print(f"{r['rule']:6} {r['width']:>5} {r['lr']:>9.4g} {r['wd']:>5g} {r['seed']:>4} {fmt(r['reference']):>12}"
                  f" {fmt(r['reproduced']):>12} {rel:>9}{'' if r['ok'] else '  MISMATCH'}")
        n_bad = sum(not r["ok"] for r in res["runs"])
        cached = sum(r["cached"] for r in res["runs"])
        print(f"{len(res['runs'])} runs into {res['out']} in {res['seconds']:.1f} s "
              f"(reference: {res['reference_seconds'] or float('nan'):.1f} s on {res['threads']} threads)"
              + (f"; {cached} were already in that store (not retrained)" if cached else ""))
        where = "this machine" if res["same_machine"] else (
            f"another machine (reference: {(res['reference_machine'] or {}).get('cpu')}; here: {res['machine']['cpu']})")
        if res["ok"]:
            print(f"reproduced: every final loss within {res['tolerance']:g} relative of the reference "
                  f"(max {res['max_rel_diff']:.1e}), on {where}")
        else:
            print(f"NOT reproduced: {n_bad} of {len(res['runs'])} runs differ by more than {res['tolerance']:g} "
                  f"relative (max {res['max_rel_diff']:.1e}) on {where}"
                  + ("" if res["same_machine"] else "; other CPUs and torch builds round differently"))
    return 0 if res["ok"] else 1
