"""Round settings are validated once, when an admin starts a round, by the same bounds on the
dashboard, in the Django admin and through the API."""

import json

import pytest
from django.forms.models import model_to_dict
from django.urls import reverse
from rest_framework.test import APIClient

from preference_app.core.errors import InvalidInput
from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import (
    AUTO_MAX_EPOCHS,
    MAX_SEED,
    PRESETS,
    PROBE_MAX_PAIRS,
    RoundSettings,
    dpo_epochs_for,
    reward_method_for,
)


def test_form_strings_are_coerced_to_the_right_types():
    settings = RoundSettings.from_dict({"beta": "0.2", "prompts_per_round": "12", "head_to_head": "false"})
    assert (settings.beta, settings.prompts_per_round, settings.head_to_head) == (0.2, 12, False)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"beta": "strong"}, "beta must be a number"),
        ({"candidates_per_prompt": 1}, "at least 2"),
        ({"reference": "yesterday"}, "reference must be one of"),
        ({"learning_rate": 3}, "learning_rate must be above 0 and below 1, not 3.0"),
        ({"colour": "blue"}, "Unknown round settings: colour"),
        ({"prompts_per_round": 0}, "prompts_per_round must be at least 1"),
    ],
)
def test_nonsense_is_rejected_with_a_clear_message(values, message):
    with pytest.raises(InvalidInput, match=message):
        RoundSettings.from_dict(values)


def test_settings_survive_a_round_trip_through_json():
    settings = RoundSettings(beta=0.3, reference="previous", lora_rank=8)
    assert RoundSettings.from_dict(settings.to_dict()) == settings


def test_every_preset_is_valid_and_the_dashboard_fills_the_form_with_it(client, admin_user):
    client.force_login(admin_user)
    for name, values in PRESETS.items():
        RoundSettings.from_dict(values)
        page = client.get(f"/rounds/?preset={name}").content.decode()
        assert f'name="prompts_per_round" value="{values["prompts_per_round"]}"' in page


def test_dpo_epochs_grow_for_small_data_and_stay_as_configured_for_large():
    settings_values = RoundSettings(batch_size=8, epochs=1)
    assert dpo_epochs_for(settings_values, 31) == AUTO_MAX_EPOCHS  # ceil(32 * 8 / 31) = 9, capped.
    assert dpo_epochs_for(settings_values, 128) == 2
    assert dpo_epochs_for(settings_values, 1000) == 1
    assert dpo_epochs_for(RoundSettings(auto_epochs=False, epochs=1), 31) == 1



def test_the_reward_model_is_a_linear_probe_for_tens_of_pairs_and_fine_tuned_for_thousands():
    automatic = RoundSettings()
    assert reward_method_for(automatic, 30) == "linear_probe"
    assert reward_method_for(automatic, PROBE_MAX_PAIRS - 1) == "linear_probe"
    assert reward_method_for(automatic, PROBE_MAX_PAIRS) == "finetune"
    assert reward_method_for(RoundSettings(reward_method="finetune"), 30) == "finetune"
    assert reward_method_for(RoundSettings(reward_method="linear_probe"), 50_000) == "linear_probe"
    with pytest.raises(InvalidInput, match="reward_method"):
        RoundSettings.from_dict({"reward_method": "svm"})


# Each out-of-range value as JSON text, and the words of the refusal: the setting and its bound.
OUT_OF_RANGE = [
    ("min_win_rate_gain", '"nan"', "min_win_rate_gain must be at least 0 and at most 0.5"),
    ("min_win_rate_gain", "1e999", "min_win_rate_gain must be at least 0 and at most 0.5"),
    ("overlap_target", "40000", "overlap_target must be at least 1 and at most 50"),
    ("seed", str(2**70), f"seed must be at least 0 and at most {MAX_SEED}"),
    ("seed", "-1", f"seed must be at least 0 and at most {MAX_SEED}"),
    ("epochs", "1000000000000", "epochs must be at least 1 and at most 20"),
    ("reward_epochs", "21", "reward_epochs must be at least 1 and at most 20"),
    ("prompts_per_round", "1001", "prompts_per_round must be at least 1 and at most 1000"),
    ("candidates_per_prompt", "17", "candidates_per_prompt must be at least 2 and at most 16"),
    ("max_new_tokens", "4096", "max_new_tokens must be at least 1 and at most 2048"),
    ("batch_size", "100000", "batch_size must be at least 1 and at most 256"),
    ("max_length", "100000", "max_length must be at least 1 and at most 8192"),
    ("labelled_prompts", "5000", "labelled_prompts must be at least 1 and at most 2000"),
    ("eos_drop_guard", "1.5", "eos_drop_guard must be above 0 and at most 1"),
    ("learning_rate", "0", "learning_rate must be above 0 and below 1"),
    ("sft_learning_rate", "1", "sft_learning_rate must be above 0 and below 1"),
    ("kl_guard", '"inf"', "kl_guard must be above 0 and at most 10000"),
]
OUT_OF_RANGE_IDS = [f"{name}={text}" for name, text, _ in OUT_OF_RANGE]


