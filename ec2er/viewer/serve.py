"""The viewer as a Ray Serve application, to mount beside the model endpoint on a cluster::

    serve run --name viewer --route-prefix /viewer ec2er.viewer.serve:app_builder run=s3://bucket/runs/full

or from Python: ``serve.run(viewer_app("s3://bucket/runs/full"), name="viewer", route_prefix="/viewer")``.
The app is built in the replica (``__serve_build_asgi_app__``), so its caches and file handles
never travel through pickling. The token, if any, is read from $EC2ER_VIEW_TOKEN in the replica's
environment (a runtime_env ``env_vars`` entry), never passed as a deployment argument.
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

from ec2er.viewer.app import TOKEN_ENV, build_app


@serve.deployment(name="ec2er-viewer", num_replicas=1, ray_actor_options={"num_cpus": 0.25})
@serve.ingress()
class Viewer:
    def __init__(self, run: str):
        self.run = run

    def __serve_build_asgi_app__(self) -> Any:
        return build_app(self.run, token=os.environ.get(TOKEN_ENV) or None)


def viewer_app(run: str) -> Any:
    """The bound application (``serve.run(viewer_app(run), route_prefix="/viewer")``)."""
    return Viewer.bind(run)


def app_builder(args: dict[str, str]) -> Any:
    """For ``serve run ec2er.viewer.serve:app_builder run=<folder>`` and Serve config files."""
    if "run" not in args:
        raise ValueError("ec2er viewer: give run=<run folder>")
    return viewer_app(args["run"])
