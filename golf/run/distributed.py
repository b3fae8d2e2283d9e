"""Rank, world and device in one place, and the rules for phases that only rank 0 runs.

torchrun starts one process per device. Training and evaluation use every rank; quantizing
and packing run on rank 0 alone. A collective (barrier, all-reduce) would make the other
ranks wait under the process group's timeout (10 min on NCCL) and, if rank 0 fails, hang
until it expires. `on_rank0` instead parks them on the launcher's key-value store with a
timeout of their own and hands them rank 0's outcome: its result, or its error message,
so every rank stops with the same readable line.
"""
from __future__ import annotations

import os
import pickle
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from golf.run import settings

from golf.run.errors import RankFailed

T = TypeVar("T")

# How long ranks > 0 wait for one rank-0 phase (quantize, pack). The fitter takes ~1 min on
# an H100; an hour leaves room for slow disks and CPU runs without waiting forever.
DEFAULT_RANK0_TIMEOUT_S = 3600.0
# How long a failing rank 0 waits for the others to have read its error before it exits (once
# it exits, torchrun stops them, possibly before they printed the message).
ERROR_ACK_TIMEOUT_S = 30.0


def rank0_timeout_s() -> float:
    """GOLF_RANK0_TIMEOUT_SECONDS (ValueError naming it when not a positive number)."""
    return float(settings.read("GOLF_RANK0_TIMEOUT_SECONDS", os.environ))


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    """(rank, world_size) of the initialized process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def default_device() -> torch.device:
    """This rank's accelerator (cuda:LOCAL_RANK) or the CPU."""
    if torch.cuda.is_available():
        local = settings.read("LOCAL_RANK", os.environ)
        local = rank_world()[0] if local is None else local
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed() -> DistInfo:
    """Join the torchrun group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU); idempotent."""
    world = settings.read("WORLD_SIZE", os.environ)
    local = settings.read("LOCAL_RANK", os.environ) or 0
    device = default_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
    rank, world = rank_world()
    return DistInfo(rank, world, local, device)


def shutdown() -> None:
    """Leave the process group cleanly (a process that exits inside one can abort in C++)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session() -> Iterator[None]:
    """The CLI's lifetime in a process group: leave it on the way out, success or failure.

    On failure the error propagates (the CLI prints its one line and exits non-zero, and
    torchrun then stops the other ranks); leaving the group first keeps gloo/NCCL from
    aborting the process in C++ with a message that hides the real one.
    """
    try:
        yield
    except BaseException:
        shutdown()
        raise
    barrier()  # nobody tears down gloo's connections while a peer still reads them
    shutdown()


def barrier() -> None:
    if active():
        dist.barrier()


def all_reduce_(t: torch.Tensor, op: "dist.ReduceOp.RedOpType | None" = None) -> torch.Tensor:
    """In-place all-reduce (SUM by default) when distributed; the tensor itself otherwise."""
    if active():
        dist.all_reduce(t, op=op if op is not None else dist.ReduceOp.SUM)
    return t


_host_group: list = []


def host_max(values: list[float]) -> list[float]:
    """Element-wise MAX of small host values over ranks, on CPU (a gloo group beside NCCL),
    so a per-step control decision never waits for the device's queue to drain."""
    if not active():
        return list(values)
    if not _host_group:
        _host_group.append(dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_host_group[0])
    return t.tolist()


_phase_counter = [0]


def on_rank0(name: str, fn: Callable[[], T], timeout_s: float | None = None) -> T:
    """Run `fn` on rank 0 only; every rank returns its (picklable) result or raises its error.

    Ranks > 0 wait on the store, not in a collective, so the wait has its own timeout
    (GOLF_RANK0_TIMEOUT_SECONDS) and ends at once when rank 0 fails, with rank 0's message.
    """
    if not active():
        return fn()
    _phase_counter[0] += 1
    key = f"golf/rank0/{_phase_counter[0]}/{name}"
    store = dist.distributed_c10d._get_default_store()
    world = dist.get_world_size()
    if dist.get_rank() == 0:
        try:
            out = fn()
        except BaseException as exc:
            store.set(key, pickle.dumps(("error", f"{type(exc).__name__}: {exc}")))
            _await_acks(store, key, world)
            raise
        store.set(key, pickle.dumps(("ok", out)))
        return out
    wait = rank0_timeout_s() if timeout_s is None else timeout_s
    try:
        store.wait([key], timedelta(seconds=wait))
    except Exception:  # the store's timeout error type differs between torch versions
        raise RankFailed(f"rank 0 did not finish {name} within {wait:.0f} s; raise "
                         "GOLF_RANK0_TIMEOUT_SECONDS or look at rank 0's log") from None
    status, value = pickle.loads(store.get(key))
    if status == "error":
        store.add(f"{key}/acks", 1)
        raise RankFailed(f"rank 0 failed in {name}: {value}")
    return value


def _await_acks(store, key: str, world: int) -> None:
    """Rank 0, failing: give the other ranks a moment to read the error (bounded)."""
    deadline = time.monotonic() + ERROR_ACK_TIMEOUT_S
    while store.add(f"{key}/acks", 0) < world - 1 and time.monotonic() < deadline:
        time.sleep(0.05)
