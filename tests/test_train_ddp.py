"""Two processes with gloo on CPU (as torchrun would start them) against one process: the same metrics within
float tolerance, and one set of files, written by rank 0 only.
"""

from __future__ import annotations

import json
import os
import socket
import warnings

import pytest

pytestmark = [pytest.mark.torch, pytest.mark.slow]

SETTINGS = dict(epochs=2, batch_size=32, seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str, errors) -> None:
    """One torchrun worker: the environment torchrun sets, then the library call `nnkit train` makes."""
    try:
        log = os.open(os.path.join(os.path.dirname(out), f"stderr-{rank}.txt"), os.O_WRONLY | os.O_CREAT)
        os.dup2(log, 2)  # what this rank prints on stderr, C++ warnings included
        import torch

        torch.set_num_threads(1)
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                          MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        from nnkit.train.config import TrainConfig
        from nnkit.train.loop import train

        with warnings.catch_warnings(record=True) as seen:  # pytest's own capture does not reach this process
            warnings.simplefilter("always")
            r = train(TrainConfig(out=out, device="cpu", **SETTINGS))
        with open(os.path.join(os.path.dirname(out), f"result-{rank}.json"), "w") as f:
            json.dump({"history": list(r.history), "world": r.world_size, "test": r.test_accuracy,
                       "warnings": [str(w.message) for w in seen]}, f)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"rank {rank}: {type(exc).__name__}: {exc}")
        raise


def test_two_gloo_processes_match_one(tmp_path):
    import multiprocessing as mp

    from nnkit.train.config import TrainConfig
    from nnkit.train.loop import train

    single = train(TrainConfig(out=str(tmp_path / "single" / "run"), device="cpu", **SETTINGS))

    ctx = mp.get_context("fork")  # torch is imported already: forking saves the seconds an import takes here
    errors = ctx.Queue()
    port = _free_port()
    out = str(tmp_path / "ddp" / "run")
    (tmp_path / "ddp").mkdir()
    procs = [ctx.Process(target=_rank, args=(r, 2, port, out, errors)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs), [errors.get() for _ in range(errors.qsize())] or \
        [p.exitcode for p in procs]

    results = [json.loads((tmp_path / "ddp" / f"result-{r}.json").read_text()) for r in range(2)]
    def steady(history):
        return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in history]

    assert results[0]["world"] == 2 and steady(results[0]["history"]) == steady(results[1]["history"])
    for a, b in zip(results[0]["history"], single.history):
        for k in ("train_loss", "val_loss"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
        for k in ("train_accuracy", "val_accuracy", "lr", "epoch"):
            assert a[k] == pytest.approx(b[k], abs=2e-3), k  # an argmax may flip on a float-rounding tie
    files = sorted(p.name for p in (tmp_path / "ddp" / "run").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "single" / "run").iterdir())  # one set, no rank copies
    rows = (tmp_path / "ddp" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    for r in range(2):  # gradient_as_bucket_view with the grads preallocated: no layout warning from DDP
        said = (tmp_path / "ddp" / f"stderr-{r}.txt").read_text() + "\n".join(results[r]["warnings"])
        assert "Grad strides do not match bucket view strides" not in said, said
    config = json.loads((tmp_path / "ddp" / "run" / "config.json").read_text())
    assert config["world_size"] == 2
