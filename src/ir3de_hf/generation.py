# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""Route, then generate: each prompt goes to its expert, prompts of one expert are generated as one padded batch.

Results come back in input order with the chosen expert, how sure the router was (its margin and calibrated top
probability), why that expert was used (`"routed"`, `"forced"` or `"fallback"`) and the token counts and finish reason
of the answer. The decision is `ir3de_hf.outputs.decide`'s, the one rule the server and the Space use too: with a
``fallback_expert``, the prompts the router is not `confident` about (no usable token, or under the config's
``min_confidence`` / ``min_margin``, see `ir3de_hf.calibration`) go to the fallback.
"""

from __future__ import annotations

import numbers
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .experts import ExpertPool, LoadedModel
from .outputs import Decision, decide

if TYPE_CHECKING:
    from .modeling_ir3de import IR3DERouterModel

__all__ = [
    "RoutedGeneration",
    "RoutedStream",
    "answer",
    "answer_stream",
    "chat_prompt",
    "decisions",
    "generate",
    "generate_stream",
]

DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class RoutedGeneration:
    """One answer: the prompt, the expert that wrote ``text``, the router's margin and why that expert was used;
    ``confidence`` is the router's top probability (calibrated once `router.calibrate` ran; NaN when forced, and
    ``reason`` is ``"forced"`` whenever ``expert=`` named the experts). ``prompt_tokens`` is the prompt as the expert
    saw it (templated, truncated), ``completion_tokens`` the generated tokens (an end-of-sequence token included) and
    ``finish_reason`` ``"stop"`` (the expert ended its answer) or ``"length"`` (``max_new_tokens`` ran out)."""

    prompt: str
    expert: str
    text: str
    margin: float
    reason: str
    confidence: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class RoutedStream:
    """A streamed answer: the decision and ``prompt_tokens`` are known at once, ``chunks`` yields text as the expert
    writes it; ``completion_tokens`` and ``finish_reason`` are set once the chunks are exhausted (None before)."""

    prompt: str
    expert: str
    margin: float
    reason: str
    chunks: Iterator[str]
    confidence: float
    prompt_tokens: int
    completion_tokens: int | None = None
    finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        return self.chunks


class _Generated(NamedTuple):
    """One row of a batched ``generate``: what `RoutedGeneration` adds to the decision."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def decisions(
    router: IR3DERouterModel,
    prompts: Sequence[str],
    *,
    expert: str | Sequence[str] | None = None,
    fallback_expert: str | None = None,
) -> list[Decision]:
    """One [`Decision`] per prompt: the forced expert (``expert=``: one name for all prompts, or a list with one
    name per prompt), else `ir3de_hf.outputs.decide` on the routed prompts (the fallback where the router is not
    ``confident``)."""
    _check_prompts(prompts)
    if fallback_expert is not None:
        _check_expert(router, fallback_expert, "fallback_expert")
    if expert is not None:
        return [Decision(name, "forced") for name in _forced(router, expert, len(prompts))]
    return decide(router.route(list(prompts), token_details=False), router.expert_names, fallback_expert)


