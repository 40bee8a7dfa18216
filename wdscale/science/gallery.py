"""Reference studies ("gallery"): studies made by wdscale itself that ship with the project, read-only.

Each lives in ``gallery/<name>/`` (or ``$WDSCALE_GALLERY/<name>/``) as a compact run store::

    manifest.json        name, title, the grid, the command that reproduces it, the git commit, the machine
                         (cpu model, cores, torch threads), the date, the wall time, and the sha256 of every file
    index.sqlite         the runs' records (config, final loss, evals, thinned loss curve, top singular values),
                         rollback journal (no WAL), never opened for writing
    spectra/<id>.npz     singular values at 16+ snapshots per matrix
    weights/<id>.safetensors   only where the manifest says ``weights_shipped`` (the tiny reference)

``open_reference`` checks every file against the manifest before anything is read (a missing file or a sha256
mismatch is one clear ``GalleryError``) and opens the index with SQLite's ``immutable`` flag, so opening never
writes.  ``reproduce`` retrains a study's grid into a fresh store and compares its numbers with the reference.

Seeds are init seeds; every member reads the same batch order (``data_seed``), as in the demo, so a width is
one ensemble.  ``wdscale sweep`` has no ``--data-seed``, which is why the grid lives in the manifest and
``wdscale gallery reproduce NAME`` (not a sweep command line) is the command that reproduces a study.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from ..core.errors import BadInput, DamagedRun, StoreError
from ..training.store import RunStore, _sha256

REPO = Path(__file__).resolve().parents[2]
FORMAT = 1
TOLERANCE = 1e-6  # relative, on final losses: same machine, same threads, same code

# The studies this checkout knows how to build (scripts/build_gallery.py NAME).  A shipped manifest carries its
# own copy of the grid: reproduce reads the manifest, not this table.
LADDER_LRS = (0.0056569, 0.008, 0.0113137, 0.016, 0.0226274, 0.032, 0.0452548)  # demo.LADDER[5:12]
STUDIES = {
    "tiny": dict(
        title="tiny built-in reference: 2 widths x 2 rules x 2 lrs, 60 steps (seconds to reproduce)",
        grid=dict(model="synthetic", widths=[32, 64], base_width=32, rules=["mup", "wd"], lrs=[0.008, 0.016],
                  wds=[3.0], steps=60, seeds=[0], data_seed=0),
        threads=1, weights_shipped=True, eta0=0.008,
        notes="Far from the steady state (60 steps): a fixture for `gallery reproduce`, not evidence."),
    "synthetic-4w": dict(
        title="synthetic core, widths 32-256 (base 32), mup / wd / indep, 7 half-octave lrs, 3 seeds, 1500 steps",
        grid=dict(model="synthetic", widths=[32, 64, 128, 256], base_width=32, rules=["mup", "wd", "indep"],
                  lrs=list(LADDER_LRS), wds=[3.0], steps=1500, seeds=[0, 1, 2], data_seed=0),
        # at 1500 steps the d=32 optimum fell on the ladder's low edge: two lower rungs where they stay >= 3 tau
        # (mup at d=128, lr 0.0028284: 3.2 tau; at d=256 they would be 1.6 and 2.2 tau)
        extra_grids=[dict(model="synthetic", widths=[32, 64, 128], base_width=32, rules=["mup", "wd", "indep"],
                          lrs=[0.0028284, 0.004], wds=[3.0], steps=1500, seeds=[0, 1, 2], data_seed=0)],
        threads=2, weights_shipped=False, eta0=0.008,
        notes="The demo's proxy optimum (eta0 = 0.008, lam0 = 3) transferred over 3 width doublings; every member "
              ">= 3 tau of its matrix class (mup at d=256, lr 0.0056569: 3.2 tau). At 1500 steps the d=32 optimum "
              "sat on the 7-lr grid's low edge, so two lower lrs (0.0028284, 0.004) were added at widths 32-128 "
              "(extra_grids; built second, its time added to wall_seconds, see wall_parts). Weights are not shipped "
              "(the Steady state norms and Diagnostics gains need them): reproduce the study to get them."),
}


class GalleryError(StoreError):
    """A reference study is missing, incomplete or modified (exit code 1)."""


def gallery_dir() -> Path:
    return Path(os.environ.get("WDSCALE_GALLERY") or REPO / "gallery")


def names(root: str | os.PathLike | None = None) -> list[str]:
    """Reference studies present under the gallery folder (folders holding a manifest.json), sorted."""
    g = Path(root) if root else gallery_dir()
    if not g.is_dir():
        return []
    return sorted(p.name for p in g.iterdir() if (p / "manifest.json").is_file())


def _ref_dir(name: str, root=None) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        raise BadInput(f"{name!r} is not a reference study name")
    g = Path(root) if root else gallery_dir()
    d = g / name
    if not d.is_dir():
        have = ", ".join(names(g)) or "none"
        raise BadInput(f"no reference study {name!r} in {g} (have: {have})")
    return d


def read_manifest(name: str, root=None) -> dict:
    d = _ref_dir(name, root)
    mf = d / "manifest.json"
    if not mf.is_file():
        raise GalleryError(f"reference study {name} is incomplete: manifest.json missing in {d}")
    try:
        m = json.loads(mf.read_text())
        if not isinstance(m, dict) or not isinstance(m.get("files"), dict) or "grid" not in m:
            raise ValueError("no files or grid")
    except (ValueError, OSError) as e:
        raise GalleryError(f"reference study {name}: manifest.json is unreadable ({e})") from None
    return m


def verify(name: str, root=None) -> dict:
    """The manifest once every file it lists is present with its sha256; else one GalleryError line."""
    d = _ref_dir(name, root)
    m = read_manifest(name, root)
    for rel, sha in sorted(m["files"].items()):
        p = d / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise GalleryError(f"reference study {name}: manifest names a file outside the study ({rel})")
        if not p.is_file():
            raise GalleryError(f"reference study {name} is incomplete: {rel} is missing (reinstall or "
                               f"`git checkout -- {d}`)")
        if _sha256(p) != sha:
            raise GalleryError(f"reference study {name} was modified: {rel} does not match its sha256 in "
                               f"manifest.json (`git checkout -- {d}` restores it)")
    for need in ("index.sqlite",):
        if need not in m["files"]:
            raise GalleryError(f"reference study {name} is incomplete: manifest.json lists no {need}")
    return m


class ReferenceStore(RunStore):
    """A verified reference study, read-only: the index is opened ``immutable`` (nothing is ever written, not
    even a lock or journal file); put/delete/repair raise StoreError."""

    def __init__(self, root: str | os.PathLike, manifest: dict):
        self.root = Path(root)
        self.db = self.root / "index.sqlite"
        self.readonly = True
        self.reference = manifest["name"]
        self.manifest = manifest
        self.weights_shipped = bool(manifest.get("weights_shipped"))
        self._uri = f"file:{quote(str(self.db.resolve()))}?mode=ro&immutable=1"
        try:
            self._has_artifacts = self._check_tables()
        except sqlite3.Error as e:
            raise GalleryError(f"reference study {self.reference}: index.sqlite unreadable ({e})") from None

    def _writable(self) -> None:
        raise StoreError(f"{self.root} is the reference study {self.reference}: it is read-only; "
                         f"`wdscale gallery reproduce {self.reference} --out DIR` retrains it into a store of yours")

    def damage(self, run_id: str, artifacts: dict | None, deep: bool = False) -> str | None:
        # verify() already checked every file's sha256; only what is shipped is expected
        wpath, spath = self.paths(run_id)
        if not spath.is_file():
            return "spectra file missing"
        if self.weights_shipped and not wpath.is_file():
            return "weights file missing"
        return None

    def weights(self, run_id: str) -> dict:
        if not self.weights_shipped:
            raise DamagedRun(run_id, "weights not shipped in reference studies")
        return super().weights(run_id)


def open_reference(name: str, root=None) -> ReferenceStore:
    """The verified, read-only store of a reference study (GalleryError when incomplete or modified)."""
    m = verify(name, root)
    m.setdefault("name", name)
    return ReferenceStore(_ref_dir(name, root), m)


def reference_at(path: str | os.PathLike) -> ReferenceStore | None:
    """The verified reference study stored at ``path`` (a folder holding manifest.json and index.sqlite), or None
    when ``path`` is an ordinary run store: ``wdscale runs --out gallery/NAME`` then lists it as a reference."""
    p = Path(path)
    if not ((p / "manifest.json").is_file() and (p / "index.sqlite").is_file()):
        return None
    return open_reference(p.name, p.parent)


WEIGHTS_NOT_SHIPPED = "reference (weights not shipped)"


# -- building ------------------------------------------------------------------------------------------------
def configs(spec: dict) -> list:
    """Every RunConfig of a study: its ``grid`` and any ``extra_grids`` (each a full product)."""
    out = []
    for grid in [spec["grid"], *spec.get("extra_grids", [])]:
        out += _grid_configs(grid)
    return out


def _grid_configs(grid: dict) -> list:
    from ..training.sweep import expand_grid

    g = dict(grid)
    return expand_grid(g.pop("model"), g.pop("widths"), g.pop("base_width"), g.pop("rules"), g.pop("lrs"),
                       g.pop("wds"), g.pop("steps"), g.pop("seeds"), data_seed=g.pop("data_seed"), **g)


def train(spec: dict, store: RunStore, threads: int, on_event=None) -> tuple[list[dict], float]:
    """Train (or read from ``store``) every run of a study (``spec`` or manifest) on ``threads`` torch threads;
    (records, seconds)."""
    import torch

    from ..training.sweep import run_sweep

    old = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    try:
        recs = []
        for grid in [spec["grid"], *spec.get("extra_grids", [])]:  # one sweep per grid: the build's ensembles
            recs += run_sweep(_grid_configs(grid), store, on_event=on_event)
    finally:
        torch.set_num_threads(old)
    return recs, time.perf_counter() - t0


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__}


def git_commit() -> dict:
    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = sorted(ln.split()[-1] for ln in git("status", "--porcelain", "--", "wdscale").splitlines() if ln.strip())
    return {"commit": git("rev-parse", "HEAD") or None, "wdscale_dirty": dirty}  # files differing from the commit


def export(store: RunStore, recs: list[dict], dest: str | os.PathLike, name: str, spec: dict, build: dict) -> dict:
    """Write the reference study ``dest`` (replaced whole) from ``recs`` in ``store``; returns its manifest.

    ``build``: what scripts/build_gallery.py measured (wall_seconds, date, machine, commit, threads)."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
    try:
        (tmp / "spectra").mkdir()
        if spec["weights_shipped"]:
            (tmp / "weights").mkdir()
        db = sqlite3.connect(tmp / "index.sqlite")
        with db:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL, "
                       "summary TEXT NOT NULL, created REAL NOT NULL)")
            db.execute("CREATE TABLE artifacts (run_id TEXT PRIMARY KEY, info TEXT NOT NULL)")
            src = {r[0]: r for r in store._query("SELECT run_id, config, status, summary, created FROM runs")}
            for k, rec in enumerate(recs):
                rid = rec["run_id"]
                _rid, config, status, _summary, _created = src[rid]
                if status != "done":
                    raise RuntimeError(f"run {rid} is {status}, not done: a reference holds finished runs only")
                wsrc, ssrc = store.paths(rid)
                if spec.get("spectra_snapshots"):  # keep the gallery small: first, evenly spaced, last
                    _thin_spectra(ssrc, tmp / "spectra" / ssrc.name, int(spec["spectra_snapshots"]))
                else:
                    shutil.copyfile(ssrc, tmp / "spectra" / ssrc.name)
                art = {"spectra": {"size": ssrc.stat().st_size, "sha256": _sha256(ssrc)}}
                summary = {k2: v for k2, v in rec.items() if k2 != "cached"}
                if spec.get("loss_points"):  # a compact training curve: every k-th point, 4 decimals (nats)
                    tl = summary.get("train_loss") or []
                    k = max(1, len(tl) // int(spec["loss_points"]))
                    summary["train_loss"] = [[st, None if v is None else round(v, 4)] for i, (st, v) in enumerate(tl)
                                             if i % k == k - 1 or i == len(tl) - 1]
                summary["spectra"] = f"spectra/{ssrc.name}"
                summary["weights"] = None
                if spec["weights_shipped"]:
                    shutil.copyfile(wsrc, tmp / "weights" / wsrc.name)
                    art["weights"] = {"size": wsrc.stat().st_size, "sha256": _sha256(wsrc)}
                    summary["weights"] = f"weights/{wsrc.name}"
                # created: the order runs are listed in (the grid's), not a wall-clock time of this machine
                db.execute("INSERT INTO runs VALUES (?,?,?,?,?)", (rid, config, "done", json.dumps(summary), k))
                db.execute("INSERT INTO artifacts VALUES (?,?)", (rid, json.dumps(art)))
        db.execute("VACUUM")
        db.close()
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "format": FORMAT, "name": name, "title": spec["title"], "notes": spec.get("notes", ""),
            "command": f"wdscale gallery reproduce {name} --out DIR",
            "build_command": f"python scripts/build_gallery.py {name}",
            "grid": spec["grid"], "extra_grids": spec.get("extra_grids", []), "eta0": spec.get("eta0"), "threads": spec["threads"], "weights_shipped": spec["weights_shipped"],
            "n_runs": len(recs), **spec.get("manifest_extra", {}), **build, "files": files,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _thin_spectra(src: Path, dest: Path, k: int) -> None:
    """Copy a spectra file keeping k snapshots (the last always; the first too when k > 1), bit-identical values, without
    the per-file copy of the config (nothing reads it; the reference's index holds every run's config)."""
    import numpy as np

    with np.load(src, allow_pickle=False) as z:
        n = len(z["steps"])
        idx = (np.array([n - 1]) if k == 1 else  # one snapshot: the final spectrum
               np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int)))
        arrays = {f: z[f][idx] for f in z.files if f != "meta"}  # the index holds the config
    with open(dest, "wb") as f:
        np.savez_compressed(f, **arrays)


