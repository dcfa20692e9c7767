"""Candidates/s of batched generation against one-prompt-at-a-time generation, in one run.

    .venv/bin/python bench/generate.py [--prompts 16] [--k 2] [--max-new-tokens 64] [--model DIR]

Both legs sample the same (prompt, K) rows with the same settings; the one-at-a-time leg calls the
same `generate_replies` with a batch size of 1, as a naive worker loop would. Runs are alternated
(one-at-a-time, batched, repeated) and the best of each is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from training.checkpoints import load_causal_lm  # noqa: E402
from training.generate import GenerationConfig, generate_replies  # noqa: E402

PROMPTS_FILE = REPO_ROOT / "preference_app" / "core" / "builtin_prompts.jsonl"


def run(loaded, contexts, config):
    started = time.perf_counter()
    replies = generate_replies(loaded.model, loaded.tokenizer, contexts, config)
    seconds = time.perf_counter() - started
    flat = [reply for context_replies in replies for reply in context_replies]
    return {"seconds": seconds, "candidates": len(flat), "tokens": sum(reply.token_count for reply in flat)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "var" / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    rows = [json.loads(line) for line in PROMPTS_FILE.read_text().splitlines() if line.strip()][: args.prompts]
    contexts = [[{"role": "user", "content": row["text"]}] for row in rows]
    loaded = load_causal_lm(args.model, device=args.device)
    loaded.model.eval()
    shared = dict(candidates_per_context=args.k, max_new_tokens=args.max_new_tokens, seed=0)
    one_at_a_time = GenerationConfig(batch_size=1, **shared)
    batched = GenerationConfig(batch_size=args.batch_size, **shared)
    print(f"model={args.model} device={args.device} torch_threads={torch.get_num_threads()} "
          f"prompts={len(contexts)} k={args.k} max_new_tokens={args.max_new_tokens} batch_size={args.batch_size}")

    best = {"one-at-a-time": None, "batched": None}
    for repeat in range(args.repeats):
        for name, config in (("one-at-a-time", one_at_a_time), ("batched", batched)):
            result = run(loaded, contexts, config)
            rate = result["candidates"] / result["seconds"]
            print(f"  run {repeat + 1} {name:>13}: {result['candidates']} candidates, {result['tokens']} tokens "
                  f"in {result['seconds']:.1f} s = {rate:.2f} candidates/s, {result['tokens'] / result['seconds']:.1f} tokens/s")
            if best[name] is None or rate > best[name][0]:
                best[name] = (rate, result["tokens"] / result["seconds"])
    ratio = best["batched"][0] / best["one-at-a-time"][0]
    print(f"one-at-a-time: {best['one-at-a-time'][0]:.2f} candidates/s ({best['one-at-a-time'][1]:.1f} tokens/s)")
    print(f"batched:       {best['batched'][0]:.2f} candidates/s ({best['batched'][1]:.1f} tokens/s)")
    print(f"batched / one-at-a-time = {ratio:.2f}x candidates/s")


if __name__ == "__main__":
    main()
