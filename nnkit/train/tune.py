"""Hyper-parameter search over `train()` on Optuna: `tune(spec)` -> TuneResult (issue 13).

Optuna does the searching (GridSampler, RandomSampler, TPESampler; MedianPruner, HyperbandPruner, NopPruner);
nnkit supplies the objective, which is one ordinary training run per trial in STUDY/trial-NNNN (config, metrics,
checkpoints: `nnkit eval` and `nnkit train --resume` work on it), fed to the pruner after every epoch.

Consistency, so that re-running the same command only ever adds what is missing:
- A worker decides whether to start a trial and asks for it while holding a file lock beside the storage, so
  workers on one machine (or sharing the journal file's folder) never start more than --trials, and the grid
  hands every combination out once. The storage numbers trials atomically; GridSampler gives trial k the k-th
  combination, and a combination whose trial failed is enqueued again (exactly once, under the lock).
- Ctrl-C or SIGTERM: the run saves its resumable checkpoint (train's own handling) and the trial is told FAIL.
  A worker killed outright leaves its trial RUNNING; the next worker on that machine sees the process gone and
  tells it FAIL. Failed trials do not count towards --trials.
- The search itself (space, sampler, pruner, metric, fixed options) is saved in the study and compared on
  every start: a study is continued only by the search that made it.

Across machines through PostgreSQL that lock is the database's own (an advisory lock, held by the worker's
connection, so a killed worker's lock ends with its connection): --trials and the grid hold across machines too.
Through MySQL the file lock does not reach the other machines: there, --trials may be passed by up to one trial
per extra machine and, as Optuna documents for GridSampler, a retried combination may run twice when two machines
retry it at the same instant (a duplicate seen before training is told FAIL).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import socket
import time
import warnings
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Iterator

from nnkit.errors import Interrupted, NnkitError, RunDirError, UsageError, first_line
from nnkit.train.config import Optimizer, Schedule, TrainConfig, parse_augment

__all__ = ["Param", "TuneSpec", "TuneHooks", "TrialRow", "TuneResult", "parse_param", "tune", "report",
           "SPACE_OPTIONS", "SAMPLERS", "PRUNERS", "METRICS"]

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "none")
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}  # each epoch's value feeds the pruner
Sampler = Enum("Sampler", {s: s for s in SAMPLERS}, type=str)  # closed vocabularies: typer lists and completes
Pruner = Enum("Pruner", {s: s for s in PRUNERS}, type=str)
Metric = Enum("Metric", {s: s for s in METRICS}, type=str)
# The options a search may vary, by TrainConfig field: the value type, and the flag the user wrote.
SPACE_OPTIONS: dict[str, tuple[type, str]] = {
    "lr": (float, "--lr"), "batch_size": (int, "--batch-size"), "optimizer": (str, "--optimizer"),
    "weight_decay": (float, "--weight-decay"), "momentum": (float, "--momentum"), "width": (float, "--width"),
    "epochs": (int, "--epochs"), "schedule": (str, "--schedule"), "augment": (str, "--augment"),
    "label_smoothing": (float, "--label-smoothing"), "dropout": (float, "--dropout"),
}
_ENUMS = {"optimizer": Optimizer, "schedule": Schedule}
# Settings that may differ between the runs of one study: where and how fast it trains, not what.
_MAY_CHANGE = ("device", "workers", "data_dir", "out", "stream")
LOCK_NAME = ".nnkit-tune.lock"


# ---------------------------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Param:
    """One searched option: a range (low..high, log or not) or a list of choices."""

    name: str  # the TrainConfig field, and the parameter's name in Optuna and in the JSON
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    @property
    def is_range(self) -> bool:
        return not self.choices

    def grid(self) -> tuple[Any, ...]:
        """The values a grid takes: the choices, or every integer of an integer range. A continuous range has
        none (refused in one line)."""
        if self.choices:
            return self.choices
        if self.integer:
            return tuple(range(int(self.low), int(self.high) + 1))  # type: ignore[arg-type]
        flag = SPACE_OPTIONS[self.name][1]
        raise UsageError(f"{flag} {self.text()}: --sampler grid needs a finite list of values, and a continuous "
                         f"range has none; list them ({flag} {_example(self)}) or use --sampler tpe or random")

    def text(self) -> str:
        if self.choices:
            return ",".join(f"{c:g}" if isinstance(c, float) else str(c) for c in self.choices)
        return f"{self.low:g}..{self.high:g}" + (":log" if self.log else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "choices": list(self.choices), "low": self.low, "high": self.high,
                "log": self.log, "integer": self.integer}

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices:
            return CategoricalDistribution(list(self.choices))
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return FloatDistribution(float(self.low), float(self.high), log=self.log)  # type: ignore[arg-type]


def _example(p: Param) -> str:
    lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
    if p.log and lo > 0:
        n = max(2, min(4, int(round(math.log10(hi / lo))) + 1))
        return ",".join(f"{lo * (hi / lo) ** (i / (n - 1)):.3g}" for i in range(n))
    return ",".join(f"{lo + (hi - lo) * i / 2:.3g}" for i in range(3))


def _number(flag: str, word: str, kind: type) -> Any:
    try:
        v = float(word)
    except ValueError:
        raise UsageError(f"{flag}: '{word}' is not a number") from None
    if kind is int:
        if v != int(v):
            raise UsageError(f"{flag}: '{word}' is not a whole number")
        return int(v)
    return v


def parse_param(name: str, values: list[str]) -> tuple[Param | None, Any]:
    """An option as the user wrote it -> (Param, None) when it is searched, (None, value) when it is fixed.

    '1e-4..1e-1:log' and '0..1e-3' are ranges (integer options: integer ranges); 'sgd,adamw' and '32,64,128' are
    choices; one value is fixed for every trial. --augment takes comma lists itself ('flip,crop'), so its
    choices are the option given several times (--augment none --augment crop --augment flip,crop).
    """
    kind, flag = SPACE_OPTIONS[name]
    if name == "augment":
        choices = tuple(",".join(parse_augment(v)) or "none" for v in values)
        if len(set(choices)) < len(choices):
            raise UsageError(f"--augment: the same choice is given twice ({', '.join(choices)})")
        return (Param(name, choices=choices), None) if len(choices) > 1 else (None, parse_augment(values[0]))
    if len(values) > 1:
        raise UsageError(f"{flag} is given {len(values)} times; give it once, as a list (a,b,c) or a range "
                         f"(low..high)")
    text = values[0].strip()
    if ".." in text:
        body, _, scale = text.partition(":")
        if kind is str:
            raise UsageError(f"{flag} {text}: a range needs numbers; list the choices instead (a,b)")
        if scale not in ("", "log"):
            raise UsageError(f"{flag} {text}: ':{scale}' is not a scale; write low..high or low..high:log")
        lo_s, _, hi_s = body.partition("..")
        lo, hi = _number(flag, lo_s.strip(), kind), _number(flag, hi_s.strip(), kind)
        if not lo < hi:
            raise UsageError(f"{flag} {text}: the range must go from low to high")
        if scale == "log" and lo <= 0:
            raise UsageError(f"{flag} {text}: a log range needs a positive low end")
        return Param(name, low=lo, high=hi, log=scale == "log", integer=kind is int), None
    words = [w.strip() for w in text.split(",")]
    if not all(words):
        raise UsageError(f"{flag} '{text}': an empty value in the list")
    if kind is str:
        enum = _ENUMS[name]
        for w in words:
            if w.lower() not in {e.value for e in enum}:
                raise UsageError(f"{flag}: unknown {name} '{w}'; valid: {', '.join(e.value for e in enum)}")
        vals: list[Any] = [w.lower() for w in words]
    else:
        vals = [_number(flag, w, kind) for w in words]
    if len(set(vals)) < len(vals):
        raise UsageError(f"{flag} {text}: a value is listed twice")
    if len(vals) == 1:
        return None, _ENUMS[name](vals[0]) if name in _ENUMS else vals[0]
    return Param(name, choices=tuple(vals)), None


def apply_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The trial's TrainConfig: the fixed options with the sampled values put in."""
    over: dict[str, Any] = {}
    for k, v in params.items():
        if k in _ENUMS:
            v = _ENUMS[k](v)
        elif k == "augment":
            v = parse_augment(v)
        over[k] = v
    return replace(base, **over)


