"""nnkit tune and nnkit runs (issue 13): the search space, the JSON contract, trials as ordinary runs, pruning,
continuing a study, a grid exactly once across restarts, interruptions and killed workers, and two real worker
processes on one study (SQLite through --jobs, Optuna's journal file through --storage).

Every trial is LeNet-5 on the bundled digits for one or two epochs at batch 256 (4 steps an epoch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--batch-size", "256", "--augment", "none")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _trials(storage: str, name: str | None = None) -> list:
    import optuna

    names = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name or names[0], storage=storage)
    return study.get_trials(deepcopy=False)


def _journal(path: Path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _combos(trials, states=("COMPLETE", "PRUNED")) -> Counter:
    return Counter(tuple(sorted(t.params.items())) for t in trials if t.state.name in states)


# ---------------------------------------------------------------------------------------------- the space


def test_options_parse_to_ranges_lists_and_fixed_values():
    from nnkit.train.config import Optimizer
    from nnkit.train.tune import Param, parse_param

    assert parse_param("lr", ["1e-4..1e-1:log"]) == (Param("lr", low=1e-4, high=0.1, log=True), None)
    assert parse_param("weight_decay", ["0..1e-3"]) == (Param("weight_decay", low=0.0, high=1e-3), None)
    assert parse_param("batch_size", ["32,64,128"]) == (Param("batch_size", choices=(32, 64, 128)), None)
    assert parse_param("epochs", ["2..4"]) == (Param("epochs", low=2, high=4, integer=True), None)
    assert parse_param("epochs", ["2..4"])[0].grid() == (2, 3, 4)  # an integer range is finite: a grid takes it
    assert parse_param("optimizer", ["sgd,AdamW"]) == (Param("optimizer", choices=("sgd", "adamw")), None)
    assert parse_param("optimizer", ["sgd"]) == (None, Optimizer.sgd)
    assert parse_param("lr", ["0.01"]) == (None, 0.01)
    assert parse_param("augment", ["none", "crop", "flip,crop"]) == (
        Param("augment", choices=("none", "crop", "flip,crop")), None)
    assert parse_param("augment", ["flip,crop"]) == (None, ("flip", "crop"))


@pytest.mark.parametrize("name,values,message", [
    ("lr", ["1e-1..1e-4"], "from low to high"),
    ("lr", ["0..1e-1:log"], "a log range needs a positive low end"),
    ("lr", ["1e-4..1e-1:ln"], "':ln' is not a scale"),
    ("batch_size", ["32,6.5"], "'6.5' is not a whole number"),
    ("optimizer", ["sgd,lamb"], "unknown optimizer 'lamb'"),
    ("optimizer", ["sgd..adamw"], "a range needs numbers"),
    ("batch_size", ["32,32"], "listed twice"),
    ("lr", ["1e-3", "1e-2"], "--lr is given 2 times"),
    ("augment", ["crop", "rotat"], "unknown augmentation"),
])
def test_bad_space_options_are_one_line(name, values, message):
    from nnkit.errors import NnkitError
    from nnkit.train.tune import parse_param

    with pytest.raises(NnkitError, match=message):
        parse_param(name, values)


def test_grid_refuses_a_continuous_range_in_one_line(nnkit, tmp_path):
    run = nnkit("tune", "lenet5", "--sampler", "grid", "--lr", "1e-4..1e-1:log", "--out", str(tmp_path / "s"))
    assert run.code == 2 and run.err.count("\n") == 1, run
    assert "--lr 0.0001..0.1:log: --sampler grid needs a finite list of values" in run.err
    assert "(--lr 0.0001,0.001,0.01,0.1)" in run.err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_values_train_refuses_are_refused_before_any_trial(nnkit, tmp_path):
    run = nnkit("tune", "lenet5", "--label-smoothing", "0,1.5", "--out", str(tmp_path / "s"))
    assert run.code == 2 and "--label-smoothing 0,1.5: --label-smoothing must be in [0, 1)" in run.err, run
    run = nnkit("tune", "lenet5", "--epochs", "2", "--out", str(tmp_path / "s"))
    assert run.code == 2 and "nothing to search" in run.err, run


# ---------------------------------------------------------------------------------------------- a study


@pytest.fixture(scope="module")
def grid_study(tmp_path_factory):
    """A grid of 2 learning rates x 2 optimizers, one epoch each, through the CLI."""
    from typer.testing import CliRunner

    from nnkit.cli import app

    out = tmp_path_factory.mktemp("grid") / "study"
    args = ["tune", "lenet5", "--sampler", "grid", "--lr", "0.003,0.03", "--optimizer", "adamw,sgd", "--epochs",
            "1", *FAST, "--out", str(out), "-f", "json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout), args


def test_tune_json_contract_and_every_trial_is_a_run_directory(grid_study):
    out, doc, _ = grid_study
    assert {"study", "best", "trials"} <= set(doc)
    assert doc["study"] == "study" and doc["sampler"] == "grid" and doc["pruner"] == "none"
    assert [t["number"] for t in doc["trials"]] == [0, 1, 2, 3]
    for t in doc["trials"]:
        assert set(t["params"]) == {"lr", "optimizer"} and t["state"] == "COMPLETE"
        assert t["value"] == t["best_val_accuracy"] and t["epochs_run"] == 1
        run = Path(t["run_dir"])
        assert run == (out / f"trial-{t['number']:04d}").resolve()
        assert {"config.json", "metrics.jsonl", "last.pt", "best.pt", "summary.json", "trial.json"} <= \
            {p.name for p in run.iterdir()}
        config = json.loads((run / "config.json").read_text())
        assert config["lr"] == t["params"]["lr"] and config["optimizer"] == t["params"]["optimizer"]
        assert config["epochs"] == 1 and config["batch_size"] == 256  # fixed options reach every trial
    assert _combos(_trials(f"sqlite:///{out / 'study.db'}")) == Counter(
        {(("lr", lr), ("optimizer", o)): 1 for lr in (0.003, 0.03) for o in ("adamw", "sgd")})
    best = max(doc["trials"], key=lambda t: t["value"])
    assert doc["best"]["number"] == best["number"] and doc["best"]["checkpoint"] == best["checkpoint"]


def test_eval_and_resume_work_on_a_trial(nnkit, grid_study, tmp_path):
    import shutil

    out, doc, _ = grid_study
    trial = out / "trial-0001"
    ev = nnkit("eval", str(trial), "-f", "json")
    assert ev.code == 0 and ev.json()["accuracy"] == doc["trials"][1]["best_val_accuracy"], ev
    copy = tmp_path / "trial"  # resumed as a copy: the study stays as the other tests expect it
    shutil.copytree(trial, copy)
    more = nnkit("train", "--resume", str(copy), "--epochs", "2", "-f", "json")
    assert more.code == 0 and more.json()["epochs_run"] == 2, more


def test_the_same_command_again_adds_nothing_and_a_changed_search_is_refused(nnkit, grid_study):
    out, doc, args = grid_study
    again = nnkit(*args)
    assert again.code == 0, again
    assert [t["number"] for t in again.json()["trials"]] == [0, 1, 2, 3]  # the grid is done: no new trial
    changed = [a if a != "0.003,0.03" else "0.003,0.01" for a in args]
    run = nnkit(*changed)
    assert run.code == 2 and "--lr: study 'study' searches --lr 0.003,0.03" in run.err, run
    run = nnkit(*args, "--seed", "3")
    assert run.code == 2 and "--seed: study 'study' was started with 0, not 3" in run.err, run


def test_more_trials_continue_the_study(nnkit, tmp_path):
    out = tmp_path / "s"
    args = ("tune", "lenet5", "--sampler", "random", "--lr", "1e-3..1e-2:log", "--epochs", "1", *FAST,
            "--out", str(out), "-f", "json")
    first = nnkit(*args, "--trials", "2")
    assert first.code == 0 and len(first.json()["trials"]) == 2, first
    second = nnkit(*args, "--trials", "3")
    assert second.code == 0, second
    rows = second.json()["trials"]
    assert [t["number"] for t in rows] == [0, 1, 2]
    assert rows[:2] == first.json()["trials"]  # completed trials are kept as they were


def test_the_pruner_stops_a_trial_that_falls_behind(tmp_path, monkeypatch):
    """Optuna's MedianPruner, fed each epoch's validation accuracy; a learning rate of 1e-7 learns nothing and is
    stopped after its first epoch, its run directory finished like an early-stopped run."""
    import optuna

    from nnkit.train import tune as T
    from nnkit.train.config import TrainConfig

    monkeypatch.setattr(T, "_pruner", lambda spec: optuna.pruners.MedianPruner(n_startup_trials=1))
    spec = T.TuneSpec(base=TrainConfig(epochs=2, batch_size=256, augment=()), out=str(tmp_path / "s"),
                      space=(T.Param("lr", choices=(1e-7, 3e-3)),), sampler="grid", pruner="median")
    r = T.tune(spec)
    by_lr = {t.params["lr"]: t for t in r.trials}
    assert r.trials[0].params["lr"] == 3e-3  # the grid's order for seed 0: the good one first
    assert by_lr[3e-3].state == "COMPLETE" and by_lr[3e-3].epochs_run == 2
    assert by_lr[1e-7].state == "PRUNED" and by_lr[1e-7].epochs_run == 1
    summary = json.loads((Path(by_lr[1e-7].run_dir) / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_run"] == 1
    assert r.epochs_spent == 3 and r.best.number == by_lr[3e-3].number


def test_val_loss_is_minimised_with_hyperband_and_timeout_stops_new_trials(nnkit, tmp_path):
    run = nnkit("tune", "lenet5", "--metric", "val_loss", "--pruner", "hyperband", "--lr", "1e-3..1e-2:log",
                "--trials", "2", "--epochs", "2", *FAST, "--out", str(tmp_path / "s"), "-f", "json")
    assert run.code == 0, run
    doc = run.json()
    assert doc["direction"] == "minimize" and doc["pruner"] == "hyperband"
    for t in doc["trials"]:
        losses = [json.loads(x)["val_loss"] for x in (Path(t["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert t["value"] == (min(losses) if t["state"] == "COMPLETE" else losses[-1])
    assert doc["best"]["value"] == min(t["value"] for t in doc["trials"] if t["state"] == "COMPLETE")
    late = nnkit("tune", "lenet5", "--lr", "1e-3..1e-2:log", "--trials", "5", "--epochs", "1", *FAST,
                 "--timeout", "0.001", "--out", str(tmp_path / "t"), "-f", "json")
    assert late.code == 0 and len(late.json()["trials"]) <= 1, late


def test_the_loop_hook_stops_a_run_like_early_stopping(tmp_path):
    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import Hooks, train

    class StopAfterOne(Hooks):
        def should_stop(self, row):
            return row["epoch"] == 1

    r = train(TrainConfig(epochs=3, batch_size=256, out=str(tmp_path / "r")), hooks=StopAfterOne())
    assert r.epochs_run == 1 and r.stopped_early and r.test_accuracy is not None
    assert json.loads((tmp_path / "r" / "config.json").read_text())["params"] == r.params == 61706


def test_dropout_sets_every_dropout_layer_and_is_refused_where_there_is_none(nnkit, tmp_path):
    import torch

    from nnkit.train.config import TrainConfig
    from nnkit.train.model import build_model as _build_model

    model = _build_model(TrainConfig(arch="alexnet", dropout=0.3), 10, 3).model
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 2 and {m.p for m in drops} == {0.3}  # torchvision's AlexNet has two, at 0.5
    reference = _build_model(TrainConfig(arch="alexnet"), 10, 3).model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    run = nnkit("train", "lenet5", "--dropout", "0.2", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert run.code == 2 and run.err == "nnkit: --dropout: lenet5 has no dropout layer\n", run
    run = nnkit("train", "lenet5", "--dropout", "1.5", "--out", str(tmp_path / "r"))
    assert run.code == 2 and "--dropout must be in [0, 1), got 1.5" in run.err, run
    from nnkit.train.tune import parse_param

    assert parse_param("dropout", ["0..0.5"])[0].low == 0.0


# ---------------------------------------------------------------------------------------------- consistency


def test_an_interrupted_grid_is_completed_exactly_once(tmp_path):
    """Ctrl-C in the second trial: that trial is FAIL (its run resumable), nothing else changes; running the
    study again trains the interrupted combination again and every combination exactly once."""
    from nnkit.errors import Interrupted
    from nnkit.train import tune as T
    from nnkit.train.config import TrainConfig

    class CtrlC(T.TuneHooks):
        def epoch_end(self, number, row, epochs):
            if number == 1:
                raise KeyboardInterrupt

    spec = T.TuneSpec(base=TrainConfig(epochs=1, batch_size=256, augment=()), out=str(tmp_path / "s"),
                      space=(T.Param("lr", choices=(3e-3, 1e-2)), T.Param("batch_size", choices=(128, 256))),
                      sampler="grid")
    with pytest.raises(Interrupted, match="interrupted in trial 1 .* run the same nnkit tune command again"):
        T.tune(spec, CtrlC())
    first = T.report(spec).trials
    assert [t.state for t in first] == ["COMPLETE", "FAIL"] and first[1].error == "interrupted"
    assert (tmp_path / "s" / "trial-0001" / "last.pt").exists()  # the interrupted run can be resumed
    r = T.tune(spec)
    assert [t.state for t in r.trials].count("FAIL") == 1 and len(r.trials) == 5
    assert r.trials[0] == first[0]
    assert _combos(_trials(r.storage)) == Counter({(("batch_size", b), ("lr", lr)): 1
                                                   for lr in (3e-3, 1e-2) for b in (128, 256)})


def _wait_for(predicate, proc, err: Path, timeout: float = 300.0) -> None:
    """Poll four times a second (each poll opens the study) until predicate() holds; fail at once if proc ended,
    with what it wrote to err."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended first (exit {proc.returncode}): {err.read_text()}")
        time.sleep(0.25)
    raise AssertionError("timed out")


