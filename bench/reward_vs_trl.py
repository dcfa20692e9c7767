"""Benchmark: our reward-model training against TRL 1.16's RewardTrainer on real Anthropic HH pairs.

Both sides train the same model (a one-output sequence classifier initialised from the policy) on
the same pairs in the same order (no shuffling), with the same batch size, max length (pairs over it
are dropped on both sides, TRL's rule), learning rate and precision. Gradient checkpointing is set the same on both sides and each
setting is measured. Every run is a fresh process (so peak memory is that run's alone), and runs
alternate ours, TRL, ours, TRL, ... so drift in the machine's speed hits both.

Reported per run: training pairs/s (optimiser steps only, after the reference pass), end-to-end
seconds (model load, tokenisation, training and, for ours, the closing statistics pass), and peak memory (peak RSS of
the process on the CPU; peak allocated CUDA memory on a GPU).

    PYTHONPATH=. .venv/bin/python bench/reward_vs_trl.py --pairs 32 --batch-size 4 --max-length 384
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from trl_comparison import main


def run_ours(args) -> dict:
    import torch

    from training.data import read_hh_jsonl
    from training.reward import RewardConfig, train_reward_model

    torch.set_num_threads(args.threads) if args.threads else None
    pairs = read_hh_jsonl(args.hh, limit=args.pairs)
    config = RewardConfig(
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        shuffle=False,
        gradient_checkpointing=args.gradient_checkpointing,
        device=args.device,
    )
    started = time.perf_counter()
    result = train_reward_model(model_path=args.model, train_pairs=pairs, config=config)
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

    from training.checkpoints import load_reward_model
    from training.data import pair_to_trl_record, read_hh_jsonl
    from training.runtime import set_seed

    class SequentialRewardTrainer(trl.RewardTrainer):
        """RewardTrainer reading the pairs in the given order, as ours does with shuffle=False."""

        def _get_train_sampler(self, *unused, **unused_kwargs):
            return SequentialSampler(self.train_dataset)

    torch.set_num_threads(args.threads) if args.threads else None
    pairs = read_hh_jsonl(args.hh, limit=args.pairs)
    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    set_seed(0)
    loaded = load_reward_model(str(args.model))
    trl_args = trl.RewardConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-reward-bench-"),
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        max_length=args.max_length,
        gradient_checkpointing=args.gradient_checkpointing,
        bf16=cuda,  # bf16 autocast on a GPU, float32 on the CPU: the same precision ours uses.
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=10_000,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SequentialRewardTrainer(
        model=loaded.model,
        args=trl_args,
        train_dataset=Dataset.from_list([pair_to_trl_record(pair) for pair in pairs]),
        processing_class=loaded.tokenizer,
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


if __name__ == "__main__":
    main(
        script=Path(__file__),
        doc=__doc__,
        title="Reward-model benchmark",
        learning_rate=1e-5,
        run_ours=run_ours,
        run_trl=run_trl,
    )
