"""Command line: `python -m training {sft,reward,dpo,ppo,rloo,grpo,generate,evaluate} ...` on the JSONL the app exports.

    python -m training reward --model var/models/SmolLM2-135M-Instruct --train pairs.jsonl --out var/models/rm-1
    python -m training dpo --policy var/models/SmolLM2-135M-Instruct --train pairs.jsonl --out var/models/policy-1
    python -m training sft --model var/models/SmolLM2-135M-Instruct --train demos.jsonl --out var/models/sft-1
    python -m training ppo --policy var/models/sft-1 --reward var/models/rm-1 --prompts contexts.jsonl --out var/models/ppo-1
    python -m training grpo --policy var/models/sft-1 --reward var/models/rm-1 --prompts contexts.jsonl --out var/models/grpo-1
    python -m training generate --model var/models/policy-1 --contexts contexts.jsonl -k 2
    python -m training evaluate --policy var/models/policy-1 --baseline var/models/SmolLM2-135M-Instruct \\
        --reward var/models/rm-1 --contexts contexts.jsonl --reference var/models/SmolLM2-135M-Instruct

Preference files are TRL conversational or standard JSONL (an HH-RLHF .jsonl.gz is read with --hh).
Progress goes to stderr; the resulting metrics are printed to stdout as JSON.

Every training command also runs on several processes, each taking a shard of every batch:

    torchrun --nproc_per_node 2 -m training dpo --policy ... --train pairs.jsonl --out var/models/policy-1

Only rank 0 prints and writes the checkpoint (training.distributed).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from training import distributed
from training.data import read_context_jsonl, read_demonstration_jsonl, read_hh_jsonl, read_preference_jsonl


def _progress(step: int, total: int, loss: float) -> None:
    print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)


def _add_shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training stage, offline or online, takes."""
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None)


def _add_optim_arguments(parser: argparse.ArgumentParser) -> None:
    _add_shared_arguments(parser)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--gradient-accumulation", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)


def _config(cls, args: argparse.Namespace, **extra):
    """A stage config from the command line: only the options given override the defaults."""
    names = {item.name for item in fields(cls)}
    values = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return cls(**values, **{name: value for name, value in extra.items() if value is not None})


def _pairs(path: Path, *, hh: bool):
    return read_hh_jsonl(path) if hh else read_preference_jsonl(path)


def _print(payload) -> None:
    if distributed.context().is_main:
        print(json.dumps(payload, indent=2, default=str))


def command_sft(args) -> None:
    from training.sft import SFTConfig, train_sft

    result = train_sft(
        model_path=args.model,
        demonstrations=read_demonstration_jsonl(args.train),
        config=_config(SFTConfig, args),
        out_dir=args.out,
        progress=_progress,
    )
    _print({"checkpoint": result.checkpoint, **result.metrics})


def command_reward(args) -> None:
    from training.reward import RewardConfig, train_reward_model

    result = train_reward_model(
        model_path=args.model,
        train_pairs=_pairs(args.train, hh=args.hh),
        eval_pairs=_pairs(args.eval, hh=args.hh) if args.eval else None,
        config=_config(RewardConfig, args, use_margin=args.use_margin or None),
        out_dir=args.out,
        progress=_progress,
    )
    _print({"checkpoint": result.checkpoint, **result.metrics})


def command_dpo(args) -> None:
    from training.dpo import DPOConfig, train_dpo

    result = train_dpo(
        policy_path=args.policy,
        pairs=_pairs(args.train, hh=args.hh),
        config=_config(DPOConfig, args, reference_path=args.reference),
        out_dir=args.out,
        cache_dir=args.cache_dir,
        progress=_progress,
    )
    _print({"checkpoint": result.checkpoint, **result.metrics})


def _add_online_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True)
    parser.add_argument("--reward", required=True, help="reward model checkpoint that scores the replies")
    parser.add_argument("--prompts", type=Path, required=True, help="contexts JSONL (the round's generation prompts)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference", dest="reference_path", help="reference checkpoint (default: the policy)")
    _add_shared_arguments(parser)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--prompts-per-step", type=int)
    parser.add_argument("--samples-per-prompt", type=int)
    parser.add_argument("--update-epochs", type=int)
    parser.add_argument("--mini-batches", type=int)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--missing-eos-penalty", type=float)


def command_online(args) -> None:
    from training.online import GRPOConfig, RLOOConfig, train_grpo, train_rloo
    from training.ppo import PPOConfig, train_ppo

    config_class, train = {"ppo": (PPOConfig, train_ppo), "rloo": (RLOOConfig, train_rloo),
                           "grpo": (GRPOConfig, train_grpo)}[args.command]
    result = train(
        policy_path=args.policy,
        prompts=read_context_jsonl(args.prompts),
        reward_path=args.reward,
        config=_config(config_class, args),
        out_dir=args.out,
        progress=_progress,
    )
    _print({"checkpoint": result.checkpoint, **result.metrics})


