"""``ec2er serve``: the base model and every registry adapter behind one OpenAI-compatible
endpoint, in the foreground until Ctrl-C or SIGTERM.

The console gets one line when the endpoint is ready and one when it has stopped; vLLM's, Ray's
and Serve's logs go to ``<log_dir>/serve-<port>.log``.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path
from typing import Any

from ec2er.config import load_config, parse_override
from ec2er.serving.config import ServeConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a base model and its registry adapters (OpenAI API, Ray Serve)",
        description="Serve the recipe's base model and every adapter of its registry behind one "
                    "OpenAI-compatible endpoint (Ray Serve + vLLM). Requests name the base model or "
                    "an adapter's registry name (<family>-v<N>) as `model`; adapters published "
                    "while the server runs are served at once. Runs until Ctrl-C or SIGTERM.")
    p.add_argument("--config", type=Path, required=True, help="serve/<name>.yaml (ServeConfig)")
    p.add_argument("--host", help="address to listen on (default: the recipe's, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: the recipe's, 8000)")
    p.add_argument("--log-dir", type=Path, help="folder of the log file (default: the recipe's log_dir)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key (dotted), repeatable")
    p.set_defaults(func=_serve)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = dict(parse_override(s) for s in args.set)
    for key, value in (("host", args.host), ("port", args.port), ("log_dir", args.log_dir)):
        if value is not None:
            overrides[key] = str(value) if isinstance(value, Path) else value
    return overrides


def _serve(args: argparse.Namespace) -> int:
    from ec2er.models.embedded import check_model
    from ec2er.serving.resolver import ServableAdapters
    from ec2er.console import console_to_log
    from ec2er.serving.server import check_port_free, serving

    config = load_config(args.config, ServeConfig, _overrides(args))
    check_model(config.model)  # a wrong model name fails in one line, before Ray starts
    config.resolve_api_key()
    check_port_free(config.host, config.port)
    log_file = config.log_dir / f"serve-{config.port}.log"
    # Everything below writes to the log file, so the replicas' engines log there in full.
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    with console_to_log(log_file) as console:
        adapters = len(ServableAdapters(config.registry, config.model).entries())
        with serving(config, worker_output=True) as url:
            print(f"ec2er serve: {url} serves {config.served_name} and {adapters} registry adapter(s) "
                  f"from {config.registry} (new ones are served as published); logs: {log_file}; "
                  "Ctrl-C to stop", file=console, flush=True)
            _wait_for_stop()
        print("ec2er serve: stopped", file=console, flush=True)
    return 0


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM (both end here, so the caller's cleanup runs and exits 0).
    Installed after Ray started: ray.init sets a SIGTERM handler of its own (sys.exit(15))."""
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        # A second SIGTERM must not cut the cleanup short (a second Ctrl-C still can, on purpose).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
