"""Start and stop the served endpoint from Python: ``ec2er serve``, the chain, evaluation through
the endpoint, tests and the benchmark all go through ``serving``.

    with serving(load_config("serve/demo.yaml", ServeConfig)) as url:   # ready to answer
        evaluate(load_config("pipelines/eval-served.yaml", EvalConfig,
                             {"models.0.engine.base_url": url}))
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from ec2er import console
from ec2er.errors import ConfigError, Ec2erError
from ec2er.serving.config import ServeConfig


def check_port_free(host: str, port: int) -> None:
    """A one-line error now, rather than a Serve proxy that cannot bind after a minute of start-up."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is no obstacle
        try:
            s.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror}); choose another --port") from None


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(config: ServeConfig, worker_output: bool | None = None) -> Iterator[str]:
    """Run the config's application on Ray Serve at ``host:port`` and yield its OpenAI base URL
    once every replica's engine is up. On exit the application is deleted gracefully (each replica
    shuts its engine down); Serve and Ray are shut down too when this call started them (a cluster
    named by ``ray_address`` / RAY_ADDRESS keeps running, without Serve if this call started it;
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
    init_ray(address=config.ray_address, worker_output=worker_output)
    # A Serve this call starts on a cluster must not outlive it there (its controller and proxies
    # would keep running); in a local Ray of this process it ends with Ray, and shutting it down
    # earlier only prints Ray's complaints about the controller's killed shutdown task.
    shut_serve = not _serve_running() and not started_local_ray()
    try:
        console.adopt_library_loggers()  # importing ray.serve installed a console handler of its own
        serve.start(http_options={"host": config.host, "port": config.port})
        try:
            serve.run(app, name=config.name, route_prefix="/")
        except RuntimeError as e:  # a replica that failed to start, after Serve's retries
            raise Ec2erError(f"serving {config.served_name} failed to start: {str(e).splitlines()[0]}") from e
        yield f"http://{config.host}:{config.port}/v1"
    finally:
        _stop(config.name, shut_serve=shut_serve, disconnect=joins_here)


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
