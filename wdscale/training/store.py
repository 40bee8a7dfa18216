"""The run store: an SQLite (WAL) index, safetensors weights and npz spectra under one data dir.

Layout of ``root`` (default ``./runs``; ``--out`` / ``$WDSCALE_DATA``)::

    index.sqlite            runs: run_id, config (JSON), status, summary (JSON), created;
                            artifacts: run_id, info (JSON: size and sha256 of each file)
    weights/<run_id>.safetensors   final weights, keyed by parameter name; its metadata holds the run's record
    spectra/<run_id>.npz    'steps' and one (snapshots, k) array of singular values per matrix; 'meta' its config

A run is written once it finishes (or is cancelled: status ``partial``): each file goes to a temporary name and
is renamed into place, then the index row (with each file's size and sha256) is written last, so a crash never
leaves an index row pointing at missing files.  Only ``done`` rows count as cached.  A row whose files are
missing or corrupt is ``damaged``: it is not served (so a sweep retrains it) and ``check(repair=True)`` drops
it.  Because every artifact carries its record, a lost or corrupt index can be rebuilt from the files.
Nothing is ever unpickled: safetensors and ``np.load(allow_pickle=False)``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..core.errors import BadInput, DamagedRun, StoreCorrupt, StoreError

DEFAULT_ROOT = "runs"
RUN_ID = re.compile(r"[0-9a-f]{16}")  # RunConfig.run_id: 16 hex digits of a sha1
ORPHAN_GRACE_S = 600  # files younger than this may belong to a put() in progress: repair leaves them
_META_KEY = "wdscale"  # safetensors metadata key holding the run's record


def default_root() -> str:
    return os.environ.get("WDSCALE_DATA", DEFAULT_ROOT)


def check_run_id(run_id) -> str:
    """The id itself, or BadInput: ids become file names, so nothing but the exact hex format is accepted."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise BadInput(f"{run_id!r} is not a run id (16 lowercase hex digits, as `wdscale runs` lists them)")
    return run_id


