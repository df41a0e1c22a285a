# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Route, then generate: each prompt goes to its expert, prompts of one expert are generated as one padded batch.

Results come back in input order with the chosen expert, how sure the router was (its margin and calibrated top
probability) and why that expert was used (`"routed"`, `"forced"` or `"fallback"`). With a ``fallback_expert``, the
prompts the router is not `confident` about (no usable token, or a calibrated top probability under
``config.min_confidence``, see `ir3de_hf.calibration`) go to the fallback.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from transformers import TextIteratorStreamer

from .experts import ExpertPool, LoadedExpert

if TYPE_CHECKING:
    from .modeling_ir3de import IR3DERouterModel

__all__ = ["Decision", "RoutedGeneration", "RoutedStream", "chat_prompt", "decide", "generate", "generate_stream"]

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class RoutedGeneration:
    """One answer: the prompt, the expert that wrote ``text``, the router's margin and why that expert was used;
    ``confidence`` is the router's top probability (calibrated once `router.calibrate` ran; NaN when forced, and
    ``reason`` is ``"forced"`` whenever ``expert=`` named the experts)."""

    prompt: str
    expert: str
    text: str
    margin: float
    reason: str
    confidence: float = float("nan")


@dataclass
class RoutedStream:
    """A streamed answer: the decision is known at once, ``chunks`` yields text as the expert writes it."""

    prompt: str
    expert: str
    margin: float
    reason: str
    chunks: Iterator[str]
    confidence: float = float("nan")

    def __iter__(self) -> Iterator[str]:
        return self.chunks


class Decision(NamedTuple):
    """Which expert answers a prompt, and why."""

    expert: str
    margin: float
    reason: str
    confidence: float


def decide(
    router: IR3DERouterModel,
    prompts: Sequence[str],
    *,
    expert: str | Sequence[str] | None = None,
    fallback_expert: str | None = None,
    min_margin: float | None = None,
) -> list[Decision]:
    """One [`Decision`] per prompt: the forced expert (``expert=``: one name for all prompts, or a list with one
    name per prompt), the routed one, or the fallback when the router is not ``confident`` (no evidence, or a top
    probability under ``config.min_confidence``) or its margin is under ``min_margin``."""
    _check_prompts(prompts)
    _check_min_margin(min_margin)
    if fallback_expert is not None:
        _check_expert(router, fallback_expert, "fallback_expert")
    if expert is not None:
        return [Decision(name, float("nan"), "forced", float("nan")) for name in _forced(router, expert, len(prompts))]
    routed = router.route(list(prompts), token_details=False)
    assert routed.expert_names is not None and routed.margins is not None and routed.no_evidence is not None
    assert routed.probabilities is not None and routed.confident is not None
    top = routed.probabilities.max(dim=1).values.tolist()
    decisions = []
    for index, (name, margin, empty, sure, confidence) in enumerate(
        zip(
            routed.expert_names,
            routed.margins.tolist(),
            routed.no_evidence.tolist(),
            routed.confident.tolist(),
            top,
            strict=True,
        )
    ):
        unsure = not sure or (min_margin is not None and margin < min_margin)
        if unsure and fallback_expert is not None:
            decisions.append(Decision(fallback_expert, margin, "fallback", confidence))
        elif empty or name is None:
            raise ValueError(
                f"Prompt {index} has no token the router can use (only special tokens); pass fallback_expert=..."
            )
        else:
            decisions.append(Decision(name, margin, "routed", confidence))
    return decisions


