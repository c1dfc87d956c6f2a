"""``ec2er view RUN``: serve the viewer of a run folder on this machine (uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import os

from ec2er.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view", help="read a run in the browser: dialogues, curation, training, evaluation (live while it runs)",
        description="Serve a local, private page for a run folder (a chain's folder or any stage's output; a "
                    "local path or any URI pyarrow reads, e.g. s3://...). It only reads, binds 127.0.0.1 unless "
                    "told otherwise and loads nothing from the internet.")
    p.add_argument("run", help="the run folder")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: a free one)")
    p.add_argument("--token", default=None,
                   help="require this token of every request (default: $EC2ER_VIEW_TOKEN if set, which other "
                        "users cannot read in the process list); open the page once with ?token=... and the "
                        "browser keeps it in a cookie")
    p.set_defaults(func=_view)


def allowed_hosts(host: str) -> list[str] | None:
    """Host headers the server accepts: bound to a loopback address, only the loopback names (so
    a page elsewhere cannot reach the viewer through DNS rebinding); bound wider, any."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return ["127.0.0.1", "localhost", "[::1]", "::1"] if loopback else None


def open_to_others(host: str) -> str:
    """What a viewer without a token on a non-loopback address warns of."""
    from ec2er.viewer.app import TOKEN_ENV

    return (f"{host} is reachable from other machines and no token is set (--token, or ${TOKEN_ENV}): "
            "anyone who can reach it can read this run")


def _view(args: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from ec2er.viewer.app import TOKEN_ENV, build_app

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: not a port")
    loopback = allowed_hosts(args.host) is not None
    if not loopback and token is None:
        print(f"warning: {open_to_others(args.host)}")
    app = build_app(args.run, token=token, allowed_hosts=allowed_hosts(args.host))
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        raise ConfigError(f"cannot listen on {args.host}:{args.port} ({e.strerror})") from None
    sock.listen(128)  # connectable from now on (uvicorn accepts once it has started)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"viewing {args.run} at http://{shown}:{port}/" + ("?token=<your token>" if token else "")
          + " (Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