def command_generate(args) -> None:
    from training.checkpoints import load_causal_lm
    from training.generate import GenerationConfig, generate_replies
    from training.runtime import pick_device

    loaded = load_causal_lm(str(args.model), device=pick_device(args.device))
    config = GenerationConfig(
        candidates_per_context=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed or 0
    )
    contexts = read_context_jsonl(args.contexts)
    for context, replies in zip(contexts, generate_replies(loaded.model, loaded.tokenizer, contexts, config)):
        print(json.dumps({"prompt": context, "replies": [reply.__dict__ for reply in replies]}))


def command_evaluate(args) -> None:
    from training.evaluate import EvaluationConfig, evaluate_policy
    from training.generate import GenerationConfig

    config = EvaluationConfig(
        generation=GenerationConfig(
            candidates_per_context=1, temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens,
            seed=args.seed or 0,
        ),
        device=args.device,
    )
    report = evaluate_policy(
        policy_path=args.policy,
        baseline_path=args.baseline,
        reward_path=args.reward,
        reference_path=args.reference,
        contexts=read_context_jsonl(args.contexts),
        config=config,
    )
    _print(report.to_dict())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sft = commands.add_parser("sft", help="supervised fine-tuning on demonstrations")
    sft.add_argument("--model", required=True)
    sft.add_argument("--train", type=Path, required=True, help="demonstrations JSONL")
    sft.add_argument("--out", type=Path, required=True)
    _add_optim_arguments(sft)
    sft.set_defaults(run=command_sft)

    reward = commands.add_parser("reward", help="train a reward model on preference pairs")
    reward.add_argument("--model", required=True, help="policy checkpoint to initialise from")
    reward.add_argument("--train", type=Path, required=True)
    reward.add_argument("--eval", type=Path, help="held-out pairs for accuracy")
    reward.add_argument("--out", type=Path, required=True)
    reward.add_argument("--hh", action="store_true", help="the files are Anthropic HH-RLHF transcripts")
    reward.add_argument("--use-margin", action="store_true", help="use each pair's margin/strength")
    _add_optim_arguments(reward)
    reward.set_defaults(run=command_reward)

    dpo = commands.add_parser("dpo", help="train a policy with DPO")
    dpo.add_argument("--policy", required=True)
    dpo.add_argument("--train", type=Path, required=True)
    dpo.add_argument("--out", type=Path, required=True)
    dpo.add_argument("--reference", help="reference checkpoint (default: the policy's starting weights)")
    dpo.add_argument("--cache-dir", type=Path, default=Path("var/cache/reference-logps"))
    dpo.add_argument("--hh", action="store_true")
    dpo.add_argument("--beta", type=float)
    dpo.add_argument("--label-smoothing", type=float)
    dpo.add_argument("--lora-rank", type=int)
    _add_optim_arguments(dpo)
    dpo.set_defaults(run=command_dpo)

    ppo = commands.add_parser("ppo", help="train a policy with PPO against a reward model")
    _add_online_arguments(ppo)
    ppo.add_argument("--critic-init", choices=["reward", "policy"])
    ppo.add_argument("--adaptive-kl", action="store_true", default=None)
    ppo.add_argument("--target-kl", type=float)
    ppo.set_defaults(run=command_online)

    rloo = commands.add_parser("rloo", help="train a policy with RLOO (k replies per prompt, leave-one-out baseline)")
    _add_online_arguments(rloo)
    rloo.set_defaults(run=command_online)

    grpo = commands.add_parser("grpo", help="train a policy with GRPO (k replies per prompt, group-normalised)")
    _add_online_arguments(grpo)
    grpo.add_argument("--loss-type", choices=["grpo", "dapo", "dr_grpo"])
    grpo.add_argument("--scale-rewards", choices=["group", "batch", "none"])
    grpo.set_defaults(run=command_online)

    generate = commands.add_parser("generate", help="sample K replies per context")
    generate.add_argument("--model", required=True)
    generate.add_argument("--contexts", type=Path, required=True)
    generate.add_argument("-k", type=int, default=2)
    generate.add_argument("--max-new-tokens", type=int, default=128)
    generate.add_argument("--temperature", type=float, default=0.8)
    generate.add_argument("--seed", type=int)
    generate.add_argument("--device")
    generate.set_defaults(run=command_generate)

    evaluate = commands.add_parser("evaluate", help="win rate, KL to the reference (k1, k3), length and EOS rate of a policy")
    evaluate.add_argument("--policy", required=True)
    evaluate.add_argument("--baseline", required=True)
    evaluate.add_argument("--reward", required=True)
    evaluate.add_argument("--reference", help="reference policy to estimate KL(policy || reference) against")
    evaluate.add_argument("--contexts", type=Path, required=True)
    evaluate.add_argument("--max-new-tokens", type=int, default=128)
    evaluate.add_argument("--temperature", type=float, default=1.0)
    evaluate.add_argument("--seed", type=int)
    evaluate.add_argument("--device")
    evaluate.set_defaults(run=command_evaluate)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