def generate(
    router: IR3DERouterModel,
    pool: ExpertPool,
    prompts: str | Sequence[str],
    *,
    expert: str | Sequence[str] | None = None,
    fallback_expert: str | None = None,
    use_chat_template: bool | None = None,
    batch_size: int = 8,
    **generate_kwargs: Any,
) -> list[RoutedGeneration]:
    """Routes ``prompts`` and lets each chosen expert answer its group in batches of ``batch_size``.

    ``expert=`` skips routing: one name forces that expert for every prompt, a list names each prompt's expert (as
    long as ``prompts``). Prompts for different adapters of one base model share batches (peft mixed-adapter
    batches), so a routed batch costs about what the same batch costs on a single expert.

    ``use_chat_template`` (default: when the expert's tokenizer has one) wraps each prompt as a user turn. Prompts
    longer than the expert's context minus ``max_new_tokens`` are truncated from the left (the end is kept).

    Arguments are checked before any expert generates: ``max_new_tokens`` (default 64) must be an int from 1 to
    the chosen experts' context minus one (``max_position_embeddings``: the prompt needs a token) and ``batch_size``
    an int >= 1; otherwise `ValueError`. Checking the context loads each chosen expert first.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    _check_count("batch_size", batch_size)
    _check_generate_kwargs(generate_kwargs)
    chosen = decisions(router, prompts, expert=expert, fallback_expert=fallback_expert)
    return answer(pool, prompts, chosen, use_chat_template=use_chat_template, batch_size=batch_size, **generate_kwargs)


def answer(
    pool: ExpertPool,
    prompts: Sequence[str],
    decided: Sequence[Decision],
    *,
    use_chat_template: bool | None = None,
    batch_size: int = 8,
    cancelled: Callable[[], bool] | None = None,
    **generate_kwargs: Any,
) -> list[RoutedGeneration]:
    """Lets each decision's expert answer its prompt (`generate` after the decisions; a server that decided itself
    calls this), grouped and batched as `generate` describes, with the same checks.

    ``cancelled`` (called from the generating thread at each new token) abandons the answers once it returns True:
    generation stops there, so a server whose client went away frees its worker; the answers are cut short.
    """
    prompts = list(prompts)
    if len(decided) != len(prompts):
        raise ValueError(f"{len(decided)} decisions for {len(prompts)} prompts; give one decision per prompt.")
    _check_count("batch_size", batch_size)
    _check_generate_kwargs(generate_kwargs)
    if cancelled is not None:
        generate_kwargs = _stopped_by(cancelled, generate_kwargs)
    produced: dict[int, _Generated] = {}
    groups: dict[tuple[str, str | None, str], list[int]] = {}
    for index, decision in enumerate(decided):
        groups.setdefault(pool.batch_key(decision.expert), []).append(index)
    for indices in groups.values():  # every group's expert must fit the answer before any of them generates
        name = decided[indices[0]].expert
        _check_context(name, pool.get(name), generate_kwargs["max_new_tokens"])
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            experts = [decided[i].expert for i in chunk]
            distinct = list(dict.fromkeys(experts))
            for name in distinct:  # loads each; the last one fetched is the active adapter
                loaded = pool.get(name)
            # Several adapters of one base in one batch: peft routes each row through its own adapter.
            adapter_names = experts if len(distinct) > 1 else None
            answers = _generate_batch(
                loaded, [prompts[i] for i in chunk], use_chat_template, generate_kwargs, adapter_names
            )
            for index, result in zip(chunk, answers, strict=True):
                produced[index] = result
    return [
        RoutedGeneration(
            prompt,
            decision.expert,
            produced[index].text,
            decision.margin,
            decision.reason,
            decision.confidence,
            produced[index].prompt_tokens,
            produced[index].completion_tokens,
            produced[index].finish_reason,
        )
        for index, (prompt, decision) in enumerate(zip(prompts, decided, strict=True))
    ]


def generate_stream(
    router: IR3DERouterModel,
    pool: ExpertPool,
    prompt: str,
    *,
    expert: str | None = None,
    fallback_expert: str | None = None,
    use_chat_template: bool | None = None,
    **generate_kwargs: Any,
) -> RoutedStream:
    """Routes one prompt and streams the expert's answer (a `TextIteratorStreamer` fed by a background thread).

    The arguments are checked as in `generate`, before the expert generates.
    """
    _check_generate_kwargs(generate_kwargs)
    (decision,) = decisions(router, [prompt], expert=expert, fallback_expert=fallback_expert)
    return answer_stream(pool, prompt, decision, use_chat_template=use_chat_template, **generate_kwargs)


def answer_stream(
    pool: ExpertPool,
    prompt: str,
    decision: Decision,
    *,
    use_chat_template: bool | None = None,
    cancelled: Callable[[], bool] | None = None,
    **generate_kwargs: Any,
) -> RoutedStream:
    """Streams ``decision``'s expert's answer to ``prompt`` (`generate_stream` after the decision; the server and
    the Space, which decided themselves, call this).

    Generation stops at the next token when the chunks are closed before their end (a client that went away) or
    when ``cancelled`` (as in `answer`) returns True; a failure of the generating thread is raised by the chunks.
    """
    _check_generate_kwargs(generate_kwargs)
    loaded = pool.get(decision.expert)
    _check_context(decision.expert, loaded, generate_kwargs["max_new_tokens"])
    inputs = _encode(loaded, [prompt], use_chat_template, generate_kwargs)
    streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)
    closed = threading.Event()
    kwargs = _stopped_by(lambda: closed.is_set() or (cancelled is not None and cancelled()), generate_kwargs)
    output: list[torch.Tensor] = []
    failure: list[Exception] = []

    def run() -> None:
        try:
            output.append(_run_generate(loaded, inputs, {**kwargs, "streamer": streamer}))
        except Exception as error:  # kept for the consumer; ending the streamer stops its wait
            failure.append(error)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()

    def chunks() -> Iterator[str]:
        try:
            yield from streamer
        finally:  # closed early: stop generating (after the last chunk this stops nothing)
            closed.set()
            worker.join()
        if failure:
            raise failure[0]
        (generated,) = _results(loaded, inputs, output[0], generate_kwargs["max_new_tokens"])
        stream.completion_tokens, stream.finish_reason = generated.completion_tokens, generated.finish_reason

    prompt_tokens = int(inputs["attention_mask"][0].sum())
    stream = RoutedStream(
        prompt, decision.expert, decision.margin, decision.reason, chunks(), decision.confidence, prompt_tokens
    )
    return stream


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


def _check_generate_kwargs(generate_kwargs: dict[str, Any]) -> None:
    """Sets the default ``max_new_tokens`` and checks it; ``min_margin`` moved to the router's config."""
    if "min_margin" in generate_kwargs:
        raise TypeError(
            "min_margin is a setting of the router now, used by every surface: set router.config.min_margin = "
            f"{generate_kwargs['min_margin']!r} instead of passing it to generate."
        )
    _check_count("max_new_tokens", generate_kwargs.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))