# ---------------------------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class TuneSpec:
    base: TrainConfig  # every fixed option (its `out` is ignored: each trial gets STUDY/trial-NNNN)
    space: tuple[Param, ...]
    out: str
    sampler: str = "tpe"
    pruner: str | None = None  # None: median, or none for a grid (a grid is there to see every combination)
    metric: str = "val_accuracy"
    trials: int | None = None  # the study's total; None: the grid's size, or 20
    timeout: float | None = None  # seconds, after which no new trial starts (Optuna's meaning)
    jobs: int = 1
    storage: str | None = None  # None: SQLite in the study folder
    study: str | None = None

    @property
    def pruner_name(self) -> str:
        return self.pruner or ("none" if self.sampler == "grid" else "median")

    def grid_size(self) -> int:
        return math.prod(len(p.grid()) for p in self.space)

    def total(self) -> int:
        if self.sampler == "grid":
            g = self.grid_size()
            return g if self.trials is None else min(self.trials, g)
        return 20 if self.trials is None else self.trials

    def validate(self) -> TuneSpec:
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler}: valid: {', '.join(SAMPLERS)}")
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise UsageError(f"--pruner {self.pruner}: valid: {', '.join(PRUNERS)}")
        if self.metric not in METRICS:
            raise UsageError(f"--metric {self.metric}: valid: {', '.join(METRICS)}")
        if not self.space:
            raise UsageError("tune: nothing to search; give at least one option as a range or a list "
                             "(--lr 1e-4..1e-1:log, --batch-size 32,64,128, --optimizer sgd,adamw, ...)")
        if self.trials is not None and self.trials < 1:
            raise UsageError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise UsageError(f"--timeout must be positive, got {self.timeout:g}")
        if self.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {self.jobs}")
        if self.sampler == "grid":
            self.grid_size()  # refuses a continuous range
        self.base.validate()
        for p in self.space:  # every end of every range and every choice, through train's own checks
            values = p.choices if p.choices else (p.low, p.high)
            for v in values:
                try:
                    apply_params(self.base, {p.name: v}).validate()
                except UsageError as exc:
                    raise UsageError(f"{SPACE_OPTIONS[p.name][1]} {p.text()}: {exc}") from None
        return self

    def saved(self) -> dict[str, Any]:
        """What makes the search this search: saved in the study, compared when it is continued."""
        base = {k: v for k, v in self.base.to_dict().items() if k not in _MAY_CHANGE}
        for p in self.space:
            base.pop(p.name, None)
        return {"version": 1, "base": base, "space": [p.to_dict() for p in self.space], "sampler": self.sampler,
                "pruner": self.pruner_name, "metric": self.metric}


