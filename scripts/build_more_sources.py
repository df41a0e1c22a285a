"""Build the additional sources of ir3de-multidomain (see `ir3de_hf.data.more_sources`) from their pinned corpora,
write their parquet file beside the benchmark's and re-render the dataset card; or check the committed copy.

python scripts/build_more_sources.py            # writes data/ir3de-multidomain/data/more_sources-*.parquet
python scripts/build_more_sources.py --check    # rebuild in memory and compare with the committed rows
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from ir3de_hf.data import benchmark_path, load_benchmark
from ir3de_hf.data.build import load_tokenizer
from ir3de_hf.data.card import render_dataset_card
from ir3de_hf.data.more_sources import MORE_SOURCES_FILE, build_more_sources, load_more_sources
from ir3de_hf.data.publish import BUILD_INFO_FILE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=benchmark_path(), help="dataset folder (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="compare with the committed rows instead of writing")
    args = parser.parse_args(argv)
    more = build_more_sources(load_tokenizer())
    if args.check:
        same = load_more_sources(args.out).to_list() == more.to_list()
        print("identical to the committed rows" if same else f"DIFFERENT from the rows in {args.out}")
        return 0 if same else 1
    path = args.out / MORE_SOURCES_FILE
    pq.write_table(more.data.table, path, compression="zstd", compression_level=19)
    print(f"wrote {path} ({len(more)} rows)")
    report = json.loads((args.out / BUILD_INFO_FILE).read_text(encoding="utf-8"))
    (args.out / "README.md").write_text(render_dataset_card(load_benchmark(args.out), report), encoding="utf-8")
    print(f"rendered {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
