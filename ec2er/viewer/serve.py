"""The viewer as a Ray Serve application, to mount beside the model endpoint on a cluster::

    serve run --name viewer --route-prefix /viewer ec2er.viewer.serve:app_builder run=s3://bucket/runs/full

or from Python: ``serve.run(viewer_app("s3://bucket/runs/full"), name="viewer", route_prefix="/viewer")``.
The app is built in the replica (``__serve_build_asgi_app__``), so its caches and file handles
never travel through pickling. The token, if any, is read from $EC2ER_VIEW_TOKEN in the replica's
environment (a runtime_env ``env_vars`` entry), never passed as a deployment argument. As with
``ec2er view``: behind a proxy bound to a loopback address only loopback Host headers are
accepted (no DNS rebinding), and a proxy open to other machines without a token logs a warning.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve

from ec2er.viewer.app import TOKEN_ENV, build_app
from ec2er.viewer.cli import allowed_hosts, open_to_others

log = logging.getLogger(__name__)


@serve.deployment(name="ec2er-viewer", num_replicas=1, ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Viewer:
    def __init__(self, run: str):
        self.run = run

    def __serve_build_asgi_app__(self) -> Any:
        return guarded_app(self.run, os.environ.get(TOKEN_ENV) or None, _proxy_host())


def guarded_app(run: str, token: str | None, proxy_host: str | None) -> Any:
    """The viewer for a Serve proxy listening on ``proxy_host`` (None: unknown, taken as open to
    other machines): Host headers checked as ``ec2er view`` checks them, and a warning in the
    replica's log when anyone who reaches the proxy could read the run."""
    hosts = allowed_hosts(proxy_host) if proxy_host else None
    if hosts is None and token is None:
        log.warning("ec2er viewer: %s", open_to_others(f"the Serve proxy ({proxy_host or 'host unknown'})"))
    return build_app(run, token=token, allowed_hosts=hosts)


def _proxy_host() -> str | None:
    """The address Serve's HTTP proxies listen on (its ``http_options.host``), asked of the Serve
    controller; None when it cannot be asked."""
    try:
        from ray.serve.context import _get_global_client  # Serve has no public getter for it

        return _get_global_client().http_config.host
    except Exception as e:  # no controller reachable (a test, a build outside Serve): say so, assume open
        log.warning("ec2er viewer: cannot tell where Serve's proxy listens (%s)", e)
        return None


def viewer_app(run: str) -> Any:
    """The bound application (``serve.run(viewer_app(run), route_prefix="/viewer")``)."""
    return Viewer.bind(run)


def app_builder(args: dict[str, str]) -> Any:
    """For ``serve run ec2er.viewer.serve:app_builder run=<folder>`` and Serve config files."""
    if "run" not in args:
        raise ValueError("ec2er viewer: give run=<run folder>")
    return viewer_app(args["run"])
