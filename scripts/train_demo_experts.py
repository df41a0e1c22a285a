"""Train the demo experts: one LoRA adapter of SmolLM2-135M-Instruct per ir3de-multidomain domain.

    python scripts/train_demo_experts.py                      # all six domains, GPU if there is one
    python scripts/train_demo_experts.py --domains fiction --epochs 1 --device cpu

Each adapter is trained on its domain's train split (texts packed into blocks of --block-size tokens), saved in
fp16 under --out/<domain>/ with an adapter card, then every adapter and the base model are scored on every domain's
test split: token-weighted perplexity on each text's first 256 tokens. The matrix goes to --metrics (JSON).
Only torch, transformers, peft and pyarrow are needed, so it also runs on a bare GPU host.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup

from ir3de_hf._templates import template_path
from ir3de_hf.perplexity import text_nll

REPO = Path(__file__).resolve().parents[1]
DOMAINS = ("code", "legal", "politics", "biomedical", "fiction", "multilingual")
BASE_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def split_texts(data_dir: Path, split: str) -> dict[str, list[str]]:
    table = pq.read_table(next((data_dir / "data").glob(f"{split}-*.parquet")), columns=["text", "domain"])
    texts: dict[str, list[str]] = {domain: [] for domain in DOMAINS}
    for text, domain in zip(table.column("text").to_pylist(), table.column("domain").to_pylist(), strict=True):
        texts[domain].append(text)
    return texts


def packed_blocks(tokenizer, texts: list[str], block_size: int) -> torch.Tensor:
    """All texts, each followed by EOS, concatenated and cut into equal blocks (the remainder is dropped)."""
    ids: list[int] = []
    for encoded in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids.extend([*encoded, tokenizer.eos_token_id])
    usable = len(ids) // block_size * block_size
    return torch.tensor(ids[:usable]).reshape(-1, block_size)


def train_adapter(args, tokenizer, texts: list[str], domain: str, device: torch.device) -> Path:
    torch.manual_seed(args.seed)
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(device)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, target_modules=TARGETS)
    model = get_peft_model(base, config)
    blocks = packed_blocks(tokenizer, texts, args.block_size)
    steps = max(1, args.epochs * len(blocks) // args.batch_size)
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 20), steps)
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        batch = blocks[torch.randint(len(blocks), (args.batch_size,), generator=generator)].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            print(f"[{domain}] step {step + 1}/{steps} loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    out = args.out / domain
    model.peft_config["default"].base_model_name_or_path = BASE_HUB_ID
    model.half().save_pretrained(out)
    return out


def score(model, tokenizer, test: dict[str, list[str]], samples: int) -> dict[str, float]:
    model.eval()
    return {
        domain: text_nll(model, tokenizer, texts[:samples], max_tokens=256).perplexity
        for domain, texts in test.items()
    }


def write_card(out: Path, domain: str, row: dict[str, float], base_row: dict[str, float], args) -> None:
    template = template_path("adapter_card.md").read_text()
    table = "\n".join(f"| {d} | {base_row[d]:.2f} | {row[d]:.2f} |" for d in DOMAINS)
    gain = 100 * (1 - row[domain] / base_row[domain])
    (out / "README.md").write_text(
        template.format(
            domain=domain,
            base_model=BASE_HUB_ID,
            rank=args.rank,
            alpha=2 * args.rank,
            epochs=args.epochs,
            block_size=args.block_size,
            batch_size=args.batch_size,
            lr=args.lr,
            gain=gain,
            table=table,
        )
    )


def _portable(value: object) -> object:
    """Paths as the repository sees them, so the metrics file holds no machine's absolute paths."""
    if not isinstance(value, Path):
        return value
    resolved = value.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else resolved.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, help="SmolLM2-135M-Instruct directory (default: assets cache)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "ir3de-multidomain")
    parser.add_argument("--out", type=Path, default=REPO / "space_app" / "experts")
    parser.add_argument("--metrics", type=Path, default=REPO / "benchmarks" / "results" / "expert_perplexity.json")
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--max-steps", type=int, help="cap on optimizer steps per adapter (smoke tests)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=400, help="test texts per domain")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.model_dir is None:
        from ir3de_hf.assets import smollm2_path

        args.model_dir = smollm2_path()
    device = torch.device(args.device)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    train, test = split_texts(args.data_dir, "train"), split_texts(args.data_dir, "test")

    adapters = {domain: train_adapter(args, tokenizer, train[domain], domain, device) for domain in args.domains}
    base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(device)
    matrix = {"base": score(base, tokenizer, test, args.eval_samples)}
    for domain, path in adapters.items():
        base = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).to(device)
        matrix[domain] = score(PeftModel.from_pretrained(base, path), tokenizer, test, args.eval_samples)
        write_card(path, domain, matrix[domain], matrix["base"], args)
        print(f"{domain}: " + " ".join(f"{d}={ppl:.2f}" for d, ppl in matrix[domain].items()))
    checks = {
        domain: {
            "gain_vs_base_pct": 100 * (1 - matrix[domain][domain] / matrix["base"][domain]),
            "best_on_own_domain": min(adapters, key=lambda name: matrix[name][domain]) == domain,
        }
        for domain in adapters
    }
    settings = {key: _portable(value) for key, value in vars(args).items() if key != "model_dir"}
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps({"settings": settings, "perplexity": matrix, "checks": checks}, indent=2))
    assert all(math.isfinite(p) for row in matrix.values() for p in row.values())
    print(json.dumps(checks, indent=2))


if __name__ == "__main__":
    main()