def _check_context(name: str, loaded: LoadedModel, max_new_tokens: int) -> None:
    """Refuses ``max_new_tokens`` that leave no room for the prompt in expert ``name``'s context."""
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    if isinstance(context, int) and max_new_tokens >= context:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} does not fit expert {name!r}: its context is {context} tokens "
            f"(max_position_embeddings), so max_new_tokens can be at most {context - 1}, leaving the prompt a token."
        )


def _encode(
    loaded: LoadedModel, prompts: list[str], use_chat_template: bool | None, generate_kwargs: dict[str, Any]
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


class _Cancelled(StoppingCriteria):
    """Stops every row of a ``generate`` call once ``cancelled()`` is True (checked after each token)."""

    def __init__(self, cancelled: Callable[[], bool]) -> None:
        self.cancelled = cancelled

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = torch.full((input_ids.shape[0],), self.cancelled(), dtype=torch.bool, device=input_ids.device)
        return stop  # type: ignore[return-value]


def _stopped_by(cancelled: Callable[[], bool], generate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``generate_kwargs`` with `_Cancelled` added to the caller's own ``stopping_criteria``, if any."""
    criteria = StoppingCriteriaList([*generate_kwargs.get("stopping_criteria", []), _Cancelled(cancelled)])
    return {**generate_kwargs, "stopping_criteria": criteria}


def _run_generate(loaded: LoadedModel, inputs: dict[str, torch.Tensor], kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model.generate(**inputs, pad_token_id=loaded.tokenizer.pad_token_id, **kwargs)


def _generate_batch(
    loaded: LoadedModel,
    prompts: list[str],
    use_chat_template: bool | None,
    generate_kwargs: dict[str, Any],
    adapter_names: list[str] | None,
) -> list[_Generated]:
    inputs = _encode(loaded, prompts, use_chat_template, generate_kwargs)
    if adapter_names is not None:
        generate_kwargs = {**generate_kwargs, "adapter_names": adapter_names}
    output = _run_generate(loaded, inputs, generate_kwargs)
    return _results(loaded, inputs, output, generate_kwargs["max_new_tokens"])


def _results(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], output: torch.Tensor, max_new_tokens: int
) -> list[_Generated]:
    """Per row: the answer's text, the prompt's tokens, the generated tokens up to the first end-of-sequence token
    (included; what follows is padding), and ``"stop"`` when there is one, else ``"length"``."""
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    ends = torch.isin(new_tokens, torch.tensor(_eos_ids(loaded), dtype=new_tokens.dtype, device=new_tokens.device))
    texts = loaded.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    results = []
    for text, prompt_mask, row_ends in zip(texts, inputs["attention_mask"], ends, strict=True):
        stopped = bool(row_ends.any())
        count = int(row_ends.int().argmax()) + 1 if stopped else int(row_ends.numel())
        finish = "stop" if stopped or count < max_new_tokens else "length"
        results.append(_Generated(text, int(prompt_mask.sum()), count, finish))
    return results


def _eos_ids(loaded: LoadedModel) -> list[int]:
    """The ids that end an answer: the generation config's ``eos_token_id`` (one or a list) and the tokenizer's."""
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    ids.append(loaded.tokenizer.eos_token_id)
    return sorted({int(i) for i in ids if i is not None})
