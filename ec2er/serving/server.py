"""Start and stop the served endpoint from Python: ``ec2er serve``, the chain, evaluation through
the endpoint, tests and the benchmark all go through ``serving``.

    with serving(load_config("serve/demo.yaml", ServeConfig)) as url:   # ready to answer
        evaluate(load_config("pipelines/eval-served.yaml", EvalConfig,
                             {"models.0.engine.base_url": url}))
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from typing import Any

from ec2er import console
from ec2er.errors import ConfigError, Ec2erError
from ec2er.io import free_port
from ec2er.serving.config import ServeConfig


def check_port_free(host: str, port: int) -> None:
    """A one-line error now, rather than a Serve proxy that cannot bind after a minute of start-up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror}); choose another --port") from None


@contextlib.contextmanager
def serving(config: ServeConfig, worker_output: bool | None = None) -> Iterator[str]:
    """Run the config's application on Ray Serve at ``host:port`` and yield its OpenAI base URL
    once every replica's engine is up. On exit the application is deleted gracefully (each replica
    shuts its engine down); Serve and Ray are shut down too when this call started them (a cluster
    named by ``ray.address`` / RAY_ADDRESS keeps running, without Serve if this call started it;
    a local Ray of this process keeps Serve until the process ends it).
    ``worker_output``: see ``init_ray``."""
    import ray
    from ray import serve

    from ec2er.ray_utils import init_ray, started_local_ray
    from ec2er.serving.deployment import build_application

    if config.port == 0:
        config = config.model_copy(update={"port": free_port(config.host)})
    check_port_free(config.host, config.port)
    app = build_application(config)  # config errors surface before Ray starts
    joins_here = not ray.is_initialized()
    init_ray(address=config.ray.address, worker_output=worker_output)  # Ray's processes ignore a group's SIGTERM
    from ec2er.ray_utils import require_shared_storage
    from ec2er.serving.deployment import replica_gpus

    # every replica loads adapters from the registry on its own node (ray.serve.llm: object storage)
    require_shared_storage({"the adapter registry": None if config.ray_serve_llm else config.registry}, config.ray,
                           ["GPU"] if replica_gpus(config) else [])
    # A Serve this call starts on a cluster must not outlive it there (its controller and proxies
    # would keep running); in a local Ray of this process it ends with Ray, and shutting it down
    # earlier only prints Ray's complaints about the controller's killed shutdown task.
    shut_serve = not _serve_running() and not started_local_ray()
    try:
        console.adopt_library_loggers()  # importing ray.serve installed a console handler of its own
        serve.start(http_options={"host": config.host, "port": config.port}, proxy_location=config.proxy_location)
        _deploy(app, config)
        yield f"http://{config.host}:{config.port}/v1"
    finally:
        _stop(config.name, shut_serve=shut_serve, disconnect=joins_here)


def _deploy(app: Any, config: ServeConfig) -> None:
    """Deploy the application and wait until every replica is up, at most ``ready_timeout_s``.
    A deployment Serve gave up on, or one not up in time, is an Ec2erError saying why."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    serve.run_many([serve.RunTarget(target=app, name=config.name, route_prefix="/")],
                   wait_for_applications_running=False)
    deadline = time.monotonic() + config.ready_timeout_s
    while True:
        status = serve.status().applications.get(config.name)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            return
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise Ec2erError(f"serving {config.served_name} failed to start: {_why(status, config)}")
        if time.monotonic() > deadline:
            raise Ec2erError(f"serving {config.served_name} was not ready within {config.ready_timeout_s:g} s "
                             f"(ready_timeout_s): {_why(status, config)}")
        time.sleep(1.0)


def _why(status: Any, config: ServeConfig) -> str:
    """One line from Serve's status: each deployment's state, its replicas' states and Serve's
    message (its first and last lines: a failed constructor's message ends with its error), and
    what a replica asks of the cluster beside what the cluster has free."""
    import ray

    from ec2er.serving.deployment import replica_gpus

    parts = []
    for name, deployment in (status.deployments.items() if status is not None else []):
        replicas = ", ".join(f"{n} {_word(state)}" for state, n in deployment.replica_states.items())
        parts.append(f"{name} {_word(deployment.status)} ({replicas or 'no replicas yet'})"
                     + (f": {_first_and_last(deployment.message)}" if deployment.message else ""))
    if status is not None and status.message and not parts:
        parts.append(_first_and_last(status.message))
    free = ray.available_resources()
    parts.append(f"each replica asks {config.scaling.resources_per_replica.cpus:g} CPU and {replica_gpus(config):g} "
                 f"GPU; free now: {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU")
    return "; ".join(parts)


def _word(state: Any) -> str:
    """A Serve status (an enum, or its value as Serve's schema sometimes holds it) in lower case."""
    return str(getattr(state, "value", state)).lower()


def _first_and_last(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return "".join(lines)
    return f"{lines[0]} ... {lines[-1]}"


def _serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    if not ray.is_initialized():
        return False
    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def _stop(name: str, *, shut_serve: bool, disconnect: bool) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    with contextlib.suppress(Exception):  # nothing deployed yet, or Serve never started
        serve.delete(name)  # graceful: each replica's __del__ shuts its engine down
    if shut_serve:
        with contextlib.suppress(Exception):
            serve.shutdown()
    if disconnect:
        ray.shutdown()  # stops the local Ray this call started; only disconnects from a cluster
