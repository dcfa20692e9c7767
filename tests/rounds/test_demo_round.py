"""`manage.py demo_round`, which `make demo` runs: one quick round that trains at once on the
imported HH-RLHF sample, through the real worker, without anyone judging first."""

from io import StringIO

import pytest
from django.core.management import call_command

from preference_app.core.management.commands.demo_setup import DEMO_PAIRS
from preference_app.core.models import Judgment, ModelVersion, TrainingRound
from preference_app.core.prompts import builtin_prompts_load
from preference_app.rounds.round_plan import round_plan
from preference_app.rounds.round_settings import DEMO_ROUND, RoundSettings
from tests.conftest import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_the_demo_round_trains_on_the_imported_pairs_and_waits_for_people_with_charts(
    celery_worker, base_policy, admin_user, client
):
    builtin_prompts_load()
    call_command("import_preferences", str(DEMO_PAIRS), file_format="hh", stdout=StringIO(), stderr=StringIO())
    judgments_before = Judgment.objects.count()

    call_command("demo_round", stdout=StringIO())
    training_round = TrainingRound.objects.get()
    done = wait_for(
        lambda: TrainingRound.objects.filter(pk=training_round.pk,
                                             status__in=["awaiting_verdict", "completed", "failed"]).first(),
        timeout=300, message="the demo round's evaluation",
    )
    assert done.status == "awaiting_verdict", done.error
    # It never stopped to collect: no one judged anything, and the reward model and the policy
    # learnt from the imported pairs.
    assert Judgment.objects.count() == judgments_before
    assert done.metrics["reward_pairs"] > 100
    assert ModelVersion.objects.filter(training_round=done, kind=ModelVersion.Kind.POLICY).count() == 1
    assert set(done.metrics["step_seconds"]) == {"generating", "training_reward", "training_policy", "evaluating"}
    client.force_login(admin_user)
    page = client.get("/rounds/").content.decode()
    assert "<svg" in page and "Charts appear after the first round" not in page

    again = StringIO()
    call_command("demo_round", stdout=again)
    assert "no demo round is added" in again.getvalue() and TrainingRound.objects.count() == 1


def test_a_round_that_waits_for_no_judgments_says_so_in_its_plan():
    steps = round_plan(RoundSettings.from_dict(DEMO_ROUND)).steps
    assert "Trains at once on the judgments already stored, without waiting for new ones." in steps
    assert not any(step.startswith("Waits for") for step in steps)
