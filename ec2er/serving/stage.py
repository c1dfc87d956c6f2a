"""Serving as a stage of the chain: the base model and the registry's adapters behind one
endpoint, kept up while the later stages (evaluation) call it, stopped when the chain ends.

Unlike the other stages it does not run to completion: ``open`` is a context manager whose
summary carries the endpoint. ``ec2er serve`` is this same stage in the foreground (the CLI keeps
it open until Ctrl-C or SIGTERM, ``ec2er.stage.run_from_args``), so the CLI and the chain make the
same checks and start the same server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ec2er import console
from ec2er.errors import ConfigError
from ec2er.serving.config import ServeConfig
from ec2er.stage import Endpoint, Handoff, Promise, ServedBaseModel, Stage, StageInputs, StageSummary


@contextlib.contextmanager
def open_serving(config: ServeConfig, inputs: StageInputs, output: Path) -> Iterator[StageSummary]:
    """Serve until the ``with`` block ends (a port of 0 takes a free one), after the checks a
    chain makes before its first stage. When this process's output goes to a log file (``ec2er
    serve``), the replicas' output (vLLM's log) goes there too."""
    from ec2er.serving.resolver import servable_adapters
    from ec2er.serving.server import serving

    check_serving(config, Promise())
    bases = config.bases()
    adapters = [e.name for base in bases for e in servable_adapters(config.registry, base.model).entries()]
    in_log_file = console.output_log() is not None
    if in_log_file:
        os.environ["VLLM_CONFIGURE_LOGGING"] = "1"  # replicas started by this process log in full
    started = time.perf_counter()
    with serving(config, worker_output=True if in_log_file else None) as url:
        yield StageSummary(
            stage="serve", output=str(output),
            headline=f"{url} serves {', '.join(b.served_name for b in bases)} and {len(adapters)} registry "
                     f"adapter(s) from "
                     f"{config.registry} (new ones are served as published)",
            seconds=round(time.perf_counter() - started, 1), counts={"adapters": len(adapters)},
            files={"endpoint": url}, handoff=Handoff(endpoint=endpoint_of(config, url)))


def endpoint_of(config: ServeConfig, url: str = "") -> Endpoint:
    """What callers need to know of the endpoint: where it is, what it serves, where its key is."""
    key_file = config.api_key_file.absolute() if config.api_key_file else None
    return Endpoint(url=url, bases=[ServedBaseModel(model=b.model, served_name=b.served_name) for b in config.bases()],
                    api_key_env=config.api_key_env, api_key_file=key_file)


def check_serving(config: ServeConfig, promised: Promise) -> None:
    """The checks ``ec2er serve`` and a chain (before its first stage) both make, each failing in
    one line before anything starts: the API key can be read, the registry exists (or an earlier
    stage of the chain will publish into it), the port is free, the model can be had. The model's
    check comes last: it imports vLLM (about 10 s of a core), which a typo elsewhere need not wait
    for."""
    from ec2er.models import check_model
    from ec2er.serving.server import check_port_free

    config.resolve_api_key()
    check_registry(config, promised)
    if config.port:
        check_port_free(config.host, config.port)
    for base in config.bases():
        check_model(base.model)


def check_registry(config: ServeConfig, promised: Promise) -> None:
    """A registry folder that is not there is a mistake (a typo serves no adapter and says
    nothing), unless an earlier stage of the chain publishes into it."""
    if config.ray_serve_llm is not None or config.registry.is_dir():
        return
    if any(Path(p.registry).absolute() == config.registry.absolute() for p in promised.adapters.values()):
        return
    what = "not a folder" if config.registry.exists() else "no such folder"
    raise ConfigError(f"registry {config.registry}: {what} (ec2er train publishes adapters there; "
                      "to serve the base model alone, create it empty)")


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default: the recipe's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: the recipe's, 8000; 0: a free one)")
    p.add_argument("--log-dir", type=Path, help="folder of the log file serve-<port>.log (default: the "
                                                "recipe's log_dir)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {"host": args.host, "port": args.port, "log_dir": args.log_dir and str(args.log_dir)}
    return {key: value for key, value in given.items() if value is not None}


STAGE = Stage(name="serve", help="serve a base model and its registry adapters behind one OpenAI-compatible "
                                 "endpoint (Ray Serve + vLLM): alone until Ctrl-C or SIGTERM, in a chain "
                                 "while the later stages run",
              config_model=ServeConfig, open=open_serving, check=check_serving,
              promises=lambda config: Promise(endpoint=endpoint_of(config)),
              extra_arguments=_arguments, overrides_from_args=_overrides,
              default_output=lambda config: config.log_dir,
              foreground_log=lambda config, output: output / f"serve-{config.port}.log")


def register(subparsers: argparse._SubParsersAction) -> None:
    from ec2er.stage import register_stage

    register_stage(subparsers, STAGE)
