# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""The demo router: SmolLM2-135M-Instruct embeddings, fitted on the ir3de-multidomain train split and calibrated on
sources it never saw (the out-of-source validation half and the additional sources; 99% accuracy of the routed
prompts at 16/64/256 tokens), with the six LoRA experts of
``space_app/experts`` registered. Built on first use (seconds) and cached.

    python -m ir3de_hf.demo                 # route one test prompt per domain and let the chosen expert answer

>>> from ir3de_hf.demo import load_demo_router
>>> router = load_demo_router()  # doctest: +SKIP
>>> router.route(["The Licensee shall not sublicense the Software."]).expert_names  # doctest: +SKIP
['legal']
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from . import __version__
from ._resources import resource_path
from .assets import SMOLLM2_HUB_ID, cache_root, smollm2_path
from .configuration_ir3de import FORMAT_VERSION, IR3DEConfig
from .data import benchmark_path, load_benchmark
from .data.more_sources import MORE_SOURCES_FILE, load_more_sources
from .data.out_of_source import OUT_OF_SOURCE_FILES, load_out_of_source
from .experts import ExpertPool
from .modeling_ir3de import IR3DERouterModel

__all__ = ["demo_experts_path", "load_demo_router", "sample_prompts"]

DOMAINS = ("code", "legal", "politics", "biomedical", "fiction", "multilingual")
ENCODER_ID = SMOLLM2_HUB_ID
# How the cached router is saved: a change must not reuse an old cache.
_LAYOUT = "experts copied in, Hub ids, calibrated on unseen sources"
EXPERTS_ENV = "IR3DE_DEMO_EXPERTS"


def demo_experts_path() -> Path:
    """``space_app/experts`` of a checkout or of the installed wheel (override with ``$IR3DE_DEMO_EXPERTS``)."""
    override = os.environ.get(EXPERTS_ENV)
    return Path(override) if override else resource_path("space_app/experts")


def load_demo_router(rebuild: bool = False) -> IR3DERouterModel:
    """The demo router with its six experts registered, ready for ``route(texts)`` and ``generate(texts)``.

    The fitted router is cached under the asset cache, keyed by the training data, the encoder, the experts' location,
    the config defaults and this package's version, so a change to any of them rebuilds it.
    """
    experts = demo_experts_path()
    missing = [domain for domain in DOMAINS if not (experts / domain / "adapter_config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"Demo experts {missing} not found under {experts}; train them with scripts/train_demo_experts.py or set "
            f"${EXPERTS_ENV} to a folder holding them."
        )
    encoder = smollm2_path()
    cached = cache_root() / "demo-router" / _cache_key(encoder, experts)
    if rebuild or not (cached / "config.json").is_file():
        _fit(encoder, experts).save_pretrained(cached, overwrite=True)  # experts copied in: a self-contained folder
    router = IR3DERouterModel.from_pretrained(cached)
    router.expert_pool = _pool(encoder)
    return router


def sample_prompts(tokenizer: Any, tokens: int = 48) -> dict[str, str]:
    """One test-split prompt per domain, cut to its first ``tokens`` tokens."""
    test = load_benchmark()["test"]
    prompts: dict[str, str] = {}
    for row in test:
        if row["domain"] not in prompts:
            ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"][:tokens]
            prompts[row["domain"]] = tokenizer.decode(ids)
    return prompts


def _cache_key(encoder: Path, experts: Path) -> str:
    folder = benchmark_path()
    fitted_on = sorted((folder / "data").glob("train-*.parquet"))
    calibrated_on = [folder / OUT_OF_SOURCE_FILES["validation"], folder / MORE_SOURCES_FILE]
    digest = hashlib.sha256()
    defaults = IR3DEConfig().to_json_string(use_diff=False)  # a changed default must not reuse an old fit
    for part in [__version__, str(FORMAT_VERSION), _LAYOUT, defaults, str(encoder), str(experts.resolve())]:
        digest.update(part.encode())
    for path in [*fitted_on, *calibrated_on]:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _pool(encoder: Path) -> ExpertPool:
    """An expert pool that finds the adapters' base model, named by its Hub id, in the local asset directory."""
    return ExpertPool(base_model_paths={ENCODER_ID: encoder})


def _fit(encoder: Path, experts: Path) -> IR3DERouterModel:
    from datasets import concatenate_datasets

    # The asset directory is a local copy of the Hub model: the router records the Hub id, never the local path.
    router = IR3DERouterModel.from_encoder(encoder, encoder_id=ENCODER_ID)
    router.expert_pool = _pool(encoder)
    train = load_benchmark()["train"]
    for domain in DOMAINS:
        router.add_expert(
            domain,
            dataset=train.filter(lambda row, d=domain: row["domain"] == d),
            source=experts / domain,
            base_model=ENCODER_ID,
            description=f"SmolLM2-135M-Instruct LoRA expert for {domain} text (ir3de-multidomain)",
        )
    # Calibrated on sources the router never saw (issue 21): in-distribution text would make it over-confident.
    unseen = concatenate_datasets([load_out_of_source()["validation"], load_more_sources()])
    router.calibrate(unseen["text"], unseen["domain"], target_accuracy=0.99, prompt_tokens=[16, 64, 256])
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description="Route one test prompt per domain and let each chosen expert answer.")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--rebuild", action="store_true", help="refit the cached demo router")
    args = parser.parse_args()

    start = time.perf_counter()
    router = load_demo_router(rebuild=args.rebuild)
    print(f"demo router ready in {time.perf_counter() - start:.1f} s: experts {', '.join(router.expert_names)}")
    prompts = sample_prompts(router.tokenizer)
    start = time.perf_counter()
    results = router.generate(list(prompts.values()), max_new_tokens=args.max_new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    for domain, result in zip(prompts, results, strict=True):
        print(f"\n[{domain}] -> {result.expert} (margin {result.margin:.2f})")
        print(f"  prompt: {result.prompt[:160]!r}")
        print(f"  answer: {result.text[:240]!r}")
    print(f"\n{len(results)} prompts routed and answered in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
