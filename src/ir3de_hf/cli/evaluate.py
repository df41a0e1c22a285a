# Copyright 2026 The ir3de_hf developers. Licensed under the Apache License, Version 2.0.
"""``ir3de eval`` and ``ir3de calibrate``: a router against labelled prompts whose labels are its expert names (a
.parquet/.jsonl file, or the ir3de-multidomain benchmark)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._command import Command
from ._common import load_router, require_extra
from .arguments import fraction, positive_int

__all__ = ["COMMANDS"]

BENCHMARK = "ir3de-multidomain"


def _labelled_texts(data: str | None, split: str, purpose: str) -> tuple[list[str], list[str]]:
    """Texts and domains of a .parquet/.jsonl file, or of the ir3de-multidomain ``split`` without ``data``."""
    if data:
        from datasets import load_dataset
        from datasets.exceptions import DatasetGenerationError

        from ..text_sources import read_errors, unreadable

        kind = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}.get(Path(data).suffix)
        if kind is None:
            raise ValueError(f"{data}: expected a .parquet or .jsonl file with text and domain columns")
        try:  # the columns are decoded when read: a file that is not UTF-8 fails there
            rows = load_dataset(kind, data_files=data, split="train")
            columns = {column: list(rows[column]) for column in ("text", "domain") if column in rows.column_names}
        except (DatasetGenerationError, *read_errors()) as error:  # names the file and the line, not datasets' stack
            raise unreadable(data, error) from error
        absent = [column for column in ("domain", "text") if column not in rows.column_names]
        if absent:
            found = ", ".join(map(repr, rows.column_names)) or "none"
            raise ValueError(
                f"{data} has no {' or '.join(map(repr, absent))} column to {purpose} against (its columns: {found}); "
                "give one JSON object per line with text and domain keys, or a parquet file with those columns"
            )
        texts, domains = columns["text"], columns["domain"]
        for column, values in (("text", texts), ("domain", domains)):
            wrong = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
            if wrong is not None:
                raise ValueError(
                    f"{data}: row {wrong + 1} has {column} {values[wrong]!r}; every row needs a string text and "
                    "domain (an expert name)"
                )
        return texts, domains
    from ..data import load_benchmark

    rows = load_benchmark()[split]
    return list(rows["text"]), list(rows["domain"])


def _check_labels(domains: Sequence[str], router: Any, name: str, data: str | None) -> None:
    """Refuses labels that are not experts of the router, saying what they were and what to pass instead: every
    prompt of an unknown label would count as an error."""
    unknown = sorted(set(domains) - set(router.expert_names))
    if not unknown:
        return
    where = data or f"the {BENCHMARK} test split"
    raise ValueError(
        f"the domains of {where} ({', '.join(unknown)}) are not experts of {name!r} (its experts: "
        f"{', '.join(router.expert_names) or 'none'}): pass --data FILE, a .parquet/.jsonl file with text and domain "
        "columns whose domains are the router's expert names"
    )


# ---------------------------------------------------------------------------------------------------- eval


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id) whose expert names are the domains")
    parser.add_argument(
        "--data",
        help=f"a .parquet/.jsonl file with text and domain columns (default: the {BENCHMARK} test split)",
    )
    parser.add_argument("--tokens", type=positive_int, nargs="+", default=[16, 64, 256], help="prompt lengths")
    parser.add_argument("--output", type=Path, help="write report.json and confusion matrix PNGs here")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")


def _eval(args: argparse.Namespace) -> int:
    require_extra("eval", ("datasets", "data"), *([("matplotlib", "data")] if args.output else []))
    from ..evaluation import evaluate_routing, plot_confusion_matrix

    texts, domains = _labelled_texts(args.data, "test", "evaluate")
    router = load_router(args.router)
    _check_labels(domains, router, args.router, args.data)
    reports = evaluate_routing(router, texts, domains, args.tokens)
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        payload = {str(n): report.to_dict() for n, report in reports.items()}
        (args.output / "report.json").write_text(json.dumps(payload, indent=2) + "\n")
        for n, report in reports.items():
            plot_confusion_matrix(report, args.output / f"confusion_{n}.png", title=f"{n}-token prompts")
    if args.json:
        print(json.dumps({str(n): report.to_dict() for n, report in reports.items()}, indent=2))
        return 0
    for n, report in reports.items():
        accuracy, normalized = report.accuracy, report.normalized_accuracy
        print(f"{n}-token prompts: accuracy {accuracy:.1%}, normalised accuracy {normalized:.1%}")
    print(reports[max(reports)].confusion_markdown())
    return 0


# ---------------------------------------------------------------------------------------------------- calibrate


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("router", help="a saved router (directory or Hub id) whose expert names are the labels")
    parser.add_argument(
        "--data",
        help=f"held-out .parquet/.jsonl file with text and domain columns (default: the {BENCHMARK} validation "
        "rows of the router's experts); never the data you evaluate on",
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--target-accuracy",
        type=lambda value: fraction(value, one=True),
        help="accuracy the routed prompts must reach, e.g. 0.99",
    )
    target.add_argument(
        "--max-fallback-rate",
        type=lambda value: fraction(value, one=False),
        help="largest share of prompts sent to the fallback, e.g. 0.05",
    )
    parser.add_argument(
        "--tokens", type=positive_int, nargs="+", default=[16, 64, 256], help="prompt lengths to calibrate for"
    )
    parser.add_argument(
        "--output", type=Path, help="save the calibrated router here (default: back into ROUTER, a directory)"
    )
    parser.add_argument(
        "--allow-missing-experts",
        action="store_true",
        help="calibrate even if the data has no prompt of some experts (they are named in the report and card)",
    )


def _calibrate(args: argparse.Namespace) -> int:
    require_extra("calibrate", ("datasets", "data"), ("matplotlib", "data"))
    from ..model_card import CALIBRATION_IMAGE, CardInfo

    output = args.output
    if output is None:
        if not Path(args.router).is_dir():
            raise ValueError(f"{args.router!r} is not a local directory: give --output DIR for the calibrated router")
        output = Path(args.router)
    texts, domains = _labelled_texts(args.data, "validation", "calibrate")
    router = load_router(args.router)
    if not args.data:  # the benchmark's validation rows of the router's experts
        rows = [(text, domain) for text, domain in zip(texts, domains, strict=True) if domain in router.expert_names]
        if not rows:
            raise ValueError(f"No expert of {args.router!r} is a domain of {BENCHMARK}: give --data")
        texts, domains = [text for text, _ in rows], [domain for _, domain in rows]
    report = router.calibrate(
        texts,
        domains,
        target_accuracy=args.target_accuracy,
        max_fallback_rate=args.max_fallback_rate,
        prompt_tokens=args.tokens,
        allow_missing_experts=args.allow_missing_experts,
    )
    router.save_pretrained(output, card=CardInfo(calibration=report))
    (output / "calibration.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(report.markdown())
    print(f"saved the calibrated router to {output} (reliability diagram: {output / CALIBRATION_IMAGE})")
    return 0


COMMANDS = [
    Command(
        "eval",
        "routing accuracy and confusion matrices of a router on labelled prompts cut to several lengths",
        """examples:
  ir3de eval my-router                                  # the ir3de-multidomain test split, 16/64/256 tokens
  ir3de eval my-router --data held_out.jsonl --tokens 32 --output eval/ --json""",
        _eval_arguments,
        _eval,
    ),
    Command(
        "calibrate",
        "fit calibrated probabilities and the fallback threshold (min_confidence) on labelled held-out prompts",
        """examples:
  ir3de calibrate my-router --target-accuracy 0.99       # the ir3de-multidomain validation split, saved in place
  ir3de calibrate me/my-router --data held_out.jsonl --max-fallback-rate 0.05 --tokens 32 --output calibrated""",
        _calibrate_arguments,
        _calibrate,
    ),
]