def form_text(json_text: str) -> str:
    """What an admin would type in the dashboard's text box for the value."""
    value = json.loads(json_text)
    return value if isinstance(value, str) else repr(value)


@pytest.mark.parametrize("name, json_text, message", OUT_OF_RANGE, ids=OUT_OF_RANGE_IDS)
def test_the_dashboard_refuses_an_out_of_range_setting_and_starts_no_round(client, admin_user, name, json_text,
                                                                            message):
    client.force_login(admin_user)
    response = client.post(reverse("rounds:start"), {name: form_text(json_text)}, follow=True)
    assert "The round was not started" in response.content.decode()
    assert name in response.content.decode()
    assert not TrainingRound.objects.exists()


@pytest.mark.parametrize("name, json_text, message", OUT_OF_RANGE, ids=OUT_OF_RANGE_IDS)
def test_the_api_refuses_an_out_of_range_setting_and_starts_no_round(admin_user, name, json_text, message):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.post("/api/rounds/", f'{{"{name}": {json_text}}}', content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not TrainingRound.objects.exists()


def admin_form_data(training_round: TrainingRound, config_text: str) -> dict:
    """The admin's change form for the round as it stands, with the settings box holding `config_text`."""
    data = {name: "" if value is None else value for name, value in model_to_dict(training_round).items()}
    return {**data, "config": config_text, "metrics": json.dumps(training_round.metrics)}


@pytest.mark.parametrize("name, json_text, message", OUT_OF_RANGE, ids=OUT_OF_RANGE_IDS)
def test_the_django_admin_refuses_an_out_of_range_setting_and_keeps_the_round_as_it_was(client, admin_user, name,
                                                                                       json_text, message):
    training_round = TrainingRound.objects.create(number=1, status="completed", config=RoundSettings().to_dict())
    client.force_login(admin_user)
    config = {**RoundSettings().to_dict(), name: None}
    # The admin's JSON box takes NaN and Infinity as Python's json does; the text is spliced in as typed.
    config_text = json.dumps(config).replace(f'"{name}": null', f'"{name}": {json_text}')
    response = client.post(reverse("admin:core_traininground_change", args=[training_round.pk]),
                           admin_form_data(training_round, config_text))
    assert response.status_code == 200  # The form again, with the error; a saved change redirects.
    assert message in response.content.decode()
    training_round.refresh_from_db()
    assert training_round.config == RoundSettings().to_dict()


def test_the_django_admin_saves_settings_within_their_bounds(client, admin_user):
    training_round = TrainingRound.objects.create(number=1, status="completed", config=RoundSettings().to_dict())
    client.force_login(admin_user)
    response = client.post(reverse("admin:core_traininground_change", args=[training_round.pk]),
                           admin_form_data(training_round, json.dumps({"overlap_target": 3})))
    assert response.status_code == 302
    training_round.refresh_from_db()
    assert training_round.config == RoundSettings(overlap_target=3).to_dict()


def test_rounds_are_not_added_in_the_django_admin_where_they_would_never_be_queued(client, admin_user):
    client.force_login(admin_user)
    assert client.get(reverse("admin:core_traininground_add")).status_code == 403


def test_an_admin_starts_a_round_through_the_api_with_the_same_settings_as_the_dashboard(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    response = client.post("/api/rounds/", {"overlap_target": 2, "seed": MAX_SEED}, format="json")
    assert response.status_code == 201
    stored = TrainingRound.objects.get()
    assert (response.json()["number"], stored.started_by) == (1, admin_user)
    assert RoundSettings.from_dict(stored.config) == RoundSettings(overlap_target=2, seed=MAX_SEED)


def test_a_researcher_cannot_start_a_round_through_the_api(researcher):
    client = APIClient()
    client.force_authenticate(researcher)
    assert client.post("/api/rounds/", {}, format="json").status_code == 403
    assert not TrainingRound.objects.exists()


@pytest.mark.parametrize("values, message", [
    ({"epochs": 2.5}, "epochs must be a whole number, not 2.5"),
    ({"epochs": True}, "epochs must be a whole number"),
    ({"head_to_head": "maybe"}, "head_to_head must be true or false"),
    ({"seed": 10**400}, "seed must be at least 0"),
])
def test_values_that_are_not_plainly_of_the_settings_type_are_refused(values, message):
    with pytest.raises(InvalidInput, match=message):
        RoundSettings.from_dict(values)
