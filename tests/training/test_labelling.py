"""Reward-model-labelled pairs and best-of-n demonstrations."""

import pytest

from training.labelling import label_with_rewards

CONTEXTS = [[{"role": "user", "content": "One?"}], [{"role": "user", "content": "Two?"}]]


def test_the_best_reply_is_chosen_over_the_worst_and_is_the_demonstration():
    labelled = label_with_rewards(CONTEXTS, [["a", "b", "c"], ["d", "e", "f"]], [[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]],
                                  min_gap=0.5)
    assert [(pair.chosen, pair.rejected) for pair in labelled.pairs] == [("b", "c"), ("d", "e")]
    assert [demonstration.completion for demonstration in labelled.demonstrations] == ["b", "d"]
    assert labelled.dropped_small_gap == 0


def test_a_pair_the_reward_model_barely_separates_is_left_out():
    # Rewards' sd over all six is about 1.2; the second context's gap of 0.1 is under half of it.
    labelled = label_with_rewards(CONTEXTS, [["a", "b", "c"], ["d", "e", "f"]], [[0.0, 3.0, 0.5], [1.0, 1.05, 1.1]],
                                  min_gap=0.5)
    assert [pair.chosen for pair in labelled.pairs] == ["b"]
    assert labelled.dropped_small_gap == 1
    assert len(labelled.demonstrations) == 2  # Best-of-n keeps every prompt's best reply.


def test_mismatched_lists_are_refused():
    with pytest.raises(ValueError, match="at least two replies"):
        label_with_rewards(CONTEXTS[:1], [["only"]], [[1.0]], min_gap=0.5)