# -- reproducing ---------------------------------------------------------------------------------------------
def _key(r: dict) -> tuple:
    return (r["rule"], int(r["width"]), float(r["lr"]), float(r["wd"]), int(r["seed"]))


def compare(ref: list[dict], new: list[dict], tol: float = TOLERANCE) -> dict:
    """Per run: the reference's and the new final loss and their relative difference; ``ok`` when every run is
    within ``tol`` (a diverged run must diverge in both)."""
    by = {_key(r): r for r in new}
    rows, worst, ok = [], 0.0, True
    for r in sorted(ref, key=_key):
        n = by.get(_key(r))
        a = r.get("final_loss")
        b = n.get("final_loss") if n else None
        if n is None:
            rel, good = None, False
        elif r.get("diverged") or n.get("diverged") or a is None or b is None:
            rel, good = None, bool(r.get("diverged")) == bool(n.get("diverged"))
        else:
            rel = abs(b - a) / max(abs(a), 1e-30)
            good = rel <= tol
            worst = max(worst, rel)
        ok &= good
        rows.append({"rule": r["rule"], "width": r["width"], "lr": r["lr"], "wd": r["wd"], "seed": r["seed"],
                     "reference": a, "reproduced": b, "rel_diff": rel, "ok": good, "cached": bool(n and n.get("cached"))})
    return {"ok": ok, "max_rel_diff": worst, "tolerance": tol, "runs": rows}