class TuneHooks:
    """Progress callbacks (the CLI draws a bar); the search itself prints nothing."""

    def start(self, total: int, done: int) -> None: ...

    def trial_start(self, number: int, params: dict[str, Any]) -> None: ...

    def epoch_end(self, number: int, row: dict[str, Any], epochs: int) -> None: ...

    def trial_end(self, row: TrialRow, done: int) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING (Optuna's names)
    params: dict[str, Any]
    value: float | None  # Optuna's value: the metric's best epoch (a pruned trial: its last reported epoch)
    best_val_accuracy: float | None
    epochs_run: int | None
    seconds: float | None
    run_dir: str | None
    checkpoint: str | None  # best.pt
    test_accuracy: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "state": self.state, "params": self.params, "value": self.value,
                "best_val_accuracy": self.best_val_accuracy, "epochs_run": self.epochs_run,
                "seconds": self.seconds, "run_dir": self.run_dir, "checkpoint": self.checkpoint,
                "test_accuracy": self.test_accuracy, "error": self.error}


@dataclass(frozen=True)
class TuneResult:
    study: str
    storage: str
    out: str
    sampler: str
    pruner: str
    metric: str
    direction: str
    total: int  # --trials as resolved
    trials: tuple[TrialRow, ...]
    best: TrialRow | None
    space: tuple[Param, ...] = field(default=())
    epochs_spent: int = 0  # every epoch trained in the study (the search's cost)


