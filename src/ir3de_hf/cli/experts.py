# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de fit``, ``ir3de add-expert`` and ``ir3de remove-expert``: a router's experts from their text.

Both fitting commands are `ir3de_hf.fitting.fit_experts` (all experts or none, a progress bar, checkpoints with
``--checkpoint-dir``, the same result on any number of processes) followed by one save on the main process; ``fit``
first builds the empty router from ``--encoder``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._command import Command
from ._common import check_output, load_encoder, load_router, require_extra
from .arguments import add_overwrite_argument, expert_spec, positive_int

__all__ = ["COMMANDS"]

# streaming the text; counting on several processes also needs accelerate, which `distributed` asks for then
_FIT_EXTRAS = (("datasets", "data"),)


def _counting_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expert",
        dest="experts",
        metavar="NAME=PATH",
        type=expert_spec,
        action="append",
        required=True,
        help="an expert and its text: a directory of .txt files, a .parquet/.jsonl file (or glob) with a text "
        "column, or a dataset id; repeat for each expert",
    )
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--split", default="train", help="split of a dataset id (default: train)")
    parser.add_argument("--max-tokens", type=positive_int, help="token budget per expert (default: all the text)")
    parser.add_argument("--batch-size", type=positive_int, default=1024, help="texts tokenized at once (1024)")
    parser.add_argument("--num-proc", type=positive_int, help="tokenizer worker processes per fitting process")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="save partial counts here and resume from them if present (a killed fit continues where it stopped)",
    )
    parser.add_argument("--checkpoint-every", type=positive_int, default=100, help="batches between checkpoints")
    parser.add_argument(
        "--source",
        dest="sources",
        metavar="NAME=MODEL",
        type=expert_spec,
        action="append",
        default=[],
        help="where expert NAME's model lives (Hub id or local path), for generation; repeatable",
    )
    parser.add_argument("--base-model", help="base model of the experts given with --source that are PEFT adapters")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------------------------------------------------- fit


def _fit_arguments(parser: argparse.ArgumentParser) -> None:
    from ..aggregation import AGGREGATIONS
    from ..configuration_ir3de import IR3DEConfig

    parser.add_argument("--encoder", required=True, help="causal LM (Hub id or local path) whose embeddings to use")
    parser.add_argument("--output", required=True, type=Path, help="directory to save the fitted router in")
    add_overwrite_argument(parser, "OUTPUT")
    _counting_arguments(parser)
    parser.add_argument("--ridge-lambda", type=float, help="ridge penalty λ (default 1e-2)")
    parser.add_argument(
        "--aggregation",
        choices=AGGREGATIONS,
        help=f"how token scores become one decision (default: {IR3DEConfig.aggregation})",
    )
    parser.add_argument("--top-k", type=positive_int, help="tokens that vote with entropy_top_k (default 10)")


def _fit(args: argparse.Namespace) -> int:
    require_extra("fit", *_FIT_EXTRAS)
    from ..distributed import broadcast_from_main, process_state
    from ..fitting import count_experts
    from ..modeling_ir3de import IR3DERouterModel

    check_output(args.output, args.overwrite)  # in every process, so that all of them stop
    sources = _sources(args)
    state = process_state()
    settings = {
        key: value
        for key, value in (
            ("ridge_lambda", args.ridge_lambda),
            ("aggregation", args.aggregation),
            ("top_k", args.top_k),
        )
        if value is not None
    }
    if state.is_main_process:  # only the main process needs the embedding table: it solves and saves
        router = load_encoder(IR3DERouterModel.from_encoder, args.encoder, settings)
        broadcast_from_main((router.config.vocab_size, router.config.never_counted_ids))
        result = _fit_and_save(router, sources, args, args.output, replace=False)
        _summary(result, f"fitted {len(sources)} expert(s); saved the router to {args.output}")
    else:  # the others count their share of the text, which `fit_experts` on the main process sums with its own
        from transformers import AutoTokenizer

        tokenizer = load_encoder(AutoTokenizer.from_pretrained, args.encoder, {})
        vocab_size, ignored = broadcast_from_main(None)
        count_experts(sources, tokenizer=tokenizer, vocab_size=vocab_size, ignored_token_ids=ignored, **_options(args))
    state.wait_for_everyone()
    return 0


# ---------------------------------------------------------------------------------------------------- add / remove


def _add_expert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    _counting_arguments(parser)
    parser.add_argument("--replace", action="store_true", help="refit experts the router already has")
    parser.add_argument("--output", type=Path, help="save here instead of over ROUTER")
    add_overwrite_argument(parser, "OUTPUT")


