"""Above the start form the dashboard says what the chosen settings will do and roughly how long
the round computes: from the step times the last completed rounds on this server recorded, or,
before any has, from the per-token and per-pair figures of the README's round measurement."""

import time

import pytest
from django.utils.html import escape

from preference_app.core.models import TrainingRound
from preference_app.rounds import selectors
from preference_app.rounds.round_plan import (
    EVALUATION_SECONDS_PER_TOKEN,
    GENERATION_SECONDS_PER_TOKEN,
    POLICY_SECONDS_PER_PAIR_EPOCH,
    README_RATES,
    REWARD_SECONDS_PER_PAIR_EPOCH,
    rates_measured,
    round_plan,
)
from preference_app.rounds.round_settings import PRESETS, RoundSettings
from preference_app.rounds.step_runner import step_run

Status = TrainingRound.Status
# The round bench/round.py measured: 32 prompts, K=4, 64 new tokens, 64 judgments, one epoch of
# each model, 50 evaluation prompts; 105.7 + 86.1 + 233.2 + 31.4 = 456.4 s of computing.
README_ROUND = RoundSettings(prompts_per_round=32, candidates_per_prompt=4, max_new_tokens=64, judgment_target=64,
                             eval_max_new_tokens=64, evaluation_prompts=50, auto_epochs=False)
README_STEP_SECONDS = {Status.GENERATING: 105.7, Status.TRAINING_REWARD: 86.1, Status.TRAINING_POLICY: 233.2,
                       Status.EVALUATING: 31.4}


def a_finished_round(*, slowdown: float, status: str = Status.COMPLETED, timed: bool = True,
                     config: dict | None = None) -> TrainingRound:
    """A round of the README's measured size whose steps took `slowdown` times the README's time."""
    metrics = {"reward_pairs": 64, "dpo_pairs": 64, "dpo_epochs": 1}
    if timed:
        metrics["step_seconds"] = {str(step): seconds * slowdown for step, seconds in README_STEP_SECONDS.items()}
    return TrainingRound.objects.create(number=TrainingRound.objects.count() + 1, status=status, metrics=metrics,
                                        config=README_ROUND.to_dict() if config is None else config)


def page_plan(client) -> str:
    return client.get("/rounds/?preset=standard").content.decode()


def test_the_plan_says_what_the_round_generates_waits_for_trains_and_asks_people():
    plan = round_plan(RoundSettings.from_dict(PRESETS["standard"]))
    assert plan.steps[:2] == ["Generates 4 replies for each of 32 prompts (up to 96 new tokens each).",
                              "Waits for 64 judgments (1 person per comparison)."]
    assert plan.steps[2].startswith("Trains a reward model (2 epochs) and DPO on people's pairs plus up to 128 pairs "
                                   "it picks among 8 replies to each of 128 more prompts.")
    assert plan.steps[3].startswith("Asks people to judge 40 blind head-to-heads of the new policy")


def test_the_readmes_measured_round_is_estimated_at_its_measured_time():
    assert round_plan(README_ROUND).cpu_seconds == pytest.approx(sum(README_STEP_SECONDS.values()))


def test_the_estimate_grows_with_the_work_the_settings_ask_for():
    quick = round_plan(RoundSettings.from_dict(PRESETS["quick_demo"]))
    standard = round_plan(RoundSettings.from_dict(PRESETS["standard"]))
    careful = round_plan(RoundSettings.from_dict(PRESETS["careful"]))
    assert quick.cpu_minutes < standard.cpu_minutes < careful.cpu_minutes
    more_tokens = RoundSettings(max_new_tokens=192, auto_epochs=False)
    fewer_tokens = RoundSettings(max_new_tokens=96, auto_epochs=False)
    difference = round_plan(more_tokens).cpu_seconds - round_plan(fewer_tokens).cpu_seconds
    assert difference == pytest.approx(16 * 2 * 96 * GENERATION_SECONDS_PER_TOKEN)
    assert min(GENERATION_SECONDS_PER_TOKEN, EVALUATION_SECONDS_PER_TOKEN, REWARD_SECONDS_PER_PAIR_EPOCH,
               POLICY_SECONDS_PER_PAIR_EPOCH) > 0


@pytest.mark.parametrize("values, words", [
    ({"policy_data": "best_of_n", "labelled_candidates": 8}, "fine-tunes the policy on its best of 8 replies"),
    ({"policy_step": "grpo", "online_steps": 5}, "GRPO for 5 iterations of 8 prompts"),
    ({"auto_rounds": 3}, "Then starts up to 3 more rounds by itself"),
])
def test_the_plan_follows_the_policy_step_and_the_loop(values, words):
    assert words in " ".join(round_plan(RoundSettings.from_dict(values)).steps)