def generate(
    router: IR3DERouterModel,
    pool: ExpertPool,
    prompts: str | Sequence[str],
    *,
    expert: str | Sequence[str] | None = None,
    fallback_expert: str | None = None,
    min_margin: float | None = None,
    use_chat_template: bool | None = None,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> list[RoutedGeneration]:
    """Routes ``prompts`` and lets each chosen expert answer its group in batches of ``batch_size``.

    ``expert=`` skips routing: one name forces that expert for every prompt, a list names each prompt's expert (as
    long as ``prompts``; a server that routed the prompts itself passes its choices). Prompts for different adapters
    of one base model share batches (peft mixed-adapter batches), so a routed batch costs about what the same batch
    costs on a single expert.

    ``use_chat_template`` (default: when the expert's tokenizer has one) wraps each prompt as a user turn. Prompts
    longer than the expert's context minus ``max_new_tokens`` are truncated from the left (the end is kept).

    Arguments are checked before any expert generates: ``max_new_tokens`` (default 64) must be an int from 1 to
    the chosen experts' context minus one (``max_position_embeddings``: the prompt needs a token), ``min_margin`` a
    finite number and ``batch_size`` an int >= 1; otherwise `ValueError`. Checking the context loads each chosen
    expert first.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check_count("batch_size", batch_size)
    _check_count("max_new_tokens", generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    decisions = decide(router, prompts, expert=expert, fallback_expert=fallback_expert, min_margin=min_margin)
    texts: list[str] = [""] * len(prompts)
    groups: dict[tuple[str, str | None, str], list[int]] = {}
    for index, decision in enumerate(decisions):
        groups.setdefault(pool.batch_key(decision.expert), []).append(index)
    for indices in groups.values():  # every group's expert must fit the answer before any of them generates
        name = decisions[indices[0]].expert
        _check_context(name, pool.get(name), generate_kwargs["max_new_tokens"])
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            experts = [decisions[i].expert for i in chunk]
            distinct = list(dict.fromkeys(experts))
            for name in distinct:  # loads each; the last one fetched is the active adapter
                loaded = pool.get(name)
            # Several adapters of one base in one batch: peft routes each row through its own adapter.
            adapter_names = experts if len(distinct) > 1 else None
            answers = _generate_batch(
                loaded, [prompts[i] for i in chunk], use_chat_template, generate_kwargs, adapter_names
            )
            for index, answer in zip(chunk, answers, strict=True):
                texts[index] = answer
    return [
        RoutedGeneration(prompt, decision.expert, text, decision.margin, decision.reason, decision.confidence)
        for prompt, decision, text in zip(prompts, decisions, texts, strict=True)
    ]


def generate_stream(
    router: IR3DERouterModel,
    pool: ExpertPool,
    prompt: str,
    *,
    expert: str | None = None,
    fallback_expert: str | None = None,
    min_margin: float | None = None,
    use_chat_template: bool | None = None,
    **generate_kwargs: Any,
) -> RoutedStream:
    """Routes one prompt and streams the expert's answer (a `TextIteratorStreamer` fed by a background thread).

    The arguments are checked as in `generate`, before the expert generates.
    """
    _check_count("max_new_tokens", generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    ((name, margin, reason, confidence),) = decide(
        router, [prompt], expert=expert, fallback_expert=fallback_expert, min_margin=min_margin
    )
    loaded = pool.get(name)
    _check_context(name, loaded, generate_kwargs["max_new_tokens"])
    inputs = _encode(loaded, [prompt], use_chat_template, generate_kwargs)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    worker = threading.Thread(
        target=_run_generate, args=(loaded, inputs, {**generate_kwargs, "streamer": streamer}), daemon=True
    )
    worker.start()
    return RoutedStream(prompt, name, margin, reason, iter(streamer), confidence)


def chat_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> tuple[str, bool | None]:
    """The text to hand `generate` for a chat (``[{"role": ..., "content": ...}]``) and the ``use_chat_template``
    to pass with it: the one rule the server and the Space follow.

    A lone user turn is ``(its text, None)``: `generate` templates it as it templates any prompt. A longer chat is
    rendered with the tokenizer's chat template, ``(rendered, False)``; without a template its messages' text is
    joined by blank lines, ``(joined, False)``.
    """
    if not messages:
        raise ValueError("No messages given; a chat needs at least one message.")
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"], None
    if getattr(tokenizer, "chat_template", None):
        return _rendered(tokenizer, messages), False
    return "\n\n".join(message["content"] for message in messages), False


def _rendered(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """``messages`` through the tokenizer's chat template, ending with the assistant's turn to answer."""
    text: str = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return text


def _check_prompts(prompts: Sequence[str]) -> None:
    if not prompts:
        raise ValueError("No prompts given.")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"Prompt {index} is a {type(prompt).__name__}, not a string.")
        if not prompt.strip():
            raise ValueError(f"Prompt {index} is empty; there is nothing to route or answer.")


def _forced(router: IR3DERouterModel, expert: str | Sequence[str], count: int) -> list[str]:
    """The expert of each of ``count`` prompts: ``expert`` for all, or the list's names, each checked."""
    if isinstance(expert, str):
        _check_expert(router, expert, "expert")
        return [expert] * count
    if not isinstance(expert, Sequence):
        raise TypeError(f"expert must be an expert's name or a list of names, got a {type(expert).__name__}.")
    names = list(expert)
    if len(names) != count:
        raise ValueError(
            f"expert= names {len(names)} experts for {count} prompts; give one name per prompt, or one name (a str) "
            "for all of them."
        )
    for index, name in enumerate(names):
        _check_expert(router, name, f"expert[{index}]")
    return names


def _check_expert(router: IR3DERouterModel, name: object, what: str) -> None:
    """``what`` names the argument in the message (``"expert[2]"`` for a list's third name)."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be an expert's name (a str), got a {type(name).__name__}.")
    if name not in router.expert_names:
        raise ValueError(
            f"No expert named {name!r}; the router's experts are: {', '.join(router.expert_names)} (in {what})."
        )


def _check_count(name: str, value: object) -> None:
    """Refuses anything but an int >= 1 (also `True`, ``2.5``, ``"8"``, NaN): transformers would fail deep in a
    batch, or generate nothing."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def _check_min_margin(min_margin: object) -> None:
    """Refuses a `min_margin` that is not a finite number: a NaN compares false with every margin (no fallback ever)
    and a string would fail only after routing."""
    if min_margin is None:
        return
    if isinstance(min_margin, bool) or not isinstance(min_margin, numbers.Real) or not math.isfinite(min_margin):
        raise ValueError(f"min_margin must be a finite number (or None), got {min_margin!r}.")


def _check_context(name: str, loaded: LoadedExpert, max_new_tokens: int) -> None:
    """Refuses ``max_new_tokens`` that leave no room for the prompt in expert ``name``'s context."""
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    if isinstance(context, int) and max_new_tokens >= context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} does not fit expert {name!r}: its context is {context} tokens "
            f"(max_position_embeddings), so max_new_tokens can be at most {context - 1}, leaving the prompt a token."
        )


