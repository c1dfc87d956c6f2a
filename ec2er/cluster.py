"""A Ray cluster of several nodes on one machine, to try ec2er's cluster behaviour on a laptop:
a head without the worker resource, worker nodes that carry it (as GPU nodes carry GPUs on a real
cluster; recipes ask for it with ``ray.worker_resources``), and optionally Ray's fake autoscaler,
which adds worker nodes as the work asks for them, from zero. Each node is its own raylet on this
host; killing one (``kill-node``: every process of the node, SIGKILL, no drain) is a spot loss.

    ec2er cluster up --workers 2         # or --autoscale 3: no worker node until work asks for one
    ec2er cluster status
    ec2er cluster kill-node NODE_ID      # a spot instance taken back
    ec2er cluster down

Everything it starts uses its own folder (``--dir``) and free ports. Each ``ray start`` runs in a
session of its own, and ``cluster.json`` records the processes it left running (pid, process group,
creation time); ``down`` stops those, what they started, and what is left in their sessions carrying
this cluster's mark in its environment: never a process found by its command line, and never
``ray stop``, which stops every Ray on the machine. The tests' multi-node fixture is this class.

Written here rather than taken from ``ray.cluster_utils``: ``Cluster`` keeps its nodes inside the
calling process (they end with it, and a CLI must outlive its nodes), and ``AutoscalingCluster``
force-stops every Ray on the machine (a user's included) on start and shutdown. The fake autoscaler's config is written in full
because the wheel lacks the ``example.yaml`` that ``AutoscalingCluster`` builds on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ec2er.config import StrictModel
from ec2er.errors import Ec2erError
from ec2er.io import free_port

WORKER_RESOURCE = "ec2er_worker"  # what worker nodes carry and the head lacks
STATE_FILE = "cluster.json"
DEFAULT_DIR = Path(tempfile.gettempdir()) / "ec2er-cluster"  # short: Ray's socket paths are limited
WORKER_TYPE = "ec2er.worker"  # the autoscaler's node type
HEAD_TYPE = "ray.head.default"  # the fake provider's fixed name for the head


CLUSTER_MARK = "EC2ER_CLUSTER_DIR"  # in every cluster process's environment: the cluster's folder


class StartedProcess(StrictModel):
    """A process the cluster started (a Ray daemon, a node's ``ray start --block``)."""

    pid: int = Field(gt=0)
    pgid: int = Field(gt=0, description="its process group; the `ray start` sessions' groups hold every daemon")
    sid: int = Field(gt=0, description="its session: one per `ray start`")
    create_time: float = Field(gt=0, description="psutil's creation time: a pid reused later differs here")


class ClusterState(StrictModel):
    """``<dir>/cluster.json``: how to reach and stop a cluster ``up`` started."""

    root: Path
    gcs_address: str = Field(pattern=r"^\S+:\d+$", description="HOST:PORT of the head's GCS")
    dashboard_url: str = Field(pattern=r"^https?://\S+$")
    head_cpus: float
    worker_cpus: int
    worker_resources: dict[str, float]
    object_store_mb: int
    autoscale: int = Field(description="the autoscaler's worker nodes at most; 0: no autoscaler")
    auth: bool
    manual_nodes: dict[str, int] = Field(default_factory=dict, description="node id -> pid of its `ray start --block`")
    processes: list[StartedProcess] = Field(default_factory=list, description="what `down` stops (with "
                                            "their descendants and their sessions' marked processes)")


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


class LocalCluster:
    """Start, grow, hurt and stop one multi-node cluster on this host."""

    def __init__(self, state: ClusterState):
        self.state = state

    # ------------------------------------------------------------- start and stop

    @classmethod
    def up(cls, root: Path = DEFAULT_DIR, *, workers: int = 0, autoscale: int = 0, head_cpus: float = 1,
           worker_cpus: int = 2, worker_resources: dict[str, float] | None = None, auth: bool = False,
           object_store_mb: int = 256, heartbeat_timeout_s: int = 10, idle_minutes: float = 60.0,
           health_check_period_ms: int | None = None, dashboard_port: int = 0) -> LocalCluster:
        """A head (``head_cpus``, dashboard on 127.0.0.1) and ``workers`` worker nodes, each with
        ``worker_cpus`` CPUs and ``worker_resources`` (default ``{WORKER_RESOURCE: 1}``). With
        ``autoscale``, Ray's fake autoscaler adds up to that many worker nodes of the same shape when
        work waits for their resources, replaces a lost one (once its heartbeat is
        ``heartbeat_timeout_s`` old) and removes one idle for ``idle_minutes``.
        ``health_check_period_ms``: how often the head checks each node (Ray's default, 3000, marks
        a node dead after five missed checks: 15 s); tests shorten it. ``dashboard_port``: where
        `ray job submit` finds the head (0: a free port)."""
        root = Path(root).absolute()
        if (root / STATE_FILE).exists():
            raise Ec2erError(f"{root}: a cluster is already up there (`ec2er cluster down --dir {root}` first)")
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        gcs_port, dash_port = free_port(), dashboard_port or free_port()
        import ray

        ip = ray.util.get_node_ip_address()
        state = ClusterState(root=root, gcs_address=f"{ip}:{gcs_port}", dashboard_url=f"http://127.0.0.1:{dash_port}",
                             head_cpus=head_cpus, worker_cpus=worker_cpus,
                             worker_resources={WORKER_RESOURCE: 1} if worker_resources is None else worker_resources,
                             object_store_mb=object_store_mb, autoscale=autoscale, auth=auth)
        cluster = cls(state)
        cmd = [_ray_bin(), "start", "--head", f"--port={gcs_port}", f"--temp-dir={root}", f"--num-cpus={head_cpus:g}",
               f"--object-store-memory={object_store_mb * 2**20}", "--include-dashboard=true",
               "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", f"--ray-client-server-port={free_port()}",
               "--disable-usage-stats", *cluster._agent_ports()]
        env = cluster._node_env()
        if health_check_period_ms:
            env["RAY_health_check_period_ms"] = str(health_check_period_ms)
        if autoscale:
            config = root / "autoscaler.yaml"
            config.write_text(json.dumps(cluster._autoscaler_config(ip, gcs_port, idle_minutes), indent=1))
            cmd.append(f"--autoscaling-config={config}")
            env |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                    "AUTOSCALER_HEARTBEAT_TIMEOUT_S": str(heartbeat_timeout_s)}
        with (root / "logs" / "head.log").open("w") as log:  # a session of its own: its daemons stay in it
            head = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = head.wait(timeout=180)
        except subprocess.TimeoutExpired:
            head.kill()
            returncode = None
        state.processes = _session_processes(head.pid)  # the daemons `ray start` left running
        if returncode != 0:
            cluster.stop()
            raise Ec2erError(f"the head did not start (see {root / 'logs' / 'head.log'})")
        cluster.save()
        try:
            for _ in range(workers):
                cluster.add_node()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @classmethod
    def attach(cls, root: Path = DEFAULT_DIR) -> LocalCluster:
        """The cluster ``up`` recorded in ``root``; a missing or damaged ``cluster.json`` is one
        error naming the file and the field (nothing is stopped on a guess)."""
        from pydantic import ValidationError

        from ec2er.errors import DataError
        from ec2er.io import format_validation_error, read_json

        path = Path(root).absolute() / STATE_FILE
        if not path.is_file():
            raise Ec2erError(f"{path.parent}: no cluster started there (no {STATE_FILE})")
        try:
            return cls(ClusterState.model_validate(read_json(path)))
        except ValidationError as e:
            raise DataError(f"{path}: damaged: {format_validation_error(e)}") from None

    def save(self) -> None:
        from ec2er.io import write_json

        write_json(self.state.root / STATE_FILE, self.state.model_dump(mode="json"))

    def stop(self) -> int:
        """Stop the processes this cluster started, those they started (such as vLLM's engine
        cores, whose names no longer say where they belong), and those left in the cluster's
        sessions with its mark in their environment (orphans whose parent died); returns how many."""
        import psutil

        procs = _cluster_processes(self.state)
        for p in procs:
            try:
                p.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        (self.state.root / STATE_FILE).unlink(missing_ok=True)
        return len(procs)

    # ------------------------------------------------------------- nodes

    def add_node(self, timeout_s: float = 120, tries: int = 3) -> str:
        """Start one worker node (``ray start --block``, in a session of its own so that it outlives
        this process); returns its node id once the cluster counts it alive. A node whose processes
        end before it joins (an agent port, free when chosen, taken by another program before its
        agent bound it) is started again, up to ``tries`` times."""
        logs = self.state.root / "logs"
        for _ in range(tries):
            n = len(list(logs.glob("node-*.log")))
            node_id = self._start_node(logs / f"node-{n}.log", node_dir(self.state.root, n), timeout_s)
            if node_id:
                return node_id
        raise Ec2erError(f"a worker node did not join in {tries} tries (see {logs / f'node-{n}.log'})")

    def _start_node(self, log_path: Path, temp_dir: Path, timeout_s: float) -> str | None:
        """One ``ray start --block`` of a worker node: its node id once it is alive, or None when
        its processes ended first (a timeout is an error: the node did not fail, it hangs)."""
        cmd = [_ray_bin(), "start", f"--address={self.state.gcs_address}", f"--num-cpus={self.state.worker_cpus}",
               f"--resources={json.dumps(self.state.worker_resources)}", f"--temp-dir={temp_dir}",
               f"--object-store-memory={self.state.object_store_mb * 2**20}", "--disable-usage-stats", "--block",
               *self._agent_ports()]
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, env=self._node_env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._record(proc.pid)  # now: a node that never joins is still this cluster's to stop
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            node_id = _raylet_node_id(proc.pid)
            if node_id and node_id in {node["node_id"] for node in self.nodes()}:
                self.state.manual_nodes[node_id] = proc.pid
                self._record(proc.pid)
                return node_id
            time.sleep(0.5)
        if proc.poll() is not None:
            return None
        proc.kill()
        raise Ec2erError(f"a worker node did not join within {timeout_s:.0f} s (see {log_path})")

    def kill_node(self, node_id: str) -> int:
        """A spot loss: SIGKILL the node's raylet and every process under it (its workers, their
        engines, its agents) at once, without draining. Returns how many processes died."""
        import psutil

        raylets = [p for p in psutil.process_iter(["name", "cmdline"])
                   if p.info["name"] == "raylet" and f"--node_id={node_id}" in (p.info["cmdline"] or [])]
        if not raylets:
            raise Ec2erError(f"no live node {node_id} on this machine")
        procs = [q for r in raylets for q in (r, *r.children(recursive=True))]
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        block = self.state.manual_nodes.pop(node_id, None)
        if block is not None:  # its `ray start --block` sees the raylet gone and exits
            try:
                psutil.Process(block).wait(timeout=20)
            except psutil.TimeoutExpired:
                psutil.Process(block).kill()
            except psutil.Error:
                pass
            self.save()
        return len(procs)

    def nodes(self) -> list[dict[str, Any]]:
        """The live nodes: node_id, is_head, resources (Ray's state API, through the dashboard)."""
        from ray.util.state import list_nodes

        alive = list_nodes(address=self.state.dashboard_url, filters=[("state", "=", "ALIVE")], detail=True,
                           raise_on_missing_output=False)
        return [{"node_id": n.node_id, "is_head": bool(n.is_head_node), "resources": dict(n.resources_total or {})}
                for n in alive]

    def worker_nodes(self) -> list[str]:
        return [n["node_id"] for n in self.nodes() if not n["is_head"]]

    def wait_for_workers(self, count: int, timeout_s: float = 120) -> list[str]:
        """Block until exactly ``count`` worker nodes are alive (a killed one has left)."""
        deadline = time.monotonic() + timeout_s
        while True:
            workers = self.worker_nodes()
            if len(workers) == count or time.monotonic() > deadline:
                if len(workers) != count:
                    raise Ec2erError(f"{len(workers)} worker nodes alive after {timeout_s:.0f} s, not {count}")
                return workers
            time.sleep(0.5)

    def env(self) -> dict[str, str]:
        """What a driver needs in its environment to join: RAY_ADDRESS (and the auth mode)."""
        env = {"RAY_ADDRESS": self.state.gcs_address}
        if not self.state.auth:
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    # ------------------------------------------------------------- helpers

    def _record(self, session: int) -> None:
        """Add the processes now in ``session`` (a node's ``ray start``) to what ``down`` stops."""
        known = {p.pid for p in self.state.processes}
        self.state.processes += [p for p in _session_processes(session) if p.pid not in known]
        self.save()

    def _node_env(self) -> dict[str, str]:
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
        env.pop("RAY_ADDRESS", None)
        env[CLUSTER_MARK] = str(self.state.root)
        if not self.state.auth:  # a throwaway cluster; Ray 2.60 turns token auth on when ~/.ray has a token
            env["RAY_AUTH_MODE"] = "disabled"
        return env

    @staticmethod
    def _agent_ports() -> list[str]:
        # Ray's fixed defaults (agent 52365, ...) are taken by the first Ray of the machine, and a
        # node whose agents cannot bind never becomes usable
        return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    def _autoscaler_config(self, ip: str, gcs_port: int, idle_minutes: float) -> dict[str, Any]:
        s = self.state
        worker = {"CPU": s.worker_cpus, **s.worker_resources, "object_store_memory": s.object_store_mb * 2**20}
        return {
            "cluster_name": f"ec2er-{gcs_port}", "max_workers": s.autoscale, "upscaling_speed": 1.0,
            "idle_timeout_minutes": idle_minutes,
            "provider": {"type": "external", "module": "ec2er.cluster_provider.OwnDiskFakeProvider",
                         "root": str(s.root), "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"{ip}:{gcs_port}"},
            "available_node_types": {
                HEAD_TYPE: {"resources": {"CPU": s.head_cpus}, "node_config": {}, "max_workers": 0},
                WORKER_TYPE: {"resources": worker, "node_config": {}, "min_workers": 0, "max_workers": s.autoscale},
            },
            "head_node_type": HEAD_TYPE,
            # the keys the autoscaler reads, empty: the fake provider runs nothing on its nodes
            "auth": {}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
            "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
            "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
            "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        }


def _raylet_node_id(pid: int) -> str | None:
    """The node id of the raylet under process ``pid`` (a ``ray start``), once it runs; a raylet
    that died (a zombie until ``ray start`` reaps it) or is gone has none."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            if child.name() == "raylet":
                return next((a.split("=", 1)[1] for a in child.cmdline() if a.startswith("--node_id=")), None)
        except psutil.Error:  # ZombieProcess, NoSuchProcess
            continue
    return None


def _session_processes(sid: int) -> list[StartedProcess]:
    """The live processes of session ``sid`` (a ``ray start`` run with ``start_new_session``)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid:
                found.append(StartedProcess(pid=p.pid, pgid=os.getpgid(p.pid), sid=sid, create_time=p.create_time()))
        except (OSError, psutil.Error):  # ended meanwhile
            continue
    return found


def _cluster_processes(state: ClusterState) -> list[Any]:
    """What ``stop`` ends, as psutil processes: each recorded process still alive (the same pid
    *and* creation time: a reused pid is someone else's), their descendants, and the processes of
    the recorded sessions whose environment carries this cluster's mark (a session id can be
    reused once all of its processes are gone; the mark tells ours apart)."""
    import psutil

    me = os.getpid()
    found: dict[int, Any] = {}
    for started in state.processes:
        try:
            p = psutil.Process(started.pid)
            if abs(p.create_time() - started.create_time) < 0.01:  # psutil's times are exact to 10 ms
                found[p.pid] = p
        except psutil.Error:
            continue
    for p in list(found.values()):
        try:
            found |= {c.pid: c for c in p.children(recursive=True)}
        except psutil.Error:
            continue
    sessions = {started.sid for started in state.processes}
    for p in psutil.process_iter():
        try:
            if p.pid not in found and os.getsid(p.pid) in sessions \
                    and p.environ().get(CLUSTER_MARK) == str(state.root):
                found[p.pid] = p
        except (OSError, psutil.Error):  # ended meanwhile, or another user's
            continue
    found.pop(me, None)
    return list(found.values())


def node_dir(root: Path, name: str | int) -> Path:
    """A worker node's own Ray folder (its session: logs, sockets, unpacked working dirs), as a
    separate machine has its own disk. Nodes sharing the head's folder also share the unpacked
    `ray job submit` working dir, and a node unpacking it again removes the folder the job's
    driver runs in (seen here: the chain's driver failed with FileNotFoundError from getcwd)."""
    return Path(root) / f"n{name}"


# ----------------------------------------------------------------- the command

def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("cluster", help="a multi-node Ray cluster on this machine, to try cluster behaviour",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cluster_command", required=True)
    up = sub.add_parser("up", help="start a head and worker nodes (or the fake autoscaler)")
    up.add_argument("--workers", type=int, default=2, help="worker nodes to start now (default 2)")
    up.add_argument("--autoscale", type=int, default=0, metavar="MAX",
                    help="also run Ray's fake autoscaler, adding up to MAX worker nodes as work asks for them")
    up.add_argument("--head-cpus", type=float, default=1)
    up.add_argument("--worker-cpus", type=int, default=2)
    up.add_argument("--worker-resource", action="append", default=[], metavar="NAME=AMOUNT",
                    help=f"a custom resource of every worker node (default {WORKER_RESOURCE}=1)")
    up.add_argument("--dashboard-port", type=int, default=0, help="the head's dashboard (and `ray job submit`) "
                                                                  "port on 127.0.0.1; default: a free one")
    up.add_argument("--auth", action="store_true", help="keep Ray's token authentication on (default off: "
                                                        "a throwaway cluster of this machine)")
    sub.add_parser("status", help="the live nodes and their resources")
    sub.add_parser("down", help="stop every process of the cluster, and only those")
    sub.add_parser("add-node", help="start one more worker node")
    sub.add_parser("kill-node", help="a spot loss: SIGKILL every process of a node").add_argument("node_id")
    for q in sub.choices.values():
        q.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the cluster's folder (default {DEFAULT_DIR})")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    if args.cluster_command == "up":
        resources = dict(_resource(r) for r in args.worker_resource) or None
        c = LocalCluster.up(args.dir, workers=args.workers, autoscale=args.autoscale, head_cpus=args.head_cpus,
                            worker_cpus=args.worker_cpus, worker_resources=resources, auth=args.auth,
                            dashboard_port=args.dashboard_port)
        s = c.state
        print(f"cluster up in {s.root}: a head ({s.head_cpus:g} CPU) and {args.workers} worker node(s) "
              f"({s.worker_cpus} CPUs, {s.worker_resources} each)"
              + (f"; the autoscaler adds up to {s.autoscale} more as work asks" if s.autoscale else ""))
        print(f"  drivers:    export {' '.join(f'{k}={v}' for k, v in c.env().items())}")
        print(f"  jobs:       ray job submit --address {s.dashboard_url} --working-dir . -- python jobs/run.py ...")
        print(f"  recipes:    ray.worker_resources: {json.dumps(s.worker_resources)}; outputs in object storage "
              "or under a folder listed in ray.shared_storage")
        print(f"  stop:       ec2er cluster down --dir {s.root}")
        return 0
    cluster = LocalCluster.attach(args.dir)
    if args.cluster_command == "down":
        print(f"stopped {cluster.stop()} processes of the cluster in {cluster.state.root}")
    elif args.cluster_command == "add-node":
        print(cluster.add_node())
    elif args.cluster_command == "kill-node":
        print(f"killed node {args.node_id} ({cluster.kill_node(args.node_id)} processes)")
    else:
        for n in cluster.nodes():
            kind = "head  " if n["is_head"] else "worker"
            print(f"{kind} {n['node_id']}  {json.dumps({k: v for k, v in n['resources'].items() if 'memory' not in k})}")
    return 0


def _resource(text: str) -> tuple[str, float]:
    name, _, amount = text.partition("=")
    try:
        return name, float(amount)
    except ValueError:
        raise Ec2erError(f"--worker-resource {text}: expected NAME=AMOUNT") from None
