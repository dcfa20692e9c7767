"""Benchmark: our RLOO and GRPO against TRL 1.16's RLOOTrainer and GRPOTrainer on SmolLM2-135M.

    PYTHONPATH=. nice -n 10 .venv/bin/python bench/online_vs_trl.py --steps 3 --prompts-per-step 2 -k 4 \\
        --max-new-tokens 32 --repeats 2

(these are the defaults; about 9 minutes on two idle CPU cores, more under load. Add
`--checkpointing both` to measure with gradient checkpointing on as well; on a GPU, larger settings
such as `--steps 8 --prompts-per-step 8 -k 8 --max-new-tokens 128` give steadier ratios.)

Each side samples k replies to each prompt, scores them with the same reward model, and takes one
optimiser step per rollout, for `--steps` steps. Every run is a fresh process (so peak memory is
that run's alone), and runs alternate ours, TRL, ours, TRL, ... so drift in the machine's speed
hits both. The goal (project issue 16) is ours at least 1.5x TRL's samples/s at no more memory.

Measured per run: samples/s (replies generated and trained on, over the seconds of the training
call: ours from its own `train_replies_per_second`, which starts after the models are loaded;
TRL's over `trainer.train()`, its models having been loaded in the constructor), end-to-end
seconds (model loading included), peak memory (peak RSS of the process on the CPU; peak allocated
CUDA memory on a GPU), and the mean reply length and reward as a check that both sides did the
same work. The summary per algorithm gives the ours/TRL ratios of alternated run pairs: median,
with min-max.

Settings matched on both sides:
- model, reward model and precision: the same policy checkpoint, float32 on the CPU, float32
  weights under bf16 autocast on a GPU (TRL's bf16=True, ours by default there). Unless `--reward`
  is given, the reward model is the policy loaded as a one-output sequence classifier with a head
  seeded at 0, saved once to a temporary directory that both sides load.
- prompts: the built-in prompts as single user turns, in the same order. Ours draws its seeded
  order (training.rollout.prompt_batches); TRL is given those prompts in that order with
  shuffle_dataset=False.
- batch shape: `--prompts-per-step` prompts times k replies per step, all sampled in one
  generation pass (TRL's generation_batch_size, our generation_batch_size) and scored in one reward
  pass; `--batch-size` replies per forward/backward pass (TRL's per_device_train_batch_size, with
  gradient accumulation over the rollout); one optimiser step per rollout (TRL's steps_per_generation
  equal to its gradient accumulation, num_iterations=1; our update_epochs=1, mini_batches=1).
- sampling: max new tokens, temperature, top_p, no top-k (TRL's top_k=0), no repetition penalty.
- optimiser: fused AdamW, the same constant learning rate, eps 1e-5, no weight decay, gradient norm
  clipped at 1.0; beta (KL coefficient); clip range 0.2; GRPO's "dapo" loss with group scaling;
  gradient checkpointing on or off alike (non-reentrant on both), dropout off.

Not matched exactly:
- the sampled replies: each side draws from its own random stream, so the replies (and hence their
  lengths and the tokens trained on) differ; the mean reply length is printed so a run that
  sampled shorter replies shows.
- the work inside a step is each library's own: ours takes the rollout's log-probs in a separate
  pass (and the reference's when beta > 0), TRL takes what its algorithm needs; that difference is
  what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trl_comparison import DEFAULT_MODEL, REPO, peak_memory_mib

DEFAULT_PROMPTS = REPO / "preference_app" / "core" / "builtin_prompts.jsonl"
# Each library's default KL coefficient, which is the same in both: RLOO penalises the reward by
# 0.05 * KL; GRPO's default 0.0 needs no reference model.
DEFAULT_BETA = {"rloo": 0.05, "grpo": 0.0}
SPEED_GOAL = 1.5


def read_prompts(path: Path) -> list[list[dict[str, str]]]:
    with path.open() as lines:
        return [[{"role": "user", "content": json.loads(line)["text"]}] for line in lines if line.strip()]


def beta_for(args: argparse.Namespace) -> float:
    return DEFAULT_BETA[args.algorithm] if args.beta is None else args.beta


def replies_per_step(args: argparse.Namespace) -> int:
    return args.prompts_per_step * args.samples_per_prompt


def micro_batch_size(args: argparse.Namespace) -> int:
    return args.batch_size or replies_per_step(args)


def build_reward_model(args: argparse.Namespace) -> None:
    from training.checkpoints import load_reward_model, save_checkpoint
    from training.runtime import set_seed

    set_seed(0)
    loaded = load_reward_model(str(args.model))
    save_checkpoint(loaded.model, loaded.tokenizer, Path(args.build_reward_model), config={}, metrics={})


def run_ours(args: argparse.Namespace) -> dict:
    import torch

    from training.online import GRPOConfig, RLOOConfig, train_grpo, train_rloo

    if args.threads:
        torch.set_num_threads(args.threads)
    config_class, train = {"rloo": (RLOOConfig, train_rloo), "grpo": (GRPOConfig, train_grpo)}[args.algorithm]
    config = config_class(
        learning_rate=args.learning_rate,
        steps=args.steps,
        prompts_per_step=args.prompts_per_step,
        samples_per_prompt=args.samples_per_prompt,
        update_epochs=1,
        mini_batches=1,
        batch_size=micro_batch_size(args),
        beta=beta_for(args),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        generation_batch_size=replies_per_step(args),
        reward_batch_size=replies_per_step(args),
        seed=0,
        device=args.device,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    started = time.perf_counter()
    result = train(policy_path=args.model, prompts=read_prompts(args.prompts), reward_path=args.reward, config=config)
    total = time.perf_counter() - started
    history = result.metrics["history"]
    return {
        "samples_per_s": result.metrics["train_replies_per_second"],
        "train_seconds": result.metrics["train_seconds"],
        "total_seconds": total,
        "samples": replies_per_step(args) * len(history),
        "mean_reply_tokens": statistics.fmean(entry["reply_length"] for entry in history),
        "mean_reward": statistics.fmean(entry["reward_mean"] for entry in history),
    }


def run_trl(args: argparse.Namespace) -> dict:
    import torch
    import trl
    from datasets import Dataset

    from training.rollout import prompt_batches

    if args.threads:
        torch.set_num_threads(args.threads)
    config_class, trainer_class = {
        "rloo": (trl.RLOOConfig, trl.RLOOTrainer), "grpo": (trl.GRPOConfig, trl.GRPOTrainer),
    }[args.algorithm]
    cuda = args.device.startswith("cuda")
    # Our prompt order, written out step after step, so TRL reading the dataset unshuffled sees the
    # same prompts at each step.
    ordered = [context for batch in prompt_batches(read_prompts(args.prompts), per_step=args.prompts_per_step,
                                                   steps=args.steps, seed=0) for context in batch]
    micro = micro_batch_size(args)
    algorithm_settings = ({"loss_type": "dapo", "scale_rewards": "group", "use_bias_correction_kl": True}
                          if args.algorithm == "grpo" else {"normalize_advantages": False})
    started = time.perf_counter()
    trl_args = config_class(
        output_dir=tempfile.mkdtemp(prefix=f"trl-{args.algorithm}-bench-"),
        # Loads the policy, TRL's reference copy of it, and the reward model in float32, as ours does.
        model_init_kwargs={"dtype": "float32"},
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        optim="adamw_torch_fused",
        adam_epsilon=1e-5,
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=args.steps,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=replies_per_step(args) // micro,
        num_generations=args.samples_per_prompt,
        num_iterations=1,
        max_completion_length=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=0,
        beta=beta_for(args),
        epsilon=0.2,
        mask_truncated_completions=False,
        shuffle_dataset=False,
        disable_dropout=True,
        gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if args.gradient_checkpointing else None,
        bf16=cuda,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=1,  # Per-step reply lengths and rewards; TRL gathers these metrics every step anyway.
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **algorithm_settings,
    )
    trainer = trainer_class(
        model=str(args.model),
        reward_funcs=str(args.reward),
        args=trl_args,
        train_dataset=Dataset.from_list([{"prompt": context} for context in ordered]),
    )
    train_started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - train_started
    steps = [entry for entry in trainer.state.log_history if "completions/mean_length" in entry]
    samples = replies_per_step(args) * trainer.state.global_step
    return {
        "samples_per_s": samples / train_seconds,
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "samples": samples,
        "mean_reply_tokens": statistics.fmean(entry["completions/mean_length"] for entry in steps),
        "mean_reward": statistics.fmean(entry["reward"] for entry in steps),
    }


def worker(args: argparse.Namespace) -> None:
    result = run_ours(args) if args.worker == "ours" else run_trl(args)
    result["peak_memory_mib"] = peak_memory_mib(args.device)
    print("RESULT " + json.dumps(result), flush=True)


def _run_script(arguments: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), *arguments],
                          capture_output=True, text=True, cwd=REPO, env=environment)


def launch(args: argparse.Namespace, *, side: str, algorithm: str, checkpointing: bool) -> dict:
    arguments = [
        "--worker", side, "--algorithm", algorithm,
        "--model", str(args.model), "--reward", str(args.reward), "--prompts", str(args.prompts),
        "--steps", str(args.steps), "--prompts-per-step", str(args.prompts_per_step),
        "--samples-per-prompt", str(args.samples_per_prompt), "--max-new-tokens", str(args.max_new_tokens),
        "--temperature", str(args.temperature), "--top-p", str(args.top_p),
        "--batch-size", str(micro_batch_size(args)), "--learning-rate", str(args.learning_rate),
        "--device", args.device, "--threads", str(args.threads),
    ]
    if args.beta is not None:
        arguments += ["--beta", str(args.beta)]
    if checkpointing:
        arguments.append("--gradient-checkpointing")
    completed = _run_script(arguments)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode or not lines:
        raise RuntimeError(f"{algorithm} {side} run failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x (min {min(values):.2f}, max {max(values):.2f})"


def print_summary(algorithm: str, checkpointing: bool, runs: dict[str, list[dict]]) -> None:
    # Each ratio compares the two runs of one alternation, which ran under the same load on the machine.
    pairs = list(zip(runs["ours"], runs["trl"]))
    speed = [ours["samples_per_s"] / theirs["samples_per_s"] for ours, theirs in pairs]
    memory = [ours["peak_memory_mib"] / theirs["peak_memory_mib"] for ours, theirs in pairs]
    met = statistics.median(speed) >= SPEED_GOAL and statistics.median(memory) <= 1.0
    print(
        f"{algorithm.upper()} gc={'on' if checkpointing else 'off'}: ours/TRL samples/s {_spread(speed)}, "
        f"peak memory {_spread(memory)}; goal >= {SPEED_GOAL}x at no more memory: {'met' if met else 'NOT met'}",
        flush=True,
    )


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--reward", type=Path, help="reward model both sides score with (default: a seeded head "
                                                     "on --model, built once in a temporary directory)")
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS, help='JSONL with a "text" field per line')
    parser.add_argument("--algorithms", choices=["rloo", "grpo", "both"], default="both")
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps, one rollout each")
    parser.add_argument("--prompts-per-step", type=int, default=2)
    parser.add_argument("-k", "--samples-per-prompt", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="replies per forward/backward pass; must divide prompts-per-step * k (0: all of them)")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, help="KL coefficient for both algorithms (default: RLOO 0.05, GRPO 0.0)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=2, help="alternated runs per side and setting")
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="off")
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--algorithm", choices=["rloo", "grpo"], help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["ours", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--build-reward-model", help=argparse.SUPPRESS)
    return parser.parse_args()


def default_device() -> str:
    # Asked of a child process: importing torch here would grow the parent, and a child started by
    # vfork/exec inherits its parent's peak RSS into ru_maxrss, which would inflate every worker's.
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, check=True)
    return "cuda" if probe.stdout.strip() == "True" else "cpu"


def compare(args: argparse.Namespace) -> None:
    algorithms = ["rloo", "grpo"] if args.algorithms == "both" else [args.algorithms]
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.checkpointing]
    print(
        f"Online RL benchmark: {args.model.name}, {args.steps} steps x {args.prompts_per_step} prompts x "
        f"k={args.samples_per_prompt}, {args.max_new_tokens} new tokens, batch {micro_batch_size(args)}, "
        f"device {args.device}, {args.repeats} alternated runs per side",
        flush=True,
    )
    for algorithm in algorithms:
        for checkpointing in settings:
            runs = {"ours": [], "trl": []}
            for repeat in range(args.repeats):
                for side in ("ours", "trl"):
                    result = launch(args, side=side, algorithm=algorithm, checkpointing=checkpointing)
                    runs[side].append(result)
                    print(f"  {algorithm} gc={'on' if checkpointing else 'off'} run {repeat + 1} {side:4s}: "
                          + json.dumps(result), flush=True)
            print_summary(algorithm, checkpointing, runs)


def main() -> None:
    args = parse_arguments()
    if args.build_reward_model:
        build_reward_model(args)
        return
    if args.worker:
        worker(args)
        return
    if not args.model.is_dir():
        sys.exit(f"Model not found at {args.model}; run `python manage.py prepare_model` first.")
    if replies_per_step(args) % micro_batch_size(args):
        sys.exit(f"--batch-size {args.batch_size} must divide prompts-per-step * k = {replies_per_step(args)}.")
    args.device = args.device or default_device()
    if args.reward is not None:
        compare(args)
        return
    with tempfile.TemporaryDirectory(prefix="online-bench-reward-") as scratch:
        args.reward = Path(scratch) / "reward"
        built = _run_script(["--build-reward-model", str(args.reward), "--model", str(args.model)])
        if built.returncode:
            raise RuntimeError(f"Building the reward model failed:\n{built.stderr[-3000:]}")
        compare(args)


if __name__ == "__main__":
    main()
