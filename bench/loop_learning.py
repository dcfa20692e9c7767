"""Learning curves of the RLHF loop: does a round's policy learn a hidden preference rule?

    .venv/bin/python bench/loop_learning.py --rule bench.rules:bulleted_list --modes human,reward_labelled \\
        --rounds 2 --judgments 64 --eval-prompts 50 --png var/bench/loop.png --json var/bench/loop.json

Smoke run (about two minutes on this machine's CPU):

    .venv/bin/python bench/loop_learning.py --rounds 1 --judgments 8 --eval-prompts 8 --allow-fewer \\
        --max-new-tokens 16 --labelled-prompts 8 --rule bench.rules:shorter_reply

(16-token replies hold no list and almost never a question, so with bulleted_list or
asks_clarifying_question every smoke judgment is a tie and the reward step fails with "No usable
judgments"; shorter_reply decides nearly every pair and so exercises every step.)

Run by hand, not in CI. Requires `python manage.py prepare_model` to have been run.

Each mode (a `policy_data` of RoundSettings) runs in its own process on a fresh SQLite database in
a temporary directory, starting from the base model, so modes share nothing but the base model. A
round runs the services the Celery tasks call, one after the other in that process (the broker is
kombu's in-memory transport, so the tasks they queue never run): generation of K=4 candidates per
prompt, one simulated annotator judging every generated comparison by the rule (`--rule`,
module:function, see bench/rules.py) through `judgment_submit`, reward model, policy, evaluation on
the frozen evaluation prompts, and the same annotator judging every blind head-to-head, which gives
the people's verdict and completes the round. The next round starts from whatever then serves.

After each round its new policy (promoted or not) is measured against the base model on the first
--eval-prompts prompts of the frozen built-in evaluation set, one reply per prompt, sampled as the
app serves replies (temperature 0.8, top_p 0.95) with the round's max_new_tokens:

    preference   the rule's preference for the policy's reply over the base's (a tie counts half),
                 with a 95% Wilson interval; the base's replies are sampled once (seed --seed) and
                 reused for every round and mode
    RM accuracy  the round's reward model against the rule on held-out pairs: two base replies per
                 evaluation prompt, the pairs the rule does not call a tie
    KL           k1 and k3 to the DPO reference, from the round's own evaluation
    length, EOS  mean reply tokens and the share of replies that end (not cut at the cap), policy and base
    perplexity   exp(mean per-token NLL) of the policy's sampled ids under the base model, against
                 the base's own replies under the base model, and their ratio
    non-letters  share of the policy's replies that are less than half letters (degeneration)

Prints a table (a row per mode and round, plus the base), the acceptance check of the last
reward_labelled round, and writes --json and --png (the preference per round with its interval).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

MODEL_DIR = REPO_ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
K = 4  # candidates_per_prompt: K/2 comparisons per prompt.
CONFIDENCE = 0.95  # Of the Wilson interval on the rule's preference.
POLICY_SEED_OFFSET = 1  # The policies' evaluation replies use seed + 1; the base's use seed.
MIN_EVAL_PROMPTS = 50
# Round metrics kept in the report (the per-sample KL lists and verdict rewards are left out).
DROPPED_METRICS = ("kl_per_sample", "verdict_rewards")
# The acceptance check's tolerance on the policy's EOS rate against the base's.
EOS_TOLERANCE = 0.10
MAX_PPL_RATIO = 2.0

Rule = Callable[[str, str, str], tuple[str, int]]
SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}


# --- Pieces shared by the parent (base replies) and the mode processes (policies) -------------


def load_rule(spec: str) -> Rule:
    """Import `module:function`, e.g. bench.rules:bulleted_list."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise SystemExit(f"--rule must be module:function, not {spec!r}.")
    return getattr(importlib.import_module(module_name), function_name)


