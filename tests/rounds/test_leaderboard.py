"""Bradley-Terry ratings of policy versions from head-to-head games."""

from preference_app.rounds.leaderboard import Game, fit_strengths, rate


def games(first, second, wins, losses, ties=0):
    return ([Game(first, second, 1.0)] * wins + [Game(first, second, 0.0)] * losses
            + [Game(first, second, 0.5)] * ties)


def test_the_version_that_wins_more_often_is_rated_higher_with_an_interval_around_it():
    ratings = rate(games("round-2", "round-1", wins=40, losses=10), bootstrap_rounds=100)
    assert [r.name for r in ratings] == ["round-2", "round-1"]
    best = ratings[0]
    assert best.low <= best.rating <= best.high
    assert best.games == 50


def test_a_four_to_one_record_gives_odds_near_four():
    strengths = fit_strengths(games("a", "b", wins=400, losses=100), ["a", "b"], prior_games=0.0)
    assert abs(strengths["a"] / strengths["b"] - 4.0) < 0.05


def test_ties_split_evenly_give_equal_ratings():
    ratings = rate(games("a", "b", wins=0, losses=0, ties=10), bootstrap_rounds=20)
    assert abs(ratings[0].rating - ratings[1].rating) < 1e-6


def test_an_unbeaten_version_still_gets_a_finite_rating():
    ratings = rate(games("a", "b", wins=5, losses=0), bootstrap_rounds=20)
    assert all(abs(r.rating) < 10_000 for r in ratings)


def test_no_games_give_an_empty_board():
    assert rate([]) == []