# ---------------------------------------------------------------------------------------------- storage


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as exc:
        from nnkit.errors import MissingDependencyError

        raise MissingDependencyError("optuna", "nnkit tune") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trial table is ours; Optuna logs each trial
    return optuna


def storage_url(spec: TuneSpec) -> str:
    return spec.storage or f"sqlite:///{Path(spec.out).expanduser().resolve() / 'study.db'}"


def open_storage(url: str) -> Any:
    """An RDB URL (sqlite:///, postgresql://, mysql://) or journal:PATH, Optuna's journal file."""
    optuna = _optuna()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise RunDirError(f"--storage {url}: no such directory {path.parent}")
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UsageError(f"--storage {url}: not a database URL (postgresql://..., mysql://..., sqlite:///...) "
                         f"or journal:PATH")
    # Several processes write to one SQLite file: each waits its turn (up to a minute) instead of failing
    # with "database is locked"; SQLite serialises writers with file locks on a local disk.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    try:
        if url.startswith("postgresql"):  # the first workers on a fresh database would create Optuna's tables
            with _database_lock(url):    # together, and all but one fail on PostgreSQL's catalogue (seen)
                return _rdb_storage(optuna, url, kwargs)
        return _rdb_storage(optuna, url, kwargs)
    except ImportError as exc:  # the database's driver (psycopg2, pymysql) is not installed
        raise UsageError(f"--storage {url.split('://')[0]}://...: needs its database driver "
                         f"({first_line(exc, 80)})") from exc
    except Exception as exc:  # noqa: BLE001 - sqlalchemy's connection errors, as one line
        raise RunDirError(f"--storage {url.split('@')[-1]}: cannot open ({type(exc).__name__}: "
                          f"{first_line(exc, 120)})") from exc


# What a database says when another process made Optuna's tables or version row between Optuna's check and its
# own CREATE/INSERT: SQLite ("table studies already exists", "UNIQUE constraint failed: alembic_version..."),
# PostgreSQL ("relation ... already exists", "duplicate key value ...").
_CREATED_MEANWHILE = ("already exists", "unique constraint", "duplicate key")


def _rdb_storage(optuna: Any, url: str, kwargs: dict | None) -> Any:
    """Optuna's RDBStorage, opened again when its first open lost the race to create the schema. Optuna checks
    for each table and then creates it, so two processes opening a fresh database at once collide: nnkit's
    workers, or any other program reading the study while it is being made (optuna-dashboard, a script). Seen:
    4 of 18 processes failed, three at a time on six fresh SQLite files. The second open finds the tables."""
    import sqlalchemy.exc

    for attempt in range(4):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except sqlalchemy.exc.DBAPIError as exc:
            if not any(m in str(exc).lower() for m in _CREATED_MEANWHILE):
                raise
            time.sleep(0.1 * (attempt + 1))  # the winner may still be creating the rest
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def lock_path(spec: TuneSpec) -> Path:
    """Beside the storage where it is a file (so that every worker using it finds the same lock), else in the
    study folder."""
    if spec.storage and spec.storage.startswith("journal:"):
        p = Path(spec.storage.removeprefix("journal:")).expanduser()
        return p.with_name(p.name + ".nnkit-lock")  # not .lock: Optuna's own JournalFileSymlinkLock is that
    if spec.storage and spec.storage.startswith("sqlite:///"):
        p = Path(spec.storage.removeprefix("sqlite:///")).expanduser()
        return p.with_name(p.name + ".nnkit-lock")
    return Path(spec.out).expanduser() / LOCK_NAME


# One advisory-lock number for nnkit tune in a PostgreSQL database: the first 63 bits of sha256("nnkit tune").
# Every study in that database shares it, which costs nothing: it is held only while a worker decides on and asks
# for its next trial.
_PG_LOCK = int.from_bytes(hashlib.sha256(b"nnkit tune").digest()[:8], "big") >> 1


