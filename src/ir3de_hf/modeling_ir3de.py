# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""IR3DERouterModel: a frozen token-embedding encoder and an [`ExpertStatisticsStore`] behind a `PreTrainedModel`.

The experts' statistics (token histograms, or imported moments) are the model's only learned state; they live in the
store and are mirrored into persistent buffers for ``model.safetensors``. The ridge head ``(W, beta)``, the score
table ``S = E W + beta`` (V x N) and the per-token entropy are derived by the store, so routing a prompt is a gather
of ``S`` rows and a vote, and a route running while another thread edits the experts sees one consistent router.
"""

from __future__ import annotations

import contextvars
import copy
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import CommitInfo, HfApi
from torch import nn
from transformers import PreTrainedModel
from typing_extensions import Unpack

from .aggregation import USES_ENTROPY, aggregate_rows, margins, probabilities
from .calibration import CalibrationReport, calibrate
from .checkpoint import FORMAT_KEYS, checkpoint_tensors, store_from_checkpoint
from .configuration_ir3de import FORMAT_VERSION, ExpertSpec, IR3DEConfig
from .encoder import all_finite, encoder_config, referenced_embeddings
from .experts import ExpertPool, with_adapter_base
from .generation import RoutedGeneration, RoutedStream, generate, generate_stream
from .hub import _router_files as files
from .hub._atomic import atomic_directory, recover_directory
from .hub._companions import Companions, write_companions
from .hub._locations import upload_folder
from .inputs import DATA_ARGUMENTS, ExpertInputs, expert_data
from .model_card import CardInfo
from .outputs import IR3DERouterOutput, merge_outputs
from .prompts import CHUNK_POSITIONS, PromptBatch
from .routing_tables import RoutingTables
from .shared_statistics import ExpertStatistics, check_compatible
from .statistics import normalize_columns
from .store import ExpertStatisticsStore, RoutingSettings

__all__ = ["IR3DERouterModel", "IR3DERouterOutput"]

_REGISTRY_FIELDS = ("source", "revision", "description", "base_model")
DETAIL_VALUES = 1 << 24  # per-token scores route() returns by default at most (64 MB of float32)
_LOADING = contextvars.ContextVar("ir3de_loading", default=False)  # from_pretrained builds the store once, itself


class IR3DERouterModel(PreTrainedModel):
    r"""
    The IR3DE linear router (Fanì & Ersoy, 2026) as a `PreTrainedModel`.

    Build one from the input embeddings of a causal LM that shares the experts' tokenizer, add experts from their
    text (fitting is counting tokens), then route prompts. Experts can be added, updated or removed at any time, also
    while other threads route; the result equals a from-scratch fit on the new expert set.

    Example:

    ```python
    >>> import torch
    >>> from ir3de_hf import IR3DERouterModel
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> one_hot = torch.nn.Embedding.from_pretrained(torch.eye(100))  # E = I: the head is a per-token table
    >>> router = IR3DERouterModel.from_encoder(one_hot)
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
    # The statistics are read from model.safetensors by `ir3de_hf.checkpoint`, not as parameters.
    _keys_to_ignore_on_load_unexpected = [rf"^{key}$" for key in FORMAT_KEYS]

    def __init__(self, config: IR3DEConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.tokenizer: Any = None
        self.card = CardInfo()  # what the model card says beyond the router; saved and loaded with it
        self._expert_pool: ExpertPool | None = None
        self._edits = threading.Lock()
        self.store: ExpertStatisticsStore
        if not _LOADING.get():  # a loaded router gets its store from the checkpoint (`_load_store`), built once
            self.store = _placeholder_store(self.embed_tokens, config)
        self.post_init()
        if config.encoder_by_reference:  # the table is re-materialised from the encoder after loading
            self._keys_to_ignore_on_load_missing.add(rf"^{files.ENCODER_KEY}$")  # type: ignore[union-attr]

    def _load_store(self, tensors: dict[str, torch.Tensor]) -> None:
        """Builds the store from the statistics of a checkpoint (format 1, 2 or 3); the router is of the current
        format from then on."""
        specs = self.config.expert_specs
        names, imported = [spec.name for spec in specs], [i for i, s in enumerate(specs) if s.statistics == "moments"]
        self.store = store_from_checkpoint(self.embed_tokens, _settings(self.config), names, imported, tensors)
        self.config.ir3de_format_version = FORMAT_VERSION

    @property
    def expert_counts(self) -> torch.Tensor:
        """The experts' token histograms as one (N, V) int64 tensor (zero rows for experts imported as moments).
        Built on each read: ``router.store.histogram(name)`` reads one without the N x V copy."""
        return self.store.counts_matrix()

    def statistics_tensors(self) -> dict[str, torch.Tensor]:
        """The statistics as the tensors ``save_pretrained`` writes beside the encoder (see `ir3de_hf.checkpoint`)."""
        return checkpoint_tensors(self.store)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_encoder(
        cls,
        encoder: str | os.PathLike[str] | PreTrainedModel | nn.Embedding,
        tokenizer: Any = None,
        encoder_id: str | None = None,
        **config_kwargs: Any,
    ) -> IR3DERouterModel:
        """Creates an empty router (no experts) whose frozen encoder is a copy of ``encoder``'s input embeddings.

        Args:
            encoder: a Hub id or local path of a causal LM (or of a model2vec static model: any static token
                table with its tokenizer keeps the histogram identity), a loaded `PreTrainedModel`, or an
                `nn.Embedding`. The router tokenizes with this encoder's tokenizer; experts keep their own.
            tokenizer: the tokenizer of the encoder (a tokenizer object, Hub id or path). Loaded from ``encoder``
                when that is a Hub id or path. Needed to add experts from text and to route text.
            encoder_id: the Hub id to record as ``config.encoder`` when ``encoder`` is a local copy of a Hub model
                (an offline mirror): the saved router then names the model, not this machine's path.
            **config_kwargs: fields of [`IR3DEConfig`] (`ridge_lambda`, `aggregation`, `top_k`, ...).

        By default the tokenizer's special tokens (and padding) are never counted and never vote; pass
        ``ignored_token_ids=[...]`` to choose them yourself.
        """
        config, weight, tokenizer = encoder_config(encoder, tokenizer, encoder_id, **config_kwargs)
        router = cls(config)
        with torch.no_grad():
            router.embed_tokens.weight.copy_(weight)
        router.tokenizer = tokenizer
        return router

    def copy(self) -> IR3DERouterModel:
        """A router with its own registry and statistics that shares the frozen encoder (the same module: never
        modify or move it through one of them), the tokenizer and the expert pool. Cheap: no tensor is copied.

        Edit a copy while the original keeps serving, then publish the copy: the pattern of the Space app.
        """
        with torch.device("meta"):  # no table allocation: the encoder module is shared below
            twin = type(self)(copy.deepcopy(self.config))
        twin.embed_tokens = self.embed_tokens
        twin.store = self.store.copy()
        twin.tokenizer = self.tokenizer
        twin.card = copy.copy(self.card)
        twin._expert_pool = self._expert_pool
        return twin.train(self.training)

    # ------------------------------------------------------------------ experts

    @property
    def expert_names(self) -> list[str]:
        """Names of the experts, in routing order (index = expert id)."""
        return self.config.expert_names

    @property
    def num_experts(self) -> int:
        return len(self.config.experts)

    def add_expert(self, name: str, **inputs: Unpack[ExpertInputs]) -> None:
        """Adds an expert from its domain data; the ridge head is re-solved on the next routing call.

        Give exactly one of ``texts=``, ``input_ids=`` (with an optional ``attention_mask=``), ``dataset=`` (with
        ``text_column=``), ``histogram=`` or ``moments=``, and optionally the registry fields ``source=``,
        ``revision=``, ``description=`` and ``base_model=`` (see [`~ir3de_hf.inputs.ExpertInputs`]). A ``source`` is
        checked (it exists, its tokenizer is the router's) but not loaded: generation loads it when first needed.

        A ``dataset=`` is counted by the fit's own count (`ir3de_hf.fitting.count_experts`: the same checks and
        progress bar); to fit several experts at once, from files, on several processes or with checkpoints, use
        `ir3de_hf.fitting.fit_experts`.
        """
        self._set_expert(name, inputs, new=True)

    def update_expert(self, name: str, **inputs: Unpack[ExpertInputs]) -> None:
        """Replaces the statistics of expert ``name`` (same arguments as [`add_expert`]); registry fields that are
        given replace the old ones, the others are kept."""
        self._set_expert(name, inputs, new=False)

    def remove_expert(self, name: str) -> None:
        """Removes expert ``name`` and its statistics; routing afterwards equals a fit without it."""
        with self._edits:
            index = self._index(name)
            self.store.remove(name)
            self.config.experts = [entry for i, entry in enumerate(self.config.experts) if i != index]
        if self._expert_pool is not None:
            self._expert_pool.unregister(name, missing_ok=True)

    def _set_expert(self, name: str, inputs: ExpertInputs, *, new: bool) -> None:
        unknown = sorted(set(inputs) - set(ExpertInputs.__annotations__))
        if unknown:
            raise TypeError(f"Unknown argument(s) {unknown}; expected some of {sorted(ExpertInputs.__annotations__)}.")
        if new and name in self.expert_names:
            raise ValueError(f"An expert named {name!r} already exists; use update_expert({name!r}, ...) instead.")
        old = None if new else self.config.expert_specs[self._index(name)]
        arguments: dict[str, Any] = {key: inputs[key] for key in DATA_ARGUMENTS if key in inputs}  # type: ignore[literal-required]
        data = expert_data(name, self.config, tokenizer=self.tokenizer, **arguments)
        given: dict[str, Any] = {key: inputs[key] for key in _REGISTRY_FIELDS if inputs.get(key) is not None}  # type: ignore[literal-required]
        spec = replace(
            old or ExpertSpec(name),
            **given,
            statistics=None if data.moments is None else "moments",
            includes_padding=True if data.moments is not None and inputs.get("includes_padding") else None,
        )
        if spec.source is not None and spec != old:  # checks the source; loading waits for generation
            spec = with_adapter_base(spec)
            bases = self._expert_pool.base_model_paths if self._expert_pool is not None else None
            ExpertPool(tokenizer_fingerprint=self.config.tokenizer_fingerprint, base_model_paths=bases).register(spec)
        with self._edits:
            if new:
                self.store.add(name, histogram=data.histogram, moments=data.moments)
                self.config.experts = [*self.config.experts, spec.to_dict()]
            else:
                index = self._index(name)
                self.store.replace(name, histogram=data.histogram, moments=data.moments)
                self.config.experts = [spec.to_dict() if i == index else e for i, e in enumerate(self.config.experts)]

    def _tables(self) -> RoutingTables:
        """The routing tables for the current config; a changed setting is checked first (assignments are checked
        when made, in-place edits of the config's lists only here), before any linear algebra."""
        settings = _settings(self.config)
        if settings != self.store.settings:
            self.config.check()
        return self.store.tables(settings)

    def _index(self, name: str) -> int:
        if name not in self.expert_names:
            known = ", ".join(self.expert_names) or "none"
            raise ValueError(f"No expert named {name!r}; the router's experts are: {known}.")
        return self.expert_names.index(name)

    # ------------------------------------------------------------------ solving and routing

    def ridge_solution(self, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The ridge head ``(W, beta)``: ``W`` is (d, N), ``beta`` is (N,), both float64.

        With ``normalize=True`` each expert column and its bias are divided by the column norm (what routing uses
        when ``config.normalize_columns`` is set).
        """
        tables = self._tables()
        if normalize:
            return normalize_columns(tables.weight, tables.bias)
        return tables.weight.clone(), tables.bias.clone()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> IR3DERouterOutput:
        """Routes a batch of token ids (B x L) for transformers (``router(**batch)``, the text-classification
        pipeline); positions where ``attention_mask`` is 0 never vote.

        As for any sequence classifier, the ``logits`` are those whose softmax is the class probabilities: the log of
        ``probabilities`` (calibrated once `calibrate` ran), NaN for a prompt without evidence, so the pipeline's
        scores are the router's probabilities and a prompt without a usable token gets NaN scores rather than an
        expert. `route` returns the aggregated scores as ``logits``; every other field is the same.
        """
        output = self._decide(self._tables(), input_ids, attention_mask, token_details=True)
        assert output.probabilities is not None and output.no_evidence is not None
        output.logits = output.probabilities.log().masked_fill(output.no_evidence[:, None], math.nan)
        return output

    def _decide(
        self,
        tables: RoutingTables,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_details: bool,
    ) -> IR3DERouterOutput:
        ids, usable = tables.lookup(input_ids, attention_mask)
        token_votes = tables.votes_at(ids)
        aggregation = self.config.aggregation
        decision = aggregate_rows(
            tables.filled_scores,
            ids,
            usable,
            aggregation,
            top_k=self.config.top_k,
            token_entropies=tables.entropy_at(ids) if aggregation in USES_ENTROPY else None,
            token_votes=token_votes,
        )
        no_evidence = ~usable.any(dim=1)
        temperature = self.config.calibration_temperatures.get(aggregation, 1.0)
        chances = probabilities(decision.logits, temperature, no_evidence)
        gaps = margins(decision.logits, no_evidence)
        return IR3DERouterOutput(
            logits=decision.logits,
            expert_ids=decision.expert_ids,
            margins=gaps,
            token_scores=tables.scores_at(ids) if token_details else None,
            token_votes=token_votes.masked_fill(~usable, -1),
            voting_mask=decision.voting_mask,
            no_evidence=no_evidence,
            expert_names=[tables.names[i] if i >= 0 else None for i in decision.expert_ids.tolist()],
            probabilities=chances,
            confident=_confident(self.config, chances, gaps, no_evidence),
        )

    @torch.inference_mode()
    def route(
        self,
        texts_or_input_ids: str | Sequence[str] | torch.Tensor | Sequence[Sequence[int]],
        attention_mask: torch.Tensor | Sequence[Sequence[int]] | None = None,
        *,
        token_details: bool | None = None,
    ) -> IR3DERouterOutput:
        """Routes prompts given as text (one string or a list) or as token ids (a tensor or lists of ids).

        Text is tokenized with the router's tokenizer without special tokens. An empty prompt gets
        ``expert_ids == -1`` and ``no_evidence == True`` rather than an error. Prompts are routed in chunks of
        similar length (see `ir3de_hf.prompts`), all against one version of the router, so memory follows the batch's
        own tokens. ``token_details`` (per-token scores, votes and voting mask, padded to the longest prompt): by
        default returned unless padding would make them over 4x the batch's tokens (a few long prompts among many
        short ones) or the per-token scores would pass `DETAIL_VALUES` numbers (many experts: B x L x N);
        ``True`` or ``False`` forces the choice. Without them routing never builds a B x L x N tensor.
        """
        batch = PromptBatch.from_inputs(texts_or_input_ids, attention_mask, self.tokenizer, self.config.vocab_size)
        tables = self._tables()  # one version for every chunk
        if token_details is None:
            padded = len(batch) * batch.longest
            token_details = padded <= max(4 * batch.tokens, CHUNK_POSITIONS) and padded * len(tables.names) <= (
                DETAIL_VALUES
            )
        parts = [(rows, self._decide(tables, ids, mask, token_details)) for rows, ids, mask in batch.chunks()]
        return merge_outputs(parts, len(batch), batch.longest if token_details else None)

    def calibrate(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        target_accuracy: float | None = None,
        max_fallback_rate: float | None = None,
        prompt_tokens: int | Sequence[int] | None = None,
        allow_missing_experts: bool = False,
    ) -> CalibrationReport:
        """Fits the temperature of the current aggregation on labelled held-out ``texts`` (``labels``: expert names)
        and sets ``config.min_confidence`` for ``target_accuracy`` of the routed prompts or ``max_fallback_rate``;
        returns coverage, accuracy, ECE and the reliability diagram. Decisions never change; ``probabilities`` and
        ``confident`` do. Saved and pushed with the router (config fields). The labels must cover every expert
        unless ``allow_missing_experts`` (the report then names the missing ones). See
        [`ir3de_hf.calibration.calibrate`].
        """
        report = calibrate(
            self,
            texts,
            labels,
            target_accuracy=target_accuracy,
            max_fallback_rate=max_fallback_rate,
            prompt_tokens=prompt_tokens,
            allow_missing_experts=allow_missing_experts,
        )
        self.card = replace(self.card, calibration=report)  # the card's report and diagram follow the config
        return report

    # ------------------------------------------------------------------ generation

    @property
    def expert_pool(self) -> ExpertPool:
        """The [`ExpertPool`] that loads the experts for `generate` (created on first use, on CPU in the experts'
        own dtype). Experts with a ``source`` are registered in it when it is read; assign your own pool to choose
        dtype, placement and memory budget."""
        if self._expert_pool is None:
            self._expert_pool = ExpertPool(tokenizer_fingerprint=self.config.tokenizer_fingerprint)
        pool = self._expert_pool
        for spec in self.config.expert_specs:
            if spec.source is not None and (spec.name not in pool.names or pool.spec(spec.name) != spec):
                pool.register(spec)
        return pool

    @expert_pool.setter
    def expert_pool(self, pool: ExpertPool) -> None:
        if pool.tokenizer_fingerprint is None:
            pool.tokenizer_fingerprint = self.config.tokenizer_fingerprint
        self._expert_pool = pool

    def generate(self, prompts: str | Sequence[str], **kwargs: Any) -> list[RoutedGeneration]:
        """Routes ``prompts`` and returns each chosen expert's answer, in input order.

        Keyword arguments: ``expert=`` forces one expert (or a list: each prompt's expert), ``fallback_expert=``
        answers the prompts the router is not `confident` about (``config.min_confidence``, ``config.min_margin``),
        ``use_chat_template=``, ``batch_size=``; the rest go to the expert's `generate` (``max_new_tokens``,
        ``do_sample``...). See [`ir3de_hf.generation.generate`].
        """
        return generate(self, self.expert_pool, prompts, **kwargs)

    def generate_stream(self, prompt: str, **kwargs: Any) -> RoutedStream:
        """Routes one prompt and streams its expert's answer: iterate over the result for text chunks."""
        return generate_stream(self, self.expert_pool, prompt, **kwargs)

    # ------------------------------------------------------------------ persistence

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike[str],
        *,
        encoder_by_reference: bool = False,
        card: CardInfo | None = None,
        overwrite: bool = False,
        copy_experts: bool = True,
        **kwargs: Any,
    ) -> None:
        """Saves config, statistics, encoder, tokenizer and a model card (``README.md``) atomically: the directory
        holds either the previous save or this one, whatever happens midway (see `ir3de_hf.hub._atomic`).

        transformers writes ``config.json`` and ``model.safetensors``; one writer (`ir3de_hf.hub._companions`) then
        writes the tokenizer, the local experts, the card with its figures and its data files (``card.json``,
        ``calibration.json``), which `from_pretrained` reads back into ``router.card``.

        Args:
            encoder_by_reference: leave the embedding table out of ``model.safetensors`` (for SmolLM2-135M, 113 MB of
                the 115 MB); loading then re-materialises it from ``config.encoder`` (at ``encoder_revision``) and
                checks its sha256. Needs ``config.encoder`` to name a model that loaders can reach.
            card: card content to add to ``router.card`` (evaluation report, calibration, sections, datasets,
                license, tags): the fields it sets replace the router's, the others are kept, and the router keeps
                the result (but ``repo_id``, which belongs to one push).
            overwrite: replace a non-empty directory that holds something other than an IR3DE router (refused
                otherwise, with `FileExistsError`); its files are not kept. Files beside a router are always kept.
            copy_experts: copy experts that live in local folders into ``experts/<name>/`` (hard links where
                possible), so the directory is self-contained; otherwise they are recorded relative to it. No local
                absolute path is ever written (see `ir3de_hf.hub._router_files.portable_registry`).
        """
        if kwargs.pop("push_to_hub", False):
            raise ValueError("save_pretrained(push_to_hub=True) is not supported; call router.push_to_hub(repo_id).")
        plan = files.save_plan(
            self,
            save_directory,
            encoder_by_reference=encoder_by_reference,
            overwrite=overwrite,
            copy_experts=copy_experts,
        )
        content = self.card.updated(card)
        with (
            atomic_directory(save_directory, keep_others=plan.keep_others) as staging,
            files.overridden(self.config, plan.overrides),
        ):
            super().save_pretrained(staging, state_dict=plan.state_dict, **kwargs)
            companions = Companions(
                config=self.config,
                token_counts=self.store.token_counts(),
                tokenizer=self.tokenizer,
                card=content,
                by_reference=encoder_by_reference,
                experts=plan.experts,
            )
            write_companions(staging, companions)
        self.card = replace(content, repo_id=None)

    def push_to_hub(self, repo_id: str, **options: Unpack[files.PushOptions]) -> CommitInfo:  # type: ignore[override]
        """Uploads config, statistics, tokenizer and the ir3de model card to ``repo_id`` (``"org/name"``, created if
        needed) in one commit and returns it; ``from_pretrained(repo_id, revision=commit.oid)`` loads exactly this
        version. Options (see [`~ir3de_hf.hub._router_files.PushOptions`]): ``revision`` (an existing branch),
        ``commit_message``, ``commit_description``, ``private``, ``token``, ``create_pr``, ``encoder_by_reference``
        (the encoder must then be a Hub id; its revision is pinned) and ``card`` (added to ``router.card``;
        ``repo_id`` is filled in). The router is saved into a scratch folder and that folder uploaded."""
        files.check_pushable(self.config)
        by_reference = options.get("encoder_by_reference", False)
        api = HfApi(token=options.get("token"))
        pinned = files.pinned_encoder_revision(api, self.config) if by_reference else self.config.encoder_revision
        card = replace(self.card.updated(options.get("card")), repo_id=repo_id)
        with tempfile.TemporaryDirectory(prefix="ir3de-upload-") as scratch:
            folder = Path(scratch) / "router"
            with files.overridden(self.config, {"encoder_revision": pinned}):
                self.save_pretrained(folder, encoder_by_reference=by_reference, card=card)
            return upload_folder(
                api,
                folder,
                repo_id,
                revision=options.get("revision"),
                commit_message=options.get("commit_message") or f"Upload IR3DE router ({self.num_experts} experts)",
                commit_description=options.get("commit_description"),
                private=options.get("private"),
                create_pr=options.get("create_pr", False),
            )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *model_args: Any, **kwargs: Any
    ) -> IR3DERouterModel:
        """Loads a router saved with `save_pretrained` or pushed with `push_to_hub` (local directory or Hub id, with
        ``revision=``), with its tokenizer and card content if saved. A router saved with ``encoder_by_reference``
        gets its embedding table from its encoder repository, checked against the saved sha256; any failure raises
        before a router is returned. Routers of format 1 (before the statistics store) load unchanged.

        ``config.json`` is parsed once (here, unless a config is given, as `AutoModel` does) and handed to
        transformers, and the statistics store is built once, from the checkpoint; keyword arguments naming
        `IR3DEConfig` fields override the saved values."""
        path = pretrained_model_name_or_path
        recover_directory(path)
        where = files.hub_kwargs(kwargs)
        config = kwargs.pop("config", None)
        if not isinstance(config, IR3DEConfig):
            config = files.saved_config(path, where)
            for key in [key for key in kwargs if key in IR3DEConfig.__annotations__]:
                setattr(config, key, kwargs.pop(key))
        weights = files.check_weights(path, where, config)
        loading = _LOADING.set(True)
        try:
            router = super().from_pretrained(path, *model_args, config=config, **kwargs)
        finally:
            _LOADING.reset(loading)
        files.resolve_registry(router.config, path, where)
        if router.config.encoder_by_reference:  # the statistics' moments are checked against the real table
            with torch.no_grad():
                router.embed_tokens.weight.copy_(referenced_embeddings(router.config))
            router.config.encoder_by_reference, router.config.encoder_sha256 = False, None
        try:
            if not all_finite(router.embed_tokens.weight):
                raise ValueError("the embedding table holds NaN or infinite values")
            router._load_store(files.read_statistics(weights))
        except ValueError as error:
            raise ValueError(f"{path}/{files.WEIGHTS_FILE}: {error}.") from error
        router.tokenizer = files.saved_tokenizer(path, where, router.config)
        router.card = files.saved_card(path, where)
        return router

    # ------------------------------------------------------------------ shareable statistics

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
        """Adds an expert from published statistics (a Hub id at ``revision``, or a local directory, written by
        [`ir3de_hf.hub.push_statistics_to_hub`]): no text needed. ``name`` and ``description`` default to the stored
        ones; ``expert``, ``expert_revision`` and ``base_model`` say where the expert model lives (``source``,
        ``revision`` and ``base_model`` of [`add_expert`]). Statistics of another tokenizer, or moments of another
        embedding table, are refused with a `StatisticsError` and the router is left unchanged."""
        shared = ExpertStatistics.load(statistics, revision=revision)
        check_compatible(shared, self, where=str(statistics))
        self.add_expert(
            name or shared.name,
            histogram=shared.histogram,
            moments=shared.moments,
            source=expert,
            revision=expert_revision,
            base_model=base_model,
            description=description if description is not None else shared.description,
            includes_padding=shared.includes_padding,
        )

    def expert_statistics(self, name: str) -> ExpertStatistics:
        """The shareable statistics of expert ``name`` (save them with ``.save(dir)`` or push them with
        [`ir3de_hf.hub.push_statistics_to_hub`])."""
        return ExpertStatistics.from_router(self, name)


def _placeholder_store(embeddings: nn.Embedding, config: IR3DEConfig) -> ExpertStatisticsStore:
    """A store of empty statistics with the config's experts: what a router holds before its checkpoint is read.
    The zeros are broadcast views, so a thousand placeholders cost no memory."""
    store = ExpertStatisticsStore(embeddings, _settings(config))
    vocab_size, width = config.vocab_size, config.hidden_size + 1
    zero = torch.zeros(1, dtype=torch.float64, device="cpu")
    for spec in config.expert_specs:
        if spec.statistics == "moments":
            store.add(spec.name, moments=(zero.expand(width, width), zero.expand(width)))
        else:
            store.add(spec.name, histogram=torch.zeros(1, dtype=torch.int64, device="cpu").expand(vocab_size))
    return store


def _confident(
    config: IR3DEConfig, chances: torch.Tensor, gaps: torch.Tensor, no_evidence: torch.Tensor
) -> torch.Tensor:
    """The config's thresholds: evidence, a top probability of at least ``min_confidence`` and a margin of at least
    ``min_margin`` (each when set)."""
    confident = ~no_evidence
    if config.min_confidence is not None:
        confident &= chances.max(dim=1).values >= config.min_confidence
    if config.min_margin is not None:
        confident &= gaps >= config.min_margin
    return confident


def _settings(config: IR3DEConfig) -> RoutingSettings:
    return RoutingSettings(
        float(config.ridge_lambda),
        bool(config.normalize_columns),
        tuple(config.never_counted_ids),
        float(config.naive_bayes_weight),
        float(config.naive_bayes_alpha),
        bool(config.balance_experts),
    )
