"""What a round with given settings will do, in a few plain sentences, and a rough computing time
for it: from the step times the last rounds on this server recorded (step_runner writes them into
each round's `metrics["step_seconds"]`), or, before any round has, from the README's CPU figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass

from preference_app.core.errors import InvalidInput
from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import ONLINE_POLICY_STEPS, RoundSettings, dpo_epochs_for
from preference_app.rounds.step_runner import WORKING as TIMED_STEPS

Status = TrainingRound.Status

# Per-unit costs derived from the README's round-time measurement (the Performance table's "one
# full round with SmolLM2-135M from 64 judged comparisons", `bench/round.py` on the project's 2-core
# CPU, 27 November 2026, measured while other jobs ran): 32 prompts x K=4 replies of up to 64 new
# tokens, max length 512, batch 8, one reward-model and one DPO epoch (it predates auto_epochs).
# Generation took 105.7 s for 32 x 4 x 64 = 8,192 new tokens at most.
GENERATION_SECONDS_PER_TOKEN = 105.7 / (32 * 4 * 64)
# The reward model took 86.1 s for one epoch over the 64 judged pairs.
REWARD_SECONDS_PER_PAIR_EPOCH = 86.1 / 64
# DPO took 233.2 s for one epoch over the same 64 pairs; SFT and the online steps' updates are
# counted at this rate too, for want of a measurement of their own.
POLICY_SECONDS_PER_PAIR_EPOCH = 233.2 / 64
# Evaluation took 31.4 s for the new and the serving policy each answering 50 prompts in at most
# 64 new tokens (many of its replies end early, hence the lower rate than generation's).
EVALUATION_SECONDS_PER_TOKEN = 31.4 / (50 * 2 * 64)
README_SOURCE = "from the README's CPU figures (bench/round.py's measured round)"


@dataclass(frozen=True)
class StepRates:
    """Seconds per unit of each step's work: per new token sampled (generation, and the policy
    step's own sampling), per pair and epoch of reward-model or policy training, and per new token
    of the evaluation's replies. `rounds` says how many measured rounds they come from (0: the
    README's figures)."""

    generation_per_token: float
    reward_per_pair_epoch: float
    policy_per_pair_epoch: float
    evaluation_per_token: float
    rounds: int = 0

    @property
    def source(self) -> str:
        """Where the rates come from, as the page says it after "a rough estimate"."""
        if not self.rounds:
            return README_SOURCE
        measured = "the last round" if self.rounds == 1 else f"the last {self.rounds} rounds"
        return f"from {measured} on this server (their recorded step times)"


README_RATES = StepRates(GENERATION_SECONDS_PER_TOKEN, REWARD_SECONDS_PER_PAIR_EPOCH, POLICY_SECONDS_PER_PAIR_EPOCH,
                         EVALUATION_SECONDS_PER_TOKEN)


@dataclass(frozen=True)
class RoundWork:
    """The units of work a round's four steps do, in the units StepRates counts seconds per."""

    generation_tokens: float
    reward_pair_epochs: float
    policy_tokens: float  # Sampled within the policy step: on-policy labelling, online rollouts.
    policy_pair_epochs: float
    evaluation_tokens: float

    def seconds(self, rates: StepRates) -> float:
        return (self.generation_tokens * rates.generation_per_token
                + self.reward_pair_epochs * rates.reward_per_pair_epoch
                + self.policy_tokens * rates.generation_per_token
                + self.policy_pair_epochs * rates.policy_per_pair_epoch
                + self.evaluation_tokens * rates.evaluation_per_token)


@dataclass(frozen=True)
class RoundPlan:
    steps: list[str]
    cpu_seconds: float
    rates: StepRates = README_RATES

    @property
    def cpu_minutes(self) -> int:
        return max(1, round(self.cpu_seconds / 60))

    @property
    def source(self) -> str:
        return self.rates.source


def round_plan(round_settings: RoundSettings, rates: StepRates = README_RATES) -> RoundPlan:
    """The steps a round with these settings takes, as sentences, and their CPU seconds (people's
    time aside) at `rates`: the README's figures, or those measured on this server (rates_measured)."""
    s = round_settings
    policy_text, _, _ = _policy_step(s)
    people = "person" if s.overlap_target == 1 else "people"
    steps = [
        f"Generates {s.candidates_per_prompt} replies for each of {s.prompts_per_round} prompts "
        f"(up to {s.max_new_tokens} new tokens each).",
        (f"Waits for {s.judgment_target} judgments ({s.overlap_target} {people} per comparison)."
         if s.judgment_target else "Trains at once on the judgments already stored, without waiting for new ones."),
        f"Trains a reward model ({_count(s.reward_epochs, 'epoch')}) and {policy_text}.",
        f"Asks people to judge {s.verdict_judgments} blind head-to-heads of the new policy against the serving one "
        f"on {s.evaluation_prompts} evaluation prompts; their verdict decides promotion.",
    ]
    if s.auto_rounds:
        steps.append(f"Then starts up to {_count(s.auto_rounds, 'more round')} by itself while people see a gain.")
    return RoundPlan(steps=steps, cpu_seconds=round_work(s).seconds(rates), rates=rates)


