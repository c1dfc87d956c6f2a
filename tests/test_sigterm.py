"""SIGTERM to a process that started Ray: our handler, installed before the signal is unblocked,
turns it into ``Terminated`` (a second one is ignored while closing), and the CLI exits 143 with
one line. (Whole processes stopped by a SIGTERM to their group: test_generation_job.py and
test_smollm2.py.)"""

from __future__ import annotations

import os
import signal
import threading

import pytest

import ec2er.models
from ec2er.cli import main
from ec2er.errors import Terminated
from ec2er.sigterm import ray_start_held


def test_a_sigterm_while_ray_starts_waits_for_our_handler_and_a_second_is_ignored():
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(Terminated):
            with ray_start_held():
                # to this thread, where it is blocked (were it not, the default would end pytest); a
                # signal to the process could go to another thread of pytest's that does not block it
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                assert signal.SIGTERM in signal.sigpending()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored while closing
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_command_stopped_by_sigterm_exits_143_with_one_line(monkeypatch, capsys):
    def stopped() -> list:
        raise Terminated("stopped by SIGTERM")

    monkeypatch.setattr(ec2er.models, "list_models", stopped)
    assert main(["models", "list"]) == 143
    assert capsys.readouterr().err == "ec2er: stopped by SIGTERM\n"


def test_ray_datas_executor_threads_are_stopped_and_joined_before_ray_is(monkeypatch):
    """Ray Data's executor loop, still running after the two seconds its own shutdown waits, is
    told to stop and joined: ``ray.shutdown()`` under it would free the core worker it calls."""
    import sys
    import time
    import types

    from ec2er import sigterm

    class SlowExecutor(threading.Thread):  # a scheduling loop whose steps take a while
        def __init__(self):
            super().__init__(daemon=True)
            self.stopping = threading.Event()
            self.forced = None

        def shutdown(self, force, exception=None):
            self.forced = force
            self.stopping.set()

        def run(self):
            while not self.stopping.is_set():
                time.sleep(0.05)
            time.sleep(0.5)  # the step in progress when told

    monkeypatch.setitem(sys.modules, sigterm.RAY_DATA_EXECUTOR, types.SimpleNamespace(StreamingExecutor=SlowExecutor))
    running, other = SlowExecutor(), threading.Thread(target=time.sleep, args=(3,), daemon=True)
    running.start()
    other.start()
    started = time.monotonic()
    sigterm.let_ray_data_stop(timeout_s=10)
    assert not running.is_alive() and running.forced is True
    assert other.is_alive() and time.monotonic() - started < 2.5  # other threads are not waited for


def test_without_ray_data_loaded_nothing_is_waited_for(monkeypatch):
    import sys

    from ec2er import sigterm

    monkeypatch.delitem(sys.modules, sigterm.RAY_DATA_EXECUTOR, raising=False)
    sigterm.let_ray_data_stop(timeout_s=0)