@contextlib.contextmanager
def _locked_study(spec: TuneSpec) -> Iterator[None]:
    """The workers' lock: PostgreSQL's advisory lock where the study is in PostgreSQL (it reaches every machine
    on that database), else a file lock beside the storage or in the study folder."""
    url = storage_url(spec)
    if url.startswith("postgresql"):
        with _database_lock(url):
            yield
    else:
        with _locked(lock_path(spec)):
            yield


@contextlib.contextmanager
def _database_lock(url: str) -> Iterator[None]:
    """PostgreSQL's session advisory lock on its own connection: one holder across every machine on the
    database."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    # NullPool: the connection, and with it the lock, ends with the block, or with the process if it is killed
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK})
    finally:
        engine.dispose()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)  # lockf: POSIX record locks, which NFS carries between machines
        try:
            yield
        finally:
            fcntl.lockf(f, fcntl.LOCK_UN)


def _study_name(spec: TuneSpec, storage: Any) -> str:
    """--study, else the one study the storage holds, else the folder's name."""
    if spec.study:
        return spec.study
    names = _optuna().get_all_study_names(storage)
    if len(names) == 1:
        return names[0]
    return Path(spec.out).expanduser().resolve().name


def _check_out(spec: TuneSpec) -> Path:
    out = Path(spec.out).expanduser()
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and spec.storage is None:
        entries = {p.name for p in out.iterdir()} - {LOCK_NAME}
        if entries and "study.db" not in entries:
            raise RunDirError(f"--out {out}: not empty and holds no study (study.db); a study goes into a new "
                              f"or empty directory, or give its --storage")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot create ({exc.strerror or exc})") from exc
    return out


def load_or_create(spec: TuneSpec) -> Any:
    """The study, created with the search saved in it, or continued after checking that the search is the
    same one."""
    optuna = _optuna()
    storage = open_storage(storage_url(spec))
    name = _study_name(spec, storage)
    saved = spec.saved()
    with _locked_study(spec):  # two workers starting together: one creates, the other continues
        if name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            _check_same_search(study, saved, name)
        else:
            study = optuna.create_study(study_name=name, storage=storage, direction=METRICS[spec.metric])
            study.set_user_attr("nnkit_tune", saved)
    return study


def _check_same_search(study: Any, saved: dict[str, Any], name: str) -> None:
    old = study.user_attrs.get("nnkit_tune")
    if old is None:
        raise UsageError(f"--study {name}: a study that nnkit tune did not create; choose another --study")
    if old == saved:
        return
    for key in ("sampler", "pruner", "metric"):
        if old.get(key) != saved[key]:
            raise UsageError(f"--{key} {saved[key]}: study '{name}' searches with --{key} {old.get(key)}; "
                             f"continue it with the same search or choose another --out")
    oldspace = {p["name"]: p for p in old.get("space", [])}
    newspace = {p["name"]: p for p in saved["space"]}
    for k in sorted(set(oldspace) | set(newspace)):
        if oldspace.get(k) != newspace.get(k):
            was = Param(**{**oldspace[k], "choices": tuple(oldspace[k]["choices"])}).text() \
                if k in oldspace else "fixed"
            flag = SPACE_OPTIONS[k][1]
            raise UsageError(f"{flag}: study '{name}' searches {flag} {was}; continue it with the same search "
                             f"or choose another --out")
    for k in sorted(set(old.get("base", {})) | set(saved["base"])):
        if old.get("base", {}).get(k) != saved["base"].get(k):
            raise UsageError(f"--{k.replace('_', '-')}: study '{name}' was started with "
                             f"{old.get('base', {}).get(k)!r}, not {saved['base'].get(k)!r}; continue it with "
                             f"the same options or choose another --out")


# ---------------------------------------------------------------------------------------------- a worker


def _mix(*parts: int) -> int:
    from nnkit.train.loop import mix_seed

    return mix_seed(*parts) & 0xFFFFFFFF  # numpy's RandomState, under Optuna's samplers, takes 32-bit seeds