def round_work(s: RoundSettings, *, reward_pairs: int | None = None, dpo_pairs: int | None = None,
               dpo_epochs: int | None = None) -> RoundWork:
    """The work a round with these settings does. A planned round trains on `judgment_target` pairs;
    a finished one passes the pairs and epochs it recorded, so that its rates are per real pair."""
    _, policy_tokens, policy_pair_epochs = _policy_step(s, dpo_pairs=dpo_pairs, dpo_epochs=dpo_epochs)
    return RoundWork(
        generation_tokens=s.prompts_per_round * s.candidates_per_prompt * s.max_new_tokens,
        reward_pair_epochs=(s.judgment_target if reward_pairs is None else reward_pairs) * s.reward_epochs,
        policy_tokens=policy_tokens,
        policy_pair_epochs=policy_pair_epochs,
        evaluation_tokens=s.evaluation_prompts * 2 * s.eval_max_new_tokens,
    )


def _policy_step(s: RoundSettings, *, dpo_pairs: int | None = None,
                 dpo_epochs: int | None = None) -> tuple[str, float, float]:
    """The policy step in words, the new tokens it samples, and the pairs times epochs it trains on.

    An online step's update of one sampled reply is counted as half a DPO pair's (a pair is two
    sequences); SFT on the best of n replies counts one pair per prompt.
    """
    if s.policy_step in ONLINE_POLICY_STEPS:
        samples = 1 if s.policy_step == "ppo" else s.online_samples_per_prompt
        replies = s.online_steps * s.online_prompts_per_step * samples
        passes = s.ppo_epochs if s.policy_step == "ppo" else 1
        return (f"{s.policy_step.upper()} for {_count(s.online_steps, 'iteration')} of "
                f"{s.online_prompts_per_step} prompts against it"), replies * s.max_new_tokens, replies * passes / 2
    labelling = s.labelled_prompts * s.labelled_candidates * s.max_new_tokens
    if s.policy_data == "best_of_n":
        return (f"fine-tunes the policy on its best of {s.labelled_candidates} replies "
                f"to {s.labelled_prompts} more prompts"), labelling, s.labelled_prompts * s.epochs
    if s.policy_data == "reward_labelled":
        # At most one labelled pair per prompt: those whose reward gap is too small are dropped.
        pairs = s.judgment_target + s.labelled_prompts if dpo_pairs is None else dpo_pairs
        epochs = dpo_epochs_for(s, pairs) if dpo_epochs is None else dpo_epochs
        return (f"DPO on people's pairs plus up to {s.labelled_prompts} pairs it picks among "
                f"{s.labelled_candidates} replies to each of {s.labelled_prompts} more prompts"), labelling, pairs * epochs
    pairs = s.judgment_target if dpo_pairs is None else dpo_pairs
    epochs = dpo_epochs_for(s, pairs) if dpo_epochs is None else dpo_epochs
    return f"DPO on people's pairs ({_count(epochs, 'epoch')})", 0, pairs * epochs


def rates_measured(rounds: Sequence[TrainingRound]) -> StepRates:
    """Per-unit rates from the recorded step times of finished rounds (selectors.rounds_timed),
    or the README's figures when there are none.

    Each rate is the rounds' seconds over their units of work, summed, so a larger round weighs
    more than a smaller one. The policy step also samples (on-policy labelling, online rollouts);
    that part is charged at the generation rate measured alongside it, and the rest is its training.
    A rate no round measured (no pairs trained, say) keeps the README's figure.
    """
    measured = [(r, work) for r in rounds if (work := _recorded_work(r)) is not None]
    if not measured:
        return README_RATES
    seconds = {step: sum(float(r.metrics["step_seconds"][step]) for r, _ in measured) for step in TIMED_STEPS}
    work = RoundWork(*map(sum, zip(*(astuple(recorded) for _, recorded in measured))))
    generation = _rate(seconds[Status.GENERATING], work.generation_tokens, README_RATES.generation_per_token)
    policy_training = max(0.0, seconds[Status.TRAINING_POLICY] - work.policy_tokens * generation)
    return StepRates(
        generation_per_token=generation,
        reward_per_pair_epoch=_rate(seconds[Status.TRAINING_REWARD], work.reward_pair_epochs, README_RATES.reward_per_pair_epoch),
        policy_per_pair_epoch=_rate(policy_training, work.policy_pair_epochs, README_RATES.policy_per_pair_epoch),
        evaluation_per_token=_rate(seconds[Status.EVALUATING], work.evaluation_tokens, README_RATES.evaluation_per_token),
        rounds=len(measured),
    )


def _recorded_work(training_round: TrainingRound) -> RoundWork | None:
    """The work a finished round did, with the pair counts and epochs its steps recorded in `metrics`;
    None when its settings no longer pass today's checks (a bound was tightened since), as the page
    must still show an estimate and the other rounds still say how fast this server is."""
    metrics = training_round.metrics
    try:
        settings = RoundSettings.from_dict(training_round.config)
    except InvalidInput:
        return None
    return round_work(settings, reward_pairs=metrics.get("reward_pairs"), dpo_pairs=metrics.get("dpo_pairs"),
                      dpo_epochs=metrics.get("dpo_epochs"))


def _rate(seconds: float, units: float, fallback: float) -> float:
    return seconds / units if units > 0 else fallback


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"