def _clean(x):
    """JSON-safe: NaN/inf -> None, numpy scalars -> float."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _db_error(e: sqlite3.Error, db: Path) -> StoreError:
    """One-line StoreError for an sqlite failure (corruption gets the repair hint)."""
    name = getattr(e, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or "not a database" in str(e) or "malformed" in str(e):
        root = db.parent
        return StoreCorrupt(f"run store index {db} is corrupt ({e}); `wdscale runs --out {root} --check --repair` "
                            "rebuilds it from the weights and spectra files")
    if "readonly" in str(e):
        return StoreError(f"run store {db.parent} is read-only ({e})")
    return StoreError(f"run store index {db}: {e}")


class RunStore:
    """The run store at ``root``.

    ``create=False`` is for commands that only read: a path without an ``index.sqlite`` is then an error
    (BadInput) instead of a new empty store.  A store whose folder or index is not writable opens read-only
    (``self.readonly``): everything reads, ``put``/``delete`` raise StoreError."""

    def __init__(self, root: str | os.PathLike | None = None, create: bool = True):
        self.root = Path(root or default_root())
        self.db = self.root / "index.sqlite"
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"run store {self.root} is a file, not a folder; give --out a folder")
        if not create and not self.db.is_file():
            raise BadInput(f"no run store at {self.root} (no index.sqlite there); `wdscale sweep --out {self.root}` "
                           "creates one")
        if not self.root.exists():
            try:
                self.root.mkdir(parents=True)
            except OSError as e:
                cls = BadInput if isinstance(e, (NotADirectoryError, FileExistsError)) else StoreError
                raise cls(f"cannot create run store {self.root}: {e.strerror or e}") from None
        self.readonly = not os.access(self.root, os.W_OK) or (self.db.exists() and not os.access(self.db, os.W_OK))
        if (self.root / "manifest.json").is_file() and self.db.is_file():  # a shipped reference (wdscale.science.gallery)
            self.readonly = True  # opened by path (`wdscale report gallery/NAME`): still never written
        if self.readonly and not self.db.is_file():
            raise StoreError(f"cannot create a run store in {self.root}: the folder is read-only")
        self._uri = f"file:{quote(str(self.db.resolve()))}" + ("?mode=ro" if self.readonly else "")
        try:
            if not self.readonly:
                (self.root / "weights").mkdir(exist_ok=True)
                (self.root / "spectra").mkdir(exist_ok=True)
                with self._conn() as c:
                    c.execute("PRAGMA journal_mode=WAL")
                    c.execute("""CREATE TABLE IF NOT EXISTS runs (
                        run_id TEXT PRIMARY KEY, config TEXT NOT NULL, status TEXT NOT NULL,
                        summary TEXT NOT NULL, created REAL NOT NULL)""")
                    # A table of its own (not a column): the runs table keeps the shape older stores and scripts
                    # know; rows of stores written before sizes and hashes were kept simply have none.
                    c.execute("CREATE TABLE IF NOT EXISTS artifacts (run_id TEXT PRIMARY KEY, info TEXT NOT NULL)")
            self._has_artifacts = self._check_tables()
        except OSError as e:
            raise StoreError(f"cannot open run store {self.root}: {e.strerror or e}") from None
        except sqlite3.OperationalError as e:
            if not self.readonly or "unable to open" not in str(e):
                raise _db_error(e, self.db) from None
            # A read-only mount cannot hold the WAL's shared-memory file: read the file as it is.
            self._uri = f"file:{quote(str(self.db.resolve()))}?immutable=1"
            try:
                self._has_artifacts = self._check_tables()
            except sqlite3.Error as e2:
                raise _db_error(e2, self.db) from None
        except sqlite3.Error as e:
            raise _db_error(e, self.db) from None

    def _conn(self) -> sqlite3.Connection:
        # A connection per call: the store is used from the app's worker threads and the CLI alike.
        return sqlite3.connect(self._uri, uri=True, timeout=30)

    def _check_tables(self) -> bool:
        """Whether the artifacts table exists; sqlite3.DatabaseError when there is no runs table."""
        with self._closing() as c:
            names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "runs" not in names:
            raise sqlite3.DatabaseError("file is not a database (no runs table)")
        return "artifacts" in names

    def _closing(self):
        import contextlib

        @contextlib.contextmanager
        def cm():
            c = self._conn()
            try:
                with c:
                    yield c
            finally:
                c.close()
        return cm()

    def _query(self, sql: str, args: tuple = ()) -> list:
        try:
            with self._closing() as c:
                return c.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise _db_error(e, self.db) from None

    def ping(self) -> None:
        """StoreError (StoreCorrupt) when the index cannot be read."""
        self._query("SELECT count(*) FROM runs")

    def _writable(self) -> None:
        if self.readonly:
            raise StoreError(f"run store {self.root} is read-only: nothing can be trained, stored or deleted there")

    def paths(self, run_id: str) -> tuple[Path, Path]:
        """(weights, spectra) file of a run; the id is validated first (it becomes a file name)."""
        check_run_id(run_id)
        return self.root / "weights" / f"{run_id}.safetensors", self.root / "spectra" / f"{run_id}.npz"

    # -- writing -------------------------------------------------------------------------------------
    def put(self, result: dict) -> dict:
        """Store one trainer result; return its record (what ``sweep --json`` prints)."""
        self._writable()
        cfg = result["config"]
        wpath, spath = self.paths(result["run_id"])
        record = make_record(result, str(wpath), str(spath))
        self._write(cfg, result["status"], record, result["weights"], result["spectra"])
        return record

    def put_twin(self, config, twin_id: str) -> dict:
        """Store ``config``'s run as the stored run ``twin_id`` of the very same member (another rule's id where
        both resolve to the same numbers: at the proxy width m = 1 every mu-P rule does), instead of training it
        again: the twin's record under ``config``'s id and fields, with ``twin_of``, and its weights and spectra
        re-written under the new id (each file carries its own record, as ``put``'s do).  Returns the record."""
        self._writable()
        twin = self.get(twin_id)
        if twin is None:
            raise StoreError(f"no stored run {twin_id} to copy as a twin of {config.run_id}")
        wpath, spath = self.paths(config.run_id)
        record = {k: v for k, v in twin.items() if k not in ("a", "b", "twin_of")}
        record.update(config.canonical(), run_id=config.run_id, twin_of=twin.get("twin_of") or twin_id, seconds=0.0,
                      weights=str(wpath), spectra=str(spath))
        record = _clean(record)
        self._write(config, twin.get("status", "done"), record, self.weights(twin_id), self.spectra(twin_id))
        return record

    def _write(self, cfg, status: str, record: dict, weights: dict, spec: dict) -> None:
        """A run's files (temporary names, renamed into place) and then its index row."""
        from safetensors.torch import save_file

        rid = record["run_id"]
        wpath, spath = self.paths(rid)
        created = time.time()
        meta = json.dumps({"format": 1, "created": created, "config": cfg.canonical(), "record": _clean(record)},
                          sort_keys=True)
        tmp = f".{os.getpid()}.tmp"
        wtmp, stmp = wpath.with_name(wpath.name + tmp), spath.with_name(spath.name + tmp)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(wtmp), metadata={_META_KEY: meta})
        with open(stmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, steps=np.asarray(spec["steps"]),
                                meta=np.array(json.dumps(cfg.canonical(), sort_keys=True)),
                                **{f"sv/{k}": np.asarray(v) for k, v in spec.items() if k != "steps"})
        artifacts = {"weights": {"size": wtmp.stat().st_size, "sha256": _sha256(wtmp)},
                     "spectra": {"size": stmp.stat().st_size, "sha256": _sha256(stmp)}}
        os.replace(wtmp, wpath)
        os.replace(stmp, spath)
        self._insert(rid, cfg.canonical(), status, record, created, artifacts)

    def _insert(self, rid, config: dict, status: str, record: dict, created: float, artifacts: dict) -> None:
        try:
            with self._closing() as c:
                c.execute("INSERT OR REPLACE INTO artifacts (run_id, info) VALUES (?,?)", (rid, json.dumps(artifacts)))
                c.execute("INSERT OR REPLACE INTO runs (run_id, config, status, summary, created) VALUES (?,?,?,?,?)",
                          (rid, json.dumps(config, sort_keys=True), status, json.dumps(_clean(record)), created))
        except sqlite3.Error as e:
            raise _db_error(e, self.db) from None

    def delete(self, run_id: str) -> None:
        """Remove a run's row and files; BadInput for an id the store does not hold."""
        wpath, spath = self.paths(run_id)
        self._writable()
        if not self._query("SELECT 1 FROM runs WHERE run_id=?", (run_id,)):
            raise BadInput(f"no run {run_id} in {self.root}")
        self._drop(run_id)
        for p in (wpath, spath):
            p.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------------
    def _drop(self, run_id: str) -> None:
        self._query("DELETE FROM runs WHERE run_id=?", (run_id,))
        if self._has_artifacts:
            self._query("DELETE FROM artifacts WHERE run_id=?", (run_id,))

    def _rows(self, where: str = "", args: tuple = ()) -> list[tuple]:
        if self._has_artifacts:
            return self._query("SELECT r.run_id, r.summary, r.status, a.info FROM runs r LEFT JOIN artifacts a "
                               f"ON a.run_id = r.run_id {where.replace('run_id', 'r.run_id')} ORDER BY r.created", args)
        return self._query(f"SELECT run_id, summary, status, NULL FROM runs {where} ORDER BY created", args)

    def damage(self, run_id: str, artifacts: dict | None, deep: bool = False) -> str | None:
        """Why a run's files are unusable, or None.  Cheap by default (exists, size); ``deep`` also checks the
        sha256 and that each file loads."""
        wpath, spath = self.paths(run_id)
        for kind, p in (("weights", wpath), ("spectra", spath)):
            try:
                size = p.stat().st_size
            except OSError:
                return f"{kind} file missing"
            want = (artifacts or {}).get(kind) or {}
            if want.get("size") is not None and size != want["size"]:
                return f"{kind} file has {size} bytes, expected {want['size']}"
            if deep:
                if want.get("sha256") and _sha256(p) != want["sha256"]:
                    return f"{kind} file content changed (sha256 mismatch)"
                try:
                    self.weights(run_id) if kind == "weights" else self.spectra(run_id)
                except DamagedRun as e:
                    return e.why
        return None

    def get(self, run_id: str, status: str | None = "done") -> dict | None:
        """A run's record, or None when it is absent, of another status, or damaged (so a sweep retrains it)."""
        rows = self._rows("WHERE run_id=?", (check_run_id(run_id),))
        if not rows:
            return None
        rid, summary, st, art = rows[0]
        if (status and st != status) or self.damage(rid, json.loads(art) if art else None):
            return None
        return json.loads(summary)

    def records(self, check: bool = True, **where) -> list[dict]:
        """All run records, optionally filtered on record fields (e.g. model='synthetic', width=64).

        A run whose files are missing or truncated has status ``damaged`` and its reason in ``damage``;
        ``check=False`` skips looking at the files (for readers of the summaries alone, like ``report``)."""
        recs = []
        for rid, summary, st, art in self._rows():
            r = json.loads(summary)
            if not check:
                recs.append(r)
                continue
            why = self.damage(rid, json.loads(art) if art else None) if RUN_ID.fullmatch(rid) else "bad run id"
            if why:
                r["status"], r["damage"] = "damaged", why
            recs.append(r)
        return [r for r in recs if all(r.get(k) == v for k, v in where.items())]

    def spectra(self, run_id: str) -> dict[str, np.ndarray]:
        path = self.paths(run_id)[1]
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {"steps": z["steps"]}
                out.update({k[3:]: z[k] for k in z.files if k.startswith("sv/")})
        except FileNotFoundError:
            raise DamagedRun(run_id, "spectra file missing") from None
        except Exception as e:  # zip, CRC, npy header, ...: any unreadable file is a damaged run
            raise DamagedRun(run_id, f"spectra file unreadable ({type(e).__name__})") from None
        return out

    def weights(self, run_id: str) -> dict:
        from safetensors.torch import load_file

        path = self.paths(run_id)[0]
        try:
            return load_file(str(path))
        except FileNotFoundError:
            raise DamagedRun(run_id, "weights file missing") from None
        except Exception as e:  # SafetensorError, OSError, ...
            raise DamagedRun(run_id, f"weights file unreadable ({type(e).__name__})") from None

    # -- checking and repairing --------------------------------------------------------------------------
    def check(self, repair: bool = False) -> dict:
        """Verify every artifact (size, sha256, loads).  With ``repair``: drop damaged rows, re-index complete
        runs whose row is missing (their files carry their record), delete the other orphan files.

        Returns {"runs", "ok", "damaged": [(run_id, why)], "orphans": [path], "adopted": [run_id],
        "repaired": bool}."""
        if repair:
            self._writable()
        rows = self._rows()
        damaged, ok = [], 0
        for rid, _summary, _st, art in rows:
            why = "bad run id" if not RUN_ID.fullmatch(rid) else self.damage(rid, json.loads(art) if art else None,
                                                                             deep=True)
            if why:
                damaged.append((rid, why))
            else:
                ok += 1
        files = self._orphan_files({r[0] for r in rows})
        names = {f.name for f in files}
        adopted = []  # complete runs without a row (e.g. a kill between put()'s files and its row)
        for f in files:
            rid = f.name[:-len(".safetensors")]
            if f.name.endswith(".safetensors") and RUN_ID.fullmatch(rid) and f"{rid}.npz" in names:
                info = self._artifact_record(rid)
                if info is not None:
                    adopted.append((rid, info))
        taken = {n for rid, _ in adopted for n in (f"{rid}.safetensors", f"{rid}.npz")}
        orphans = [f for f in files if f.name not in taken]
        if repair:
            for rid, _why in damaged:
                self._drop(rid)
                if RUN_ID.fullmatch(rid):
                    for p in self.paths(rid):
                        p.unlink(missing_ok=True)
            for rid, (config, record, status, created, artifacts) in adopted:
                self._insert(rid, config, status, record, created, artifacts)
            now = time.time()
            for f in orphans:
                try:
                    if now - f.stat().st_mtime >= ORPHAN_GRACE_S:
                        f.unlink()
                except OSError:
                    pass
        return {"runs": len(rows), "ok": ok, "damaged": damaged, "orphans": [str(f) for f in orphans],
                "adopted": [a[0] for a in adopted], "repaired": repair}

    def _orphan_files(self, known: set) -> list[Path]:
        out = []
        for sub, ext in (("weights", ".safetensors"), ("spectra", ".npz")):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if f.is_file() and not (f.name.endswith(ext) and f.name[:-len(ext)] in known):
                    out.append(f)
        return out

    def _artifact_record(self, rid: str):
        """(config, record, status, created, artifacts) from a run's files when both are complete, else None."""
        from safetensors import safe_open

        wpath, spath = self.paths(rid)
        try:
            with safe_open(str(wpath), framework="pt") as f:
                meta = json.loads((f.metadata() or {})[_META_KEY])
            config, record = meta["config"], meta["record"]
            if record.get("run_id") != rid or self.damage(rid, None, deep=True):
                return None
        except Exception:  # no metadata (written before records were embedded), unreadable, ...
            return None
        record = dict(record, weights=str(wpath), spectra=str(spath))
        artifacts = {k: {"size": p.stat().st_size, "sha256": _sha256(p)} for k, p in (("weights", wpath),
                                                                                     ("spectra", spath))}
        return config, record, record.get("status", "done"), float(meta.get("created") or wpath.stat().st_mtime), artifacts


