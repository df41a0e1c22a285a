# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DERouterModel: a frozen token-embedding encoder, per-expert token histograms and a closed-form ridge head.

The histograms are the model's only learned state (saved in ``model.safetensors``). The ridge head ``(W, beta)``,
the score table ``S = E W + beta`` (V x N) and the per-token entropy are derived from them lazily after loading and
re-derived whenever the statistics change, so routing a prompt is a gather of ``S`` rows and a vote.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from huggingface_hub import CommitInfo
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, cached_file

from ._saving import atomic_directory
from .aggregation import aggregate
from .cards import CONFUSION_IMAGE, CardInfo, router_card
from .configuration_ir3de import ExpertSpec, IR3DEConfig
from .experts import ExpertPool
from .generation import RoutedGeneration, RoutedStream, generate, generate_stream
from .shared_statistics import ExpertStatistics, check_compatible, embedding_fingerprint
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
_USES_ENTROPY = ("entropy_top_k", "weighted_mean")


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
        imported = sum(spec.statistics == "moments" for spec in config.expert_specs)
        width = config.hidden_size + 1
        self._store_imported_moments(
            [(torch.zeros(width, width, dtype=torch.float64), torch.zeros(width, dtype=torch.float64))] * imported
        )
        self.register_load_state_dict_post_hook(lambda module, _: module._invalidate(forget_moments=True))
        self.post_init()
        if config.encoder_by_reference:  # the table is re-materialised from the encoder after loading
            self._keys_to_ignore_on_load_missing.add(rf"^{_ENCODER_KEY}$")  # type: ignore[union-attr]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, IR3DERouterModel):
            init.zeros_(module.expert_counts)
            for buffer in module._imported_buffers():
                init.zeros_(buffer)

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
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
        source: str | None = None,
        revision: str | None = None,
        description: str | None = None,
        base_model: str | None = None,
    ) -> None:
        """Adds an expert from its domain data; the ridge head is re-solved on the next routing call.

        Give exactly one of ``texts`` (strings, tokenized with the router's tokenizer), ``input_ids`` (with an
        optional ``attention_mask``; masked positions are not counted), ``dataset`` (a `datasets.Dataset` or
        `IterableDataset` with a ``text_column``), ``histogram`` (precomputed token counts, a length-V vector) or
        ``moments`` (``(A_n, b_n)``, shapes (d+1, d+1) and (d+1,), computed with this router's encoder, e.g. imported
        from the reference implementation: such an expert can be removed or replaced but not re-weighted by token,
        and its ignored tokens cannot be taken out). ``source``/``revision`` say where the expert model lives (Hub id
        or local path); ``base_model`` marks a PEFT adapter.
        """
        if name in self.expert_names:
            raise ValueError(f"An expert named {name!r} already exists; use update_expert({name!r}, ...) instead.")
        counts, imported = self._statistics(
            name, texts, input_ids, attention_mask, dataset, text_column, histogram, moments
        )
        entry = ExpertSpec(name, source, revision, description, base_model, _statistics_kind(imported))
        if entry.source is not None:
            self.expert_pool.register(entry)
        all_imported = [*self._imported_moments(), imported]
        self.expert_counts = torch.cat([self.expert_counts, counts[None].to(self.expert_counts.device)])
        self.config.experts = [*self.config.experts, entry.to_dict()]
        self._store_imported_moments([pair for pair in all_imported if pair is not None])
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
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
        source: str | None = None,
        revision: str | None = None,
        description: str | None = None,
        base_model: str | None = None,
    ) -> None:
        """Replaces the statistics of expert ``name`` (same arguments as [`add_expert`]); registry fields that are
        given replace the old ones, the others are kept."""
        index = self._expert_index(name)
        old = self.config.expert_specs[index]
        counts, imported = self._statistics(
            name, texts, input_ids, attention_mask, dataset, text_column, histogram, moments
        )
        entry = ExpertSpec(
            name,
            source if source is not None else old.source,
            revision if revision is not None else old.revision,
            description if description is not None else old.description,
            base_model if base_model is not None else old.base_model,
            _statistics_kind(imported),
        )
        if entry.source is not None and entry != old:
            self.expert_pool.register(entry)
        all_imported = self._imported_moments()
        all_imported[index] = imported
        updated = self.expert_counts.clone()
        updated[index] = counts.to(updated.device)
        self.expert_counts = updated
        experts = list(self.config.experts)
        experts[index] = entry.to_dict()
        self.config.experts = experts
        self._store_imported_moments([pair for pair in all_imported if pair is not None])
        self._expert_moments[index] = None
        self._invalidate()

    def remove_expert(self, name: str) -> None:
        """Removes expert ``name`` and its statistics; routing afterwards equals a fit without it."""
        index = self._expert_index(name)
        if self._expert_pool is not None:
            self._expert_pool.unregister(name, missing_ok=True)
        keep = [i for i in range(self.num_experts) if i != index]
        all_imported = self._imported_moments()
        self.expert_counts = self.expert_counts[keep].clone()
        self.config.experts = [self.config.experts[i] for i in keep]
        self._store_imported_moments([all_imported[i] for i in keep if all_imported[i] is not None])  # type: ignore[misc]
        del self._expert_moments[index]
        self._invalidate()

    def _expert_index(self, name: str) -> int:
        if name not in self.expert_names:
            known = ", ".join(self.expert_names) or "none"
            raise ValueError(f"No expert named {name!r}; the router's experts are: {known}.")
        return self.expert_names.index(name)

    def _statistics(
        self,
        name: str,
        texts: str | Sequence[str] | None,
        input_ids: torch.Tensor | Sequence[Sequence[int]] | None,
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None,
        dataset: Any,
        text_column: str,
        histogram: torch.Tensor | None,
        moments: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """The expert's token histogram, or a row of zeros and its checked moments when ``moments`` is given."""
        given = [
            label for label, value in _sources(texts, input_ids, dataset, histogram, moments) if value is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"Expert {name!r}: give exactly one of texts=, input_ids=, dataset= or histogram= (got "
                f"{', '.join(given) or 'none'}); imported (A_n, b_n) statistics go in moments= instead."
            )
        if attention_mask is not None and input_ids is None:
            raise ValueError(f"Expert {name!r}: attention_mask= only goes with input_ids=.")
        if moments is not None:
            checked = _check_moments(name, moments, self.config.hidden_size)
            return torch.zeros(self.config.vocab_size, dtype=torch.int64), checked
        return self._count(name, texts, input_ids, attention_mask, dataset, text_column, histogram), None

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

    # ------------------------------------------------------------------ imported moments

    def _imported_buffers(self) -> list[torch.Tensor]:
        return [self._buffers[key] for key in ("imported_moments_a", "imported_moments_b") if key in self._buffers]  # type: ignore[misc]

    def _imported_moments(self) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per expert, its imported ``(A_n, b_n)`` or None for a histogram expert."""
        buffers = self._imported_buffers()
        pairs = iter(zip(*buffers, strict=True)) if buffers else iter(())
        return [next(pairs) if spec.statistics == "moments" else None for spec in self.config.expert_specs]

    def _store_imported_moments(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keeps the moments of imported experts (in registry order) as persistent float64 buffers; a router without
        such experts has none, so its `model.safetensors` holds only the encoder and the histograms."""
        for key in ("imported_moments_a", "imported_moments_b"):
            self._buffers.pop(key, None)
        if pairs:
            device = self.expert_counts.device
            self.register_buffer("imported_moments_a", torch.stack([a for a, _ in pairs]).to(device), persistent=True)
            self.register_buffer("imported_moments_b", torch.stack([b for _, b in pairs]).to(device), persistent=True)

    # ------------------------------------------------------------------ solving

    def _invalidate(self, forget_moments: bool = False) -> None:
        self._tables = None
        if forget_moments:
            self._expert_moments = [None] * self.num_experts

    def _moments(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A`` and ``B`` of all experts. Each expert's ``(A_n, b_n)`` is cached, so adding an expert costs one
        product over its own tokens and removing one costs nothing but the re-solve."""
        imported = self._imported_moments()
        for index, cached in enumerate(self._expert_moments):
            if cached is None or cached[0].device != embedding.device:
                pair = imported[index]
                if pair is not None:
                    self._expert_moments[index] = (pair[0].to(embedding.device), pair[1].to(embedding.device))
                    continue
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
            token_entropies=tables.entropy[ids] if self.config.aggregation in _USES_ENTROPY else None,
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

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike[str],
        *,
        encoder_by_reference: bool = False,
        card: CardInfo | None = None,
        **kwargs: Any,
    ) -> None:
        """Saves config, statistics, encoder, tokenizer and a model card (``README.md``) atomically: if anything fails
        midway, a previous save in ``save_directory`` stays intact and loadable.

        Args:
            encoder_by_reference: leave the embedding table out of ``model.safetensors`` (for SmolLM2-135M, 113 MB of
                the 115 MB); loading then re-materialises it from ``config.encoder`` (at ``encoder_revision``) and
                checks its sha256. Needs ``config.encoder`` to name a model that loaders can reach.
            card: what the card says beyond the router (repo id, evaluation report, datasets, license, tags).
        """
        if kwargs.pop("push_to_hub", False):
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; call router.push_to_hub(repo_id).")
        self.config.check()
        overrides: dict[str, Any] = {}
        if encoder_by_reference:
            if not self.config.encoder:
                raise ValueError(
                    "encoder_by_reference=True needs config.encoder (the Hub id or path of the model whose input "
                    "embeddings this router uses); this router's encoder was given as a tensor. Set "
                    "router.config.encoder, or save the router self-contained."
                )
            overrides = {
                "encoder_by_reference": True,
                "encoder_sha256": embedding_fingerprint(self.embed_tokens.weight),
            }
            kwargs["state_dict"] = {key: value for key, value in self.state_dict().items() if key != _ENCODER_KEY}
        with atomic_directory(save_directory) as staging, _overridden(self.config, overrides):
            super().save_pretrained(staging, **kwargs)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(staging)
            image = None
            if card is not None and card.evaluation is not None:
                from .evaluation import plot_confusion_matrix

                image = plot_confusion_matrix(card.evaluation, staging / CONFUSION_IMAGE).name
            router_card(self, card, confusion_image=image, encoder_by_reference=encoder_by_reference).save(
                staging / "README.md"
            )

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        create_pr: bool = False,
        encoder_by_reference: bool = False,
        card: CardInfo | None = None,
    ) -> CommitInfo:
        """Uploads config, statistics, tokenizer and the ir3de model card to ``repo_id`` in one commit (creating the
        repository if needed) and returns the commit; ``from_pretrained(repo_id, revision=commit.oid)`` loads exactly
        this version. See [`ir3de_hf.hub.push_router`] for the arguments."""
        from .hub import push_router

        return push_router(
            self,
            repo_id,
            revision=revision,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            create_pr=create_pr,
            encoder_by_reference=encoder_by_reference,
            card=card,
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any
    ) -> IR3DERouterModel:
        """Loads a router saved with `save_pretrained` or pushed with `push_to_hub` (local directory or Hub id, with
        ``revision=``), with its tokenizer if saved. A router saved with ``encoder_by_reference`` gets its embedding
        table from its encoder repository, checked against the saved sha256; any failure raises before a router is
        returned."""
        hub_kwargs = _hub_kwargs(kwargs)
        _require_ir3de_config(pretrained_model_name_or_path, hub_kwargs)
        router = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        if router.config.encoder_by_reference:
            _materialise_encoder(router)
        router.tokenizer = _saved_tokenizer(pretrained_model_name_or_path, hub_kwargs)
        return router

    def add_expert_from_hub(
        self,
        statistics: str | os.PathLike[str],
        *,
        revision: str | None = None,
        name: str | None = None,
        expert: str | None = None,
        expert_revision: str | None = None,
        base_model: str | None = None,
        description: str | None = None,
    ) -> None:
        """Adds an expert from published statistics (a Hub repository written by
        [`ir3de_hf.hub.push_statistics_to_hub`], or a local directory): no text needed.

        Args:
            statistics: Hub id or local directory of the statistics; ``revision`` pins the Hub revision.
            name: the expert's name here (defaults to the name stored with the statistics).
            expert, expert_revision, base_model: where the expert model lives (as ``source``/``revision``/
                ``base_model`` of [`add_expert`]).
            description: defaults to the one stored with the statistics.

        Statistics counted with another tokenizer (a different vocabulary fingerprint), or moments computed with
        another embedding table, are refused with a `StatisticsError`; the router is left unchanged.
        """
        shared = ExpertStatistics.load(statistics, revision=revision)
        check_compatible(shared, self, where=str(statistics))
        self.add_expert(
            name or shared.name,
            histogram=shared.histogram,
            moments=shared.moments,
            source=expert,
            revision=expert_revision,
            description=description if description is not None else shared.description,
            base_model=base_model,
        )

    def expert_statistics(self, name: str) -> ExpertStatistics:
        """The shareable statistics of expert ``name`` (save them with ``.save(dir)`` or push them with
        [`ir3de_hf.hub.push_statistics_to_hub`])."""
        return ExpertStatistics.from_router(self, name)


_ENCODER_KEY = "embed_tokens.weight"


@contextmanager
def _overridden(config: IR3DEConfig, values: dict[str, Any]) -> Iterator[None]:
    """Sets config fields for the duration of a save only: a by-reference save must not change the router."""
    saved = {key: getattr(config, key) for key in values}
    for key, value in values.items():
        setattr(config, key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)


def _hub_kwargs(load_kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download")
    return {key: load_kwargs[key] for key in keys if key in load_kwargs}


def _require_ir3de_config(name_or_path: str | os.PathLike[str], hub_kwargs: dict[str, Any]) -> None:
    """Refuses, before any weight is read, a repository that is not an IR3DE router (transformers would only warn
    and build a router from a foreign config)."""
    config_file = cached_file(name_or_path, "config.json", **hub_kwargs)
    try:
        model_type = json.loads(Path(config_file).read_text()).get("model_type")  # type: ignore[arg-type]
    except (OSError, ValueError) as error:
        raise ValueError(f"{name_or_path}: config.json is not valid JSON ({error}).") from error
    if model_type != IR3DEConfig.model_type:
        raise ValueError(
            f"{name_or_path} is not an IR3DE router: its config.json has model_type {model_type!r}, expected "
            f"{IR3DEConfig.model_type!r}. Load it with the matching transformers class instead."
        )


def _materialise_encoder(router: IR3DERouterModel) -> None:
    config = router.config
    where = f"encoder {config.encoder!r}" + (
        f" at revision {config.encoder_revision}" if config.encoder_revision else ""
    )
    try:
        weight, _ = _encoder_embeddings(config.encoder, config.encoder_revision)  # type: ignore[arg-type]
    except (OSError, ValueError) as error:
        raise ValueError(
            f"This router was saved without its embedding table (encoder_by_reference) and its {where} could not "
            f"be loaded: {error}"
        ) from error
    expected = (config.vocab_size, config.hidden_size)
    if tuple(weight.shape) != expected:
        raise ValueError(f"The {where} has embeddings of shape {tuple(weight.shape)}, the router needs {expected}.")
    found = embedding_fingerprint(weight)
    if found != config.encoder_sha256:
        raise ValueError(
            f"The {where} does not have the embedding table this router was saved with (sha256 {found[7:19]}… vs "
            f"{str(config.encoder_sha256)[7:19]}…): the encoder repository changed. Pin encoder_revision to the "
            "revision the router was built with."
        )
    with torch.no_grad():
        router.embed_tokens.weight.copy_(weight.to(router.embed_tokens.weight.device))
    config.encoder_by_reference = False
    config.encoder_sha256 = None
    router._invalidate(forget_moments=True)


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


def _saved_tokenizer(name_or_path: str | os.PathLike[str], hub_kwargs: dict[str, Any]) -> Any:
    found = cached_file(
        name_or_path, "tokenizer_config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    return AutoTokenizer.from_pretrained(name_or_path, **hub_kwargs) if found else None


def _sources(texts: Any, input_ids: Any, dataset: Any, histogram: Any, moments: Any) -> list[tuple[str, Any]]:
    return [
        ("texts=", texts),
        ("input_ids=", input_ids),
        ("dataset=", dataset),
        ("histogram=", histogram),
        ("moments=", moments),
    ]


def _statistics_kind(imported: tuple[torch.Tensor, torch.Tensor] | None) -> str | None:
    return None if imported is None else "moments"


def _check_moments(
    name: str, moments: tuple[torch.Tensor, torch.Tensor], hidden_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_n, b_n)`` as float64 after checking what the math guarantees: shapes (d+1, d+1) and (d+1,), finite, ``A_n``
    symmetric, and a positive token count (``A_n[d, d] == b_n[d]``, both the number of tokens)."""
    if not isinstance(moments, tuple | list) or len(moments) != 2:
        raise TypeError(f"Expert {name!r}: moments= must be a pair (A_n, b_n) of tensors.")
    a, b = (torch.as_tensor(value).detach().to(torch.float64).cpu() for value in moments)
    width = hidden_size + 1
    if a.shape != (width, width) or b.shape != (width,):
        raise ValueError(
            f"Expert {name!r}: moments must have shapes ({width}, {width}) and ({width},) for this router's encoder "
            f"(hidden size {hidden_size} plus the bias feature), got {tuple(a.shape)} and {tuple(b.shape)}: they "
            "were computed with a different encoder."
        )
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError(f"Expert {name!r}: moments contain NaN or infinite values.")
    scale = float(a.abs().max())
    if not torch.allclose(a, a.T, rtol=1e-6, atol=1e-9 * max(scale, 1.0)):
        raise ValueError(f"Expert {name!r}: A_n must be symmetric (it is a sum of x x^T).")
    tokens = float(b[-1])
    if not tokens > 0 or abs(float(a[-1, -1]) - tokens) > 1e-6 * max(tokens, 1.0):
        raise ValueError(
            f"Expert {name!r}: the bias entries of the moments must both hold the token count (A_n[d, d] = "
            f"{float(a[-1, -1])}, b_n[d] = {tokens}); these are not IR3DE moments over [x, 1] features."
        )
    return a, b


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