def _encode(
    loaded: LoadedExpert, prompts: list[str], use_chat_template: bool | None, generate_kwargs: dict[str, Any]
) -> dict[str, torch.Tensor]:
    tokenizer = loaded.tokenizer
    templated = tokenizer.chat_template is not None if use_chat_template is None else use_chat_template
    if templated:
        prompts = [_rendered(tokenizer, [{"role": "user", "content": prompt}]) for prompt in prompts]
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    max_new = generate_kwargs["max_new_tokens"]
    limit = context - max_new if context is not None and context > max_new else None
    encoded = tokenizer(
        prompts,
        return_tensors="pt",
        padding=True,
        truncation=limit is not None,
        max_length=limit,
        add_special_tokens=not templated,
    )
    device = next(loaded.model.parameters()).device
    return {key: value.to(device) for key, value in encoded.items()}


def _run_generate(loaded: LoadedExpert, inputs: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model.generate(**inputs, pad_token_id=loaded.tokenizer.pad_token_id, **kwargs)


def _generate_batch(
    loaded: LoadedExpert,
    prompts: list[str],
    use_chat_template: bool | None,
    generate_kwargs: dict[str, Any],
    adapter_names: list[str] | None,
) -> list[str]:
    inputs = _encode(loaded, prompts, use_chat_template, generate_kwargs)
    if adapter_names is not None:
        generate_kwargs = {**generate_kwargs, "adapter_names": adapter_names}
    output = _run_generate(loaded, inputs, generate_kwargs)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return list(loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
