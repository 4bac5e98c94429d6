"""`cynic-node`: run the node under uvicorn. Everything else is configured by the environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import uvicorn

from cynic_node import __version__
from cynic_node.config import ConfigError, Settings


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cynic-node",
        description="CYNIC judgment node (configuration: INSTANCE_ID, CYNIC_HOME, SURREAL_*, "
        "OLLAMA_URL, CYNIC_MODEL, CYNIC_MAX_BODY_BYTES ... in the environment)",
    )
    parser.add_argument("--host", default=os.environ.get("CYNIC_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CYNIC_PORT", "8000")))
    parser.add_argument(
        "--log-level",
        default=os.environ.get("CYNIC_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("CYNIC_WORKERS", "1")),
        help="uvicorn worker processes (each keeps its own connections and metrics)",
    )
    parser.add_argument("--version", action="version", version=f"cynic-node {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        settings = Settings.from_env()  # fail now, with a clear message, not in every worker
    except ConfigError as exc:
        raise SystemExit(f"cynic-node: {exc}") from exc
    os.environ["CYNIC_LOG_LEVEL"] = args.log_level
    uvicorn.run(
        "cynic_node.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        # The access log costs about a fifth of the throughput; metrics count requests.
        access_log=False,
        proxy_headers=True,
        **websocket_options(settings),
    )


def websocket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's WebSocket settings for the node's (the role's unit sets the same ones through
    UVICORN_WS_* variables, which the `uvicorn` command line reads).

    uvicorn's defaults suit no public endpoint: 16 MiB messages and permessage-deflate on, so
    that a few kilobytes on the wire can cost the event loop megabytes of inflating and parsing.
    The protocol-level ping (20 s, closing a peer that does not answer within 20 s more) stays.
    """
    return {
        # A frame announcing more is refused (close 1009) from its header, before its payload
        # is read; with compression on, the inflated size counts.
        "ws_max_size": settings.ws_max_message_bytes,
        "ws_max_queue": 4,  # the legacy `websockets` implementation's read-ahead
        "ws_per_message_deflate": settings.ws_compression,
    }


if __name__ == "__main__":  # pragma: no cover
    main()
