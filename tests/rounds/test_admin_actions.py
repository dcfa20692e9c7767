"""The Django admin offers the dashboard's round and model-version actions to admins."""

from django.urls import reverse

from preference_app.core.models import ModelVersion, TrainingRound


def run_action(client, user, model: str, action: str, ids):
    client.force_login(user)
    return client.post(reverse(f"admin:core_{model}_changelist"),
                       {"action": action, "_selected_action": [str(pk) for pk in ids]}, follow=True)


def test_an_admin_cancels_a_running_round_from_the_admin(client, admin_user):
    running = TrainingRound.objects.create(number=1, status="collecting")
    finished = TrainingRound.objects.create(number=2, status="completed")
    response = run_action(client, admin_user, "traininground", "cancel_rounds", [running.pk, finished.pk])
    assert "1 round(s) cancelled" in response.content.decode()
    assert TrainingRound.objects.get(pk=running.pk).status == "cancelled"
    assert TrainingRound.objects.get(pk=finished.pk).status == "completed"


def test_an_admin_rolls_the_serving_policy_back_from_the_admin(client, admin_user):
    older = ModelVersion.objects.create(name="v1", kind="policy", path="/m/1", base_model_id="x")
    ModelVersion.objects.create(name="v2", kind="policy", path="/m/2", base_model_id="x", is_serving=True)
    run_action(client, admin_user, "modelversion", "serve_version", [older.pk])
    assert ModelVersion.objects.get(is_serving=True, kind="policy").name == "v1"


def test_a_researcher_cannot_cancel_rounds_from_the_admin(client, researcher):
    running = TrainingRound.objects.create(number=1, status="collecting")
    run_action(client, researcher, "traininground", "cancel_rounds", [running.pk])
    assert TrainingRound.objects.get(pk=running.pk).status == "collecting"
