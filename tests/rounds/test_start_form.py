"""The dashboard's start-round form: generated from RoundSettings, grouped by the round's steps,
with a label, one line of help, a select or a bounded number box per setting, and every value
checked by RoundSettings, its refusals shown beside the setting."""

import re
from dataclasses import fields

from django.urls import reverse
from django.utils.html import escape

from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import MAX_SEED, PRESETS, SETTING_GROUPS, RoundSettings


def dashboard(client, user, query: str = "") -> str:
    client.force_login(user)
    return client.get(f"/rounds/{query}").content.decode()


def setting_block(page: str, name: str) -> str:
    """The markup of one setting: its label, its input and its help (and its error, if any)."""
    found = re.search(rf'<div class="setting[^"]*">\s*<label for="setting-{name}">.*?</div>', page, re.S)
    assert found, f"no setting {name} on the page"
    return found.group(0)


def test_every_setting_has_a_human_label_and_a_line_of_help_on_the_page(client, admin_user):
    page = dashboard(client, admin_user)
    for setting in fields(RoundSettings):
        block = setting_block(page, setting.name)
        assert f">{escape(setting.metadata['label'])}</label>" in block
        assert escape(setting.metadata["help"]) in block
        assert f'id="setting-{setting.name}_helptext"' in block
        assert f'aria-describedby="setting-{setting.name}_helptext"' in block
    assert ">Prompts per round</label>" in page and ">prompts per round</label>" not in page


def test_choices_are_selects_booleans_checkboxes_and_numbers_bounded_number_boxes(client, admin_user):
    page = dashboard(client, admin_user)
    for name, options in [("pairing", ["random", "best_vs_worst"]), ("reference", ["base", "previous"]),
                          ("policy_data", ["human", "reward_labelled", "best_of_n"]),
                          ("policy_step", ["dpo", "ppo", "rloo", "grpo"])]:
        block = setting_block(page, name)
        assert f'<select name="{name}"' in block
        assert re.findall(r'<option value="([^"]+)"', block) == options
    assert 'type="checkbox" name="head_to_head"' in setting_block(page, "head_to_head")
    assert 'type="number" name="overlap_target" value="1" min="1" max="50" step="1"' in page
    assert f'type="number" name="seed" value="0" min="0" max="{MAX_SEED}" step="1"' in page
    assert 'type="number" name="beta" value="0.1" min="0" max="1" step="any"' in page


def test_the_settings_are_grouped_by_step_with_the_advanced_ones_folded_away(client, admin_user):
    page = dashboard(client, admin_user)
    assert re.findall(r"<legend>([^<]+)</legend>", page) == list(SETTING_GROUPS)
    advanced = page[page.index('<details class="advanced">'):page.index("</details>")]
    assert "<summary>Advanced settings</summary>" in advanced
    assert 'name="seed"' in advanced and 'name="kl_guard"' in advanced
    assert 'name="prompts_per_round"' not in advanced and 'name="beta"' not in advanced


def test_a_preset_fills_the_form_and_its_select(client, admin_user):
    page = dashboard(client, admin_user, "?preset=standard")
    assert f'name="judgment_target" value="{PRESETS["standard"]["judgment_target"]}"' in page
    assert '<option value="reward_labelled" selected>' in setting_block(page, "policy_data")


def test_a_bad_value_is_shown_beside_its_setting_and_no_round_is_stored(client, admin_user):
    client.force_login(admin_user)
    response = client.post(reverse("rounds:start"), {"overlap_target": "40000", "prompts_per_round": "12",
                                                      "pairing": "best_vs_worst"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "The round was not started" in page
    block = setting_block(page, "overlap_target")
    assert "overlap_target must be at least 1 and at most 50, not 40000." in block
    assert 'aria-invalid="true"' in block
    # The other values stay as typed, and no other setting is marked.
    assert 'name="prompts_per_round" value="12"' in page
    assert '<option value="best_vs_worst" selected>' in page
    assert page.count('class="field-error"') == 1
    assert not TrainingRound.objects.exists()


def test_every_bad_value_is_marked_at_once_and_an_advanced_one_unfolds_its_group(client, admin_user):
    client.force_login(admin_user)
    page = client.post(reverse("rounds:start"), {"learning_rate": "3", "seed": "-1"}).content.decode()
    assert "learning_rate must be above 0 and below 1, not 3.0." in setting_block(page, "learning_rate")
    assert f"seed must be at least 0 and at most {MAX_SEED}, not -1." in setting_block(page, "seed")
    assert '<details class="advanced" open>' in page
    assert not TrainingRound.objects.exists()


def test_settings_that_exclude_each_other_are_refused_above_the_form(client, admin_user):
    client.force_login(admin_user)
    page = client.post(reverse("rounds:start"), {"policy_step": "ppo", "lora_rank": "8"}).content.decode()
    errors = page[page.index('<div class="form-errors"'):]
    assert "policy_step ppo trains every weight; lora_rank must be 0." in errors[:errors.index("</div>")]
    assert not TrainingRound.objects.exists()

