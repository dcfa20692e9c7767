"""Command line: `python -m training {sft,reward,dpo,generate,evaluate} ...` on the JSONL the app exports.

    python -m training reward --model var/models/SmolLM2-135M-Instruct --train pairs.jsonl --out var/models/rm-1
    python -m training dpo --policy var/models/SmolLM2-135M-Instruct --train pairs.jsonl --out var/models/policy-1
    python -m training sft --model var/models/SmolLM2-135M-Instruct --train demos.jsonl --out var/models/sft-1
    python -m training generate --model var/models/policy-1 --contexts contexts.jsonl -k 2
    python -m training evaluate --policy var/models/policy-1 --baseline var/models/SmolLM2-135M-Instruct \\
        --reward var/models/rm-1 --contexts contexts.jsonl --reference var/models/SmolLM2-135M-Instruct

Preference files are TRL conversational or standard JSONL (an HH-RLHF .jsonl.gz is read with --hh).
Progress goes to stderr; the resulting metrics are printed to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from training.data import read_context_jsonl, read_demonstration_jsonl, read_hh_jsonl, read_preference_jsonl


def _progress(step: int, total: int, loss: float) -> None:
    print(f"step {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)


def _add_optim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--gradient-accumulation", type=int)
    parser.add_argument("--max-length", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device")
    parser.add_argument("--gradient-checkpointing", action="store_true", default=None)
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false", default=None)


def _config(cls, args: argparse.Namespace, **extra):
    """A stage config from the command line: only the options given override the defaults."""
    names = {item.name for item in fields(cls)}
    values = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return cls(**values, **{name: value for name, value in extra.items() if value is not None})


def _pairs(path: Path, *, hh: bool):
    return read_hh_jsonl(path) if hh else read_preference_jsonl(path)


def _print(payload) -> None:
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
    args.run(args)


if __name__ == "__main__":
    main()