def _training(out: Path) -> bool:
    """A trial of the study in out is running and has reported an epoch."""
    if not (out / "study.db").exists():
        return False
    try:
        return any(t.state.name == "RUNNING" and t.intermediate_values for t in _trials(f"sqlite:///{out}/study.db"))
    except Exception:  # noqa: BLE001 - the study is still being created
        return False


def test_a_killed_worker_leaves_a_consistent_study(tmp_path):
    """SIGKILL in the middle of a trial: the next start sees the worker gone, tells its trial FAIL, and finishes
    the grid with every combination once."""
    out = tmp_path / "s"
    db = f"sqlite:///{out / 'study.db'}"
    # epochs enough that an idle machine does not finish both trials between two polls
    args = [sys.executable, "-m", "nnkit", "tune", "lenet5", "--sampler", "grid", "--lr", "0.003,0.01",
            "--epochs", "12", *FAST, "--out", str(out), "-f", "json"]
    # stderr to a file: a pipe nobody reads while the test waits could fill and stall the worker
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "err").open("w"))
    try:
        _wait_for(lambda: _training(out), proc, tmp_path / "err")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = next(t.number for t in _trials(db) if t.state.name == "RUNNING")
    again = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    rows = {t["number"]: t for t in json.loads(again.stdout)["trials"]}
    assert rows[killed]["state"] == "FAIL" and "killed" in rows[killed]["error"]
    assert _combos(_trials(db)) == Counter({(("lr", 0.003),): 1, (("lr", 0.01),): 1})