def judge(rule: Rule, prompt: str, first: str, second: str) -> tuple[str, int]:
    """The rule's judgment, checked: choice in a/b/tie and, for a preference, strength 1-4."""
    choice, strength = rule(prompt, first, second)
    if choice not in SCORES or (choice != "tie" and strength not in (1, 2, 3, 4)):
        raise ValueError(f"The rule returned ({choice!r}, {strength!r}); expected a/b/tie and a strength 1-4.")
    return choice, strength


def contexts_for(prompts: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": prompt}] for prompt in prompts]


def sampling(*, k: int, max_new_tokens: int, seed: int):
    """As the app serves replies (temperature 0.8, top_p 0.95): what people would read."""
    from training.generate import GenerationConfig

    return GenerationConfig(candidates_per_context=k, temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed)


def perplexity_under(model, tokenizer, contexts, replies, *, max_context_tokens: int, batch_size: int) -> float:
    """exp of the mean NLL per token of the replies' sampled ids (EOS included) under `model`."""
    import torch

    from training.evaluate import token_log_probs_on_ids
    from training.generate import encode_contexts

    context_ids = encode_contexts(tokenizer, contexts, max_context_tokens)
    kept = [(context, list(reply.token_ids)) for context, reply in zip(context_ids, replies) if reply.token_ids]
    log_probs = token_log_probs_on_ids(model, [context for context, _ in kept], [ids for _, ids in kept],
                                       batch_size=batch_size)
    return math.exp(-torch.cat(log_probs).double().mean().item())


def mostly_non_letters(text: str) -> bool:
    """Less than half of the reply's non-space characters are letters (an empty reply counts)."""
    characters = [character for character in text if not character.isspace()]
    return not characters or sum(character.isalpha() for character in characters) < len(characters) / 2


def reply_statistics(replies) -> dict:
    return {
        "mean_length": statistics.fmean(reply.token_count for reply in replies),
        "eos_rate": statistics.fmean(reply.finished_with_eos for reply in replies),
        "mostly_non_letters": statistics.fmean(mostly_non_letters(reply.text) for reply in replies),
    }


def preference_over(rule: Rule, prompts: list[str], texts: list[str], base_texts: list[str]) -> dict:
    """The rule's preference for `texts` over `base_texts`, prompt by prompt (a tie counts half)."""
    from preference_app.rounds.verdicts import wilson_interval

    scores = [SCORES[judge(rule, prompt, new, old)[0]] for prompt, new, old in zip(prompts, texts, base_texts)]
    wins = sum(scores)
    low, high = wilson_interval(wins, len(scores), CONFIDENCE)
    return {"rate": wins / len(scores), "low": low, "high": high, "n": len(scores),
            "wins": scores.count(1.0), "ties": scores.count(0.5), "losses": scores.count(0.0)}


# --- The base model, sampled once in the parent process ------------------------------------------


def measure_base(args, rule: Rule, prompts: list[str]) -> dict:
    """Two base replies per prompt: the first is the base's reply every policy is compared with,
    and the two form the held-out pair the reward models are scored on (when the rule decides it)."""
    from training.checkpoints import load_causal_lm
    from training.generate import generate_replies
    from training.runtime import pick_device

    loaded = load_causal_lm(str(MODEL_DIR), device=pick_device(args.device))
    contexts = contexts_for(prompts)
    generation = sampling(k=2, max_new_tokens=args.max_new_tokens, seed=args.seed)
    replies = generate_replies(loaded.model, loaded.tokenizer, contexts, generation)
    first = [pair[0] for pair in replies]
    held_out = []
    for prompt, (one, other) in zip(prompts, replies):
        choice, _ = judge(rule, prompt, one.text, other.text)
        if choice != "tie":
            held_out.append({"prompt": prompt, "first": one.text, "second": other.text, "choice": choice})
    perplexity = perplexity_under(loaded.model, loaded.tokenizer, contexts, first,
                                  max_context_tokens=generation.max_context_tokens, batch_size=args.batch_size)
    return {
        **reply_statistics(first),
        "perplexity": perplexity,
        "texts": [reply.text for reply in first],
        "held_out_pairs": held_out,
    }


# --- One mode, in its own process ------------------------------------------------------------------


def _exit_with_parent() -> None:
    """Ends this process once the benchmark that started it is gone: a mode's process left behind by
    a killed run would otherwise take the cores from the next run for the best part of an hour."""
    parent_pid = os.getppid()
    while os.getppid() == parent_pid:
        time.sleep(5)
    os._exit(1)


def run_mode(job: dict) -> None:
    """Every round of one mode on a fresh database; writes the results to job["out"] after each round."""
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    work = Path(job["work"])
    os.environ.update(
        VAR_DIR=str(work), MODEL_NAME=str(MODEL_DIR), MODELS_DIR=str(work / "models"),
        CELERY_BROKER_URL="memory://", TRAINING_DEVICE=job["device"], DJANGO_SETTINGS_MODULE="preference_app.settings",
    )
    # A fresh SQLite database and a per-process cache, whatever the shell points at.
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from preference_app.core.generation import model_version_base_ensure
    from preference_app.core.prompts import builtin_prompts_load

    call_command("migrate", verbosity=0)
    builtin_prompts_load()
    model_version_base_ensure()
    annotator = get_user_model().objects.create_user(f"simulated-{job['mode']}")
    rule = load_rule(job["rule"])
    results: dict = {"mode": job["mode"], "rounds": []}
    out = Path(job["out"])
    for number in range(1, job["rounds"] + 1):
        print(f"[{job['mode']}] round {number}", flush=True)
        try:
            results["rounds"].append(run_round(job, rule, annotator))
        except Exception as error:
            traceback.print_exc()
            results["rounds"].append({"round": number, "error": f"{type(error).__name__}: {error}"})
            out.write_text(json.dumps(results, indent=1))
            break
        out.write_text(json.dumps(results, indent=1))


def judge_comparisons(rule: Rule, annotator, comparisons, *, stop_unless_status: tuple[int, str] | None = None) -> int:
    """Judge each comparison once by the rule through judgment_submit; returns how many were judged.

    With `stop_unless_status` (round id, status), stop as soon as the round has left that status
    (the verdict was given, and the rest of the head-to-heads were taken out of the queue).
    """
    from preference_app.core.models import TrainingRound
    from preference_app.core.services import judgment_submit

    judged = 0
    for index, comparison in enumerate(comparisons):
        if stop_unless_status and not TrainingRound.objects.filter(
            pk=stop_unless_status[0], status=stop_unless_status[1]
        ).exists():
            break
        prompt = comparison.conversation.turns.order_by("index").first().text
        choice, strength = judge(rule, prompt, comparison.candidate_a.text, comparison.candidate_b.text)
        judgment_submit(annotator=annotator, comparison=comparison, choice=choice,
                        strength=None if choice == "tie" else strength, left_candidate="ab"[index % 2],
                        seconds_spent=5.0)
        judged += 1
    return judged


def run_round(job: dict, rule: Rule, annotator) -> dict:
    from preference_app.core.models import Comparison, ModelVersion, TrainingRound
    from preference_app.rounds import services, steps

    Status = TrainingRound.Status
    seconds: dict[str, float] = {}

    def timed(label: str, step: Callable[[], object]):
        started = time.perf_counter()
        result = step()
        seconds[label] = time.perf_counter() - started
        print(f"  [{job['mode']}] {label:<14} {seconds[label]:7.1f} s", flush=True)
        return result

    def step(label: str, service: Callable[..., bool]) -> None:
        if not timed(label, lambda: service(round_id=round_id)):
            status = TrainingRound.objects.get(pk=round_id).status
            raise RuntimeError(f"The {label} step did not run (the round is {status}).")

    def comparisons(source: str):
        return list(Comparison.objects.filter(training_round_id=round_id, source=source).order_by("id")
                    .select_related("candidate_a", "candidate_b", "conversation"))

    training_round = services.round_start(settings_values=job["settings"])
    round_id = training_round.pk
    step("generate", steps.round_generate)
    generated = comparisons(Comparison.Source.GENERATED)
    timed("judge", lambda: judge_comparisons(rule, annotator, generated))
    if TrainingRound.objects.filter(pk=round_id, status=Status.COLLECTING).exists():
        # Fewer comparisons than judgment_target: move on by hand, as an admin would.
        services.round_training_begin(round_id=round_id)
    step("train_reward", steps.round_train_reward)
    step("train_policy", steps.round_train_policy)
    step("evaluate", steps.round_evaluate)
    evaluated = TrainingRound.objects.select_related("evaluation_set").get(pk=round_id)
    prompts = job["prompts"]
    if evaluated.evaluation_set.prompts[: len(prompts)] != prompts:
        raise RuntimeError("The round's evaluation prompts are not the ones the base was sampled on.")
    head_to_heads = comparisons(Comparison.Source.VERDICT)
    timed("verdict", lambda: judge_comparisons(rule, annotator, head_to_heads,
                                               stop_unless_status=(round_id, Status.AWAITING_VERDICT)))
    finished = TrainingRound.objects.get(pk=round_id)
    if finished.status != Status.COMPLETED:
        raise RuntimeError(f"The round is {finished.status} after its verdict, not completed: {finished.error}")
    policy = ModelVersion.objects.get(training_round=finished, kind=ModelVersion.Kind.POLICY)
    reward = ModelVersion.objects.get(training_round=finished, kind=ModelVersion.Kind.REWARD)
    measured = timed("measure", lambda: measure_policy(job, rule, policy.path, reward.path))
    metrics = {key: value for key, value in finished.metrics.items() if key not in DROPPED_METRICS}
    return {
        "round": finished.number,
        "generated_comparisons": len(generated),
        "head_to_heads": len(head_to_heads),
        "round_metrics": metrics,
        "kl_k1": metrics.get("kl_k1"),
        "kl_k3": metrics.get("kl_k3"),
        "kl_guard": finished.config["kl_guard"],
        "seconds": seconds,
        **measured,
    }


def measure_policy(job: dict, rule: Rule, policy_path: str, reward_path: str) -> dict:
    """The round's policy against the base on the evaluation prompts (see the module docstring)."""
    from training.checkpoints import load_causal_lm
    from training.evaluate import reward_scores, sample_policy
    from training.runtime import pick_device

    prompts, base = job["prompts"], job["base"]
    contexts = contexts_for(prompts)
    generation = sampling(k=1, max_new_tokens=job["max_new_tokens"], seed=job["seed"] + POLICY_SEED_OFFSET)
    replies = sample_policy(policy_path=policy_path, contexts=contexts, generation=generation, device=job["device"])
    base_model = load_causal_lm(str(MODEL_DIR), device=pick_device(job["device"]))
    perplexity = perplexity_under(base_model.model, base_model.tokenizer, contexts, replies,
                                  max_context_tokens=generation.max_context_tokens, batch_size=job["batch_size"])
    del base_model
    pairs = base["held_out_pairs"]
    accuracy = None
    if pairs:
        scores = reward_scores(
            reward_path=reward_path, contexts=contexts_for([pair["prompt"] for pair in pairs for _ in range(2)]),
            texts=[text for pair in pairs for text in (pair["first"], pair["second"])],
            max_length=job["max_length"], batch_size=job["batch_size"], device=job["device"],
        )
        correct = []
        for index, pair in enumerate(pairs):
            first, second = scores[2 * index], scores[2 * index + 1]
            correct.append(0.5 if first == second else float((first > second) == (pair["choice"] == "a")))
        accuracy = statistics.fmean(correct)
    return {
        "preference": preference_over(rule, prompts, [reply.text for reply in replies], base["texts"]),
        "reward_accuracy": accuracy,
        "reward_accuracy_pairs": len(pairs),
        **reply_statistics(replies),
        "perplexity": perplexity,
        "perplexity_ratio": perplexity / base["perplexity"],
        "texts": [reply.text for reply in replies],
    }


# --- Report ------------------------------------------------------------------------------------------


def _figure(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(base: dict, modes: dict[str, list[dict]]) -> None:
    header = (f"{'mode':<16}{'round':>5} {'promoted':>8}  {'pref [95% CI]':<20}{'RM acc':>7}{'KL k1':>7}{'KL k3':>7}"
              f"{'len':>6}{'EOS':>6}{'ppl':>7}{'ppl x':>6}{'non-let':>8}{'human':>7}{'RM win':>7}"
              f"{'lab.pr':>7}{'dpo.pr':>7}{'min':>6}")
    print(header)
    print("-" * len(header))
    print(f"{'base':<16}{'-':>5} {'-':>8}  {'-':<20}{'-':>7}{'-':>7}{'-':>7}{base['mean_length']:6.1f}"
          f"{base['eos_rate']:6.2f}{base['perplexity']:7.2f}{1.0:6.2f}{base['mostly_non_letters']:8.2f}")
    for mode, rounds in modes.items():
        for result in rounds:
            if "error" in result:
                print(f"{mode:<16}{result['round']:>5} failed: {result['error']}")
                continue
            metrics, preference = result["round_metrics"], result["preference"]
            interval = f"{preference['rate']:.2f} [{preference['low']:.2f}, {preference['high']:.2f}]"
            promoted = {True: "yes", False: "no"}.get(metrics.get("promoted"), "-")
            print(f"{mode:<16}{result['round']:>5} {promoted:>8}  {interval:<20}{_figure(result['reward_accuracy']):>7}"
                  f"{_figure(result['kl_k1']):>7}{_figure(result['kl_k3']):>7}{result['mean_length']:6.1f}"
                  f"{result['eos_rate']:6.2f}{result['perplexity']:7.2f}{result['perplexity_ratio']:6.2f}"
                  f"{result['mostly_non_letters']:8.2f}{_figure(metrics.get('human_win_rate')):>7}"
                  f"{_figure(metrics.get('reward_model_win_rate')):>7}{metrics.get('labelled_pairs', 0):>7}"
                  f"{metrics.get('dpo_pairs', 0):>7}{sum(result['seconds'].values()) / 60:6.1f}")
    print("pref: the rule's preference for the round's policy over the base (ties half); RM acc: the round's "
          "reward model against the rule on held-out base pairs; ppl: under the base model; ppl x: over the "
          "base's own; non-let: share of replies under half letters; human, RM win: the round's verdict and "
          "its reward model's win rate, new policy against the serving one.")


def acceptance(base: dict, modes: dict[str, list[dict]]) -> list[dict]:
    """The last reward_labelled round: a real gain over base, over human mode, and no degeneration."""
    def last(mode: str) -> dict | None:
        rounds = modes.get(mode) or []
        return rounds[-1] if rounds and "error" not in rounds[-1] else None

    labelled, human = last("reward_labelled"), last("human")
    if labelled is None:
        return [{"check": "reward_labelled's last round completed", "passed": False,
                 "figures": "not run" if "reward_labelled" not in modes else "failed"}]
    preference = labelled["preference"]
    checks = [
        ("lower end of the preference interval > 0.5", preference["low"] > 0.5,
         f"{preference['rate']:.3f} [{preference['low']:.3f}, {preference['high']:.3f}]"),
        ("preference > human mode's",
         None if human is None else preference["rate"] > human["preference"]["rate"],
         "human mode not run or failed" if human is None
         else f"{preference['rate']:.3f} vs {human['preference']['rate']:.3f}"),
        (f"perplexity ratio <= {MAX_PPL_RATIO:g}", labelled["perplexity_ratio"] <= MAX_PPL_RATIO,
         f"{labelled['perplexity']:.2f} / {base['perplexity']:.2f} = {labelled['perplexity_ratio']:.2f}"),
        (f"EOS rate within {EOS_TOLERANCE * 100:.0f} points of base",
         abs(labelled["eos_rate"] - base["eos_rate"]) <= EOS_TOLERANCE,
         f"{labelled['eos_rate']:.2f} vs {base['eos_rate']:.2f}"),
        ("KL (k3) under kl_guard",
         labelled["kl_k3"] is not None and labelled["kl_k3"] < labelled["kl_guard"],
         f"{_figure(labelled['kl_k3'])} vs {labelled['kl_guard']:g}"),
    ]
    return [{"check": check, "passed": passed, "figures": figures} for check, passed, figures in checks]


def print_acceptance(checks: list[dict]) -> None:
    print("Acceptance (reward_labelled, last round):")
    for check in checks:
        verdict = {True: "PASS", False: "FAIL", None: "N/A "}[check["passed"]]
        print(f"  {verdict}  {check['check']}: {check['figures']}")


def write_png(path: Path, modes: dict[str, list[dict]], rule: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(6, 4))
    for offset, (mode, rounds) in enumerate(modes.items()):
        done = [result for result in rounds if "error" not in result]
        if not done:
            continue
        x = [result["round"] + (offset - (len(modes) - 1) / 2) * 0.06 for result in done]
        rates = [result["preference"]["rate"] for result in done]
        below = [rate - result["preference"]["low"] for rate, result in zip(rates, done)]
        above = [result["preference"]["high"] - rate for rate, result in zip(rates, done)]
        axes.errorbar(x, rates, yerr=[below, above], marker="o", capsize=4, label=mode)
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1, label="no change")
    axes.set_xlabel("round")
    axes.set_ylabel("rule's preference over base (95% CI)")
    axes.set_title(rule, fontsize=10)
    axes.set_ylim(0, 1)
    numbers = sorted({result["round"] for rounds in modes.values() for result in rounds}) or [1]
    axes.set_xticks(numbers)
    axes.set_xlim(numbers[0] - 0.5, numbers[-1] + 0.5)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


# --- Command line --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rule", default="bench.rules:bulleted_list", help="module:function (see bench/rules.py)")
    parser.add_argument("--modes", default="human,reward_labelled", help="policy_data values, comma-separated")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--judgments", type=int, default=64, help="judgments per round (prompts x K/2)")
    parser.add_argument("--eval-prompts", type=int, default=MIN_EVAL_PROMPTS)
    parser.add_argument("--allow-fewer", action="store_true", help=f"allow under {MIN_EVAL_PROMPTS} eval prompts")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labelled-prompts", type=int, default=64)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a RoundSettings override")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.judgments < K // 2 or args.judgments % (K // 2):
        parser.error(f"--judgments must be a positive multiple of K/2 = {K // 2}.")
    if args.eval_prompts < 1 or (args.eval_prompts < MIN_EVAL_PROMPTS and not args.allow_fewer):
        parser.error(f"--eval-prompts must be at least {MIN_EVAL_PROMPTS} (or pass --allow-fewer for a smoke run).")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1.")
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    if not args.modes or len(set(args.modes)) != len(args.modes):
        parser.error("--modes must name each mode once.")
    for item in args.set:
        if "=" not in item:
            parser.error(f"--set takes KEY=VALUE, not {item!r}.")
    return args


