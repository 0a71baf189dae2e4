"""Data-parallel training across processes with ``torch.distributed``.

``torchrun --nproc_per_node N -m s2s train CONFIG --out RUN`` starts N processes; each
reads ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` from its environment. Every process
holds the whole model; each update, rank r takes batches r, r + N, ... of the update's
share of the (identically shuffled) epoch, and PyTorch's DistributedDataParallel sums
the gradients across ranks during the backward pass, so N processes with
``train.accumulate: A`` compute the same update as one process with
``accumulate: N * A``. Only rank 0 writes files and validates; it broadcasts what
validation decides (learning rate, stopping).

Without those variables (or with ``WORLD_SIZE=1``) every function here is a no-op.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

from s2s.errors import ConfigError, S2SError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def from_env() -> Context:
    """The process's place in a ``torchrun`` launch (rank 0 of 1 without one)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} do not fit together")
    return Context(rank=rank, world=world, local_rank=_env_int("LOCAL_RANK", rank))


def start(ctx: Context, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, Gloo on CPU); returns this rank's device."""
    if not ctx.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # torch.optim imports torch._dynamo on first use. Imported while a process group
        # exists, it leaves the group alive after destroy_process_group() (seen with
        # torch 2.13: the Gloo threads stay), and tearing them down in interpreter
        # shutdown aborted a rank now and then ("terminate called without an active
        # exception", SIGABRT). Imported before the group, it leaves nothing behind
        # (tests/test_distributed.py checks that no Gloo thread is left).
        importlib.import_module("torch._dynamo")

        # other ranks wait in a collective while rank 0 alone trains the tokenizer or
        # validates: allow that an hour (NCCL's default is ten minutes)
        try:
            dist.init_process_group(
                "nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=60)
            )
        except ValueError as err:  # WORLD_SIZE and RANK set by hand, no rendezvous
            raise ConfigError(
                f"WORLD_SIZE={ctx.world} and RANK={ctx.rank} are set, but the processes "
                f"cannot meet ({str(err).splitlines()[0]}): start data-parallel runs with "
                "torchrun, or unset them"
            ) from None
    return device


def on_main(ctx: Context, work: Callable[[], Any]) -> Any:
    """``work()`` run on rank 0 alone, its result on every rank. Bad input it finds
    (an ``S2SError``) stops every rank with one line, instead of leaving the others
    waiting until rank 0's exit breaks their connection with a traceback."""
    if not ctx.active:
        return work()
    result, error = None, None
    if ctx.main:
        try:
            result = work()
        except S2SError as err:
            error = err
    result, message = broadcast(ctx, (result, None if error is None else str(error)))
    if message is not None:
        stop(ctx, clean=False)
        raise error if error is not None else S2SError(f"rank 0 stopped: {message}")
    return result


def stop(ctx: Context, clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank first waits for the others
    (rank 0 may still be writing its last checkpoint): a Gloo group torn down while a
    peer is still connected can abort the process. After an error, no waiting: the other
    ranks may never arrive."""
    if ctx.active and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def broadcast(ctx: Context, value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ctx: Context, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, value)
    return out


def any_rank(ctx: Context, flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank: one small all-reduce, no pickling."""
    if not ctx.active:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def sum_floats(ctx: Context, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64, so token counts stay exact)."""
    if not ctx.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def wrap(ctx: Context, module: torch.nn.Module, device: torch.device):
    """``module`` in DistributedDataParallel (None when not data parallel): gradients
    are all-reduced in buckets while the backward pass runs; parameters that a forward
    pass leaves unused (a cell kind, an option) are found and count as zero."""
    if not ctx.active:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        module,
        device_ids=[device] if device.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=True,
    )


def warn_batch_change(then: tuple[int, int], now: tuple[int, int]) -> None:
    """Where a resumed run has another number of processes or accumulated batches
    (``then``, ``now``: (processes, train.accumulate)) than its last.pt: what changes."""
    (world_was, acc_was), (world, acc) = then, now
    if (world_was, acc_was) == (world, acc):
        return
    was, size = world_was * acc_was, world * acc
    effect = f"the effective batch stays {size} x data.batch_size"
    if was != size:
        effect = f"the effective batch is now {size} x data.batch_size, was {was}"
        if was % world == 0:
            effect += f" (train.accumulate={was // world} keeps it)"
    log.warning(
        "last.pt was saved by %d process(es) accumulating %d batch(es) an update, this run "
        "has %d accumulating %d: %s%s",
        world_was,
        acc_was,
        world,
        acc,
        effect,
        "; dropout streams start afresh" if world_was != world else "",
    )


def shard(chunk: list, ctx: Context) -> list:
    """This rank's share of an update's batches: every world-th, from its rank."""
    return chunk[ctx.rank :: ctx.world]
