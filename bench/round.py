"""Wall time of each step of one full round with SmolLM2-135M-Instruct, on this machine's CPU.

    .venv/bin/python bench/round.py [--prompts 32] [--k 4] [--max-new-tokens 64] [--max-length 512]

The round runs the same services the Celery tasks call, one after the other in this process, on a
fresh SQLite database in a temporary directory (the demo's data is not touched). Simulated
annotators judge the round's comparisons (prompts x K/2, 64 by default) by a fixed rule, shorter
replies (in characters) preferred, so the timings cover generation, collection, reward model, DPO and evaluation
on the frozen evaluation prompts (--evaluation-prompts of them); the same rule then judges the blind
head-to-heads, which gives the people's verdict.
Requires `python manage.py prepare_model` to have been run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluation-prompts", type=int, default=50)
    args = parser.parse_args()

    model_dir = REPO_ROOT / "var" / "models" / "SmolLM2-135M-Instruct"
    if not (model_dir / "config.json").is_file():
        sys.exit("Run `python manage.py prepare_model` first.")
    work = Path(tempfile.mkdtemp(prefix="bench-round-"))
    os.environ.update(
        VAR_DIR=str(work), MODEL_NAME=str(model_dir), MODELS_DIR=str(work / "models"),
        CELERY_BROKER_URL="memory://", TRAINING_DEVICE=args.device, DJANGO_SETTINGS_MODULE="preference_app.settings",
    )
    os.environ.pop("DATABASE_URL", None)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from preference_app.core.generation import model_version_base_ensure
    from preference_app.core.models import Comparison, TrainingRound
    from preference_app.core.prompts import builtin_prompts_load
    from preference_app.core.services import judgment_submit
    from preference_app.rounds import services, steps

    call_command("migrate", verbosity=0)
    builtin_prompts_load()
    model_version_base_ensure()
    annotator = get_user_model().objects.create_user("bench-annotator")
    settings_values = {
        "prompts_per_round": args.prompts, "candidates_per_prompt": args.k, "max_new_tokens": args.max_new_tokens,
        "judgment_target": args.prompts * (args.k // 2), "batch_size": args.batch_size, "max_length": args.max_length,
        "eval_max_new_tokens": args.max_new_tokens, "head_to_head": False,
        "evaluation_prompts": args.evaluation_prompts, "verdict_judgments": args.evaluation_prompts,
    }
    print(f"SmolLM2-135M-Instruct, device={args.device}, prompts={args.prompts}, K={args.k}, "
          f"max_new_tokens={args.max_new_tokens}, max_length={args.max_length}, batch_size={args.batch_size}")
    timings: list[tuple[str, float]] = []

    def timed(label, step):
        started = time.perf_counter()
        result = step()
        timings.append((label, time.perf_counter() - started))
        print(f"  {label:<34} {timings[-1][1]:8.1f} s", flush=True)
        return result

    training_round = services.round_start(settings_values=settings_values)
    timed("1. generate candidates", lambda: steps.round_generate(round_id=training_round.pk))
    comparisons = list(Comparison.objects.filter(training_round=training_round).select_related("candidate_a", "candidate_b"))

    def judge_all(comparisons):
        for comparison in comparisons:
            # Characters rather than tokens: most SmolLM2 replies stop at the token cap, so token
            # counts would tie where character counts still differ.
            a, b = len(comparison.candidate_a.text), len(comparison.candidate_b.text)
            choice = "tie" if a == b else ("a" if a < b else "b")
            judgment_submit(annotator=annotator, comparison=comparison, choice=choice,
                            strength=None if choice == "tie" else 2, left_candidate="a")

    timed(f"   judge {len(comparisons)} comparisons (simulated)", lambda: judge_all(comparisons))
    timed("2. train reward model", lambda: steps.round_train_reward(round_id=training_round.pk))
    timed("3. train policy (DPO)", lambda: steps.round_train_policy(round_id=training_round.pk))
    timed(f"   evaluate on {args.evaluation_prompts} evaluation prompts", lambda: steps.round_evaluate(round_id=training_round.pk))
    head_to_heads = list(Comparison.objects.filter(training_round=training_round, source="verdict")
                         .select_related("candidate_a", "candidate_b"))
    timed(f"   judge {len(head_to_heads)} head-to-heads (simulated)", lambda: judge_all(head_to_heads))
    finished = TrainingRound.objects.get(pk=training_round.pk)
    print(f"  {'total':<34} {sum(seconds for _, seconds in timings):8.1f} s")
    print(f"status={finished.status} comparisons={len(comparisons)}")
    for key in ("reward_held_out_accuracy", "dpo_reward_accuracy", "reward_model_win_rate", "human_win_rate",
                "human_win_rate_low", "promoted", "kl_k1", "kl_k3", "kl_k3_stderr", "mean_length_new", "eos_rate_new"):
        print(f"  {key} = {finished.metrics.get(key)}")


if __name__ == "__main__":
    main()
