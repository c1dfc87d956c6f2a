"""Helpers for the tests on the multi-node cluster (the ``multinode`` fixture of conftest.py):
drivers are ``ec2er`` commands started as a user starts them, with the cluster's RAY_ADDRESS,
while the test watches their outputs and takes nodes away when something happens (never after a
fixed sleep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKER = {"ec2er_worker": 1.0}  # one heavy actor per worker node
T = TypeVar("T")


def node_ip() -> str:
    """This machine's address: every node of the cluster reaches a server there (127.0.0.1 is
    each node's own, and ec2er keeps actors that call a loopback endpoint on the driver's node)."""
    from ray.util import get_node_ip_address

    return get_node_ip_address()


def driver_env(cluster: Any) -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", **cluster.env())
    env.pop("EC2ER_TRAIN_FAULT", None)
    return env


def start(cluster: Any, args: list[str], log: Path) -> subprocess.Popen:
    """``ec2er ARGS`` as a driver on the cluster, in its own session (so it can be stopped whole)."""
    handle = log.open("w")
    return subprocess.Popen([str(BIN / "ec2er"), *args], cwd=REPO, env=driver_env(cluster), stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)


def run(cluster: Any, args: list[str], timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ec2er"), *args], cwd=REPO, env=driver_env(cluster), capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 60) -> None:
    """Signal the driver's whole session (as systemd or `timeout` would), then kill what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str,
               proc: subprocess.Popen | None = None, log: Path | None = None) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout or when
    ``proc`` ends first (with the end of its log)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (rc {proc.returncode}) before {what}:\n{tail(log)}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {timeout_s:.0f} s:\n{tail(log)}")


def tail(log: Path | None, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log is not None and log.is_file() else ""


def actors(cluster: Any, name_part: str) -> list[Any]:
    """The live actors whose class name or repr contains ``name_part`` (Ray's state API; Ray
    Data's actors are ``_MapWorker``s whose repr names the callable)."""
    from ray.util.state import list_actors

    alive = list_actors(address=cluster.state.dashboard_url, filters=[("state", "=", "ALIVE")], detail=True,
                        raise_on_missing_output=False, limit=1000)
    return [a for a in alive if name_part in f"{a.class_name} {a.repr_name}"]


def clear_worker_nodes(cluster: Any) -> None:
    """Take every worker node away (as spot losses), so that a test starts from the head alone."""
    for node in cluster.worker_nodes():
        cluster.kill_node(node)
    cluster.wait_for_workers(0, timeout_s=120)


def ensure_worker_nodes(cluster: Any, count: int) -> list[str]:
    """At least ``count`` live worker nodes (adding them by hand, as the autoscaler would)."""
    while len(cluster.worker_nodes()) < count:
        cluster.add_node()
    return cluster.worker_nodes()


def rows_per_dialogue(out: Path) -> Counter:
    from ec2er.generation.outputs import iter_result_batches

    return Counter(i for _, b in iter_result_batches(str(out), ["dialogue_id"]) for i in b.column(0).to_pylist())


def rows_per_node(out: Path) -> Counter:
    """Rows written, by the node whose actor generated them (the ``node_id`` of each row's metadata)."""
    from ec2er.generation.outputs import iter_result_batches

    return Counter(json.loads(m)["node_id"] for _, b in iter_result_batches(str(out), ["metadata"])
                   for m in b.column(0).to_pylist())


class Load:
    """Clients sending one request after another; each request recorded as (start, end, ok)."""

    def __init__(self, url: str, models: list[str], clients: int = 4):
        import httpx  # noqa: F401  (in this thread, before the clients' threads use it)

        self.url, self.models = url, models
        self.done: list[tuple[float, float, bool, str]] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(k,), daemon=True) for k in range(clients)]

    def _client(self, k: int) -> None:
        import httpx  # imported by __init__ already: a thread never imports it half-way

        with httpx.Client(timeout=120) as http:
            n = k
            while not self.stopping.is_set():
                body = {"model": self.models[n % len(self.models)], "max_tokens": 4, "temperature": 0,
                        "messages": [{"role": "user", "content": f"Say something about {n}."}]}
                n += 1
                with self.lock:
                    self.in_flight += 1
                began = time.monotonic()
                try:
                    r = http.post(f"{self.url}/chat/completions", json=body)
                    outcome = (r.status_code == 200, f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as e:
                    outcome = (False, f"{type(e).__name__}: {e}")
                with self.lock:
                    self.in_flight -= 1
                    self.done.append((began, time.monotonic(), *outcome))

    def ok_since(self, t: float) -> int:
        return sum(ok for began, _, ok, _ in self.done if began > t)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=180)


def replicas_replaced(cluster: Any, victim: str, app: str = "ec2er") -> bool:
    """Two replicas RUNNING (ready to serve, per Serve's own REST API), none on the lost node."""
    import httpx

    apps = httpx.get(f"{cluster.state.dashboard_url}/api/serve/applications/", timeout=30).json()
    replicas = [r for d in apps["applications"][app]["deployments"].values() for r in d["replicas"]]
    running = [r for r in replicas if r["state"] == "RUNNING"]
    return len(running) == 2 and victim not in {r["node_id"] for r in running}


def serve_on_two_nodes(port: int, registry: Path, shared: Path, logs: Path, model: str = "tiny-random-llama") -> list[str]:
    """``ec2er serve`` arguments of the node-loss runs: the demo recipe on ``model``, two replicas
    each asking a whole worker node, at most 2 requests each, Serve's proxy on the head alone."""
    return ["serve", "--config", str(REPO / "serve/demo.yaml"), "--port", str(port), "--log-dir", str(logs),
            "--set", f"model={model}", "--set", f"registry={registry}", "--set", "engine.max_model_len=1024",
            "--set", "scaling.num_replicas=2", "--set", "scaling.max_ongoing_requests=2",
            "--set", "ray.worker_resources={ec2er_worker: 1}", "--set", "proxy_location=HeadOnly",
            "--set", f"ray.shared_storage=[{shared}]"]