def test_the_dashboard_shows_the_plan_of_the_preset_above_the_form(client, admin_user):
    client.force_login(admin_user)
    page = client.get("/rounds/?preset=quick_demo").content.decode()
    plan = round_plan(RoundSettings.from_dict(PRESETS["quick_demo"]))
    assert page.index('id="round-plan"') < page.index('class="round-form"')
    assert escape(plan.steps[0]) in page and escape(plan.steps[3]) in page
    assert f"About <strong>{plan.cpu_minutes} minute" in page
    assert "from the README&#x27;s CPU figures" in page


def test_the_form_asks_for_the_plan_of_changed_settings_and_gets_the_plan_alone(client, admin_user):
    client.force_login(admin_user)
    response = client.get("/rounds/", {"prompts_per_round": "7", "candidates_per_prompt": "6"},
                          HTTP_HX_REQUEST="true", HTTP_HX_TARGET="round-plan")
    page = response.content.decode()
    assert page.lstrip().startswith('<div id="round-plan"')
    assert "Generates 6 replies for each of 7 prompts" in page
    refused = client.get("/rounds/", {"prompts_per_round": "0"}, HTTP_HX_REQUEST="true",
                         HTTP_HX_TARGET="round-plan").content.decode()
    assert "Correct the settings marked below" in refused


def test_with_no_completed_timed_round_the_plan_uses_the_readmes_figures(client, admin_user):
    # Neither a round that failed nor one finished before steps were timed says how fast this server is.
    a_finished_round(slowdown=3, status=Status.FAILED)
    a_finished_round(slowdown=3, timed=False)
    assert selectors.rounds_timed() == []
    assert rates_measured(selectors.rounds_timed()) == README_RATES
    client.force_login(admin_user)
    page = page_plan(client)
    assert "of computing on a 2-core CPU" in page and "from the README&#x27;s CPU figures" in page
    assert "on this server" not in page


def test_a_history_twice_as_slow_as_the_readme_gives_twice_the_estimate_and_the_page_says_so(client, admin_user):
    a_finished_round(slowdown=2)
    rates = rates_measured(selectors.rounds_timed())
    assert rates.rounds == 1
    # The standard preset also samples within its policy step (reward-labelled pairs), which the
    # measured generation rate prices; every part of the estimate doubles.
    for preset in ("quick_demo", "standard"):
        settings = RoundSettings.from_dict(PRESETS[preset])
        assert round_plan(settings, rates).cpu_seconds == pytest.approx(2 * round_plan(settings).cpu_seconds)
    client.force_login(admin_user)
    page = page_plan(client)
    expected = round_plan(RoundSettings.from_dict(PRESETS["standard"]), rates)
    assert f"About <strong>{expected.cpu_minutes} minutes</strong> of computing," in page
    assert "from the last round on this server" in page and "README" not in page.split('class="estimate"')[1][:400]


def test_the_rates_follow_the_last_rounds_weighed_by_their_work(db):
    # Rounds of the same size, one as fast as the README's machine and two three times slower: the
    # rates are their summed seconds over their summed work, seven thirds of the README's.
    for slowdown in (1, 3, 3):
        a_finished_round(slowdown=slowdown)
    rates = rates_measured(selectors.rounds_timed())
    assert rates.rounds == 3 and "the last 3 rounds on this server" in rates.source
    assert rates.generation_per_token == pytest.approx(7 / 3 * GENERATION_SECONDS_PER_TOKEN)
    assert rates.policy_per_pair_epoch == pytest.approx(7 / 3 * POLICY_SECONDS_PER_PAIR_EPOCH)
    assert [r.number for r in selectors.rounds_timed(limit=2)] == [3, 2]


def test_a_round_trained_on_more_pairs_than_its_target_counts_its_real_pairs(db):
    # The reward model trains on every judgment so far: 128 pairs in the time the README took for
    # 64 is the README's rate per pair, halved.
    training_round = a_finished_round(slowdown=1)
    training_round.metrics = {**training_round.metrics, "reward_pairs": 128}
    training_round.save()
    rates = rates_measured(selectors.rounds_timed())
    assert rates.reward_per_pair_epoch == pytest.approx(REWARD_SECONDS_PER_PAIR_EPOCH / 2)


def test_a_round_whose_settings_no_longer_pass_the_checks_is_left_out_of_the_rates(db):
    a_finished_round(slowdown=5, config={**README_ROUND.to_dict(), "prompts_per_round": 0})
    assert rates_measured(selectors.rounds_timed()) == README_RATES


def test_a_finished_step_records_how_long_its_work_took(db):
    training_round = TrainingRound.objects.create(number=1, status=Status.PENDING, config=README_ROUND.to_dict())

    def work(_):
        time.sleep(0.2)
        return lambda locked: None

    assert step_run(training_round.pk, Status.GENERATING, work)
    training_round.refresh_from_db()
    assert training_round.status == Status.COLLECTING
    assert 0.2 <= training_round.metrics["step_seconds"]["generating"] < 30
