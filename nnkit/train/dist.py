"""torchrun support: one process per device, gloo on CPU and nccl on CUDA, rank 0 writes every file.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them nnkit runs as one
process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from nnkit.errors import DistributedError, UsageError, first_line


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def from_env() -> Dist:
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UsageError(f"torchrun environment: {exc}") from exc
    return Dist(rank, world, local)


def init(d: Dist, device: Any, timeout_s: float = 300.0) -> None:
    """Join the process group (a no-op for one process)."""
    if not d.on:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise DistributedError(f"WORLD_SIZE={d.world} but {var} is not set: start nnkit with torchrun "
                                   f"(torchrun --nproc_per_node={d.world} -m nnkit train ...)")
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, rank=d.rank, world_size=d.world,
                                timeout=timedelta(seconds=timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
    except Exception as exc:  # noqa: BLE001 - c10d raises RuntimeError, DistStoreError, TimeoutError
        raise DistributedError(f"rank {d.rank}: cannot join the process group at {os.environ['MASTER_ADDR']}:"
                               f"{os.environ['MASTER_PORT']} ({first_line(exc, 200)})") from exc


def done(d: Dist) -> None:
    if d.on:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_sum(d: Dist, values: Any) -> Any:
    """Sum a tensor over ranks (in place)."""
    if d.on:
        import torch.distributed as dist

        try:
            dist.all_reduce(values)
        except Exception as exc:  # noqa: BLE001 - a peer that died surfaces here
            raise DistributedError(f"rank {d.rank}: another rank failed ({type(exc).__name__})") from exc
    return values


def barrier(d: Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier()


def any_rank(d: Dist, flag: bool, device: Any) -> bool:
    """True on every rank when `flag` is true on any (a stop request that reached some ranks only)."""
    if not d.on:
        return flag
    import torch

    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_sum(d, t).item())