def rebuild_index(root: str | os.PathLike) -> dict:
    """Move a corrupt index.sqlite aside and index every complete run from its files (each carries its record).

    Returns the repair report of the new store."""
    root = Path(root)
    db = root / "index.sqlite"
    if not os.access(root, os.W_OK):
        raise StoreError(f"run store {root} is read-only: the index cannot be rebuilt there")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db) + suffix)
        if p.exists():
            os.replace(p, Path(f"{db}{suffix}.corrupt-{stamp}"))
    rep = RunStore(root).check(repair=True)
    rep["rebuilt"] = True
    rep["moved_aside"] = f"{db}.corrupt-{stamp}"
    return rep


def make_record(result: dict, weights_path: str, spectra_path: str) -> dict:
    """The flat, JSON-safe summary of one run."""
    cfg = result["config"]
    res = result["resolved"]
    rec = dict(cfg.canonical())
    rec.update({
        "run_id": result["run_id"], "status": result["status"], "steps_done": result["steps_done"],
        "matrix_lr": res.groups["matrix"]["lr"], "matrix_wd": res.groups["matrix"]["wd"],
        "readout_mult": res.readout_mult, "groups": res.table(cfg.steps, lr_sum=cfg.lr_sum()),
        "final_loss": result["final_loss"], "diverged": result["diverged"],
        "diverged_step": result["diverged_step"],
        "evals": {str(k): v for k, v in result["evals"].items()},
        "train_loss": _thin(result["train_loss"]),
        "top_sv": result["top_sv"], "param_class": result["param_class"],
        "weights": weights_path, "spectra": spectra_path, "seconds": result["seconds"],
    })
    rec.update(result.get("extra", {}))
    return _clean(rec)


def _thin(xs: list, n: int = 400) -> list:
    """At most ~n points of a loss curve, as [step, loss] pairs (step is 1-based)."""
    k = max(1, len(xs) // n)
    pts = [[i + 1, x] for i, x in enumerate(xs) if (i + 1) % k == 0]
    if xs and (not pts or pts[-1][0] != len(xs)):
        pts.append([len(xs), xs[-1]])
    return pts
