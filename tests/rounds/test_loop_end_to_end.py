"""Two full rounds through the real Celery tasks teach the policy the annotators' hidden preference.

Simulated annotators judge every comparison by one fixed rule the policy can learn: the reply in
plainer words is better, measured as the larger share of common function words ("the", "to",
"you", ...); equal shares are a tie. They also judge each round's blind head-to-heads, which decide
promotion. After two rounds, replies of the round-2 policy and of the base policy to frozen
evaluation prompts are compared by that same rule.

(A length rule was tried first and rejected: DPO on "shorter is better" pushes down the EOS token
at the end of every longer rejected reply, and on this tiny model that lengthened replies as often
as it shortened them.)
"""

import pytest

from preference_app.core import roles
from preference_app.core.models import ModelVersion, TrainingRound
from preference_app.core.prompts import builtin_prompts_load
from tests.conftest import make_user
from tests.rounds.simulated_annotators import plainer_words, round_run_and_judged
from training.checkpoints import load_causal_lm
from training.generate import GenerationConfig, generate_replies

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# This test is about learning, so promotion asks only that people do not find the new policy
# clearly worse (the lower end of their interval above 0.3): each round's verdict comes from 50
# single head-to-heads, and a round that helps a little must still carry the loop on.
LOOP_SETTINGS = {
    "prompts_per_round": 48, "candidates_per_prompt": 4, "max_new_tokens": 32, "judgment_target": 96,
    "batch_size": 8, "max_length": 256, "learning_rate": 3e-4, "epochs": 2, "reward_learning_rate": 1e-4,
    "reference": "previous", "head_to_head": False, "eval_max_new_tokens": 32, "evaluation_prompts": 50,
    "verdict_judgments": 50, "promote_above": 0.3, "auto_epochs": False,
}
SAMPLES_PER_PROMPT = 32
RULE_PROMPTS = 10
# The rule's preference rate for the base policy against itself is 0.5 by symmetry. In trial runs
# of this setting the round-2 policy reached about 0.66; the standard error of the rate over 10
# evaluation prompts x 32 samples is about 0.03, so 0.58 sits well outside sampling noise.
REQUIRED_PREFERENCE_RATE = 0.58


def run_round(annotators) -> TrainingRound:
    done = round_run_and_judged(LOOP_SETTINGS, annotators, plainer_words)
    assert done.metrics["promoted"], done.metrics
    return done


def preference_rate(new_path, base_path, contexts) -> float:
    sampling = GenerationConfig(candidates_per_context=SAMPLES_PER_PROMPT, max_new_tokens=32, seed=2024)
    new, base = load_causal_lm(str(new_path)), load_causal_lm(str(base_path))
    new_replies = generate_replies(new.model, new.tokenizer, contexts, sampling)
    base_replies = generate_replies(base.model, base.tokenizer, contexts, sampling)
    scores = [plainer_words(a, b) for news, bases in zip(new_replies, base_replies) for a, b in zip(news, bases)]
    return sum(scores) / len(scores)


def test_two_rounds_teach_the_policy_the_annotators_hidden_preference(celery_worker, base_policy):
    builtin_prompts_load()
    annotators = [make_user(f"simulated-{index}", roles.ANNOTATOR) for index in range(3)]
    first, second = run_round(annotators), run_round(annotators)

    round_two_policy = ModelVersion.objects.get(training_round=second, kind="policy")
    assert round_two_policy.parent.training_round_id == first.pk  # Round 2 trained the round-1 policy.
    assert round_two_policy.is_serving
    contexts = [[{"role": "user", "content": text}] for text in second.evaluation_set.prompts[:RULE_PROMPTS]]
    rate = preference_rate(round_two_policy.path, base_policy.path, contexts)
    print(f"hidden-rule preference rate, round-2 policy over base: {rate:.3f}")
    assert rate >= REQUIRED_PREFERENCE_RATE
