# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Which expert answers a request, and why: the text that is routed (``--route-on``) and the routing decision.

``model`` set to the meta-model (``"ir3de"`` or the router's own name) routes; an expert's name forces that expert.
A routed prompt the router is not confident about (``IR3DERouterOutput.confident``: under the router's calibrated
``min_confidence``, or without any usable token) goes to the fallback expert when one is set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .errors import ServeError

if TYPE_CHECKING:
    from ..modeling_ir3de import IR3DERouterModel
    from .schemas import ChatMessage

__all__ = ["META_MODEL", "ROUTE_ON", "Decider", "Decision", "routed_text"]

META_MODEL = "ir3de"
ROUTE_ON = ("last_user", "all_user", "all")


@dataclass(frozen=True)
class Decision:
    """The expert that answers, why (``routed``, ``forced`` or ``fallback``), and the router's view when it routed:
    its margin, the calibrated probability of each expert and whether it was confident."""

    expert: str
    reason: str
    margin: float | None = None
    probabilities: dict[str, float] | None = None
    confident: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def header(self) -> str:
        """``x-ir3de-expert``: ``"legal; reason=routed; margin=0.1640; confident=true"`` (HTTP-header safe)."""
        parts = [self.expert, f"reason={self.reason}"]
        if self.margin is not None:
            parts.append(f"margin={self.margin:.4f}")
        if self.confident is not None:
            parts.append(f"confident={str(self.confident).lower()}")
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
    """Turns ``model`` and the routed texts into `Decision` s with the read-only router."""

    def __init__(self, router: IR3DERouterModel, *, name: str | None = None, fallback_expert: str | None = None):
        if fallback_expert is not None and fallback_expert not in router.expert_names:
            raise ValueError(
                f"--fallback-expert {fallback_expert!r} is not an expert of the router; its experts are: "
                f"{', '.join(router.expert_names)}."
            )
        self.router = router
        self.fallback_expert = fallback_expert
        self.meta_models = [META_MODEL] + ([name] if name and name != META_MODEL else [])

    def check_model(self, model: str) -> None:
        """Refuses (404) a ``model`` that is neither the meta-model nor an expert."""
        if model not in self.meta_models and model not in self.router.expert_names:
            raise ServeError(
                404,
                f"The model {model!r} does not exist: use {self.meta_models[0]!r} to route, or one of the experts "
                f"{', '.join(self.router.expert_names)} to force it (GET /v1/models lists them).",
                param="model",
                code="model_not_found",
            )

    def routes(self, model: str) -> bool:
        """Whether ``model`` asks for routing (the meta-model) rather than naming an expert."""
        self.check_model(model)
        return model in self.meta_models

    def decide(self, model: str, texts: Sequence[str]) -> list[Decision]:
        """One decision per text; a forced expert ignores the texts."""
        if not self.routes(model):
            return [Decision(model, "forced")] * len(texts)
        for index, text in enumerate(texts):
            if not text.strip():
                raise ServeError(400, f"Prompt {index} is empty; there is nothing to route.", param="input")
        routed = self.router.route(list(texts), token_details=False)
        assert routed.probabilities is not None and routed.confident is not None and routed.margins is not None
        names = self.router.expert_names
        decisions = []
        for index, (name, margin, row, confident) in enumerate(
            zip(
                routed.expert_names or [],
                routed.margins.tolist(),
                routed.probabilities.tolist(),
                routed.confident.tolist(),
                strict=True,
            )
        ):
            probabilities = dict(zip(names, row, strict=True))
            finite = margin if math.isfinite(margin) else None  # a single expert's margin is inf: not JSON
            if not bool(confident) and self.fallback_expert is not None:
                decisions.append(Decision(self.fallback_expert, "fallback", finite, probabilities, False))
            elif name is None:
                raise ServeError(
                    400,
                    f"Prompt {index} has no token the router can use (only special tokens); name an expert as the "
                    "model, or start the server with --fallback-expert.",
                    param="input",
                )
            else:
                decisions.append(Decision(name, "routed", finite, probabilities, bool(confident)))
        return decisions
