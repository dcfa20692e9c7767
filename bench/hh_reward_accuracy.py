"""Held-out accuracy of a reward model trained from SmolLM2 on Anthropic HH pairs, ours beside TRL's.

The issue's protocol: train on the first 1,800 pairs of the harmless-base test split, measure
accuracy on the remaining 512. Both sides use the same model, pairs, order (no shuffling), batch
size, learning rate, epochs and max length (pairs over it are dropped on both sides, TRL's rule).
On a CPU the full protocol takes hours, so --train-limit and --eval-limit take the first N of each
part; the printout says what was run.

    PYTHONPATH=. .venv/bin/python bench/hh_reward_accuracy.py --train-limit 1800 --eval-limit 512
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"
DEFAULT_HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
TRAIN_PAIRS = 1800


def ours(args, train, held_out) -> dict:
    from training.reward import RewardConfig, train_reward_model

    config = RewardConfig(
        learning_rate=args.learning_rate, batch_size=args.batch_size, epochs=args.epochs, max_length=args.max_length,
        shuffle=False, device=args.device, eval_batch_size=args.batch_size,
    )
    started = time.perf_counter()
    result = train_reward_model(model_path=args.model, train_pairs=train, eval_pairs=held_out, config=config)
    return {
        "accuracy": result.metrics["eval_accuracy"],
        "eval_pairs": result.metrics["eval_pairs"],
        "train_pairs": result.report.kept,
        "seconds": time.perf_counter() - started,
    }


def trl_side(args, train, held_out) -> dict:
    import trl
    from datasets import Dataset
    from torch.utils.data import SequentialSampler

    from training.checkpoints import load_reward_model
    from training.data import pair_to_trl_record
    from training.runtime import set_seed

    class SequentialRewardTrainer(trl.RewardTrainer):
        def _get_train_sampler(self, *unused, **unused_kwargs):
            return SequentialSampler(self.train_dataset)

    cuda = args.device.startswith("cuda")
    started = time.perf_counter()
    set_seed(0)
    loaded = load_reward_model(str(args.model))
    trainer = SequentialRewardTrainer(
        model=loaded.model,
        args=trl.RewardConfig(
            output_dir=tempfile.mkdtemp(prefix="trl-hh-reward-"),
            learning_rate=args.learning_rate,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=1,  # Its accuracy is a mean of batch means; batches of 1 make it per pair.
            num_train_epochs=args.epochs,
            max_length=args.max_length,
            gradient_checkpointing=False,
            bf16=cuda,
            use_cpu=not cuda,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            seed=0,
        ),
        train_dataset=Dataset.from_list([pair_to_trl_record(pair) for pair in train]),
        eval_dataset=Dataset.from_list([pair_to_trl_record(pair) for pair in held_out]),
        processing_class=loaded.tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    return {
        "accuracy": metrics["eval_accuracy"],
        "eval_pairs": len(trainer.eval_dataset),
        "train_pairs": len(trainer.train_dataset),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--hh", type=Path, default=DEFAULT_HH)
    parser.add_argument("--train-limit", type=int, default=TRAIN_PAIRS, help="first N of the 1,800 training pairs")
    parser.add_argument("--eval-limit", type=int, default=None, help="first N of the 512 held-out pairs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sides", default="ours,trl")
    args = parser.parse_args()
    if not args.hh.is_file():
        sys.exit(f"HH data not found at {args.hh}; it lives in ../shared/data/hh-rlhf/.")

    from training.data import read_hh_jsonl

    pairs = read_hh_jsonl(args.hh)
    train = pairs[:TRAIN_PAIRS][: args.train_limit]
    held_out = pairs[TRAIN_PAIRS:][: args.eval_limit]
    print(
        f"HH reward accuracy: {args.model.name}, train on pairs 1-{len(train)}, evaluate on pairs "
        f"{TRAIN_PAIRS + 1}-{TRAIN_PAIRS + len(held_out)}, batch {args.batch_size}, lr {args.learning_rate}, "
        f"{args.epochs} epoch(s), max_length {args.max_length}, device {args.device}"
    )
    for side in args.sides.split(","):
        result = ours(args, train, held_out) if side == "ours" else trl_side(args, train, held_out)
        print(f"  {side:4s}: " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