def _sampler(spec: TuneSpec, next_number: int) -> Any:
    optuna = _optuna()
    seed = spec.base.seed
    if spec.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                """GridSampler calls Study.stop() when the grid is done, which only works inside optimize(); the
                worker loop knows when to stop by itself."""

        # The same seed in every worker and every run: the grid's order is the same everywhere, and trial k
        # takes the k-th combination.
        return Grid({p.name: list(p.grid()) for p in spec.space}, seed=seed)
    # Seeded by the number the next trial will get: a study run again from nothing repeats itself, and two
    # workers never draw from one random stream.
    s = _mix(seed, next_number)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s)
    return optuna.samplers.TPESampler(seed=s)


def _pruner(spec: TuneSpec) -> Any:
    optuna = _optuna()
    name = spec.pruner_name
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        ep = next((p for p in spec.space if p.name == "epochs"), None)
        most = spec.base.epochs if ep is None else int(max(ep.choices) if ep.choices else ep.high)  # type: ignore
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, most))
    return optuna.pruners.NopPruner()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _fail_dead_workers(study: Any, trials: list[Any]) -> int:
    """Trials left RUNNING by a worker of this machine that no longer exists (killed): told FAIL."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    n = 0
    for t in trials:
        worker = t.user_attrs.get("worker", "")
        h, _, pid = worker.rpartition(":")
        if t.state is TrialState.RUNNING and h == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_user_attr(t._trial_id, "error", f"worker {pid} stopped without a word "
                                                                     f"(killed)")
            study.tell(t.number, state=TrialState.FAIL)
            n += 1
    return n


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _next_trial(study: Any, spec: TuneSpec, dists: dict[str, Any]) -> Any | None:
    """Under the lock: tidy up after dead workers, decide whether the study needs another trial, and ask for
    it. None: the study has its --trials (finished and running ones together)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if _fail_dead_workers(study, trials):
        trials = study.get_trials(deepcopy=False)
    if spec.sampler == "grid":
        taken = {_key(t.params) for t in trials
                 if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) and t.params}
        # an enqueued trial's combination is in its fixed_params until a worker asks for it
        pending = {_key(t.system_attrs.get("fixed_params", {})) for t in trials if t.state is TrialState.WAITING}
        covered = taken | pending
        # A combination whose trial failed (interrupted, killed) is enqueued again, once: the grid misses none.
        for t in trials:
            if len(covered) >= spec.total():
                break
            if t.state is TrialState.FAIL and t.params and _key(t.params) not in covered:
                study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
                covered.add(_key(t.params))
        if len(taken) >= spec.total():
            return None
    else:
        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        if sum(t.state in live for t in trials) >= spec.total():
            return None
    study.sampler = _sampler(spec, len(trials))
    trial = study.ask(dists)
    trial.set_user_attr("worker", _me())
    return trial


def _duplicate(study: Any, trial: Any) -> int | None:
    """Another live trial with a lower number and the same grid combination (workers on several machines
    without a shared lock), or None."""
    from optuna.trial import TrialState

    key = _key(trial.params)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING, TrialState.WAITING)):
        if t.number < trial.number and t.params and _key(t.params) == key:
            return t.number
    return None


class _Objective:
    """The loop's hooks for one trial: each epoch's metric to the pruner, the pruner's answer back."""

    def __init__(self, trial: Any, metric: str, hooks: TuneHooks, epochs: int) -> None:
        from nnkit.train.loop import Hooks

        outer = self

        class H(Hooks):
            def epoch_end(self, row: dict[str, Any]) -> None:
                outer.trial.report(float(row[outer.metric]), int(row["epoch"]))
                outer.hooks.epoch_end(outer.trial.number, row, outer.epochs)

            def should_stop(self, row: dict[str, Any]) -> bool:
                outer.pruned = bool(outer.trial.should_prune())
                return outer.pruned

            def note(self, text: str) -> None:
                outer.hooks.note(f"trial {outer.trial.number}: {text}")

        self.trial, self.metric, self.hooks, self.epochs = trial, metric, hooks, epochs
        self.pruned = False
        self.loop_hooks = H()


