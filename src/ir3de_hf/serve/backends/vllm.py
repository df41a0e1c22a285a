# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The vLLM backend: one vLLM engine serves every expert as a LoRA adapter under the expert's own name (the line
``ir3de vllm-command ROUTER`` prints starts it so). Requests go through `RemoteBackend`; experts added or removed
live load or unload their adapter in the engine (``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``).

Several ``ir3de serve`` workers may share one engine: loading is idempotent (an adapter the engine already serves is
not loaded again) and so is unloading (an adapter it no longer has is fine).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from ..errors import ServeError
from .remote import RemoteBackend, RemoteEndpoint

if TYPE_CHECKING:
    from ...configuration_ir3de import ExpertSpec

__all__ = ["VllmBackend"]


class VllmBackend(RemoteBackend):
    """Experts ``names`` on the vLLM engine at ``base_url`` (``http://127.0.0.1:8100/v1``)."""

    kind = "vllm"
    shared = True

    def __init__(
        self,
        base_url: str,
        names: Iterable[str],
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        retries: int = 2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        super().__init__({name: self._endpoint(name) for name in names}, timeout=timeout, retries=retries)
        self._engine = self._client(self._endpoint(""))  # the engine's own endpoints: models, adapters

    async def add_expert(self, name: str, spec: ExpertSpec) -> None:
        """Loads ``spec``'s adapter as model ``name`` unless the engine serves it already, then routes to it."""
        from ..vllm_command import adapter_directory

        if name not in await self._served(name):
            try:
                path = str(adapter_directory(spec))
            except ValueError as error:
                raise self._failed("load", name, str(error)) from None
            response = await self._call("load", name, "/load_lora_adapter", {"lora_name": name, "lora_path": path})
            if response.status_code >= 400 and "already" not in _message(response):
                raise self._failed("load", name, f"{response.status_code}: {_message(response)}")
        if name not in self.experts:
            self.experts[name] = self._endpoint(name)
            self._clients[name] = self._client(self.experts[name])

    async def remove_expert(self, name: str) -> None:
        """Unloads adapter ``name`` (one the engine does not have is fine) and drops its client."""
        response = await self._call("unload", name, "/unload_lora_adapter", {"lora_name": name})
        if response.status_code >= 400 and response.status_code != 404:
            raise self._failed("unload", name, f"{response.status_code}: {_message(response)}")
        self.experts.pop(name, None)
        client = self._clients.pop(name, None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        await super().aclose()
        await self._engine.aclose()

    def _endpoint(self, name: str) -> RemoteEndpoint:
        return RemoteEndpoint(self.base_url, name, self._api_key)

    async def _served(self, name: str) -> set[str]:
        """The model names the engine serves now (its base model and its adapters)."""
        response = await self._call("load", name, "/models")
        try:
            payload: Any = response.json() if response.status_code == 200 else None
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise self._failed("load", name, f"GET /models answered {response.status_code}: {response.text[:200]}")
        return {str(model.get("id")) for model in payload["data"] if isinstance(model, dict)}

    async def _call(self, action: str, name: str, path: str, body: dict[str, str] | None = None) -> httpx.Response:
        try:
            if body is None:
                return await self._engine.get(path)
            return await self._engine.post(path, json=body)
        except httpx.TransportError as error:
            raise self._failed(action, name, f"{type(error).__name__}: {error}") from None

    def _failed(self, action: str, name: str, why: str) -> ServeError:
        return ServeError(
            503,
            f"the vLLM engine at {self.base_url} could not {action} adapter {name!r} ({why}); nothing was changed. "
            "Check that it runs with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (the line `ir3de vllm-command` prints).",
            code="expert_unavailable",
        )


def _message(response: httpx.Response) -> str:
    """The error message of a vLLM answer (an OpenAI error body, or plain text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message"))
    return str(payload.get("message", payload) if isinstance(payload, dict) else payload)[:200]
