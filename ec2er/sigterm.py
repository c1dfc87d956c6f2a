"""SIGTERM to a process of ec2er that runs Ray: a clean stop with exit status 143, not Ray's crash.

``ray.init`` first sets a Python SIGTERM handler (``sys.exit(15)``), then its core worker installs
Abseil's failure-signal handler (``RayLog::InstallFailureSignalHandler``, SIGTERM among its
signals) over it. A SIGTERM then prints "*** SIGTERM received" and a stack through Ray's
``logging.cc``, re-raises to the Python handler, and the ``SystemExit`` unwinds the driver while
Ray's processes, signalled in the same process group, die under it; the process ends by SIGABRT
(status 134). So around ``ray.init`` SIGTERM is blocked (the processes Ray starts inherit the mask
and survive a signal to the group, as Ray itself starts them with SIGINT blocked), and before it
is unblocked our handler replaces both: the driver unwinds (``Terminated``), stops what it started
and Ray, and ``ec2er.cli.main`` exits 143.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from ec2er.errors import Terminated

EXIT_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended
RAY_DATA_EXECUTOR = "ray.data._internal.execution.streaming_executor"
EXECUTOR_WAIT_S = 30.0

log = logging.getLogger(__name__)


def _raise_terminated(signum: int, frame: Any) -> None:
    # a second SIGTERM (a group signalled twice, a supervisor insisting) must not cut the
    # closing short; SIGKILL still can
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("stopped by SIGTERM")


@contextlib.contextmanager
def ray_start_held() -> Iterator[None]:
    """Start Ray inside this block: its processes (GCS, raylet, dashboard) start with SIGTERM
    blocked, so a SIGTERM to the whole process group (``timeout``, ``kill -TERM -<pgid>``, systemd,
    Kubernetes) reaches this process alone. Otherwise GCS and raylet stop under the driver, whose
    graceful stop then waits for the dead GCS, and engines orphaned in Ray's workers keep running.
    With SIGTERM blocked there, this process stops its work and then Ray, which kills its own
    processes after a second's grace each. Processes started later by spawning (vLLM's engines)
    begin with an empty mask. On leaving, this process stops on SIGTERM by raising ``Terminated``
    (installed before the signal is unblocked, so one that arrived meanwhile is handled by it)."""
    if threading.current_thread() is not threading.main_thread():  # signals are the main thread's
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
        signal.signal(signal.SIGTERM, _raise_terminated)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def let_ray_data_stop(timeout_s: float = EXECUTOR_WAIT_S) -> None:
    """Wait until Ray Data's executors of this process have stopped, before Ray itself is stopped.

    An executor runs its scheduling loop in a thread of its own, which calls into Ray's core
    worker. A ``Terminated`` unwinding the driver shuts the executor down, but Ray Data gives its
    loop two seconds and goes on; on a loaded machine the loop can still be inside a Ray call when
    ``ray.shutdown()`` frees the core worker, and the process dies by SIGSEGV instead of 143. Ray
    offers no call that waits for this, hence the join here."""
    executor = getattr(sys.modules.get(RAY_DATA_EXECUTOR), "StreamingExecutor", None)
    if executor is None:
        return
    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if isinstance(thread, executor) and thread.is_alive():
            thread.shutdown(force=True)  # a no-op where its consumer's unwinding did it already
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("Ray Data's executor %s still runs after %.0f s; stopping Ray anyway",
                            thread.name, timeout_s)