def _run_trial(study: Any, spec: TuneSpec, trial: Any, out: Path, hooks: TuneHooks) -> str:
    """Train one trial into out/trial-NNNN and tell the study how it went; its state's name."""
    from optuna.trial import TrialState

    from nnkit.train.checkpoint import write_json
    from nnkit.train.loop import train

    params = dict(trial.params)
    run_dir = out / f"trial-{trial.number:04d}"
    cfg = replace(apply_params(spec.base, params), out=str(run_dir))
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    hooks.trial_start(trial.number, params)
    obj = _Objective(trial, spec.metric, hooks, cfg.epochs)
    try:
        r = train(cfg, hooks=obj.loop_hooks)
    except BaseException as exc:
        interrupted = isinstance(exc, (Interrupted, KeyboardInterrupt))
        trial.set_user_attr("error", "interrupted" if interrupted else first_line(exc, 200))
        study.tell(trial, state=TrialState.FAIL)
        if interrupted:
            raise Interrupted(f"interrupted in trial {trial.number} (told failed; its run can be resumed: "
                              f"nnkit train --resume {run_dir}); run the same nnkit tune command again to "
                              f"continue the study") from None
        if _is_oom(exc):  # a batch too large for this device: this trial's settings, not the study's
            hooks.note(f"trial {trial.number} failed: {first_line(exc, 120)}")
            return "FAIL"
        raise
    hist = r.history
    best = (max if METRICS[spec.metric] == "maximize" else min)(row[spec.metric] for row in hist)
    for k, v in (("best_val_accuracy", r.val_accuracy), ("epochs_run", r.epochs_run),
                 ("seconds", sum(row["seconds"] for row in hist)),
                 ("checkpoint", str(Path(r.best_checkpoint).resolve())),
                 ("test_accuracy", r.test_accuracy), ("images_per_s", r.images_per_s)):
        trial.set_user_attr(k, v)
    if not obj.pruned and not math.isfinite(best):
        trial.set_user_attr("error", f"{spec.metric} is {best} (diverged)")
        study.tell(trial, state=TrialState.FAIL)
        return "FAIL"
    state = TrialState.PRUNED if obj.pruned else TrialState.COMPLETE
    study.tell(trial, None if obj.pruned else float(best), state=state)
    write_json(run_dir / "trial.json", {"study": study.study_name, "number": trial.number, "state": state.name,
                                        "params": params, "value": None if obj.pruned else float(best)})
    return state.name


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError"


def work(spec: TuneSpec, hooks: TuneHooks | None = None, deadline: float | None = None,
         study: Any = None) -> int:
    """One worker: trials until the study has --trials or the deadline passes; the trials it ran."""
    hooks = hooks or TuneHooks()
    study = study or load_or_create(spec)
    study.pruner = _pruner(spec)
    dists = {p.name: p.distribution() for p in spec.space}
    out = Path(spec.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    ran = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=_optuna().exceptions.ExperimentalWarning)
        while deadline is None or time.time() < deadline:
            with _locked_study(spec):
                trial = _next_trial(study, spec, dists)
                if trial is not None and spec.sampler == "grid":
                    other = _duplicate(study, trial)
                    if other is not None:
                        from optuna.trial import TrialState

                        trial.set_user_attr("error", f"the same combination as trial {other}; not trained")
                        study.tell(trial, state=TrialState.FAIL)
                        continue
            if trial is None:
                break
            _run_trial(study, spec, trial, out, hooks)
            ran += 1
            hooks.trial_end(_row(study._storage.get_trial(trial._trial_id)), _done(study))
    return ran


