"""Serving as a stage of the chain: the base model and the registry's adapters behind one
endpoint, kept up while the later stages (evaluation) call it, stopped when the chain ends.

Unlike the other stages it does not run to completion: ``open`` is a context manager whose
summary carries the endpoint; ``ec2er serve`` is the same server in the foreground.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from ec2er.serving.config import ServeConfig
from ec2er.stage import Endpoint, Stage, StageInputs, StageSummary


@contextlib.contextmanager
def open_serving(config: ServeConfig, inputs: StageInputs, output: Path) -> Iterator[StageSummary]:
    """Serve until the ``with`` block ends (a port of 0 takes a free one)."""
    from ec2er.models import check_model
    from ec2er.serving.resolver import ServableAdapters
    from ec2er.serving.server import serving

    check_model(config.model)
    adapters = [e.name for e in ServableAdapters(config.registry, config.model).entries()]
    started = time.perf_counter()
    with serving(config) as url:
        yield StageSummary(
            stage="serve", output=str(output),
            headline=f"{url} serves {config.served_name} and {len(adapters)} registry adapter(s)",
            seconds=round(time.perf_counter() - started, 1), counts={"adapters": len(adapters)},
            files={"endpoint": url}, endpoint=endpoint_of(config, url))


def endpoint_of(config: ServeConfig, url: str = "") -> Endpoint:
    return Endpoint(url=url, model=config.model, served_name=config.served_name, api_key_env=config.api_key_env)


STAGE = Stage(name="serve", help="serve the base model and its registry adapters while later stages run",
              config_model=ServeConfig, open=open_serving, serves=endpoint_of)
