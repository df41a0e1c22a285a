"""How the routing settings generalise: IR3DE variants on the ir3de-multidomain validation split (in-distribution) and
on the out-of-source validation half, never on a test split. The default of issue 15 was chosen from this table.

    python benchmarks/generalisation.py          # writes results/generalisation.{json,md}

Every variant is the same fitted router (one count of the train split) with other settings: the ridge penalty, the
aggregation, and the weight and smoothing of the naive-Bayes term (`naive_bayes_weight`, `naive_bayes_alpha`) that
adds each token's centred log-likelihood under each expert's histogram to its ridge scores. All are closed-form from
the same histograms and route by table lookup. Prompts are each text's first 16, 64 and 256 SmolLM2 tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ir3de_hf import IR3DERouterModel
from ir3de_hf.assets import smollm2_path
from ir3de_hf.data import load_benchmark
from ir3de_hf.data.out_of_source import load_out_of_source
from ir3de_hf.demo import DOMAINS
from ir3de_hf.evaluation import routing_report

RESULTS = Path(__file__).parent / "results"
LENGTHS = (16, 64, 256)
OLD_DEFAULT = {"ridge_lambda": 1e-2, "aggregation": "weighted_mean", "naive_bayes_weight": 0.0}


def variants() -> list[dict[str, Any]]:
    """The settings tried, in the order of the table (fields of `IR3DEConfig`)."""
    tried: list[dict[str, Any]] = []
    for aggregation in ("majority_vote", "entropy_top_k", "mean", "weighted_mean"):
        tried.append({**OLD_DEFAULT, "aggregation": aggregation})
    for ridge_lambda in (1.0, 10.0, 100.0):
        for aggregation in ("mean", "weighted_mean"):
            tried.append({**OLD_DEFAULT, "ridge_lambda": ridge_lambda, "aggregation": aggregation})
    for alpha in (0.1, 0.5, 1.0, 2.0):
        for weight in (0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3):
            tried.append({**OLD_DEFAULT, "naive_bayes_weight": weight, "naive_bayes_alpha": alpha})
    for aggregation in ("majority_vote", "entropy_top_k", "mean"):
        tried.append({**OLD_DEFAULT, "naive_bayes_weight": 0.1, "naive_bayes_alpha": 1.0, "aggregation": aggregation})
    tried.append({**OLD_DEFAULT, "naive_bayes_weight": 1000.0, "naive_bayes_alpha": 1.0, "aggregation": "mean"})
    return tried


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    data, oos = load_benchmark(), load_out_of_source()
    start = time.perf_counter()
    router = IR3DERouterModel.from_encoder(str(smollm2_path()))
    for domain in DOMAINS:
        router.add_expert(domain, dataset=data["train"].filter(lambda row, d=domain: row["domain"] == d))
    fit_s = time.perf_counter() - start
    sets = {"validation": data["validation"], "out_of_source_validation": oos["validation"]}
    prompts = {}
    for key, rows in sets.items():
        ids = router.tokenizer(list(rows["text"]), add_special_tokens=False)["input_ids"]
        prompts[key] = ({n: [row[:n] for row in ids] for n in LENGTHS}, list(rows["domain"]))
    results = []
    for settings in variants():
        for field, value in {"naive_bayes_alpha": 1.0, **settings}.items():
            setattr(router.config, field, value)
        entry: dict[str, Any] = {"settings": settings}
        for key, (cut, domains) in prompts.items():
            entry[key] = {
                str(n): routing_report(domains, router.route(cut[n]).expert_names, labels=DOMAINS).accuracy
                for n in LENGTHS
            }
        results.append(entry)
        print(describe(settings), {k: entry[k] for k in prompts}, flush=True)
    summary = {"fit_s": fit_s, "prompts": {key: len(rows) for key, rows in sets.items()}, "variants": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "generalisation.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out_dir / "generalisation.md").write_text(render_markdown(summary))
    print(render_markdown(summary))


def describe(settings: dict[str, Any]) -> str:
    parts = [settings["aggregation"], f"λ={settings['ridge_lambda']:g}"]
    if settings["naive_bayes_weight"]:
        parts.append(f"NB weight {settings['naive_bayes_weight']:g}, α={settings['naive_bayes_alpha']:g}")
    return ", ".join(parts)


def render_markdown(summary: dict[str, Any]) -> str:
    sizes = summary["prompts"]
    header = " | ".join(f"val @{n}" for n in LENGTHS) + " | " + " | ".join(f"OOS val @{n}" for n in LENGTHS)
    lines = [
        f"Accuracy (%) on the validation split ({sizes['validation']} prompts) and the out-of-source validation half "
        f"({sizes['out_of_source_validation']} prompts). *(old default)*: the default before issue 15; **bold**: "
        "the new default.",
        "",
        f"| variant | {header} | mean |",
        "|---" * (2 + 2 * len(LENGTHS)) + "|",
    ]
    for entry in summary["variants"]:
        cells = [100 * entry[key][str(n)] for key in ("validation", "out_of_source_validation") for n in LENGTHS]
        name = describe(entry["settings"])
        if entry["settings"] == NEW_DEFAULT:
            name = f"**{name}**"
        elif entry["settings"] == OLD_DEFAULT:
            name = f"{name} *(old default)*"
        row = " | ".join(f"{c:.2f}" for c in cells)
        lines.append(f"| {name} | {row} | {sum(cells) / len(cells):.2f} |")
    return "\n".join(lines) + "\n"


NEW_DEFAULT = {**OLD_DEFAULT, "naive_bayes_weight": 0.1, "naive_bayes_alpha": 1.0}

if __name__ == "__main__":
    main()
