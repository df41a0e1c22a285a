# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Only the Space's public endpoints can be called by name.

Gradio 6 hides an event with ``api_visibility="private"`` from the API page and from `gradio_client`, but its server
still runs it when a raw HTTP call names it (``POST /gradio_api/call/show_decision``; gradio-app/gradio#13051, fixed
in its docs only). The page's own events take the page's values, not a caller's, so such a call ended in a raw
error (``"'confidence'"``) or a bare 500. `PublicEndpointsOnly` answers every call by name of an event that is not
public with a 404 that lists the Space's endpoints. The page itself calls its events by index, through the queue
(``/gradio_api/queue/join``) or, for an event that skips the queue, as ``/gradio_api/run/predict`` with the index in
the body (Gradio's JS client): both are left alone.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["PublicEndpointsOnly", "public_endpoints"]

# Gradio's routes that take an event's name: /run/NAME, /api/NAME, /call/NAME and /call/v2/NAME (with a trailing /)
_BY_NAME = re.compile(r"/gradio_api/(?:run|api|call/v2|call)/(?P<name>[^/]+)/?$")
_BY_INDEX = re.compile(r"/gradio_api/run/predict/?$")  # how the page calls an event that skips the queue


def public_endpoints(blocks: Any) -> list[str]:
    """The names of the events anyone may call (``api_visibility="public"``), in the app's order."""
    return [f"/{fn.api_name}" for fn in blocks.fns.values() if fn.api_visibility == "public"]


class PublicEndpointsOnly:
    """ASGI middleware: a POST that names an event other than a public one gets a 404 naming the public ones.

    Args:
        app: the ASGI app it wraps (Gradio's FastAPI app, which it finds its Blocks through).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        by_name = scope["type"] == "http" and scope["method"] == "POST" and not _BY_INDEX.search(scope["path"])
        called = _BY_NAME.search(scope["path"]) if by_name else None
        if called is not None:
            public = public_endpoints(scope["app"].get_blocks())
            name = "/" + called["name"]
            if name not in public:
                detail = (
                    f"No API endpoint named {name}: the Space's endpoints are {', '.join(public)} (the others are "
                    "the page's own events)."
                )
                await JSONResponse({"detail": detail}, status_code=404)(scope, receive, send)
                return
        await self.app(scope, receive, send)
