"""Best-vs-worst pairing pairs the serving reward model's highest and lowest scored replies."""

from preference_app.core.models import ModelVersion
from preference_app.rounds.round_settings import RoundSettings
from preference_app.rounds.steps import _pairing_for
from training.checkpoints import load_reward_model, save_checkpoint
from training.generate import GeneratedReply
from training.reward import score_replies

CONTEXT = [{"role": "user", "content": "Say something kind."}]
TEXTS = ["You are doing great.", "No.", "Have a lovely day, friend!", "Whatever you want."]


def test_best_vs_worst_pairs_the_top_and_bottom_reward(db, tiny_model_dir, tmp_path):
    # Saved once, so the pairing and this test read the same (randomly initialised) score head.
    initial = load_reward_model(str(tiny_model_dir))
    reward_dir = save_checkpoint(initial.model, initial.tokenizer, tmp_path / "rm", config={}, metrics={})
    ModelVersion.objects.create(name="rm", kind="reward", path=str(reward_dir), base_model_id="x", is_serving=True)
    replies = [GeneratedReply(text=text, token_count=3, finished_with_eos=True, seconds=0.1) for text in TEXTS]
    pairing = _pairing_for(RoundSettings(pairing="best_vs_worst", max_length=128), seed=0)
    judge = load_reward_model(str(reward_dir))
    scores = score_replies(judge.model, judge.tokenizer, [CONTEXT] * len(TEXTS), TEXTS, max_length=128).tolist()
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    assert pairing(replies, CONTEXT) == [(best, worst)]


def test_random_pairing_is_used_when_no_reward_model_serves(db):
    replies = [GeneratedReply(text=text, token_count=3, finished_with_eos=True, seconds=0.1) for text in TEXTS]
    pairs = _pairing_for(RoundSettings(pairing="best_vs_worst"), seed=0)(replies, CONTEXT)
    assert sorted(index for pair in pairs for index in pair) == [0, 1, 2, 3]
