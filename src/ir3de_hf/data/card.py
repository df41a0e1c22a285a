"""Render the dataset card (``README.md`` of the dataset folder) and its license notice from templates and tables."""

from __future__ import annotations

import string
from typing import Any

from datasets import DatasetDict

from ir3de_hf._resources import resource_path
from ir3de_hf._templates import template_path
from ir3de_hf.assets import ARTIFACTS
from ir3de_hf.data.sources import SOURCES
from ir3de_hf.data.summary import markdown_table


def _pin(artifact: str) -> str:
    if artifact not in ARTIFACTS:
        return "the running interpreter's standard library"
    art = ARTIFACTS[artifact]
    return f"{art.registry} `{art.spec}` (`{art.filename}`, sha256 `{art.sha256[:16]}…`)"


def sources_markdown() -> str:
    """One table row per source: domain, what it is, pinned artifact, license, attribution."""
    lines = ["| source | domain | content | pinned artifact | license | attribution |", "|" + " --- |" * 6]
    for s in SOURCES:
        lines.append(f"| `{s.key}` | {s.domain} | {s.name} | {_pin(s.artifact)} | {s.license} | {s.attribution} |")
    return "\n".join(lines)


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` bucket."""
    for limit, label in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]:
        if rows < limit:
            return label
    return "n>1M"


def render_dataset_card(dataset: DatasetDict, report: dict[str, Any]) -> str:
    """Fill the template: YAML header (license, languages, configs) and the sizes, sources and build sections."""
    config = report["config"]
    values = {
        "size_category": size_category(sum(len(split) for split in dataset.values())),
        "sizes_table": markdown_table(dataset),
        "sources_table": sources_markdown(),
        "per_domain": " / ".join(str(report["split_sizes_per_domain"][s]) for s in dataset),
        "quotas": " / ".join(str(config["quotas"][s]) for s in dataset),
        "seed": config["seed"],
        "min_tokens": config["min_tokens"],
        "window_min": config["window"]["min_tokens"],
        "window_max": config["window"]["max_tokens"],
        "window_overflow": config["window"]["overflow_tokens"],
        "max_per_doc": config["max_windows_per_doc"],
        "max_per_group": config["max_windows_per_group"],
        "max_group_share": f"{config['max_group_share']:.0%}",
        "python": report["python"],
        "out_of_source": _out_of_source_section(),
        "more_sources": _more_sources_section(),
    }
    return string.Template(template_path("dataset_card.md").read_text(encoding="utf-8")).substitute(values)


def _out_of_source_section() -> str:
    """The card's section on the out-of-source configs, when their files are there (they are built separately)."""
    from ir3de_hf.data.out_of_source import (
        OUT_OF_SOURCE_FILES,
        UNKNOWN_FILE,
        card_section,
        load_out_of_source,
        load_unknown,
    )

    files = [*OUT_OF_SOURCE_FILES.values(), UNKNOWN_FILE]
    if not all((resource_path("benchmark") / name).is_file() for name in files):
        return ""
    return card_section(load_out_of_source(), load_unknown()) + "\n"


def _more_sources_section() -> str:
    """The card's section on the ``more_sources`` config, when its file is there (it is built separately)."""
    from ir3de_hf.data.more_sources import MORE_SOURCES_FILE, card_section, load_more_sources

    if not (resource_path("benchmark") / MORE_SOURCES_FILE).is_file():
        return ""
    return "\n" + card_section(load_more_sources()) + "\n"


def render_license_notice() -> str:
    """``LICENSE.md`` of the dataset folder: the mixed licenses, one per source."""
    head = (
        "# Licenses of ir3de-multidomain\n\n"
        "ir3de-multidomain is a compilation: each sample keeps the license of the source it was cut from (the "
        "`source` column). Reuse a sample under its source's terms and keep the attribution below.\n\n"
    )
    return head + sources_markdown() + "\n"
