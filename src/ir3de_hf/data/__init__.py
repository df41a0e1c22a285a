"""ir3de-multidomain: a six-domain benchmark (code, legal, politics, biomedical, fiction, multilingual) for routing.

``load_benchmark()`` reads the committed parquet files; ``build_benchmark()`` rebuilds them from pinned corpora.
"""

from ir3de_hf.data.build import BuildConfig, build_benchmark
from ir3de_hf.data.card import render_dataset_card
from ir3de_hf.data.load import benchmark_path, load_benchmark, load_sources
from ir3de_hf.data.publish import save_benchmark
from ir3de_hf.data.sources import DOMAINS, SOURCES
from ir3de_hf.data.splits import SPLITS

__all__ = [
    "DOMAINS",
    "SOURCES",
    "SPLITS",
    "BuildConfig",
    "benchmark_path",
    "build_benchmark",
    "load_benchmark",
    "load_sources",
    "render_dataset_card",
    "save_benchmark",
]
