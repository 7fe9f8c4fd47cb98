"""Devices and distributed data-parallel training on PyTorch's own engine (``torch.distributed``).

A run is distributed when it was launched by ``torchrun`` (or ``spikequant train --nproc N``,
which calls torchrun for local processes): the environment then names ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``, and :func:`setup` joins the process group (gloo on CPU, NCCL on CUDA).
Rank 0 owns the run folder (lock, checkpoints, logs); every rank trains on its share of each
global batch, gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist

from ..errors import ConfigError

DEVICE_HELP = "auto | cpu | cuda | cuda:N"


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def resolve_device(name: str | None) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` -> this process's GPU under DDP."""
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r} is not one of {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r}: no CUDA device is available here; use cpu")
        index = device.index if device.index is not None else world().local_rank
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device cuda:{index}: only {torch.cuda.device_count()} GPU(s)")
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r} is not one of {DEVICE_HELP}")
    return device


def setup(device_name: str | None) -> World:
    """Join the process group when launched by torchrun; returns this process's place in it."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return world()
    if not dist.is_available():
        raise ConfigError("this PyTorch build has no torch.distributed; run without --nproc")
    device = resolve_device(device_name)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    here = world()
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(here.size, 1)))
    return here


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast_error(message: str | None) -> str | None:
    """Share rank 0's validation error (as UTF-8 bytes in a tensor) with every rank, so that
    all stop together."""
    if not world().distributed:
        return message
    size = 2048
    data = torch.zeros(size + 1, dtype=torch.uint8)
    if message is not None:
        raw = message.encode()[:size]
        data[0] = 1
        data[1 : 1 + len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(data, src=0)
    if not int(data[0]):
        return None
    return bytes(data[1:].tolist()).rstrip(b"\0").decode(errors="replace")


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The torchrun command line that runs ``spikequant ARGV`` in ``nproc`` local processes."""
    if nproc < 1 or nproc > 256:
        raise ConfigError(f"--nproc must be in 1..256, got {nproc}")
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "spikequant.cli",
        *argv,
    ]