def settings_for(args, mode: str) -> dict:
    """The round settings of a mode: the benchmark's sizes, then the --set overrides."""
    values = {
        "policy_data": mode, "prompts_per_round": args.judgments // (K // 2), "candidates_per_prompt": K,
        "judgment_target": args.judgments, "max_new_tokens": args.max_new_tokens,
        "eval_max_new_tokens": args.max_new_tokens, "max_length": args.max_length, "batch_size": args.batch_size,
        "evaluation_prompts": args.eval_prompts, "verdict_judgments": args.eval_prompts,
        "labelled_prompts": args.labelled_prompts, "seed": args.seed,
        # The previous policy's replies against the current one's would add comparisons beyond
        # --judgments from round 2 on; the benchmark keeps every round's data the same size.
        "head_to_head": False,
    }
    values.update(item.split("=", 1) for item in args.set)
    return values


def main() -> None:
    args = parse_args()
    if not (MODEL_DIR / "config.json").is_file():
        sys.exit("Run `python manage.py prepare_model` first.")
    work = Path(tempfile.mkdtemp(prefix="bench-loop-learning-"))
    # The parent uses Django only to check the settings and read the evaluation set, on a
    # throwaway directory of its own; each mode's process sets up its own.
    os.environ.update(VAR_DIR=str(work / "parent"), MODEL_NAME=str(MODEL_DIR), CELERY_BROKER_URL="memory://",
                      DJANGO_SETTINGS_MODULE="preference_app.settings")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from preference_app.core.errors import InvalidInput
    from preference_app.core.prompts import prompt_rows
    from preference_app.rounds.evaluation_sets import BUILTIN_EVALUATION_FILE
    from preference_app.rounds.round_settings import RoundSettings

    rule = load_rule(args.rule)
    settings = {mode: settings_for(args, mode) for mode in args.modes}
    try:
        resolved = {mode: RoundSettings.from_dict(values).to_dict() for mode, values in settings.items()}
    except InvalidInput as error:
        sys.exit(f"Round settings: {error}")
    prompts = [row["text"].strip() for _, row in prompt_rows(BUILTIN_EVALUATION_FILE)]
    if args.eval_prompts > len(prompts):
        sys.exit(f"The built-in evaluation set has {len(prompts)} prompts, not {args.eval_prompts}.")
    prompts = prompts[: args.eval_prompts]
    print(f"rule={args.rule} modes={','.join(args.modes)} rounds={args.rounds} judgments={args.judgments} "
          f"eval_prompts={len(prompts)} max_new_tokens={args.max_new_tokens} device={args.device} work={work}",
          flush=True)

    started = time.perf_counter()
    base = measure_base(args, rule, prompts)
    print(f"base: {len(prompts)} replies, {len(base['held_out_pairs'])} held-out pairs the rule decides, "
          f"{time.perf_counter() - started:.0f} s", flush=True)

    modes: dict[str, list[dict]] = {}
    spawn = multiprocessing.get_context("spawn")
    for mode in args.modes:
        out = work / f"{mode}.json"
        job = {
            "mode": mode, "rule": args.rule, "rounds": args.rounds, "settings": settings[mode], "prompts": prompts,
            "base": base, "work": str(work / mode), "out": str(out), "device": args.device, "seed": args.seed,
            "max_new_tokens": args.max_new_tokens, "max_length": args.max_length, "batch_size": args.batch_size,
        }
        process = spawn.Process(target=run_mode, args=(job,), name=f"loop-{mode}")
        process.start()
        process.join()
        modes[mode] = json.loads(out.read_text())["rounds"] if out.is_file() else []
        if process.exitcode != 0:
            modes[mode].append({"round": len(modes[mode]) + 1, "error": f"the mode's process exited with {process.exitcode}"})

    print()
    print_table(base, modes)
    checks = acceptance(base, modes)
    print()
    print_acceptance(checks)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")
    if args.json:
        arguments = {**vars(args), "png": args.png and str(args.png), "json": str(args.json)}
        report = {"args": arguments, "settings": resolved,
                  "base": base, "modes": modes, "acceptance": checks}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        write_png(args.png, modes, args.rule)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