def test_ctrl_c_on_the_command_marks_the_trial_failed_and_exits_130(tmp_path):
    out = tmp_path / "s"
    db = f"sqlite:///{out / 'study.db'}"
    args = [sys.executable, "-m", "nnkit", "tune", "lenet5", "--lr", "1e-3..1e-2:log", "--trials", "3",
            "--epochs", "4", *FAST, "--out", str(out)]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=(tmp_path / "err").open("w"))
    _wait_for(lambda: _training(out), proc, tmp_path / "err")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    err = (tmp_path / "err").read_text()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("nnkit: interrupted in trial 0 (told failed")
    assert [t.state.name for t in _trials(db)] == ["FAIL"]


def test_processes_opening_a_fresh_study_at_once_all_open_it(tmp_path):
    """Optuna makes its tables when a storage first opens a database, checking for each table before creating
    it: processes opening a fresh one at once (workers, or a script reading the study while it is made) used to
    collide, and the loser failed with "table studies already exists" (CI saw a worker die of it)."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom nnkit.train.tune import open_storage\n"
            "while not Path(sys.argv[1], 'go').exists(): time.sleep(0.01)\n"
            "for i in range(8): open_storage(f'sqlite:///{sys.argv[1]}/db{i}.db')\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=_env(), stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    time.sleep(1)  # most of the imports happen before the start, so the opens overlap
    (tmp_path / "go").touch()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    assert len(list(tmp_path.glob("db*.db"))) == 8


def test_two_worker_processes_share_one_sqlite_study(nnkit, tmp_path):
    """--jobs 2: two processes on the default SQLite study; the grid of 6 is covered exactly once, no trial
    fails, and both processes trained trials."""
    out = tmp_path / "s"
    run = nnkit("tune", "lenet5", "--sampler", "grid", "--lr", "0.002,0.005,0.01", "--optimizer", "adamw,sgd",
                "--epochs", "1", *FAST, "--jobs", "2", "--out", str(out), "-f", "json")
    assert run.code == 0, run
    trials = _trials(f"sqlite:///{out / 'study.db'}")
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials)
    assert set(_combos(trials).values()) == {1} and len(_combos(trials)) == 6
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_two_commands_cooperate_through_a_journal_file(tmp_path):
    """The several-machines path: two independent nnkit tune processes on one journal file and study name,
    each with its own --out; together they run exactly --trials trials, numbered without a gap."""
    journal = tmp_path / "study.log"
    base = [sys.executable, "-m", "nnkit", "tune", "lenet5", "--lr", "1e-3..1e-2:log", "--optimizer",
            "adamw,sgd", "--trials", "5", "--epochs", "1", *FAST, "--storage", f"journal:{journal}", "--study",
            "shared", "-f", "json"]
    procs = [subprocess.Popen([*base, "--out", str(tmp_path / f"m{i}")], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(_journal(journal), "shared")
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    workers = Counter(t.user_attrs["worker"] for t in trials)
    assert len(workers) == 2, workers
    for t in trials:  # each trial's run directory is under the --out of the worker that ran it
        assert Path(t.user_attrs["run_dir"]).parent.name in ("m0", "m1")


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server, installed (apt-get, as root) and started by the project's own script on a Unix
    socket in a fresh folder, stopped afterwards. Outside CI a machine that cannot have one skips the test."""
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="nnkit-pg-")  # under /tmp: the server's user must reach its socket
    run = subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "start", folder], capture_output=True, text=True,
                         timeout=600)
    if run.returncode == 3 and not os.environ.get("CI"):
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stderr
    try:
        yield run.stdout.strip()
    finally:
        subprocess.run([str(ROOT / "scripts" / "postgres.sh"), "stop", folder], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_two_commands_cooperate_through_postgresql(postgres_url, tmp_path):
    """Several machines on one PostgreSQL database: two nnkit tune processes with their own --out (so no file
    lock is shared) cover a grid of 6 exactly once between them, through PostgreSQL's advisory lock."""
    import uuid

    study = f"grid-{uuid.uuid4().hex[:8]}"
    base = [sys.executable, "-m", "nnkit", "tune", "lenet5", "--sampler", "grid", "--lr", "0.002,0.005,0.01",
            "--optimizer", "adamw,sgd", "--epochs", "1", *FAST, "--storage", postgres_url, "--study", study,
            "-f", "json"]
    procs = [subprocess.Popen([*base, "--out", str(tmp_path / f"m{i}")], env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = _trials(postgres_url, study)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3, 4, 5]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert set(_combos(trials).values()) == {1} and len(_combos(trials)) == 6
    assert len(Counter(t.user_attrs["worker"] for t in trials)) == 2
    again = subprocess.run([*base, "--out", str(tmp_path / "m0")], env=_env(), capture_output=True, text=True,
                           timeout=300)  # the same command continues the study and finds nothing to add
    assert again.returncode == 0, again.stderr
    assert len(_trials(postgres_url, study)) == 6


# ---------------------------------------------------------------------------------------------- runs


def test_runs_shows_a_study_and_a_run_side_by_side(nnkit, grid_study, tmp_path):
    out, doc, _ = grid_study
    single = tmp_path / "single"
    assert nnkit("train", "lenet5", "--epochs", "1", *FAST, "--out", str(single)).code == 0
    png = tmp_path / "curves.png"
    run = nnkit("runs", str(out), str(single), "--plot", str(png), "-f", "json")
    assert run.code == 0, run
    rows = run.json()["runs"]
    assert [Path(r["path"]).name for r in rows][-1] == "single"
    by_path = {Path(r["path"]).resolve(): r for r in rows}
    for t in doc["trials"]:
        r = by_path[Path(t["run_dir"])]
        assert r["arch"] == "lenet5" and r["dataset"] == "digits" and r["params"] == 61706
        assert r["best_val_accuracy"] == t["best_val_accuracy"] and r["test_accuracy"] == t["test_accuracy"]
    assert by_path[single.resolve()]["state"] == "done" and by_path[single.resolve()]["epochs_run"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_refuses_a_folder_without_runs(nnkit, tmp_path):
    run = nnkit("runs", str(tmp_path))
    assert run.code == 1 and "holds no run directory" in run.err and run.err.count("\n") == 1, run


def test_tune_plot_writes_history_and_importances(nnkit, grid_study, tmp_path):
    out, _, args = grid_study
    png = tmp_path / "study.png"
    run = nnkit(*args, "--plot", str(png))
    assert run.code == 0, run
    assert run.json()["plots"] == [str(png), str(tmp_path / "study-importances.png")]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in run.json()["plots"])


def test_runs_and_tune_help_leave_torch_and_optuna_out():
    code = ("import sys, nnkit.cli, nnkit.cli.tune, nnkit.train.tune, nnkit.train.runs, nnkit.render.tune; "
            "from nnkit.train.runs import find_runs; "
            "print('torch' in sys.modules, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "False False"
