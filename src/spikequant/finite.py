"""Finiteness guards that do not stall an accelerator.

A NaN threshold silently stops every spike, so neurons and kernels refuse non-finite parameters
(:class:`~spikequant.errors.NonFiniteError`). Reading a device tensor's verdict on the host waits
for the device to finish everything queued before it; done per layer and per step, that wait would
serialise a GPU training step into dozens of round trips. Inside :func:`deferred_checks` a guard
therefore only queues its verdict (a boolean tensor that stays on the device); the owner of the
block reads every queued verdict together with its own values in one transfer (the trainer: once
per step, before the optimizer step, so no update is ever made from a failed check) and raises the
first failure. Outside such a block a guard checks at once, as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch

from .errors import NonFiniteError

# (verdicts: bool tensor, message(verdict list) -> str) of the guards of the innermost block
_PENDING: ContextVar[list | None] = ContextVar("spikequant_pending_finite_checks", default=None)


def require_finite(verdicts: torch.Tensor, message: Callable[[list[bool]], str]) -> None:
    """Raise ``NonFiniteError(message(verdicts.tolist()))`` unless every entry of the boolean
    tensor ``verdicts`` is true; inside :func:`deferred_checks`, queue it for the block's owner."""
    pending = _PENDING.get()
    if pending is not None:
        pending.append((verdicts.reshape(-1), message))
        return
    if not bool(verdicts.all()):
        raise NonFiniteError(message(verdicts.reshape(-1).tolist()))


class PendingChecks:
    """The verdicts queued inside one :func:`deferred_checks` block."""

    def __init__(self) -> None:
        self.entries: list[tuple[torch.Tensor, Callable[[list[bool]], str]]] = []

    def verdicts(self, device: torch.device) -> torch.Tensor:
        """Every queued verdict as one float64 tensor on ``device`` (1 = finite), to be read
        with the caller's own values in a single transfer."""
        if not self.entries:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.cat([v.to(device, torch.float64, non_blocking=True) for v, _ in self.entries])

    def raise_first(self, values: list[float]) -> None:
        """Raise the first failed check, given the values of :meth:`verdicts` read on the host."""
        start = 0
        for verdicts, message in self.entries:
            part = [bool(v) for v in values[start : start + verdicts.numel()]]
            start += verdicts.numel()
            if not all(part):
                raise NonFiniteError(message(part))


@contextlib.contextmanager
def deferred_checks() -> Iterator[PendingChecks]:
    """Queue the finiteness guards run inside the block instead of reading each on the host."""
    checks = PendingChecks()
    token = _PENDING.set(checks.entries)
    try:
        yield checks
    finally:
        _PENDING.reset(token)
