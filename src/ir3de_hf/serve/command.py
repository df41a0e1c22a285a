# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The ``ir3de serve`` arguments and their run; imports only the standard library until the server starts (the argument
types are the CLI's, `ir3de_hf.cli.arguments`)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cli.arguments import milliseconds, port, positive_int

if TYPE_CHECKING:
    from ..modeling_ir3de import IR3DERouterModel
    from .backends import Backend

__all__ = ["API_KEY_ENV", "check_exposure", "configure", "router_name", "serve"]

API_KEY_ENV = "IR3DE_EXPERT_API_KEY"  # bearer token sent to remote expert servers, when they need one


def _expert_url(value: str) -> tuple[str, Any]:
    from .backends.remote import parse_expert_url

    try:
        return parse_expert_url(value, os.environ.get(API_KEY_ENV))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _vllm_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected the vLLM engine's http(s) base URL, got {value!r}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    from .decision import ROUTE_ON

    parser.add_argument("router", help="a saved router (directory or Hub id), or 'demo' for the demo router")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every endpoint but /health")
    parser.add_argument(
        "--admin-key",
        help="turn on the admin API (GET/POST /v1/experts, DELETE /v1/experts/NAME: live edits of a router directory) "
        "for clients sending 'Authorization: Bearer KEY'",
    )
    parser.add_argument(
        "--watch-interval",
        type=_seconds,
        default=1.0,
        help="seconds between checks of the router directory for a version another worker saved (1)",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen on a host other machines can reach (--host 0.0.0.0...) without --api-key: anyone can use it",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--backend", choices=("local",), default="local", help="local: the router's experts answer in-process"
    )
    where.add_argument(
        "--expert-url",
        dest="expert_urls",
        metavar="NAME=BASE_URL[:MODEL]",
        type=_expert_url,
        action="append",
        help="expert NAME is served by an OpenAI-compatible server (vLLM...) at BASE_URL (e.g. "
        "http://127.0.0.1:8001/v1) as MODEL (default NAME); give one per expert. Key: $" + API_KEY_ENV,
    )
    where.add_argument(
        "--vllm-url",
        metavar="BASE_URL",
        type=_vllm_url,
        help="every expert is served by the vLLM engine at BASE_URL (e.g. http://127.0.0.1:8100/v1) under its own "
        "name, as `ir3de vllm-command ROUTER` starts it. Key: $" + API_KEY_ENV,
    )
    parser.add_argument(
        "--route-on", choices=ROUTE_ON, default="last_user", help="chat text that is routed (default last_user)"
    )
    parser.add_argument("--fallback-expert", help="expert that answers prompts the router is not confident about")
    parser.add_argument(
        "--max-batch-size", type=positive_int, default=8, help="local: prompts per batched generate (8)"
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=milliseconds,
        default=10.0,
        help="local: how long a batch waits for more requests (10)",
    )
    parser.add_argument(
        "--max-tokens-limit", type=positive_int, default=1024, help="largest max_tokens accepted (1024)"
    )
    parser.add_argument(
        "--max-request-bytes", type=positive_int, default=1_000_000, help="largest request body (1 MB)"
    )
    parser.add_argument("--timeout", type=positive_int, default=600, help="remote: seconds per expert request (600)")
    parser.add_argument("--retries", type=int, choices=range(6), default=2, help="remote: extra attempts (2)")


def _seconds(value: str) -> float:
    """A wait of 0.05 to 3600 seconds."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0.05 <= number <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0.05 to 3600, got {value!r}")
    return number


def _directory(argument: str) -> Path | None:
    """The local directory a served router lives in (edited and watched), or None for a Hub id or the demo."""
    path = Path(argument)
    return path if argument != "demo" and path.is_dir() else None


def router_name(argument: str) -> str:
    """The name clients may use besides ``ir3de`` to route: a Hub id as given, a directory's own name."""
    path = Path(argument)
    return path.name if path.is_dir() else argument


def check_exposure(args: argparse.Namespace) -> None:
    """Refuses (before the router loads) an open server other machines can reach: a host that is not loopback needs
    ``--api-key`` or an explicit ``--allow-unauthenticated``; an empty key would let an empty token in."""
    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("--api-key is empty; give a key clients will send as 'Authorization: Bearer KEY'.")
    if args.admin_key is not None and not args.admin_key.strip():
        raise ValueError("--admin-key is empty; give a key admin clients will send as 'Authorization: Bearer KEY'.")
    if args.admin_key is not None and _directory(args.router) is None:
        raise ValueError(
            f"--admin-key edits the router directory it serves, and {args.router!r} is not a local directory; save "
            "the router to a directory first (ir3de pull REPO --local-dir DIR, or router.save_pretrained(DIR)) and "
            "serve that."
        )
    if args.api_key is None and not args.allow_unauthenticated and not _is_loopback(args.host):
        raise ValueError(
            f"--host {args.host} can be reached from other machines and there is no --api-key, so anyone could use "
            "this server; give --api-key KEY, or --allow-unauthenticated to serve it open anyway."
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def serve(router: IR3DERouterModel, args: argparse.Namespace) -> int:
    """Builds the backend and the app, then serves until interrupted, with one "serving on" line once it listens."""
    import uvicorn

    from .app import ServeSettings, create_app
    from .live import LiveRouter

    settings = ServeSettings(
        api_key=args.api_key,
        admin_key=args.admin_key,
        route_on=args.route_on,
        max_request_bytes=args.max_request_bytes,
        max_tokens_limit=args.max_tokens_limit,
    )
    backend = _backend(router, args)
    live = LiveRouter(
        router,
        backend,
        name=router_name(args.router),
        fallback_expert=args.fallback_expert,
        directory=_directory(args.router),
        watch_interval=args.watch_interval,
    )
    url = f"http://{f'[{args.host}]' if ':' in args.host else args.host}:{args.port}/v1"
    if args.api_key is None:
        where = "this machine only" if _is_loopback(args.host) else "--allow-unauthenticated"
        _say(f"warning: no --api-key: every endpoint is open to anyone who can reach {url} ({where})")
    experts = router.expert_names
    admin = "; admin API on" if args.admin_key is not None else ""
    ready = (
        f"serving on {url} ({len(experts)} experts: {', '.join(experts)}; backend {backend.kind}; router version "
        f"{live.current.id}{admin})"
    )

    class Server(uvicorn.Server):  # says where it listens once it does (a port in use fails before)
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            _say(ready)

    app = create_app(live, backend, settings)
    Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")).run()
    return 0


def _say(line: str) -> None:
    print(f"ir3de serve: {line}", file=sys.stderr, flush=True)


def _backend(router: IR3DERouterModel, args: argparse.Namespace) -> Backend:
    if args.vllm_url:
        from .backends.vllm import VllmBackend

        key = os.environ.get(API_KEY_ENV)
        return VllmBackend(args.vllm_url, router.expert_names, api_key=key, timeout=args.timeout, retries=args.retries)
    if not args.expert_urls:
        from .backends.local import LocalBackend

        return LocalBackend(router, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms)
    from .backends.remote import RemoteBackend

    experts = dict(args.expert_urls)
    unknown = sorted(set(experts) - set(router.expert_names))
    missing = [name for name in router.expert_names if name not in experts]
    if unknown or missing:
        raise ValueError(
            f"--expert-url must name each expert of the router once ({', '.join(router.expert_names)}); "
            + (f"unknown: {', '.join(unknown)}" if unknown else f"missing: {', '.join(missing)}")
        )
    return RemoteBackend(experts, timeout=args.timeout, retries=args.retries)
