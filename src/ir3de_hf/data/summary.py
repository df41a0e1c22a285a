"""Per-domain statistics of a built benchmark, as rows and as a markdown table (for the card and the README)."""

from __future__ import annotations

from typing import Any

from datasets import DatasetDict

from ir3de_hf.data.sources import DOMAINS, sources_for
from ir3de_hf.data.splits import SPLITS


def domain_stats(dataset: DatasetDict) -> list[dict[str, Any]]:
    """One row per domain: sources, then documents, samples and mean tokens per split."""
    frames = {split: dataset[split].select_columns(["domain", "doc_id", "num_tokens"]).to_pandas() for split in SPLITS}
    rows = []
    for domain in DOMAINS:
        row: dict[str, Any] = {"domain": domain, "sources": ", ".join(s.key for s in sources_for(domain))}
        for split in SPLITS:
            frame = frames[split]
            part = frame[frame["domain"] == domain]
            row[f"{split}_documents"] = int(part["doc_id"].nunique())
            row[f"{split}_samples"] = len(part)
            row[f"{split}_mean_tokens"] = round(float(part["num_tokens"].mean()), 1) if len(part) else 0.0
        rows.append(row)
    return rows


def markdown_table(dataset: DatasetDict) -> str:
    """The sizes table: documents / samples (mean SmolLM2 tokens per sample) for each split."""
    header = "| domain | sources | " + " | ".join(f"{s}: docs / samples (mean tokens)" for s in SPLITS) + " |"
    lines = [header, "|" + " --- |" * (2 + len(SPLITS))]
    totals = {s: [0, 0] for s in SPLITS}
    for row in domain_stats(dataset):
        cells = []
        for s in SPLITS:
            cells.append(f"{row[f'{s}_documents']} / {row[f'{s}_samples']} ({row[f'{s}_mean_tokens']:.0f})")
            totals[s][0] += row[f"{s}_documents"]
            totals[s][1] += row[f"{s}_samples"]
        lines.append(f"| {row['domain']} | {row['sources']} | " + " | ".join(cells) + " |")
    overall = []
    for s in SPLITS:
        mean = sum(dataset[s]["num_tokens"]) / max(len(dataset[s]), 1)
        overall.append(f"{totals[s][0]} / {totals[s][1]} ({mean:.0f})")
    lines.append("| **all** | | " + " | ".join(overall) + " |")
    return "\n".join(lines)
