# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DERouterModel: a frozen token-embedding encoder, per-expert token histograms and a closed-form ridge head.

The histograms are the model's only learned state (saved in ``model.safetensors``). The ridge head ``(W, beta)``,
the score table ``S = E W + beta`` (V x N) and the per-token entropy are derived from them lazily after loading and
re-derived whenever the statistics change, so routing a prompt is a gather of ``S`` rows and a vote.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, cached_file

from ._saving import atomic_directory
from .aggregation import aggregate
from .configuration_ir3de import ExpertSpec, IR3DEConfig
from .experts import ExpertPool
from .generation import RoutedGeneration, RoutedStream, generate, generate_stream
from .statistics import (
    augmented_moments,
    check_token_ids,
    normalize_columns,
    ridge_solve,
    token_entropy,
    token_histogram,
)
from .tokenization import count_text_tokens, encode_texts, pad_token_ids, vocabulary_fingerprint

__all__ = ["IR3DERouterModel", "IR3DERouterOutput"]

_TEXT_BATCH = 1024


@dataclass
class IR3DERouterOutput(ModelOutput):
    """
    Routing decision for a batch of B prompts of L tokens over N experts.

    Args:
        logits (`torch.FloatTensor` of shape `(B, N)`):
            Aggregated expert scores: vote shares for `majority_vote` / `entropy_top_k`, mean token scores for `mean`.
        expert_ids (`torch.LongTensor` of shape `(B,)`):
            Chosen expert per prompt; `-1` for a prompt with no usable token (see `no_evidence`).
        margins (`torch.FloatTensor` of shape `(B,)`):
            Best minus second-best logit (`inf` with a single expert, 0 without evidence).
        token_scores (`torch.FloatTensor` of shape `(B, L, N)`):
            Per-token expert scores `W^T E[t] + beta`, for explanations.
        token_votes (`torch.LongTensor` of shape `(B, L)`):
            The expert each token prefers; `-1` at padding and ignored tokens.
        voting_mask (`torch.BoolTensor` of shape `(B, L)`):
            The tokens that took part in the decision (all usable tokens, or the top-k of `entropy_top_k`).
        no_evidence (`torch.BoolTensor` of shape `(B,)`):
            True for prompts that are empty, all padding or only ignored tokens.
        expert_names (`list[str | None]`):
            Name of the chosen expert per prompt (`None` where `no_evidence`).
    """

    logits: torch.Tensor | None = None
    expert_ids: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    token_scores: torch.Tensor | None = None
    token_votes: torch.Tensor | None = None
    voting_mask: torch.Tensor | None = None
    no_evidence: torch.Tensor | None = None
    expert_names: list[str | None] | None = None


class _RoutingTables(NamedTuple):
    key: tuple[Any, ...]
    weight: torch.Tensor  # (d, N) float64, unnormalised ridge solution
    bias: torch.Tensor  # (N,) float64
    scores: torch.Tensor  # (V, N) float32, with the configured normalisation
    entropy: torch.Tensor  # (V,) float32
    votes: torch.Tensor  # (V,) int64, the argmax expert of each token
    never_counted: torch.Tensor  # (V,) bool


