# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Which expert answers a request, and why: the text that is routed (``--route-on``) and the routing decision.

``model`` set to the meta-model (``"ir3de"`` or the router's own name) routes; an expert's name forces that expert.
A routed prompt the router is not confident about (``IR3DERouterOutput.confident``: under the router's calibrated
``min_confidence``, or without any usable token) goes to the fallback expert when one is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import ServeError

if TYPE_CHECKING:
    from ..modeling_ir3de import IR3DERouterModel
    from ..outputs import Decision
    from .schemas import ChatMessage

__all__ = ["META_MODEL", "ROUTE_ON", "Decider", "decision_body", "decision_header", "routed_text"]

META_MODEL = "ir3de"
ROUTE_ON = ("last_user", "all_user", "all")


def decision_body(decision: Decision, router_version: str) -> dict[str, Any]:
    """The ``ir3de`` field of an answer: ``{"expert", "reason", "margin", "probabilities", "confident",
    "router_version"}``, with ``margin`` None when forced or with a single expert (NaN and inf are not JSON)."""
    margin = decision.margin if math.isfinite(decision.margin) else None
    return {
        "expert": decision.expert,
        "reason": decision.reason,
        "margin": margin,
        "probabilities": decision.probabilities,
        "confident": decision.confident,
        "router_version": router_version,
    }


def decision_header(decision: Decision) -> str:
    """``x-ir3de-expert``: ``"legal; reason=routed; margin=0.1640; confident=true"`` (HTTP-header safe)."""
    parts = [decision.expert, f"reason={decision.reason}"]
    if math.isfinite(decision.margin):
        parts.append(f"margin={decision.margin:.4f}")
    if decision.confident is not None:
        parts.append(f"confident={str(decision.confident).lower()}")
    return "; ".join(parts)


def routed_text(messages: Sequence[ChatMessage], route_on: str) -> str:
    """The part of a chat that is routed: the last user message, all user messages, or every message (joined)."""
    if route_on == "all":
        chosen = list(messages)
    else:
        chosen = [message for message in messages if message.role == "user"]
        if route_on == "last_user":
            chosen = chosen[-1:]
    text = "\n".join(message.text for message in chosen)
    if not text.strip():
        raise ServeError(400, f"The chat has no user text to route (--route-on {route_on}).", param="messages")
    return text


class Decider:
    """Turns ``model`` and the routed texts into `Decision` s with the read-only router: `forced` says whether
    ``model`` names an expert, `route` decides by `ir3de_hf.outputs.decide` (the rule of `generate` and the Space)."""

    def __init__(self, router: IR3DERouterModel, *, name: str | None = None, fallback_expert: str | None = None):
        if fallback_expert is not None and fallback_expert not in router.expert_names:
            raise ValueError(
                f"--fallback-expert {fallback_expert!r} is not an expert of the router; its experts are: "
                f"{', '.join(router.expert_names)}."
            )
        self.router = router
        self.fallback_expert = fallback_expert
        self.meta_models = [META_MODEL] + ([name] if name and name != META_MODEL else [])

    def forced(self, model: str) -> Decision | None:
        """The decision for a ``model`` that names an expert, None for the meta-model (route); refuses (404) any
        other ``model``."""
        if model in self.meta_models:
            return None
        if model not in self.router.expert_names:
            raise ServeError(
                404,
                f"The model {model!r} does not exist: use {self.meta_models[0]!r} to route, or one of the experts "
                f"{', '.join(self.router.expert_names)} to force it (GET /v1/models lists them).",
                param="model",
                code="model_not_found",
            )
        from ..outputs import Decision  # torch: not imported by `ir3de serve --help`, which reads ROUTE_ON

        return Decision(model, "forced")

    def route(self, texts: Sequence[str]) -> list[Decision]:
        """One routed decision per text."""
        for index, text in enumerate(texts):
            if not text.strip():
                raise ServeError(400, f"Prompt {index} is empty; there is nothing to route.", param="input")
        from ..outputs import NoEvidenceError, decide

        routed = self.router.route(list(texts), token_details=False)
        try:
            return decide(routed, self.router.expert_names, self.fallback_expert)
        except NoEvidenceError as error:
            raise ServeError(
                400,
                f"Prompt {error.index} has no token the router can use (empty, blank or only special tokens); name an "
                "expert as the model, or start the server with --fallback-expert.",
                param="input",
            ) from error
