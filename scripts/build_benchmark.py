"""Rebuild the ir3de-multidomain benchmark from its pinned corpora, or check that the committed copy is reproducible.

python scripts/build_benchmark.py                 # rebuild data/ir3de-multidomain/
python scripts/build_benchmark.py --check         # rebuild in memory, compare with the committed rows
python scripts/build_benchmark.py --out /tmp/b --train 200 --validation 25 --test 50
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ir3de_hf.data import BuildConfig, benchmark_path, build_benchmark, load_benchmark, save_benchmark
from ir3de_hf.data.card import render_dataset_card, render_license_notice
from ir3de_hf.data.publish import BUILD_INFO_FILE
from ir3de_hf.data.summary import markdown_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = BuildConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=benchmark_path(), help="dataset folder (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    for split, quota in defaults.quotas.items():
        parser.add_argument(f"--{split}", type=int, default=quota, help=f"samples per domain (default {quota})")
    parser.add_argument("--check", action="store_true", help="compare with the rows in --out instead of writing")
    parser.add_argument("--card-only", action="store_true", help="only re-render the card of the folder in --out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.card_only:
        report = json.loads((args.out / BUILD_INFO_FILE).read_text(encoding="utf-8"))
        (args.out / "README.md").write_text(render_dataset_card(load_benchmark(args.out), report), encoding="utf-8")
        (args.out / "LICENSE.md").write_text(render_license_notice(), encoding="utf-8")
        print(f"rendered {args.out / 'README.md'} and {args.out / 'LICENSE.md'}")
        return 0
    quotas = {"train": args.train, "validation": args.validation, "test": args.test}
    config = BuildConfig(seed=args.seed, quotas=quotas)
    start = time.perf_counter()
    dataset, report = build_benchmark(config)
    elapsed = time.perf_counter() - start
    print(f"built in {elapsed:.1f} s\n\n{markdown_table(dataset)}\n")
    if args.check:
        committed = load_benchmark(args.out)
        same = all(committed[s].to_list() == dataset[s].to_list() for s in dataset)
        print("identical to the committed rows" if same else f"DIFFERENT from the rows in {args.out}")
        return 0 if same else 1
    for path in save_benchmark(dataset, report, args.out):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
