"""Above the start form the dashboard says what the chosen settings will do and roughly how long
the round computes, from the per-token and per-pair figures of the README's round measurement."""

import pytest
from django.utils.html import escape

from preference_app.rounds.round_plan import (
    EVALUATION_SECONDS_PER_TOKEN,
    GENERATION_SECONDS_PER_TOKEN,
    POLICY_SECONDS_PER_PAIR_EPOCH,
    REWARD_SECONDS_PER_PAIR_EPOCH,
    round_plan,
)
from preference_app.rounds.round_settings import PRESETS, RoundSettings


def test_the_plan_says_what_the_round_generates_waits_for_trains_and_asks_people():
    plan = round_plan(RoundSettings.from_dict(PRESETS["standard"]))
    assert plan.steps[:2] == ["Generates 4 replies for each of 32 prompts (up to 96 new tokens each).",
                              "Waits for 64 judgments (1 person per comparison)."]
    assert plan.steps[2].startswith("Trains a reward model (2 epochs) and DPO on people's pairs plus up to 64 pairs")
    assert plan.steps[3].startswith("Asks people to judge 40 blind head-to-heads of the new policy")


def test_the_readmes_measured_round_is_estimated_at_its_measured_time():
    # The round bench/round.py measured: 32 prompts, K=4, 64 new tokens, 64 judgments, one epoch of
    # each model, 50 evaluation prompts; 105.7 + 86.1 + 233.2 + 31.4 = 456.4 s of computing.
    measured = RoundSettings(prompts_per_round=32, candidates_per_prompt=4, max_new_tokens=64, judgment_target=64,
                             eval_max_new_tokens=64, evaluation_prompts=50, auto_epochs=False)
    assert round_plan(measured).cpu_seconds == pytest.approx(456.4)


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
    assert "the README&#x27;s round-time measurement" in page


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
