"""The cluster files a user applies as they are: every manifest parses, and each image,
entrypoint, recipe, import path and repository path it names exists (and each recipe validates).
No cluster runs here; `ray job submit` to a multi-node cluster on this machine is tested in
test_chain.py."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = sorted([*(REPO / "cluster" / "kuberay").glob("*.yaml"), REPO / "cluster" / "ray-cluster-aws-gpu.yaml"])


def _images_built_here() -> set[str]:
    """Image names the repository's Dockerfiles produce (their OCI ref.name label)."""
    names = set()
    for dockerfile in (REPO / "cluster" / "images").glob("Dockerfile*"):
        names |= set(re.findall(r'org\.opencontainers\.image\.ref\.name="([^"]+)"', dockerfile.read_text()))
    return names


def _walk(node, key=None):
    """(key, value) of every scalar in a parsed YAML document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    else:
        yield key, node


def _commands(doc) -> list[list[str]]:
    """Entry points and embedded Serve configs' import paths, as argument lists."""
    out = []
    for key, value in _walk(doc):
        if key == "entrypoint" and isinstance(value, str):
            out.append(shlex.split(value))
        if key in ("serveConfigV2", "runtimeEnvYAML") and isinstance(value, str):
            out += _commands(yaml.safe_load(value))
        if key == "import_path" and isinstance(value, str):
            out.append(["import_path", value])
    return out


def _recipe_model(path: Path):
    from ec2er.run import RunConfig, chain

    models = {stage.name: stage.config_model for stage in chain()}
    if path.parts[-2] == "serve":
        return models["serve"]
    kind = path.stem.split("-")[0]
    return {"mads": models["generate"], "concise": models["generate"], "curate": models["curate"],
            "train": models["train"], "eval": models["evaluate"], "run": RunConfig}[kind]


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.name)
def test_manifest_names_only_what_exists(manifest):
    from ec2er.config import load_config, parse_override

    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    assert docs, manifest
    built = _images_built_here()
    images = {v for doc in docs for k, v in _walk(doc) if k == "image"}
    assert images and images <= built, (manifest.name, images - built)
    for doc in docs:
        for argv in _commands(doc):
            if argv[0] == "import_path":
                module, attr = argv[1].split(":")
                assert importlib.util.find_spec(module) is not None, argv
                assert hasattr(importlib.import_module(module), attr), argv
                continue
            assert argv[0] == "python" and (REPO / argv[1]).is_file(), argv
            sets = {}
            for flag, value in zip(argv, argv[1:]):
                if flag == "--set":
                    sets.update([parse_override(value)])
            for flag, value in zip(argv, argv[1:]):
                if flag == "--config":
                    load_config(REPO / value, _recipe_model(REPO / value), sets)
        for key, value in _walk(doc):  # serve recipes named by Serve applications' args
            if key == "config" and isinstance(value, str) and value.startswith("/app/ec2er/"):
                recipe = REPO / value.removeprefix("/app/ec2er/")
                load_config(recipe, _recipe_model(recipe))
            if key == "working_dir":
                assert value == "/app/ec2er", value  # where the Dockerfiles put the repository


def test_every_stage_and_the_chain_have_a_rayjob_and_serving_a_rayservice():
    kinds = {m.name: yaml.safe_load(m.read_text())["kind"] for m in MANIFESTS if m.parent.name == "kuberay"}
    for stage in ("generate", "curate", "train", "evaluate", "run"):
        assert kinds[f"rayjob-{stage}.yaml"] == "RayJob"
    assert kinds["rayservice.yaml"] == "RayService" and kinds["raycluster.yaml"] == "RayCluster"
    cluster = yaml.safe_load((REPO / "cluster/kuberay/raycluster.yaml").read_text())
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    launcher = yaml.safe_load((REPO / "cluster/ray-cluster-aws-gpu.yaml").read_text())
    assert launcher["available_node_types"]["gpu_worker"]["max_workers"] > \
        launcher["available_node_types"]["gpu_worker"]["min_workers"]


def test_dockerfiles_install_the_package_and_never_ray_llm():
    for dockerfile in (REPO / "cluster" / "images").glob("Dockerfile*"):
        text = dockerfile.read_text()
        assert "rayproject/ray:2.60.0" in text and "pip install" in text and "-e ." in text
        assert "ray[llm]" not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))
        extra = "gpu" if dockerfile.name.endswith("gpu") else "cpu"
        assert f'".[{extra}]"' in text
    assert "pyproject.toml" in (REPO / "cluster/images/Dockerfile.gpu").read_text()
    assert (REPO / "cluster/local-cluster.sh").stat().st_mode & 0o111


# ----------------------------------------------------------------- `ec2er cluster down`: only its own

