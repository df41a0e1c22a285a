# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The admin API of live edits: ``GET``/``POST /v1/experts`` and ``DELETE /v1/experts/{name}``.

Off unless ``ir3de serve`` has ``--admin-key`` (403), which clients send as ``Authorization: Bearer KEY`` (401
otherwise); it is separate from ``--api-key``, which these endpoints do not take. Bodies are checked as strictly as the
OpenAI ones (`ir3de_hf.serve.schemas`); the edit itself is `ir3de_hf.serve.live.LiveRouter`'s.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ServeError

if TYPE_CHECKING:
    from ..modeling_ir3de import IR3DERouterModel
    from .live import LiveRouter
    from .metrics import Metrics

__all__ = ["ExpertRequest", "add_admin_routes", "is_admin_path"]

_PATH = "/v1/experts"
_Parse = Callable[[Request, type["ExpertRequest"]], Awaitable[tuple[dict[str, object], "ExpertRequest"]]]


class ExpertRequest(BaseModel):
    """``POST /v1/experts``: the new expert's name, its statistics (exactly one of ``texts``, ``histogram`` (one
    count per token id) and ``statistics`` (a Hub id or directory of shared statistics)) and where its model lives."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    texts: list[str] | None = Field(default=None, min_length=1)
    histogram: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)
    statistics: str | None = Field(default=None, min_length=1)
    statistics_revision: str | None = None
    source: str | None = None
    revision: str | None = None
    base_model: str | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_statistics(self) -> ExpertRequest:
        given = [key for key in ("texts", "histogram", "statistics") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                'give exactly one of "texts" (a list of strings), "histogram" (one count per token id) and '
                f'"statistics" (a Hub id or directory of shared statistics); got {", ".join(given) or "none"}'
            )
        if self.texts is not None and not any(text.strip() for text in self.texts):
            raise ValueError('"texts" holds only empty or blank strings; give the expert\'s domain text')
        if self.statistics_revision is not None and self.statistics is None:
            raise ValueError('"statistics_revision" needs "statistics"')
        return self

    def apply(self, router: IR3DERouterModel) -> None:
        """Adds this expert to ``router`` (a copy: counting and solving happen in a worker thread)."""
        if self.statistics is not None:
            router.add_expert_from_hub(
                self.statistics,
                revision=self.statistics_revision,
                name=self.name,
                expert=self.source,
                expert_revision=self.revision,
                base_model=self.base_model,
                description=self.description,
            )
            return
        data: dict[str, Any] = {"texts": self.texts} if self.texts is not None else {"histogram": self._counts()}
        router.add_expert(
            self.name,
            **data,
            source=self.source,
            revision=self.revision,
            base_model=self.base_model,
            description=self.description,
        )

    def _counts(self) -> Any:
        import torch

        return torch.tensor(self.histogram, dtype=torch.int64)


def is_admin_path(path: str) -> bool:
    return path == _PATH or path.startswith(_PATH + "/")


def add_admin_routes(app: FastAPI, live: LiveRouter, admin_key: str | None, parse: _Parse, metrics: Metrics) -> None:
    """Adds the admin endpoints to ``app``; without ``admin_key`` each answers 403."""

    def authorize(request: Request) -> None:
        if admin_key is None:
            raise ServeError(403, "The admin API is off; start ir3de serve with --admin-key.")
        if live.directory is None:
            raise ServeError(403, "The admin API needs a router saved in a local directory; serve one.")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), admin_key.encode()):
            raise ServeError(401, "Missing or wrong admin key: send 'Authorization: Bearer <admin key>'.")

    @app.get(_PATH)
    async def experts(request: Request) -> JSONResponse:
        authorize(request)
        version = live.current
        router = version.router
        data = [
            {
                "name": spec.name,
                "source": spec.source,
                "base_model": spec.base_model,
                "description": spec.description,
                "tokens": tokens,
            }
            for spec, tokens in zip(router.config.expert_specs, router.store.token_counts(), strict=True)
        ]
        return JSONResponse({"object": "list", "router_version": version.id, "data": data})

    @app.post(_PATH)
    async def add(request: Request) -> JSONResponse:
        authorize(request)
        _, asked = await parse(request, ExpertRequest)
        version = await live.add(asked.name, asked.apply)
        metrics.edit("add")
        body = {"object": "expert", "name": asked.name, "router_version": version.id}
        return JSONResponse(body, status_code=201, headers={"x-ir3de-router-version": version.id})

    @app.delete(_PATH + "/{name:path}")
    async def remove(request: Request, name: str) -> JSONResponse:
        authorize(request)
        version = await live.remove(name)
        metrics.edit("remove")
        body = {"object": "expert.deleted", "name": name, "deleted": True, "router_version": version.id}
        return JSONResponse(body, headers={"x-ir3de-router-version": version.id})
