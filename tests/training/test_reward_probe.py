"""The linear-probe reward model: a Bradley-Terry head on frozen features, for rounds of tens of pairs."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig

from training.checkpoints import load_reward_model
from training.data import PreferencePair
from training.reward import RewardConfig, score_replies, train_reward_model
from training.reward_probe import fit_linear_head, is_probe_checkpoint, probe_depth

FILLER = "the a river stone light paper green quiet window slow morning table".split()
# The hidden taste: a reply that names a number word is better.
MARKERS = "seven nine twelve".split()


def _reply(rng: random.Random, *, with_marker: bool) -> str:
    words = rng.sample(FILLER, 5)
    if with_marker:
        words.insert(rng.randrange(len(words) + 1), rng.choice(MARKERS))
    return " ".join(words)


def _marker_pairs(count: int, seed: int) -> list[PreferencePair]:
    rng = random.Random(seed)
    return [
        PreferencePair([{"role": "user", "content": f"Tell me something, number {n}."}],
                       _reply(rng, with_marker=True), _reply(rng, with_marker=False), margin=2.0)
        for n in range(count)
    ]


def _probe_config(**overrides) -> RewardConfig:
    return RewardConfig(method="linear_probe", max_length=128, device="cpu", **overrides)


def test_fit_linear_head_ranks_every_pair_of_separable_differences():
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=generator)
    differences = torch.randn(40, 16, generator=generator)
    differences = differences * (differences @ direction).sign().unsqueeze(1)  # Every pair on the chosen side.
    weight, loss, iterations = fit_linear_head(differences, l2=1e-3)
    assert ((differences @ weight) > 0).all()
    assert loss < 0.3 and iterations >= 1


def test_probe_depth_keeps_the_fraction_of_layers_and_at_least_one():
    assert probe_depth(30, 0.5) == 15
    assert probe_depth(2, 0.25) == 1
    with pytest.raises(ValueError, match="probe_layer_fraction"):
        probe_depth(30, 0)


def test_linear_probe_learns_a_word_rule_from_twenty_pairs_on_a_random_model(tiny_policy_dir, tmp_path):
    # A random 2-layer model's mean hidden state still carries which tokens the reply holds, so a
    # linear head can find the marker words from 20 pairs: 0.80-0.88 held out over three seeds of
    # pairs. Chance is 0.5, and 0.7 on 60 held-out pairs is three standard errors above it.
    result = train_reward_model(model_path=tiny_policy_dir, train_pairs=_marker_pairs(20, seed=0),
                                eval_pairs=_marker_pairs(60, seed=1), config=_probe_config(),
                                out_dir=tmp_path / "probe")
    assert result.metrics["method"] == "linear_probe"
    assert result.metrics["eval_pairs"] == 60
    assert result.metrics["eval_accuracy"] >= 0.7
    assert result.metrics["train_accuracy"] == 1.0


def test_a_saved_probe_keeps_only_the_layers_it_reads_and_scores_as_it_did_in_training(tiny_policy_dir, tmp_path):
    pairs = _marker_pairs(12, seed=2)
    result = train_reward_model(model_path=tiny_policy_dir, train_pairs=pairs, config=_probe_config(),
                                out_dir=tmp_path / "probe", keep_model=True)
    assert is_probe_checkpoint(result.checkpoint)
    assert AutoConfig.from_pretrained(result.checkpoint).num_hidden_layers == 1  # Half of the tiny model's two.
    contexts = [pair.prompt for pair in pairs]
    replies = [pair.chosen for pair in pairs]
    loaded = load_reward_model(str(result.checkpoint))
    trained_scores = score_replies(result.model, loaded.tokenizer, contexts, replies)
    loaded_scores = score_replies(loaded.model, loaded.tokenizer, contexts, replies)
    torch.testing.assert_close(loaded_scores, trained_scores, rtol=1e-5, atol=1e-5)
    assert trained_scores.std() > 0  # The head is trained, not the zeros it starts from.


def test_an_unknown_reward_method_is_refused_before_anything_loads(tiny_policy_dir):
    with pytest.raises(ValueError, match="method must be one of finetune, linear_probe"):
        train_reward_model(model_path=tiny_policy_dir, train_pairs=_marker_pairs(2, seed=0),
                           config=RewardConfig(method="svm"))
