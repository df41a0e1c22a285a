# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The paper's comparison routers, with the router's interface: ``route(texts) -> IR3DERouterOutput``.

- `KNNRouter`: all-MiniLM-L6-v2 mean-pooled sentence embeddings, cosine similarity, majority vote of the k=5 nearest
  training prompts (the paper's kNN-BERT baseline);
- `ClassifierRouter`: the same frozen encoder plus a trained linear head (MoDEM's frozen-DeBERTa classifier, scaled
  down to the encoder we can ship);
- `LogisticRegressionRouter`: scikit-learn's multinomial logistic regression on the same embeddings (what a user
  with scikit-learn would fit first);
- `Model2VecRouter`: model2vec's own classifier, `StaticModelForClassification`, on a static table distilled from
  the same MiniLM ([`~ir3de_hf.assets.minilm_static_path`]);
- `RandomRouter` and `OracleRouter` (the true domain): the floor and the ceiling.

None of the trained ones has a cheaper way to learn a new domain than fitting again on everything: their
``add_domain(name, texts)`` refits on the training data they were fitted on plus the new domain's texts (for the
kNN index that is an append in effect: the old embeddings are memoised). The last two need the ``bench`` extra
(scikit-learn, model2vec).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer
from typing_extensions import Self

from .aggregation import margins
from .outputs import IR3DERouterOutput

