"""Floor 6, the ``wdscale`` command line: rules, sweep, runs here; every other subcommand in its own module (PLUGINS).

Nothing ever prints a traceback (unless ``--debug``): every failure is one line on stderr, exit code 2 for bad
input (before anything trains) and 1 for a problem with the environment (a read-only or corrupt store, a
missing package).  The one error boundary is ``main``.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import traceback

from .. import __version__
from ..core import threads  # torch is imported only after main chose its wait policy
from ..core.rules import RULES, format_table, resolve, rule_json

# Subcommands that live in their own module: each has configure(parser) and run(args) -> int.
PLUGINS = {
    "report": ("wdscale.cli.report", "transfer verdict of a stored sweep (optimal LR per width, drift, regret)"),
    "bench": ("wdscale.cli.bench", "measure speed on this machine (matmul peak, MFU, ensemble speedup)"),
    "validate": ("wdscale.cli.validate", "reproduce the paper's claims with the tool itself"),
    "demo": ("wdscale.cli.study", "the Home page's steady-state demo, headless (proxy optimum, then transfer)"),
    "study": ("wdscale.cli.study", "a preset transfer study: --preset lm (one-pass LM regime) or lm-epochs (multi-epoch)"),
    "inspect": ("wdscale.cli.inspect", "σ_top of your own checkpoints, matched by name across widths"),
    "gallery": ("wdscale.cli.gallery", "reference studies shipped with wdscale: list, open, reproduce NAME"),
    "coord": ("wdscale.cli.coord", "coordinate check (mup's): module output RMS vs width, built-in or your model file"),
    "tour": ("wdscale.cli.tour", "the guided tour as one self-contained HTML file (--out FILE.html)"),
    "scan": ("wdscale.cli.scan", "which λ ∝ d^q transfers: scan q, both crossings, the mechanism, the recipe at a width"),
}


from ..core.errors import BadInput, EnvironmentProblem


class UsageError(BadInput):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the whole usage block)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _num_list(kind):
    def parse(s: str):
        from ..models.config import parse_numbers

        try:
            out = parse_numbers(s, kind)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out
    return parse


def _finite(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number")
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{s!r} is not a finite number")
    return v


def _rules(s: str) -> list[str]:
    out = [r.strip() for r in s.split(",") if r.strip()]
    for r in out:
        if r not in RULES:
            raise argparse.ArgumentTypeError(f"unknown rule {r!r}; choose from {', '.join(RULES)}")
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def _model_arg(s: str) -> str:
    if s in ("synthetic", "transformer") or s.endswith(".py"):
        return s
    raise argparse.ArgumentTypeError(f"{s!r}: choose synthetic, transformer or a model file path ending in .py")


def own_common(args) -> dict:
    """RunConfig fields of a model file from the CLI options ({} for the built-in models)."""
    if not str(args.model).endswith(".py"):
        return {}
    from ..models.own import load, parse_overrides

    load(args.model)  # one line, rc 2: a missing file, a syntax error (file:line), no build/batches/val_batches
    ov = ";".join(args.override)
    parse_overrides(ov)
    return dict(model_file=args.model, init=args.init, overrides=ov)


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options that describe a sweep (shared with validate/bench where relevant)."""
    from ..models.own import add_own_args

    p.add_argument("--model", default="synthetic", type=_model_arg,
                   help="synthetic, transformer, or your own model file (path/to/file.py: defines build(width), "
                        "batches(seed), val_batches(), optionally loss(model, batch); docs/own-model.md)")
    add_own_args(p)
    p.add_argument("--widths", type=_num_list(int), default=[64, 128, 256], help="comma list, e.g. 64,128,256")
    p.add_argument("--base-width", type=int, default=64, help="proxy width d0")
    p.add_argument("--rules", type=_rules, default=["mup", "wd"], help=f"comma list of {', '.join(RULES)}")
    p.add_argument("--lrs", type=_num_list(float), default=[1e-3, 3e-3, 1e-2], help="proxy lrs eta0")
    p.add_argument("--wds", type=_num_list(float), default=[0.1],
                   help="proxy torch weight_decay lam0 (per-step decay is lr*wd)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=_num_list(int), default=None, help="several seeds (overrides --seed)")
    p.add_argument("-a", type=_finite, default=None, help="custom rule: matrix lr ~ m^-a")
    p.add_argument("-b", type=_finite, default=None, help="custom rule: matrix wd ~ m^b")
    p.add_argument("--schedule", default="constant", choices=["constant", "warmup", "cosine", "exp_warmup"])
    p.add_argument("--warmup", type=_finite, default=0.0, help="warmup length as a fraction of steps")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--depth", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=128, help="transformer sequence length")
    p.add_argument("--head-dim", type=int, default=32, help="transformer head dimension")
    p.add_argument("--corpus", default="stdlib", help="transformer text: 'stdlib' or a UTF-8 file")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--amp", action="store_true", help="bf16 autocast, fp32 master weights (for a GPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (CUDA graphs on CUDA); the first run per shape compiles")
    p.add_argument("--spectra-every", type=int, default=None, help="steps between spectra (default steps/16)")


def configs_from_args(args) -> list:
    from ..training.sweep import expand_grid
    from ..training.train import preflight

    if args.base_width is None or args.base_width <= 0:
        raise UsageError(f"base width must be a positive integer, got {args.base_width}")
    for w in args.widths:
        if w <= 0:
            raise UsageError(f"widths must be positive integers, got {w}")
    if args.base_width > max(args.widths):  # as the app: the proxy is the small model you transfer from
        raise UsageError(f"base width {args.base_width} is above every width ({', '.join(map(str, args.widths))}); "
                         "the proxy width should be at or below the widths you transfer to")
    if args.spectra_every is not None and args.spectra_every <= 0:
        raise UsageError(f"--spectra-every must be a positive number of steps, got {args.spectra_every}")
    if (args.a is not None or args.b is not None) and not {"custom", "fitted", "fitted-sqrt"} & set(args.rules):
        raise UsageError("-a/-b set the exponents of the custom (or fitted) rule; add it to --rules (or drop -a/-b)")
    for r in ("fitted", "fitted-sqrt"):
        if r in args.rules and args.b is None:
            raise UsageError(f"rule {r} needs -b, its measured wd exponent ({'e_mup/b_hat' if r == 'fitted' else '2*alpha_hat - 1'}; "
                             "wdscale study measures it)")
    seeds = args.seeds if args.seeds is not None else [args.seed]
    common = dict(a=args.a, b=args.b, schedule=args.schedule, warmup=args.warmup, batch_size=args.batch_size,
                  depth=args.depth)
    if args.model == "transformer":
        common.update(seq_len=args.seq_len, head_dim=args.head_dim, corpus=args.corpus)
    own = own_common(args)
    if own:
        from ..models.own import model_name

        common.update(own, batch_size=None, depth=None)
    configs = expand_grid(model_name(args.model) if own else args.model, args.widths, args.base_width, args.rules, args.lrs, args.wds, args.steps,
                          seeds, **common)
    preflight(configs, args.device)
    return configs


def cmd_rules(args) -> int:
    res = resolve(args.rule, args.width, args.base_width, args.lr, args.wd, args.a, args.b)
    if args.head_dim <= 0:
        raise UsageError(f"--head-dim must be a positive integer, got {args.head_dim}")
    if args.json:
        print(json.dumps(rule_json(res, args.steps, args.head_dim)))
    else:
        print(format_table(res, args.steps, args.head_dim))
        from ..science.verdict import horizon_warnings

        for w in horizon_warnings(res, args.steps):
            print("warning:", w)
    return 0


def cmd_sweep(args) -> int:
    from ..training.store import RunStore
    from ..training.sweep import plan, run_sweep
    from ..training.train import TrainOptions

    if args.executor == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise EnvironmentProblem("--executor ray needs ray: pip install -r requirements-ray.txt "
                                     "(or use --executor local)")
    configs = configs_from_args(args)
    store = RunStore(args.out)
    todo = plan(configs, store)[1]
    if store.readonly and todo:  # a fully cached sweep only reads: fine on a read-only store
        raise EnvironmentProblem(f"run store {store.root} is read-only and this sweep has runs to train; "
                                 "give --out a writable folder")
    if todo:
        threads.announce()  # the first line: threads and the wait policy chosen at start
    from ..science.verdict import sweep_horizon_warnings

    for w in sweep_horizon_warnings(configs):  # once per rule, before training: runs < 3 tau
        print("warning:", w, file=sys.stderr)
    for w in _decay_warnings(configs):
        print("warning:", w, file=sys.stderr)
    from ..models.own import print_classes

    print_classes(configs)
    opts = TrainOptions(device=args.device, amp=args.amp, compile=args.compile, spectra_every=args.spectra_every,
                        members=args.members)
    bar = _progress_bar(configs, store)

    def on_record(rec):
        if args.json:
            print(json.dumps(rec), flush=True)

    try:
        recs = run_sweep(configs, store, opts, on_event=bar, on_record=on_record, executor=args.executor,
                         address=args.address)
    finally:
        bar.close()
    if not args.json:
        _print_summary(recs)
    return 0


def _decay_warnings(configs, limit: int = 3) -> list[str]:
    """Per-step decay eta*lam above 0.1 (>= 1 is refused when the configs are built): at most ``limit`` lines."""
    from ..core.rules import decay_problem

    seen = {}
    for c in configs:
        key = (c.rule, c.width, c.lr, c.wd, c.a, c.b)
        if key not in seen:
            seen[key] = decay_problem(c.resolved())
    msgs = [p[1] for p in seen.values() if p and p[0] == "warning"]
    return msgs[:limit] + ([f"... and {len(msgs) - limit} more settings with per-step decay > 0.1"]
                           if len(msgs) > limit else [])


def _progress_bar(configs, store):
    """Callable event sink drawing a tqdm bar on stderr (steps x members)."""
    from tqdm import tqdm

    class Bar:
        def __init__(self):
            self.t = None
            self.n, self.last = {}, {}  # per chunk: the ray executor runs several at once (events carry "chunk")

        def __call__(self, e):
            k = e.get("chunk")
            if e["type"] == "plan":
                steps = configs[0].steps if configs else 0
                self.t = tqdm(total=e["to_train"] * steps, unit="member-step", file=sys.stderr, dynamic_ncols=True,
                              desc=f"{e['to_train']} runs to train, {e['cached']} cached", disable=None)
            elif e["type"] == "start":
                self.n[k], self.last[k] = e["n_members"], 0
                if self.t:
                    self.t.set_postfix_str(f"width {e['width']}")
            elif e["type"] in ("step", "done", "cancelled") and self.t:
                self.t.update((e["step"] - self.last.get(k, 0)) * self.n.get(k, 0))
                self.last[k] = e["step"]
            elif e["type"] == "notice":  # e.g. which member path a model file trains on, and why
                (self.t.write if self.t else print)(e["text"], file=sys.stderr)
            elif e["type"] == "ray" and self.t:
                self.t.set_postfix_str(f"ray tasks: {e['done']} done, {e['running']} running, {e['queued']} queued")

        def close(self):
            if self.t:
                self.t.close()

    return Bar()


def _print_summary(recs):
    print(f"{'rule':6} {'width':>5} {'lr':>9} {'wd':>8} {'matrix_lr':>9} {'matrix_wd':>9} {'final_loss':>10}  "
          f"{'top_sv(max)':>11}  cached")
    for r in recs:
        fl = "diverged" if r["diverged"] else f"{r['final_loss']:.4g}"
        sv = max((v for v in r["top_sv"].values() if v is not None), default=float("nan"))
        print(f"{r['rule']:6} {r['width']:>5} {r['lr']:>9.3g} {r['wd']:>8.3g} {r['matrix_lr']:>9.3g} "
              f"{r['matrix_wd']:>9.3g} {fl:>10}  {sv:>11.4g}  {'yes' if r.get('cached') else ''}")


def cmd_runs(args) -> int:
    from ..core.errors import StoreCorrupt
    from ..training.store import RunStore, check_run_id, default_root, rebuild_index

    root = args.out or default_root()
    from ..science.gallery import reference_at

    ref = reference_at(root)  # a shipped reference study: read-only, weights left out on purpose
    if ref is not None and not args.delete:
        if args.repair:
            ref._writable()  # one line: read-only, reproduce it into a store of yours
        return _print_reference(ref, args)
    if args.check or args.repair:
        try:
            store = RunStore(root, create=False)
        except StoreCorrupt as e:
            if not args.repair:
                raise
            print(f"index: {str(e).split(';')[0]}; rebuilding it from the artifacts", file=sys.stderr)
            return _print_check(rebuild_index(root))
        return _print_check(store.check(repair=args.repair))
    if args.delete:
        for rid in args.delete:  # every id first: a typo deletes nothing
            check_run_id(rid)
        store = RunStore(root, create=False)
        for rid in args.delete:
            if store.get(rid, status=None) is None and not any(r["run_id"] == rid for r in store.records()):
                raise UsageError(f"no run {rid} in {store.root}")
        for rid in args.delete:
            store.delete(rid)
        return 0
    store = RunStore(root, create=False)
    recs = store.records()
    if args.json:
        for r in recs:
            print(json.dumps(r))
    else:
        for r in recs:
            fl = "diverged" if r["diverged"] else f"{r['final_loss']:.4g}" if r["final_loss"] is not None else "-"
            print(f"{r['run_id']}  {r['model']:11} {r['rule']:6} d={r['width']:<5} lr={r['lr']:<8.3g} "
                  f"wd={r['wd']:<7.3g} steps={r['steps']:<6} {r['status']:8} loss={fl}"
                  + (f"  ({r['damage']})" if r.get("damage") else ""))
    damaged = [r["run_id"] for r in recs if r.get("status") == "damaged"]
    if damaged:
        print(f"warning: {len(damaged)} damaged run(s) (files missing or corrupt): {', '.join(damaged[:5])}"
              f"{' ...' if len(damaged) > 5 else ''}; `wdscale runs --out {store.root} --check --repair` drops them",
              file=sys.stderr)
    return 0


def _print_reference(ref, args) -> int:
    """List or check a reference study: every file was checked against its manifest's sha256 when it opened;
    its runs are 'reference (weights not shipped)' where the manifest says so, never 'damaged'."""
    from ..science.gallery import WEIGHTS_NOT_SHIPPED

    recs = ref.records()
    label = "reference" if ref.weights_shipped else WEIGHTS_NOT_SHIPPED
    if args.check:
        rep = ref.check()
        for rid, why in rep["damaged"]:
            print(f"damaged  {rid}  {why}")
        print(f"reference study {ref.reference}: {rep['runs']} runs checked: {rep['ok']} ok, {len(rep['damaged'])} "
              f"damaged; every file matches its sha256 in manifest.json"
              + ("" if ref.weights_shipped else "; weights not shipped (on purpose: `wdscale gallery reproduce "
                                                f"{ref.reference} --out DIR` retrains them)"))
        return 1 if rep["damaged"] else 0
    if args.json:
        for r in recs:
            print(json.dumps({**r, "reference": ref.reference, "weights_shipped": ref.weights_shipped}))
        return 0
    for r in recs:
        fl = "diverged" if r["diverged"] else f"{r['final_loss']:.4g}" if r["final_loss"] is not None else "-"
        status = label if r.get("status") == "done" else r["status"]
        print(f"{r['run_id']}  {r['model']:11} {r['rule']:6} d={r['width']:<5} lr={r['lr']:<8.3g} "
              f"wd={r['wd']:<7.3g} steps={r['steps']:<6} {status} loss={fl}"
              + (f"  ({r['damage']})" if r.get("damage") else ""))
    print(f"reference study {ref.reference} (read-only): {len(recs)} runs"
          + ("" if ref.weights_shipped else ", weights not shipped"), file=sys.stderr)
    return 0


def _print_check(rep: dict) -> int:
    """Print a check/repair report; exit 1 while problems remain (0 once repaired)."""
    for rid, why in rep["damaged"]:
        print(f"damaged  {rid}  {why}" + ("  (dropped)" if rep["repaired"] else ""))
    for rid in rep["adopted"]:
        print(f"unindexed {rid}  complete files without an index row" + ("  (re-indexed)" if rep["repaired"] else ""))
    for f in rep["orphans"]:
        print(f"orphan   {f}" + ("  (deleted)" if rep["repaired"] else ""))
    problems = len(rep["damaged"]) + len(rep["adopted"]) + len(rep["orphans"])
    head = "index rebuilt from the artifacts; " if rep.get("rebuilt") else ""
    print(f"{head}{rep['runs']} runs checked: {rep['ok']} ok, {len(rep['damaged'])} damaged, "
          f"{len(rep['adopted'])} unindexed, {len(rep['orphans'])} orphan files"
          + ("; repaired" if rep["repaired"] and problems else "")
          + ("; `--repair` fixes this" if problems and not rep["repaired"] else ""))
    return 1 if problems and not rep["repaired"] else 0


def build_parser() -> Parser:
    p = Parser(prog="wdscale", description="Width scaling of AdamW weight decay: rules, sweeps, spectra.")
    p.add_argument("--version", action="version", version=f"wdscale {__version__}")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (anywhere on the line)")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    r = sub.add_parser("rules", help="per-class lr, wd, per-step decay lr*wd and tau at a width")
    r.add_argument("--rule", required=True, choices=list(RULES))
    r.add_argument("--width", type=int, required=True)
    r.add_argument("--base-width", type=int, required=True)
    r.add_argument("--lr", type=_finite, required=True)
    r.add_argument("--wd", type=_finite, required=True, help="torch AdamW weight_decay (decay per step = lr*wd)")
    r.add_argument("-a", type=_finite, default=None)
    r.add_argument("-b", type=_finite, default=None)
    r.add_argument("--steps", type=int, default=None, help="planned steps: adds steps/tau and horizon warnings")
    r.add_argument("--json", action="store_true")
    r.add_argument("--head-dim", type=int, default=32, help="attention head dim, for the logit scale")
    r.set_defaults(func=cmd_rules)

    s = sub.add_parser("sweep", help="train a grid (one ensemble per width) into the store")
    add_run_args(s)
    s.add_argument("--out", default=None, help="data dir (default $WDSCALE_DATA or ./runs)")
    s.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    s.add_argument("--executor", default="local", choices=["local", "ray"])
    s.add_argument("--address", default=None, help="ray cluster address (auto or HOST:PORT)")
    s.set_defaults(func=cmd_sweep)

    u = sub.add_parser("runs", help="list, check, repair or delete stored runs")
    u.add_argument("--out", default=None)
    u.add_argument("--json", action="store_true")
    u.add_argument("--delete", nargs="+", metavar="RUN_ID")
    u.add_argument("--check", action="store_true", help="verify every artifact (size, sha256, loads)")
    u.add_argument("--repair", action="store_true",
                   help="drop damaged runs and orphan files; rebuild a corrupt index from the artifacts")
    u.set_defaults(func=cmd_runs)

    for name, (modname, help_) in PLUGINS.items():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        q = sub.add_parser(name, help=help_)
        mod.configure(q)
        q.set_defaults(func=mod.run)
    return p


def _exit_code(e: BaseException) -> int:
    """2: bad input; 1: the environment (store, files, packages, memory) or anything unexpected."""
    if isinstance(e, EnvironmentProblem):
        return 1
    if isinstance(e, (ValueError, OverflowError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return 2
    return 1


# Subcommands that train: they choose OpenMP's wait policy at start (wdscale.core.threads) and say what they chose
# on stderr when training starts (a command that fails first prints only its one error line).
TRAINING = ("sweep", "demo", "study", "bench", "validate", "gallery", "coord", "scan")


def _trains(argv: list[str]) -> bool:
    cmd = next((a for a in argv if not a.startswith("-")), None)
    return cmd in TRAINING and not {"-h", "--help", "--version"} & set(argv)


def main(argv=None) -> int:
    """The CLI's one error boundary: every failure is one line on stderr (the traceback only with --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("WDSCALE_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    cmd = "wdscale"
    try:
        if _trains(argv):  # before build_parser, whose plugins import torch: libgomp reads the policy as it loads
            threads.apply(announce=True)
        args = build_parser().parse_args(argv)
        cmd = f"wdscale {args.cmd}"
        return args.func(args) or 0
    except SystemExit as e:  # argparse: --help, --version, or its one-line usage error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except KeyboardInterrupt:
        print("wdscale: interrupted; finished runs are in the store, rerun the same command to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wdscale demo | head`: the reader left; nothing to report
        sys.stderr.close()
        return 0
    except Exception as e:  # noqa: BLE001  (the boundary: nothing gets past as a traceback)
        if debug:
            traceback.print_exc()
        expected = isinstance(e, (ValueError, OverflowError, EnvironmentProblem, OSError))
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError) and e.strerror and getattr(e, "filename", None):
            msg = f"{e.filename}: {e.strerror}"
        if not expected:
            msg = f"{type(e).__name__}: {msg}" + ("" if debug else " (rerun with --debug for the traceback)")
        print(f"{cmd}: error: {msg}", file=sys.stderr)
        return _exit_code(e)