def _spawn(argv: list[str], env: dict[str, str] | None = None, new_session: bool = False, stdin=None):
    import os
    import subprocess

    return subprocess.Popen(argv, env=dict(os.environ, **(env or {})), start_new_session=new_session, stdin=stdin,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for(condition, timeout_s: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_cluster_down_stops_its_own_processes_and_nothing_that_merely_names_its_folder(tmp_path):
    """Recorded processes stand in for Ray's daemons (no Ray here). `stop` ends a recorded daemon,
    its child, and the marked orphan left in a recorded session whose leader has exited; a process
    of a sibling folder with a longer name, one whose command line names the cluster's folder (also
    recorded, under its pid with another creation time: a reused pid) and an unmarked orphan of the
    same session all survive."""
    import subprocess
    import sys

    import psutil

    from ec2er.cluster import CLUSTER_MARK, ClusterState, LocalCluster, StartedProcess, _session_processes

    root = tmp_path / "ec2er-cluster"
    root.mkdir()
    sleep = f"{sys.executable} -c 'import time; time.sleep(60)'"
    mark = {CLUSTER_MARK: str(root)}
    head = _spawn(["/bin/sh", "-c", f"{sleep} & {CLUSTER_MARK}=elsewhere {sleep} & read _"], env=mark,
                  new_session=True, stdin=subprocess.PIPE)
    _wait_for(lambda: len(_session_processes(head.pid)) == 3)
    leader = next(p for p in _session_processes(head.pid) if p.pid == head.pid)
    head.stdin.close()  # the leader exits; its two children live on as orphans of its session
    head.wait()
    orphans = [psutil.Process(p.pid) for p in _session_processes(head.pid)]
    marked = next(p for p in orphans if p.environ().get(CLUSTER_MARK) == str(root))
    unmarked = next(p for p in orphans if p is not marked)
    daemon = _spawn(["/bin/sh", "-c", f"{sleep}; exit 0"], env=mark, new_session=True)
    _wait_for(lambda: len(_session_processes(daemon.pid)) == 2)
    sibling = _spawn(["/bin/sh", "-c", f"exec {sleep} --temp-dir={root}-longer"],
                     env={CLUSTER_MARK: f"{root}-longer"}, new_session=True)
    bystander = _spawn(["/bin/sh", "-c", f"exec {sleep} {root} --temp-dir={root}"])  # a user's `tail`, say
    reused = StartedProcess(pid=bystander.pid, pgid=bystander.pid, sid=bystander.pid, create_time=1.0)
    state = ClusterState(root=root, gcs_address="127.0.0.1:1", dashboard_url="http://127.0.0.1:2", head_cpus=1,
                         worker_cpus=2, worker_resources={}, object_store_mb=64, autoscale=0, auth=False,
                         processes=[leader, *(p for p in _session_processes(daemon.pid) if p.pid == daemon.pid),
                                    reused])
    try:
        assert LocalCluster(state).stop() == 3  # the daemon, its child, the marked orphan
        assert daemon.wait(timeout=5) is not None and not marked.is_running()
        assert sibling.poll() is None and bystander.poll() is None and unmarked.is_running()
    finally:
        for p in (sibling, bystander, daemon):
            p.kill()
            p.wait()
        for p in orphans:
            if p.is_running():
                p.kill()


@pytest.mark.parametrize("damage, field", [
    ("{not json", "invalid JSON"),
    ('{"root": "/x", "gcs_address": "", "dashboard_url": "http://127.0.0.1:1", "head_cpus": 1, "worker_cpus": 2, '
     '"worker_resources": {}, "object_store_mb": 64, "autoscale": 0, "auth": false}', "gcs_address"),
    ('{"root": "/x", "dashboard_url": "http://127.0.0.1:1", "head_cpus": 1, "worker_cpus": 2, '
     '"worker_resources": {}, "object_store_mb": 64, "autoscale": 0, "auth": false}', "gcs_address"),
    ('{"root": "/x", "gcs_address": "h:1", "dashboard_url": "http://127.0.0.1:1", "head_cpus": 1, "worker_cpus": 2, '
     '"worker_resources": {}, "object_store_mb": 64, "autoscale": 0, "auth": false, "processes": [{"pid": "x"}]}',
     "processes.0.pid"),
])
def test_cluster_down_refuses_a_damaged_cluster_json_in_one_line(tmp_path, capsys, damage, field):
    from ec2er.cli import main

    (tmp_path / "cluster.json").write_text(damage)
    assert main(["cluster", "down", "--dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "cluster.json") in err and field in err, err
    assert (tmp_path / "cluster.json").exists()  # nothing stopped, nothing forgotten