__all__ = [
    "ClassifierRouter",
    "KNNRouter",
    "LogisticRegressionRouter",
    "Model2VecRouter",
    "OracleRouter",
    "RandomRouter",
    "SentenceEncoder",
]


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a BERT-style encoder (all-MiniLM-L6-v2's recipe).

    Embeddings are memoised by text, so several baselines scoring the same prompts encode them once.
    """

    def __init__(self, path: str | os.PathLike[str], max_length: int = 256, batch_size: int = 64) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self._memo: dict[str, torch.Tensor] = {}

    @torch.no_grad()  # not inference_mode: the classifier head trains on these features
    def encode(self, texts: Sequence[str], desc: str = "Encoding") -> torch.Tensor:
        todo = sorted({text for text in texts if text not in self._memo}, key=len)
        with tqdm(total=len(todo), desc=desc, unit=" texts", disable=len(todo) < 512) as progress:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                for text, vector in zip(chunk, self.embed(self.tokenize(chunk)), strict=True):
                    self._memo[text] = vector
                progress.update(len(chunk))
        return torch.stack([self._memo[text] for text in texts])

    def forget(self, texts: Sequence[str]) -> None:
        """Drops the memoised embeddings of ``texts`` (so a benchmark can time encoding them again)."""
        for text in texts:
            self._memo.pop(text, None)

    def tokenize(self, texts: Sequence[str]) -> Any:
        return self.tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        )

    @torch.no_grad()
    def embed(self, batch: Any) -> torch.Tensor:
        """Embeddings of an already tokenized batch (so benchmarks can time tokenisation apart)."""
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


class _RefitRouter:
    """A trained baseline: ``fit(texts, labels)`` keeps its training data, so ``add_domain`` can fit again."""

    expert_names: list[str]
    _train: tuple[list[str], list[str]] = ([], [])

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Self:
        raise NotImplementedError

    def _keep(self, texts: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
        """Remembers the training data; returns the labels as expert ids."""
        unknown = sorted(set(labels) - set(self.expert_names))
        if unknown:
            raise ValueError(f"Labels {unknown} are not among the expert names {self.expert_names}.")
        self._train = (list(texts), list(labels))
        return torch.tensor([self.expert_names.index(label) for label in labels], dtype=torch.long)

    def add_domain(self, name: str, texts: Sequence[str]) -> Self:
        """Adds expert ``name`` (last) and fits again on the training data plus its ``texts``: no cheaper path."""
        if name in self.expert_names:
            raise ValueError(f"An expert named {name!r} already exists.")
        if not texts:
            raise ValueError(f"No texts for the new domain {name!r}.")
        old_texts, old_labels = self._train
        self.expert_names = [*self.expert_names, name]
        return self.fit([*old_texts, *texts], [*old_labels, *[name] * len(texts)])


def _require_every_expert(targets: torch.Tensor, names: list[str], router: str) -> None:
    missing = [name for i, name in enumerate(names) if not (targets == i).any()]
    if missing:
        raise ValueError(f"{router} needs training texts for every expert; none for {missing}.")


class KNNRouter(_RefitRouter):
    """Majority vote of the ``k`` most cosine-similar training prompts (ties: the nearest neighbour's expert)."""

    def __init__(self, encoder: SentenceEncoder, expert_names: Sequence[str], k: int = 5) -> None:
        self.encoder = encoder
        self.expert_names = list(expert_names)
        self.k = k
        self._index: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Self:
        self._labels = self._keep(texts, labels)
        self._index = self.encoder.encode(texts, desc="kNN index")
        return self

    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        return self.route_embeddings(self.encoder.encode(texts))

    def route_embeddings(self, embeddings: torch.Tensor) -> IR3DERouterOutput:
        if self._index is None or self._labels is None:
            raise ValueError("KNNRouter.fit(texts, labels) must be called before route().")
        similarity = embeddings @ self._index.T
        nearest = similarity.topk(min(self.k, len(self._labels)), dim=1).indices
        votes = self._labels[nearest]
        tally = torch.zeros(len(votes), len(self.expert_names)).scatter_add_(1, votes, torch.ones(votes.shape))
        # Among tied experts, the one of the nearest neighbour wins.
        tied = (tally == tally.max(dim=1, keepdim=True).values).gather(1, votes)
        winners = votes.gather(1, tied.int().argmax(dim=1, keepdim=True)).squeeze(1)
        return _output(tally / votes.shape[1], self.expert_names, winners)


class ClassifierRouter(_RefitRouter):
    """A linear head on frozen sentence embeddings, trained with cross-entropy (full batch, AdamW)."""

    def __init__(self, encoder: SentenceEncoder, expert_names: Sequence[str], epochs: int = 300, lr: float = 1e-2):
        self.encoder = encoder
        self.expert_names = list(expert_names)
        self.epochs = epochs
        self.lr = lr
        self.head: torch.nn.Linear | None = None

    def fit(self, texts: Sequence[str], labels: Sequence[str], seed: int = 0) -> Self:
        targets = self._keep(texts, labels)
        features = self.encoder.encode(texts, desc="classifier features")
        torch.manual_seed(seed)
        head = torch.nn.Linear(features.shape[1], len(self.expert_names))
        optimizer = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=1e-4)
        for _ in range(self.epochs):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(head(features), targets).backward()
            optimizer.step()
        self.head = head.eval()
        return self

    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        return self.route_embeddings(self.encoder.encode(texts))

    @torch.inference_mode()
    def route_embeddings(self, embeddings: torch.Tensor) -> IR3DERouterOutput:
        if self.head is None:
            raise ValueError("ClassifierRouter.fit(texts, labels) must be called before route().")
        return _output(self.head(embeddings), self.expert_names)


class LogisticRegressionRouter(_RefitRouter):
    """scikit-learn's `LogisticRegression` (multinomial, L2, ``C=1``, lbfgs) on the encoder's sentence embeddings;
    its logits are the log-probabilities."""

    def __init__(
        self, encoder: SentenceEncoder, expert_names: Sequence[str], C: float = 1.0, max_iter: int = 1000
    ) -> None:
        self.encoder = encoder
        self.expert_names = list(expert_names)
        self.C = C
        self.max_iter = max_iter
        self.model: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Self:
        from sklearn.linear_model import LogisticRegression

        targets = self._keep(texts, labels)
        _require_every_expert(targets, self.expert_names, type(self).__name__)
        features = self.encoder.encode(texts, desc="logistic regression features")
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(features.numpy(), targets.numpy())
        return self

    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        return self.route_embeddings(self.encoder.encode(texts))

    def route_embeddings(self, embeddings: torch.Tensor) -> IR3DERouterOutput:
        if self.model is None:
            raise ValueError("LogisticRegressionRouter.fit(texts, labels) must be called before route().")
        log_probabilities = self.model.predict_log_proba(embeddings.numpy())  # columns: expert ids 0, 1, ...
        return _output(torch.from_numpy(log_probabilities).float(), self.expert_names)


class Model2VecRouter(_RefitRouter):
    """model2vec's `StaticModelForClassification` with its defaults: the static table (fine-tuned too) and a
    one-hidden-layer MLP head, trained with Adam and early stopping on a held-out 10% of the training texts. Its
    logits are the log-probabilities. Runs on the CPU, like the MiniLM baselines.

    ``path`` is a model2vec directory, e.g. [`~ir3de_hf.assets.minilm_static_path`]'s.
    """

    def __init__(
        self, path: str | os.PathLike[str], expert_names: Sequence[str], seed: int = 0, device: str = "cpu"
    ) -> None:
        self.path = path
        self.expert_names = list(expert_names)
        self.seed = seed
        self.device = device
        self.model: Any = None

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> Self:
        from model2vec.train import StaticModelForClassification

        targets = self._keep(texts, labels)
        _require_every_expert(targets, self.expert_names, type(self).__name__)
        model = StaticModelForClassification.from_pretrained(os.fspath(self.path))
        self.model = model.fit(list(texts), list(labels), random_seed=self.seed, device=self.device).eval()
        return self

    @torch.inference_mode()
    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        if self.model is None:
            raise ValueError("Model2VecRouter.fit(texts, labels) must be called before route().")
        probabilities = torch.from_numpy(self.model.predict_proba(list(texts))).float()
        order = [self.expert_names.index(label) for label in self.model.classes]  # the expert of each column
        log_probabilities = torch.empty_like(probabilities)
        log_probabilities[:, order] = probabilities.clamp_min(torch.finfo(torch.float32).tiny).log()
        return _output(log_probabilities, self.expert_names)


class RandomRouter:
    """Uniformly random experts (seeded): the floor any router must beat."""

    def __init__(self, expert_names: Sequence[str], seed: int = 0) -> None:
        self.expert_names = list(expert_names)
        self.generator = torch.Generator().manual_seed(seed)

    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        choice = torch.randint(len(self.expert_names), (len(texts),), generator=self.generator)
        return _output(torch.nn.functional.one_hot(choice, len(self.expert_names)).float(), self.expert_names)


class OracleRouter:
    """Sends every prompt to its true domain's expert: the ceiling."""

    def __init__(self, expert_names: Sequence[str], domain_of: Mapping[str, str]) -> None:
        self.expert_names = list(expert_names)
        self.domain_of = dict(domain_of)

    def route(self, texts: Sequence[str]) -> IR3DERouterOutput:
        missing = [text[:40] for text in texts if text not in self.domain_of]
        if missing:
            raise ValueError(f"The oracle does not know the domain of {len(missing)} prompt(s), e.g. {missing[0]!r}.")
        choice = torch.tensor([self.expert_names.index(self.domain_of[text]) for text in texts])
        return _output(torch.nn.functional.one_hot(choice, len(self.expert_names)).float(), self.expert_names)


def _output(logits: torch.Tensor, names: list[str], expert_ids: torch.Tensor | None = None) -> IR3DERouterOutput:
    expert_ids = logits.argmax(dim=1) if expert_ids is None else expert_ids
    return IR3DERouterOutput(
        logits=logits,
        expert_ids=expert_ids,
        margins=margins(logits),
        no_evidence=torch.zeros(len(logits), dtype=torch.bool),
        expert_names=[names[i] for i in expert_ids.tolist()],
    )
