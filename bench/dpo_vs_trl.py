"""Benchmark: our DPO against TRL 1.16's DPOTrainer on real Anthropic HH pairs.

Both sides train the same model on the same pairs in the same order (no shuffling), with the same
batch size, max length, learning rate and precision, TRL in its fastest honest configuration
(`precompute_ref_log_probs=True`). Gradient checkpointing is set the same on both sides and each
setting is measured. Every run is a fresh process (so peak memory is that run's alone), and runs
alternate ours, TRL, ours, TRL, ... so drift in the machine's speed hits both.

Reported per run: training pairs/s (optimiser steps only, after the reference pass), end-to-end
seconds (model load, tokenisation, reference log-probs and training), and peak memory (peak RSS of
the process on the CPU; peak allocated CUDA memory on a GPU).

    PYTHONPATH=. .venv/bin/python bench/dpo_vs_trl.py --pairs 32 --batch-size 4 --max-length 384
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"
DEFAULT_HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ours(args) -> dict:
    import torch

    from training.data import read_hh_jsonl
    from training.dpo import DPOConfig, train_dpo

    torch.set_num_threads(args.threads) if args.threads else None
    pairs = read_hh_jsonl(args.hh, limit=args.pairs)
    config = DPOConfig(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        reference_batch_size=args.batch_size,
        max_length=args.max_length,
        shuffle=False,
        gradient_checkpointing=args.gradient_checkpointing,
        device=args.device,
    )
    started = time.perf_counter()
    result = train_dpo(policy_path=args.model, pairs=pairs, config=config)
    total = time.perf_counter() - started
    return {
        "train_pairs_per_s": result.metrics["train_pairs_per_second"],
        "train_seconds": result.metrics["train_seconds"],
        "total_seconds": total,
        "pairs": result.report.kept,
        "final_loss": result.metrics["train_loss"],
    }


def run_trl(args) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM

    from training.checkpoints import load_tokenizer
    from training.data import pair_to_trl_record, read_hh_jsonl

    class SequentialDPOTrainer(trl.DPOTrainer):
        """DPOTrainer reading the pairs in the given order, as ours does with shuffle=False."""

        def _get_train_sampler(self, *unused, **unused_kwargs):
            return SequentialSampler(self.train_dataset)

    torch.set_num_threads(args.threads) if args.threads else None
    pairs = read_hh_jsonl(args.hh, limit=args.pairs)
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    tokenizer = load_tokenizer(str(args.model))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trl_args = trl.DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-dpo-bench-"),
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        precompute_ref_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        max_length=args.max_length,
        precompute_ref_log_probs=True,
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=cuda,  # bf16 autocast on a GPU, float32 on the CPU: the same precision ours uses.
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SequentialDPOTrainer(
        model=model,
        args=trl_args,
        train_dataset=Dataset.from_list([pair_to_trl_record(pair) for pair in pairs]),
        processing_class=tokenizer,
    )
    train_started = time.perf_counter()
    output = trainer.train()
    train_seconds = time.perf_counter() - train_started
    kept = len(trainer.train_dataset)
    return {
        "train_pairs_per_s": kept / train_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "pairs": kept,
        "final_loss": output.training_loss,
    }


def worker(args) -> None:
    result = run_ours(args) if args.worker == "ours" else run_trl(args)
    result["peak_memory_mib"] = peak_memory_mib(args.device)
    print("RESULT " + json.dumps(result), flush=True)


def launch(args, side: str, checkpointing: bool) -> dict:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--worker", side,
        "--model", str(args.model), "--hh", str(args.hh), "--pairs", str(args.pairs),
        "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--device", args.device, "--learning-rate", str(args.learning_rate), "--threads", str(args.threads),
    ]
    if checkpointing:
        command.append("--gradient-checkpointing")
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env={**_env()})
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        raise RuntimeError(f"{side} run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--hh", type=Path, default=DEFAULT_HH)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per side and setting")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if not args.hh.is_file():
        sys.exit(f"HH data not found at {args.hh}; it lives in ../shared/data/hh-rlhf/.")
    if not args.model.is_dir():
        sys.exit(f"Model not found at {args.model}; run `python manage.py prepare_model` first.")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    print(
        f"DPO benchmark: {args.model.name}, {args.pairs} HH pairs, batch {args.batch_size}, "
        f"max_length {args.max_length}, device {args.device}, {args.repeats} alternated runs per side"
    )
    for checkpointing in settings:
        runs = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for side in ("ours", "trl"):
                result = launch(args, side, checkpointing)
                runs[side].append(result)
                print(f"  gc={'on' if checkpointing else 'off'} run {repeat + 1} {side:4s}: " + json.dumps(result), flush=True)
        best = {side: max(results, key=lambda r: r["train_pairs_per_s"]) for side, results in runs.items()}
        peak = {side: max(r["peak_memory_mib"] for r in results) for side, results in runs.items()}
        total = {side: min(r["total_seconds"] for r in results) for side, results in runs.items()}
        ratio = best["ours"]["train_pairs_per_s"] / best["trl"]["train_pairs_per_s"]
        print(
            f"gradient checkpointing {'on' if checkpointing else 'off'}: "
            f"ours {best['ours']['train_pairs_per_s']:.3f} pairs/s, TRL {best['trl']['train_pairs_per_s']:.3f} pairs/s, "
            f"ratio {ratio:.2f}x; end-to-end ours {total['ours']:.1f} s, TRL {total['trl']:.1f} s "
            f"({total['trl'] / total['ours']:.2f}x); peak memory ours {peak['ours']:.0f} MiB, TRL {peak['trl']:.0f} MiB"
        )


if __name__ == "__main__":
    main()