def _done(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _worker_main(spec: TuneSpec, deadline: float | None, threads: int, errors: Any) -> None:
    """A --jobs process: its share of the cores, no progress of its own; its error goes back to the parent."""
    import torch

    torch.set_num_threads(threads)
    try:
        work(spec, deadline=deadline)
    except Interrupted:
        raise SystemExit(130) from None
    except NnkitError as exc:
        errors.put((int(exc.exit_code), str(exc)))
        raise SystemExit(int(exc.exit_code)) from None


def tune(spec: TuneSpec, hooks: TuneHooks | None = None) -> TuneResult:
    """Run (or continue) the study until it holds spec.total() trials or --timeout passes; its report."""
    spec = spec.validate()
    hooks = hooks or TuneHooks()
    _check_out(spec)
    study = load_or_create(spec)
    deadline = time.time() + spec.timeout if spec.timeout else None
    hooks.start(spec.total(), _done(study))
    if spec.jobs == 1:
        work(spec, hooks, deadline, study)
    else:
        _parallel(spec, study, hooks, deadline)
    return report(spec)


def _parallel(spec: TuneSpec, study: Any, hooks: TuneHooks, deadline: float | None) -> None:
    import multiprocessing as mp

    from nnkit.errors import ExitCode

    ctx = mp.get_context("spawn")  # a fresh interpreter each: no forked torch thread pools or SQLite handles
    errors = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // spec.jobs)
    procs = [ctx.Process(target=_worker_main, args=(spec, deadline, threads, errors), daemon=False)
             for _ in range(spec.jobs)]
    for p in procs:
        p.start()
    seen: set[int] = set()
    try:
        while any(p.is_alive() for p in procs):
            _report_new(study, seen, hooks)
            for p in procs:
                p.join(timeout=1.0 / len(procs))
    except KeyboardInterrupt:
        import signal

        for p in procs:  # SIGTERM: each saves its run's checkpoint at the next step and tells its trial FAIL
            if p.is_alive() and p.pid:
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            p.join(timeout=120)
        raise Interrupted("interrupted; the running trials were told failed; run the same nnkit tune command "
                          "again to continue the study") from None
    _report_new(study, seen, hooks)
    with _locked_study(spec):  # a worker that died (killed) left its trial RUNNING
        _fail_dead_workers(study, study.get_trials(deepcopy=False))
    if not errors.empty():
        code, message = errors.get()
        err = NnkitError(message)
        err.exit_code = ExitCode(code)  # the worker's own code (usage 2, data 1)
        raise err
    codes = [p.exitcode for p in procs]
    if any(c == ExitCode.INTERRUPTED for c in codes):
        raise Interrupted("interrupted; the running trials were told failed; run the same nnkit tune command "
                          "again to continue the study")
    if any(c for c in codes):
        bad = next(c for c in codes if c)
        raise NnkitError(f"--jobs {spec.jobs}: a worker process ended with exit code {bad}; its trial was told "
                         f"failed; run the same nnkit tune command again to continue the study")


def _report_new(study: Any, seen: set[int], hooks: TuneHooks) -> None:
    from optuna.trial import TrialState

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    for t in study.get_trials(deepcopy=False):
        if t.state in finished and t.number not in seen:
            seen.add(t.number)
            hooks.trial_end(_row(t), _done(study))


# ---------------------------------------------------------------------------------------------- the report


def _row(t: Any) -> TrialRow:
    u = t.user_attrs
    return TrialRow(number=t.number, state=t.state.name, params=dict(t.params), value=t.value,
                    best_val_accuracy=u.get("best_val_accuracy"), epochs_run=u.get("epochs_run"),
                    seconds=u.get("seconds"), run_dir=u.get("run_dir"), checkpoint=u.get("checkpoint"),
                    test_accuracy=u.get("test_accuracy"), error=u.get("error"))


def report(spec: TuneSpec) -> TuneResult:
    """The study as it stands (also while other workers run)."""
    optuna = _optuna()
    storage = open_storage(storage_url(spec))
    name = _study_name(spec, storage)
    study = optuna.load_study(study_name=name, storage=storage)
    rows = tuple(_row(t) for t in study.get_trials(deepcopy=False))
    done = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    direction = METRICS[spec.metric]
    best = None
    if done:
        best = (max if direction == "maximize" else min)(done, key=lambda r: r.value)  # type: ignore
    epochs = sum(r.epochs_run or 0 for r in rows)
    return TuneResult(study=name, storage=storage_url(spec), out=str(Path(spec.out).expanduser()),
                      sampler=spec.sampler, pruner=spec.pruner_name, metric=spec.metric, direction=direction,
                      total=spec.total(), trials=rows, best=best, space=spec.space, epochs_spent=epochs)


def load_study(spec: TuneSpec) -> Any:
    """The Optuna study of spec, for plotting."""
    optuna = _optuna()
    storage = open_storage(storage_url(spec))
    return optuna.load_study(study_name=_study_name(spec, storage), storage=storage)

