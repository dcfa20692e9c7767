"""Dashboard charts are SVG pictures whose labels cannot inject markup."""

from preference_app.rounds.plots import Series, line_chart


def test_a_chart_draws_one_point_per_value():
    svg = line_chart("Win rate", [Series("vs base", [(1, 0.5), (2, 0.6), (3, 0.7)])], x_label="round", y_label="rate")
    assert svg.startswith("<svg") and svg.count("<circle") == 3 and "<polyline" in svg


def test_labels_are_escaped():
    svg = line_chart("<script>alert(1)</script>", [Series("<img src=x onerror=alert(1)>", [(1, 1.0)])],
                     x_label="x", y_label="y")
    assert "<script>" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg


def test_an_empty_chart_says_there_is_no_data_yet():
    assert "no data yet" in line_chart("KL", [Series("KL", [])], x_label="round", y_label="nats")