def reproduce(name: str, out: str | os.PathLike | None = None, root=None, on_event=None) -> dict:
    """Retrain reference ``name`` into ``out`` (default: a fresh temporary folder) and compare."""
    ref = open_reference(name, root)
    m = ref.manifest
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix=f"wdscale-reproduce-{name}-"))
    store = RunStore(out)
    if store.readonly:
        raise StoreError(f"{out} is read-only: give --out a writable folder")
    recs, seconds = train(m, store, m.get("threads") or 1, on_event)
    cmp = compare(ref.records(), recs)
    here = machine()
    same = {k: here.get(k) == (m.get("machine") or {}).get(k) for k in ("cpu", "cores", "torch")}
    return {"name": name, "out": str(out), "seconds": seconds, "reference_seconds": m.get("wall_seconds"),
            "threads": m.get("threads"), "machine": here, "reference_machine": m.get("machine"),
            "same_machine": all(same.values()), **cmp}


def summary(recs: list[dict], eta0: float | None = None) -> dict:
    """The demo's reading of a transfer study: per rule the lr-optimum drift with its 95% CI and verdict, the
    sigma_top width exponent at eta0 (default: the grid's middle lr) and alpha; the best rule's sentence."""
    from .study import top_sv_exponents
    from .verdict import compare_rules, transfer_verdict

    lrs = sorted({r["lr"] for r in recs})
    eta0 = lrs[len(lrs) // 2] if eta0 is None else eta0
    verdicts = transfer_verdict(recs, "lr")
    sv = top_sv_exponents(recs, eta0)
    cmp = compare_rules(verdicts)
    rules = {v["rule"]: {"drift": v["drift"], "drift_ci": v["drift_ci"], "verdict": v["verdict"],
                         "optima": {w: o["x_opt"] for w, o in v["optima"].items()},
                         "top_sv_exponent": sv.get(v["rule"], {}).get("exponent"),
                         "top_sv_exponent_ci": sv.get(v["rule"], {}).get("ci"),
                         "alpha": sv.get(v["rule"], {}).get("alpha")} for v in verdicts}
    # the steady-state gate at the optima: the smallest S = sum_t eta_t*lam at any (rule, width) optimum
    taus = [v["min_steps_over_tau"] for v in verdicts if v.get("min_steps_over_tau") is not None]
    return {"eta0": eta0, "rules": rules, "sentence": (cmp[0] if cmp else {}).get("sentence", ""),
            "min_steps_over_tau": min(taus, default=None)}


def format_summary(s: dict) -> str:
    from .study import rule_rows

    alphas = ", ".join(f"{rule} {r['alpha']:.2f}" for rule, r in s["rules"].items() if r.get("alpha") is not None)
    lines = [f"  {'rule':6} {'drift (oct/doubling)':>22} {'95% CI':>16} {'sigma_top ~ d^':>15} {'verdict':>13}  "
             "optimal eta0 per width"] + rule_rows(s["rules"], "  ")
    lines.append(f"  alpha (sigma_top ~ sqrt(eta/lam) d^alpha): {alphas}")
    lines.append(f"  sigma_top at eta0 = {s['eta0']:g}; S = sum_t eta_t*lam >= {s['min_steps_over_tau']:.1f} at every "
                 f"optimum. {s['sentence']}")
    return "\n".join(lines)


def build_info(seconds: float, threads: int, load_start: list | None = None) -> dict:
    """What a build measured; the 1-minute load averages before and after say whether the machine was idle."""
    load = {"load_start": load_start, "load_end": [round(x, 2) for x in os.getloadavg()]}
    return {"wall_seconds": round(seconds, 1), **load, "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine(), "threads": threads, **git_commit(), "python_argv": " ".join(sys.argv)}


# -- the regime comparison (wdscale.science.regimes on the reference studies) -----------------------------------------------
# The reference studies the comparison reads by default (gallery/NAME; built by scripts/build_tf_gallery.py).
REFERENCE_REGIMES = ("tf-lm", "tf-epochs", "synthetic-4w")


def reference_regimes(names=REFERENCE_REGIMES, root=None) -> tuple[list[dict], list[str]]:
    """(study_regime dicts of the gallery studies present, names missing).  Read-only: nothing trains."""
    from ..models.presets import PRESETS
    from .regimes import study_regime

    out, missing = [], []
    for n in names:
        try:
            ref = open_reference(n, root)
        except (GalleryError, BadInput):  # not built in this checkout
            missing.append(n)
            continue
        m = ref.manifest
        recs = ref.records()
        regime = m.get("regime") or (PRESETS["synthetic"]["regime"] if recs and recs[0].get("model") == "synthetic"
                                     else m.get("title", n))
        out.append({**study_regime(recs, eta0=m.get("eta0"), name=n, regime=regime,
                                   train_bytes=(m.get("grid") or {}).get("train_bytes")),
                    "title": m.get("title", n), "seconds": m.get("wall_seconds"), "machine": m.get("machine")})
    return out, missing


# -- the gallery's studies ----------------------------------------------------------------------------------------
def gallery_laws(root=None, n_boot: int = 400, min_S: float = 3.0) -> dict:
    """{name: measure_law(...)} of the reference studies present (``GALLERY_STUDIES``), read-only; a study
    that is missing or unreadable is left out."""
    from .law import GALLERY_STUDIES, MIN_S, law_over_time, measure_law, snapshot_steps

    out = {}
    for name, regime in GALLERY_STUDIES:
        try:
            ref = open_reference(name, root)
            law = measure_law(ref.records(), ref.spectra, min_S=min_S, n_boot=n_boot, name=name)
        except Exception:  # noqa: BLE001  (a missing reference is a row fewer)
            continue
        law["regime"] = regime
        law["over_time"] = law_over_time(ref.records(), ref.spectra, min_S=min_S, n_boot=min(n_boot, 200))
        law["snapshots"] = len(snapshot_steps(ref.records(), ref.spectra))
        out[name] = law
    return out
