"""Harness shared by the benchmarks that compare one of our trainers with TRL's (dpo_vs_trl.py, reward_vs_trl.py).

A benchmark script supplies its own `run_ours` and `run_trl`, each taking the parsed arguments and
returning a dict of metrics with at least `train_pairs_per_s` and `total_seconds`, and calls `main`.
`main` parses the common arguments, then for each gradient-checkpointing setting runs the script
again as a worker process per side, alternating ours, TRL, ours, TRL, ..., and prints every run and
a one-line summary per setting. Each run is a fresh process so that its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "var" / "models" / "SmolLM2-135M-Instruct"
DEFAULT_HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

RunSide = Callable[[argparse.Namespace], dict]


def peak_memory_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(args: argparse.Namespace, run_ours: RunSide, run_trl: RunSide) -> None:
    result = run_ours(args) if args.worker == "ours" else run_trl(args)
    result["peak_memory_mib"] = peak_memory_mib(args.device)
    print("RESULT " + json.dumps(result), flush=True)


def launch(script: Path, args: argparse.Namespace, side: str, checkpointing: bool) -> dict:
    command = [
        sys.executable, str(script.resolve()), "--worker", side,
        "--model", str(args.model), "--hh", str(args.hh), "--pairs", str(args.pairs),
        "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
        "--device", args.device, "--learning-rate", str(args.learning_rate), "--threads", str(args.threads),
    ]
    if checkpointing:
        command.append("--gradient-checkpointing")
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=_env())
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        raise RuntimeError(f"{side} run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main(
    *, script: Path, doc: str | None, title: str, learning_rate: float, run_ours: RunSide, run_trl: RunSide
) -> None:
    """Run the comparison, or, when called with `--worker`, one side of it in this process.

    `script` is the benchmark file, started again for each worker; `doc` its docstring, shown by
    `--help`; `title` opens the printed header; `learning_rate` is the default of `--learning-rate`.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--hh", type=Path, default=DEFAULT_HH)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--learning-rate", type=float, default=learning_rate)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per side and setting")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="both")
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args, run_ours, run_trl)
        return
    if not args.hh.is_file():
        sys.exit(f"HH data not found at {args.hh}; it lives in ../shared/data/hh-rlhf/.")
    if not args.model.is_dir():
        sys.exit(f"Model not found at {args.model}; run `python manage.py prepare_model` first.")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    print(
        f"{title}: {args.model.name}, {args.pairs} HH pairs, batch {args.batch_size}, "
        f"max_length {args.max_length}, device {args.device}, {args.repeats} alternated runs per side"
    )
    for checkpointing in settings:
        runs = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for side in ("ours", "trl"):
                result = launch(script, args, side, checkpointing)
                runs[side].append(result)
                print(f"  gc={'on' if checkpointing else 'off'} run {repeat + 1} {side:4s}: " + json.dumps(result), flush=True)
        _print_summary(checkpointing, runs)


def _print_summary(checkpointing: bool, runs: dict[str, list[dict]]) -> None:
    # Speed and end-to-end time take each side's best run, so a run slowed by the machine does not count
    # against its side; peak memory takes the highest, so no run's memory goes unreported.
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