class IR3DERouterModel(PreTrainedModel):
    r"""
    The IR3DE linear router (Fanì & Ersoy, 2026) as a `PreTrainedModel`.

    Build one from the input embeddings of a causal LM that shares the experts' tokenizer, add experts from their
    text (fitting is counting tokens), then route prompts. Experts can be added, updated or removed at any time; the
    result equals a from-scratch fit on the new expert set.

    Example:

    ```python
    >>> import torch
    >>> from ir3de_hf import IR3DERouterModel
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> router = IR3DERouterModel.from_encoder(torch.nn.Embedding(100, 16))
    >>> router.add_expert("low", input_ids=torch.randint(0, 50, (8, 32)))
    >>> router.add_expert("high", input_ids=torch.randint(50, 100, (8, 32)))
    >>> router.route(torch.tensor([[3, 7, 11], [60, 70, 80]])).expert_names
    ['low', 'high']
    ```
    """

    config_class = IR3DEConfig
    config: IR3DEConfig
    base_model_prefix = "ir3de"
    main_input_name = "input_ids"
    _no_split_modules: list[str] = []
    _keep_in_fp32_modules_strict = ["embed_tokens"]
    expert_counts: torch.Tensor

    def __init__(self, config: IR3DEConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.register_buffer(
            "expert_counts", torch.zeros(len(config.experts), config.vocab_size, dtype=torch.int64), persistent=True
        )
        self.tokenizer: Any = None
        self._expert_pool: ExpertPool | None = None
        self._tables: _RoutingTables | None = None
        self._expert_moments: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(config.experts)
        self.register_load_state_dict_post_hook(lambda module, _: module._invalidate(forget_moments=True))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, IR3DERouterModel):
            init.zeros_(module.expert_counts)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_encoder(
        cls,
        encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding,
        tokenizer: Any = None,
        **config_kwargs: Any,
    ) -> IR3DERouterModel:
        """Creates an empty router (no experts) whose frozen encoder is a copy of ``encoder``'s input embeddings.

        Args:
            encoder: a Hub id or local path of a causal LM, a loaded `PreTrainedModel`, or an `nn.Embedding`.
            tokenizer: the tokenizer of the encoder (a tokenizer object, Hub id or path). Loaded from ``encoder``
                when that is a Hub id or path. Needed to add experts from text and to route text.
            **config_kwargs: fields of [`IR3DEConfig`] (`ridge_lambda`, `aggregation`, `top_k`, ...).

        By default the tokenizer's special tokens (and padding) are never counted and never vote; pass
        ``ignored_token_ids=[...]`` to choose them yourself.
        """
        weight, encoder_ref = _encoder_embeddings(encoder, config_kwargs.get("encoder_revision"))
        if isinstance(encoder, str | os.PathLike) and tokenizer is None:
            tokenizer = encoder
        if isinstance(tokenizer, str | os.PathLike):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer, revision=config_kwargs.get("encoder_revision"))
        vocab_size, hidden_size = weight.shape
        settings: dict[str, Any] = {"encoder": encoder_ref}
        if tokenizer is not None:
            if len(tokenizer) > vocab_size:
                raise ValueError(
                    f"The tokenizer has {len(tokenizer)} tokens but the encoder's embedding table has only "
                    f"{vocab_size} rows: they come from different models. Pass the encoder's own tokenizer."
                )
            settings.update(
                pad_token_id=tokenizer.pad_token_id,
                ignored_token_ids=list(tokenizer.all_special_ids),
                tokenizer_fingerprint=vocabulary_fingerprint(tokenizer),
            )
        settings.update(config_kwargs)
        config = IR3DEConfig(vocab_size=vocab_size, hidden_size=hidden_size, **settings)
        router = cls(config)
        with torch.no_grad():
            router.embed_tokens.weight.copy_(weight)
        router.tokenizer = tokenizer
        return router

    # ------------------------------------------------------------------ experts

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts, in routing order (index = expert id)."""
        return self.config.expert_names

    @property
    def num_experts(self) -> int:
        return len(self.config.experts)

    def add_expert(
        self,
        name: str,
        *,
        texts: str | Sequence[str] | None = None,
        input_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
        dataset: Any = None,
        text_column: str = "text",
        histogram: torch.Tensor | None = None,
        source: str | None = None,
        revision: str | None = None,
        description: str | None = None,
        base_model: str | None = None,
    ) -> None:
        """Adds an expert from its domain data; the ridge head is re-solved on the next routing call.

        Give exactly one of ``texts`` (strings, tokenized with the router's tokenizer), ``input_ids`` (with an
        optional ``attention_mask``; masked positions are not counted), ``dataset`` (a `datasets.Dataset` or
        `IterableDataset` with a ``text_column``) or ``histogram`` (precomputed token counts, a length-V vector).
        ``source``/``revision`` say where the expert model lives (Hub id or local path); ``base_model`` marks a PEFT
        adapter.
        """
        if name in self.expert_names:
            raise ValueError(f"An expert named {name!r} already exists; use update_expert({name!r}, ...) instead.")
        entry = ExpertSpec(name, source, revision, description, base_model)
        counts = self._count(name, texts, input_ids, attention_mask, dataset, text_column, histogram)
        if entry.source is not None:
            self.expert_pool.register(entry)
        self.expert_counts = torch.cat([self.expert_counts, counts[None].to(self.expert_counts.device)])
        self.config.experts = [*self.config.experts, entry.to_dict()]
        self._expert_moments.append(None)
        self._invalidate()

    def update_expert(
        self,
        name: str,
        *,
        texts: str | Sequence[str] | None = None,
        input_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
        dataset: Any = None,
        text_column: str = "text",
        histogram: torch.Tensor | None = None,
        source: str | None = None,
        revision: str | None = None,
        description: str | None = None,
        base_model: str | None = None,
    ) -> None:
        """Replaces the statistics of expert ``name`` (same arguments as [`add_expert`]); registry fields that are
        given replace the old ones, the others are kept."""
        index = self._expert_index(name)
        old = self.config.expert_specs[index]
        entry = ExpertSpec(
            name,
            source if source is not None else old.source,
            revision if revision is not None else old.revision,
            description if description is not None else old.description,
            base_model if base_model is not None else old.base_model,
        )
        counts = self._count(name, texts, input_ids, attention_mask, dataset, text_column, histogram)
        if entry.source is not None and entry != old:
            self.expert_pool.register(entry)
        updated = self.expert_counts.clone()
        updated[index] = counts.to(updated.device)
        self.expert_counts = updated
        experts = list(self.config.experts)
        experts[index] = entry.to_dict()
        self.config.experts = experts
        self._expert_moments[index] = None
        self._invalidate()

    def remove_expert(self, name: str) -> None:
        """Removes expert ``name`` and its statistics; routing afterwards equals a fit without it."""
        index = self._expert_index(name)
        if self._expert_pool is not None:
            self._expert_pool.unregister(name, missing_ok=True)
        keep = [i for i in range(self.num_experts) if i != index]
        self.expert_counts = self.expert_counts[keep].clone()
        self.config.experts = [self.config.experts[i] for i in keep]
        del self._expert_moments[index]
        self._invalidate()

    def _expert_index(self, name: str) -> int:
        if name not in self.expert_names:
            known = ", ".join(self.expert_names) or "none"
            raise ValueError(f"No expert named {name!r}; the router's experts are: {known}.")
        return self.expert_names.index(name)

    def _count(
        self,
        name: str,
        texts: str | Sequence[str] | None,
        input_ids: torch.Tensor | Sequence[Sequence[int]] | None,
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None,
        dataset: Any,
        text_column: str,
        histogram: torch.Tensor | None,
    ) -> torch.Tensor:
        given = [label for label, value in _sources(texts, input_ids, dataset, histogram) if value is not None]
        if len(given) != 1:
            raise ValueError(
                f"Expert {name!r}: give exactly one of texts=, input_ids=, dataset= or histogram= (got "
                f"{', '.join(given) or 'none'})."
            )
        if attention_mask is not None and input_ids is None:
            raise ValueError(f"Expert {name!r}: attention_mask= only goes with input_ids=.")
        ignored = self.config.never_counted_ids
        vocab_size = self.config.vocab_size
        if histogram is not None:
            counts = _check_histogram(histogram, vocab_size).clone()
            counts[ignored] = 0
        elif input_ids is not None:
            ids, mask = _as_id_tensors(input_ids, attention_mask)
            counts = token_histogram(ids, mask, vocab_size=vocab_size, ignored_token_ids=ignored)
        else:
            batches, total = _text_batches(name, texts, dataset, text_column)
            counts = count_text_tokens(
                self._require_tokenizer("add an expert from text"),
                batches,
                vocab_size=vocab_size,
                ignored_token_ids=ignored,
                total=total,
                desc=f"Counting tokens of {name!r}",
            )
        if int(counts.sum()) == 0:
            raise ValueError(
                f"Expert {name!r} has no usable token (empty text, all padding or only ignored special tokens)."
            )
        return counts

    def _require_tokenizer(self, action: str) -> Any:
        if self.tokenizer is None:
            raise ValueError(
                f"This router has no tokenizer, which is needed to {action}. Pass tokenizer= to "
                "IR3DERouterModel.from_encoder(...), set router.tokenizer, or give token ids instead of text."
            )
        return self.tokenizer

    # ------------------------------------------------------------------ solving

    def _invalidate(self, forget_moments: bool = False) -> None:
        self._tables = None
        if forget_moments:
            self._expert_moments = [None] * self.num_experts

    def _moments(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A`` and ``B`` of all experts. Each expert's ``(A_n, b_n)`` is cached, so adding an expert costs one
        product over its own tokens and removing one costs nothing but the re-solve."""
        for index, cached in enumerate(self._expert_moments):
            if cached is None or cached[0].device != embedding.device:
                a_n, b_n = augmented_moments(embedding, self.expert_counts[index : index + 1])
                self._expert_moments[index] = (a_n, b_n[:, 0])
        moments = [cached for cached in self._expert_moments if cached is not None]
        return torch.stack([a_n for a_n, _ in moments]).sum(dim=0), torch.stack([b_n for _, b_n in moments], dim=1)

    def _routing_tables(self) -> _RoutingTables:
        if self.num_experts == 0:
            raise ValueError("The router has no experts yet; add one with router.add_expert(name, texts=[...]).")
        embedding = self.embed_tokens.weight
        key = (self.config.ridge_lambda, self.config.normalize_columns, embedding.device, self.num_experts)
        if self._tables is not None and self._tables.key == key:
            return self._tables
        a, b = self._moments(embedding)
        weight, bias = ridge_solve(a, b, self.config.ridge_lambda)
        scaled_weight, scaled_bias = (
            normalize_columns(weight, bias) if self.config.normalize_columns else (weight, bias)
        )
        scores = (embedding.to(torch.float64) @ scaled_weight + scaled_bias).to(torch.float32)
        never_counted = torch.zeros(self.config.vocab_size, dtype=torch.bool, device=embedding.device)
        never_counted[self.config.never_counted_ids] = True
        self._tables = _RoutingTables(
            key, weight, bias, scores, token_entropy(scores), scores.argmax(dim=1), never_counted
        )
        return self._tables

    def ridge_solution(self, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The ridge head ``(W, beta)``: ``W`` is (d, N), ``beta`` is (N,), both float64.

        With ``normalize=True`` each expert column and its bias are divided by the column norm (what routing uses
        when ``config.normalize_columns`` is set).
        """
        tables = self._routing_tables()
        if normalize:
            return normalize_columns(tables.weight, tables.bias)
        return tables.weight.clone(), tables.bias.clone()

    # ------------------------------------------------------------------ routing

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> IR3DERouterOutput:
        """Routes a batch of token ids (B x L); positions where ``attention_mask`` is 0 never vote."""
        tables = self._routing_tables()
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
            attention_mask = attention_mask[None] if attention_mask is not None else None
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}.")
        device = tables.scores.device
        input_ids = input_ids.to(device)
        if attention_mask is None:
            ids = check_token_ids(input_ids, self.config.vocab_size)
            usable = ~tables.never_counted[ids]
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has shape "
                f"{tuple(input_ids.shape)}; they must match."
            )
        else:
            present = attention_mask.to(device=device, dtype=torch.bool)
            check_token_ids(input_ids[present], self.config.vocab_size)
            ids = input_ids.masked_fill(~present, 0).to(torch.long)
            usable = present & ~tables.never_counted[ids]
        token_votes = tables.votes[ids]
        token_scores = tables.scores[ids]
        decision = aggregate(
            token_scores,
            usable,
            self.config.aggregation,
            top_k=self.config.top_k,
            token_entropies=tables.entropy[ids] if self.config.aggregation == "entropy_top_k" else None,
            token_votes=token_votes,
        )
        no_evidence = ~usable.any(dim=1)
        names = self.expert_names
        return IR3DERouterOutput(
            logits=decision.logits,
            expert_ids=decision.expert_ids,
            margins=_margins(decision.logits, no_evidence),
            token_scores=token_scores,
            token_votes=token_votes.masked_fill(~usable, -1),
            voting_mask=decision.voting_mask,
            no_evidence=no_evidence,
            expert_names=[names[i] if i >= 0 else None for i in decision.expert_ids.tolist()],
        )

    @torch.inference_mode()
    def route(
        self,
        texts_or_input_ids: str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]],
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> IR3DERouterOutput:
        """Routes prompts given as text (one string or a list) or as token ids (a tensor or lists of ids).

        Text is tokenized with the router's tokenizer without special tokens. An empty prompt gets
        ``expert_ids == -1`` and ``no_evidence == True`` rather than an error.
        """
        if isinstance(texts_or_input_ids, str):
            texts_or_input_ids = [texts_or_input_ids]
        if _is_text_batch(texts_or_input_ids):
            if attention_mask is not None:
                raise ValueError("attention_mask= only goes with token ids, not with text.")
            tokenizer = self._require_tokenizer("route text")
            input_ids, attention_mask = pad_token_ids(encode_texts(tokenizer, texts_or_input_ids))  # type: ignore[arg-type]
        else:
            input_ids, attention_mask = _as_id_tensors(texts_or_input_ids, attention_mask)  # type: ignore[arg-type]
        return self(input_ids=input_ids, attention_mask=attention_mask)

    # ------------------------------------------------------------------ generation

    @property
    def expert_pool(self) -> ExpertPool:
        """The [`ExpertPool`] that loads the experts for `generate` (created on first use, on CPU in the experts'
        own dtype). Assign your own pool to choose dtype, placement and memory budget."""
        if self._expert_pool is None:
            self._expert_pool = ExpertPool(tokenizer_fingerprint=self.config.tokenizer_fingerprint)
        return self._expert_pool

    @expert_pool.setter
    def expert_pool(self, pool: ExpertPool) -> None:
        if pool.tokenizer_fingerprint is None:
            pool.tokenizer_fingerprint = self.config.tokenizer_fingerprint
        self._expert_pool = pool

    def _registered_pool(self) -> ExpertPool:
        pool = self.expert_pool
        for spec in self.config.expert_specs:
            if spec.source is not None and spec.name not in pool.names:
                pool.register(spec)
        return pool

    def generate(self, prompts: str | Sequence[str], **kwargs: Any) -> list[RoutedGeneration]:
        """Routes ``prompts`` and returns each chosen expert's answer, in input order.

        Keyword arguments: ``expert=`` forces one expert, ``fallback_expert=`` and ``min_margin=`` catch prompts the
        router is unsure of, ``use_chat_template=``, ``batch_size=``; the rest go to the expert's `generate`
        (``max_new_tokens``, ``do_sample``...). See [`ir3de_hf.generation.generate`].
        """
        return generate(self, self._registered_pool(), prompts, **kwargs)

    def generate_stream(self, prompt: str, **kwargs: Any) -> RoutedStream:
        """Routes one prompt and streams its expert's answer: iterate over the result for text chunks."""
        return generate_stream(self, self._registered_pool(), prompt, **kwargs)

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> None:  # type: ignore[override]
        """Saves config, statistics, encoder and tokenizer atomically: if anything fails midway, a previous save in
        ``save_directory`` stays intact and loadable."""
        if kwargs.pop("push_to_hub", False):
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; call router.push_to_hub(repo_id).")
        self.config.check()
        with atomic_directory(save_directory) as staging:
            super().save_pretrained(staging, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(staging)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any
    ) -> IR3DERouterModel:
        """Loads a router saved with `save_pretrained` (local directory or Hub id), with its tokenizer if saved."""
        router = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        router.tokenizer = _saved_tokenizer(pretrained_model_name_or_path, kwargs)
        return router


def _encoder_embeddings(
    encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding, revision: str | None
) -> tuple[torch.Tensor, str | None]:
    embeddings: nn.Module
    reference: str | None
    if isinstance(encoder, str | os.PathLike):
        embeddings = AutoModelForCausalLM.from_pretrained(encoder, revision=revision, dtype=torch.float32)
        embeddings, reference = embeddings.get_input_embeddings(), str(encoder)
    elif isinstance(encoder, PreTrainedModel):
        embeddings, reference = encoder.get_input_embeddings(), encoder.config.name_or_path or None
    elif isinstance(encoder, nn.Embedding):
        embeddings, reference = encoder, None
    else:
        raise TypeError(
            "encoder must be a Hub id or local path, a PreTrainedModel or an nn.Embedding, got "
            f"{type(encoder).__name__}."
        )
    weight = embeddings.weight
    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise TypeError(f"The encoder's input embeddings have no 2-D weight table ({type(embeddings).__name__}).")
    return weight.detach().float(), reference


def _saved_tokenizer(name_or_path: str | os.PathLike[str], load_kwargs: dict[str, Any]) -> Any:
    hub_kwargs = {
        key: load_kwargs[key]
        for key in ("revision", "cache_dir", "token", "local_files_only", "subfolder")
        if key in load_kwargs
    }
    found = cached_file(
        name_or_path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    return AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs) if found else None


def _sources(texts: Any, input_ids: Any, dataset: Any, histogram: Any) -> list[tuple[str, Any]]:
    return [("texts=", texts), ("input_ids=", input_ids), ("dataset=", dataset), ("histogram=", histogram)]


def _text_batches(name: str, texts: Any, dataset: Any, text_column: str) -> tuple[Any, int | None]:
    if texts is not None:
        texts = [texts] if isinstance(texts, str) else list(texts)
        return (texts[i : i + _TEXT_BATCH] for i in range(0, len(texts), _TEXT_BATCH)), len(texts)
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_column not in columns:
        raise ValueError(
            f"Expert {name!r}: the dataset has no column {text_column!r} (columns: {', '.join(columns)}); "
            "pass text_column=..."
        )
    total = len(dataset) if hasattr(dataset, "__len__") else None
    return (batch[text_column] for batch in dataset.iter(batch_size=_TEXT_BATCH)), total


def _is_text_batch(value: Any) -> bool:
    return isinstance(value, Sequence) and len(value) > 0 and all(isinstance(item, str) for item in value)


def _as_id_tensors(
    input_ids: torch.Tensor | Sequence[Sequence[int]], attention_mask: torch.Tensor | Sequence[Sequence[int]] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(input_ids, torch.Tensor):
        ids = input_ids
    elif isinstance(input_ids, Sequence) and all(isinstance(row, Sequence) for row in input_ids):
        if attention_mask is not None:
            ids = torch.as_tensor(input_ids)
        else:
            ids, attention_mask = pad_token_ids(input_ids)
    else:
        raise TypeError("Expected text (a string or a list of strings) or token ids (a tensor or a list of id lists).")
    mask = torch.as_tensor(attention_mask) if attention_mask is not None else None
    return ids, mask


def _check_histogram(histogram: torch.Tensor, vocab_size: int) -> torch.Tensor:
    counts = torch.as_tensor(histogram)
    if counts.ndim != 1 or counts.shape[0] != vocab_size:
        raise ValueError(
            f"A histogram must be a vector of {vocab_size} counts (the router's vocabulary), got shape "
            f"{tuple(counts.shape)}: it was counted with a different tokenizer."
        )
    if counts.dtype.is_floating_point or counts.dtype == torch.bool or bool((counts < 0).any()):
        raise ValueError("A histogram must hold non-negative integer token counts.")
    return counts.to(torch.int64)


def _margins(logits: torch.Tensor, no_evidence: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] < 2:
        margins = torch.full(logits.shape[:1], float("inf"), device=logits.device)
    else:
        top = logits.topk(2, dim=1).values
        margins = top[:, 0] - top[:, 1]
    return margins.masked_fill(no_evidence, 0.0)
