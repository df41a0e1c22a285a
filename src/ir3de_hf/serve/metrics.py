# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Prometheus text exposition of the server's counters, written by hand (no client library needed).

Requests and tokens per expert, fallbacks per expert, errors per status, a histogram of the time spent routing, the
router version served and the expert edits made through this server.
"""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Metrics"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)  # seconds


class Metrics:
    """Thread-safe counters; `render` gives the ``text/plain; version=0.0.4`` format Prometheus scrapes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()  # (endpoint, expert, reason)
        self._tokens: Counter[tuple[str, str]] = Counter()  # (expert, kind)
        self._fallbacks: Counter[str] = Counter()
        self._errors: Counter[int] = Counter()
        self._edits: Counter[str] = Counter()  # action ("add", "remove")
        self._latency_buckets = [0] * len(_BUCKETS)
        self._latency_sum = 0.0
        self._latency_count = 0

    def request(self, endpoint: str, expert: str, reason: str) -> None:
        with self._lock:
            self._requests[(endpoint, expert, reason)] += 1
            if reason == "fallback":
                self._fallbacks[expert] += 1

    def tokens(self, expert: str, prompt: int, completion: int) -> None:
        with self._lock:
            self._tokens[(expert, "prompt")] += prompt
            self._tokens[(expert, "completion")] += completion

    def error(self, status: int) -> None:
        with self._lock:
            self._errors[status] += 1

    def edit(self, action: str) -> None:
        with self._lock:
            self._edits[action] += 1

    def routing_seconds(self, seconds: float) -> None:
        with self._lock:
            for index, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    self._latency_buckets[index] += 1
            self._latency_sum += seconds
            self._latency_count += 1

    def render(self, router_version: str) -> str:
        with self._lock:
            lines = [
                "# HELP ir3de_requests_total Requests answered, per endpoint, expert and reason.",
                "# TYPE ir3de_requests_total counter",
                *(
                    f'ir3de_requests_total{{endpoint="{e}",expert="{x}",reason="{r}"}} {n}'
                    for (e, x, r), n in sorted(self._requests.items())
                ),
                "# HELP ir3de_tokens_total Prompt and completion tokens per expert (a stream once it ends).",
                "# TYPE ir3de_tokens_total counter",
                *(f'ir3de_tokens_total{{expert="{x}",kind="{k}"}} {n}' for (x, k), n in sorted(self._tokens.items())),
                "# HELP ir3de_fallbacks_total Requests sent to the fallback expert because the router was unsure.",
                "# TYPE ir3de_fallbacks_total counter",
                *(f'ir3de_fallbacks_total{{expert="{x}"}} {n}' for x, n in sorted(self._fallbacks.items())),
                "# HELP ir3de_errors_total Requests refused or failed, per HTTP status.",
                "# TYPE ir3de_errors_total counter",
                *(f'ir3de_errors_total{{status="{s}"}} {n}' for s, n in sorted(self._errors.items())),
                "# HELP ir3de_routing_seconds Time spent choosing the expert of a request.",
                "# TYPE ir3de_routing_seconds histogram",
                *(
                    f'ir3de_routing_seconds_bucket{{le="{bound}"}} {count}'
                    for bound, count in zip(_BUCKETS, self._latency_buckets, strict=True)
                ),
                f'ir3de_routing_seconds_bucket{{le="+Inf"}} {self._latency_count}',
                f"ir3de_routing_seconds_sum {self._latency_sum}",
                f"ir3de_routing_seconds_count {self._latency_count}",
                "# HELP ir3de_router_version_info The router version this server answers with.",
                "# TYPE ir3de_router_version_info gauge",
                f'ir3de_router_version_info{{version="{router_version}"}} 1',
                "# HELP ir3de_expert_edits_total Experts added and removed through this server's admin API.",
                "# TYPE ir3de_expert_edits_total counter",
                *(f'ir3de_expert_edits_total{{action="{a}"}} {self._edits[a]}' for a in ("add", "remove")),
            ]
        return "\n".join(lines) + "\n"