def _add_expert(args: argparse.Namespace) -> int:
    require_extra("add-expert", *_FIT_EXTRAS)
    from ..distributed import process_state

    output = args.output or Path(args.router)
    check_output(output, args.overwrite)
    router = load_router(args.router)
    sources = _sources(args)
    result = _fit_and_save(router, sources, args, output, replace=args.replace)
    state = process_state()
    if state.is_main_process:
        _summary(
            result, f"added {', '.join(sources)}; the router has {router.num_experts} expert(s); saved to {output}"
        )
    state.wait_for_everyone()
    return 0


def _remove_expert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id)")
    parser.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="experts to remove; removing every expert is allowed (the router keeps its encoder and tokenizer, "
        "refuses to route until `ir3de add-expert` gives it one)",
    )
    parser.add_argument("--output", type=Path, help="save here instead of over ROUTER")
    add_overwrite_argument(parser, "OUTPUT")


def _remove_expert(args: argparse.Namespace) -> int:
    repeated = sorted({name for name in args.names if args.names.count(name) > 1})
    if repeated:
        raise ValueError(f"expert name(s) {', '.join(map(repr, repeated))} given more than once; nothing was removed")
    output = args.output or Path(args.router)
    check_output(output, args.overwrite)
    router = load_router(args.router)
    for name in args.names:
        router.remove_expert(name)
    router.save_pretrained(output, overwrite=args.overwrite)
    print(
        f"removed {', '.join(args.names)}; experts left: {', '.join(router.expert_names) or 'none'}; saved to {output}"
    )
    return 0


# ---------------------------------------------------------------------------------------------------- helpers


def _fit_and_save(
    router: Any, sources: dict[str, str], args: argparse.Namespace, output: Path, *, replace: bool
) -> Any:
    """`fit_experts` on every process that holds ``router``, then one save, on the main process."""
    from ..distributed import process_state
    from ..fitting import fit_experts

    fields = {name: {"source": model, "base_model": args.base_model} for name, model in args.sources}
    result = fit_experts(router, sources, replace=replace, expert_fields=fields, **_options(args))
    if process_state().is_main_process:
        router.save_pretrained(output, overwrite=args.overwrite)
    return result


def _sources(args: argparse.Namespace) -> dict[str, str]:
    """``--expert`` as name -> path, checked before any loading: a bad or repeated name, a ``--source`` of no
    expert."""
    from ..configuration_ir3de import ExpertSpec

    sources: dict[str, str] = {}
    for name, path in args.experts:
        ExpertSpec(name)  # a bad name fails now, not after hours of counting
        if name in sources:
            raise ValueError(f"expert {name!r} is given twice")
        sources[name] = path
    unknown = sorted({name for name, _ in args.sources} - set(sources))
    if unknown:
        raise ValueError(f"--source names expert(s) {unknown} that no --expert gives")
    return sources


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "text_column": args.text_column,
        "split": args.split,
        "batch_size": args.batch_size,
        "max_tokens": args.max_tokens,
        "num_proc": args.num_proc,
        "checkpoint_dir": args.checkpoint_dir,
        "checkpoint_every": args.checkpoint_every,
        "progress": not args.quiet,
    }


def _summary(result: Any, what: str) -> None:
    tokens = ", ".join(
        f"{name}: {count:,} tokens / {result.texts[name]:,} texts" for name, count in result.tokens.items()
    )
    shares = " / ".join(f"{count:,}" for count in result.tokens_per_process)
    processes = (
        f" on {result.num_processes} processes (tokens per process: {shares})" if result.num_processes > 1 else ""
    )
    print(f"{what} ({tokens}){processes}, {result.tokens_per_second:,.0f} tokens/s")


COMMANDS = [
    Command(
        "fit",
        "fit a new router on each expert's text",
        """examples:
  ir3de fit --encoder HuggingFaceTB/SmolLM2-135M-Instruct --expert code=data/code/ --expert legal=legal.parquet \\
      --output my-router
  ir3de fit --encoder ./smollm2 --expert bio=corpus/bio-*.jsonl --max-tokens 100000000 --checkpoint-dir ckpt \\
      --output my-router                        # run it again after a crash: it resumes from ckpt
  ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 8 -m ir3de_hf fit ...   # 8 processes, exact same result
  accelerate launch --multi_gpu --num_processes 8 -m ir3de_hf fit ...""",
        _fit_arguments,
        _fit,
    ),
    Command(
        "add-expert",
        "count new experts' text and add them to a saved router",
        """examples:
  ir3de add-expert my-router --expert fiction=books/ --source fiction=my-org/smollm2-fiction-lora \\
      --base-model HuggingFaceTB/SmolLM2-135M-Instruct
  ir3de add-expert my-router --expert code=more-code.parquet --replace --output my-router-v2""",
        _add_expert_arguments,
        _add_expert,
    ),
    Command(
        "remove-expert",
        "remove experts from a saved router (the others keep their statistics)",
        """examples:
  ir3de remove-expert my-router legal
  ir3de remove-expert my-router legal fiction --output smaller-router""",
        _remove_expert_arguments,
        _remove_expert,
    ),
]
