"""The dashboard charts only what some round has measured: a fresh demo shows one line instead of
six empty frames."""

from preference_app.core.models import TrainingRound
from preference_app.rounds.round_settings import RoundSettings


def test_a_dashboard_without_rounds_shows_one_line_instead_of_empty_charts(client, admin_user):
    client.force_login(admin_user)
    page = client.get("/rounds/").content.decode()
    assert "Charts appear after the first round." in page
    assert "no data yet" not in page and 'class="chart"' not in page


def test_after_a_round_only_the_charts_with_data_are_drawn(client, admin_user):
    TrainingRound.objects.create(number=1, status="completed", config=RoundSettings().to_dict(),
                                 metrics={"kl_k3": 1.5, "mean_length_new": 40.0, "mean_length_serving": 38.0})
    client.force_login(admin_user)
    page = client.get("/rounds/").content.decode()
    assert "Charts appear after the first round." not in page
    assert 'aria-label="KL to the reference (k3 estimator)"' in page
    assert 'aria-label="Mean reply length"' in page
    assert "DPO reward accuracy and margin" not in page and "no data yet" not in page
