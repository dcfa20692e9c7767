"""Each stage trains, changes every trainable weight, counts what it cut, and saves a checkpoint."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from training import dpo as dpo_module
from training.checkpoints import CONFIG_FILE, METRICS_FILE, load_causal_lm, read_json
from training.data import PreferencePair
from training.dpo import DPOConfig, train_dpo
from training.reward import RewardConfig, accuracy_fell, best_epoch, train_reward_model
from training.sft import SFTConfig, train_sft


def _changed_parameters(before: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[list[str], list[str]]:
    changed, unchanged = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (changed if not torch.equal(before[name], parameter.detach()) else unchanged).append(name)
    return changed, unchanged


def test_one_dpo_step_changes_every_trainable_parameter(tiny_policy_dir, pairs, tmp_path):
    initial = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    before = {name: parameter.detach().clone() for name, parameter in initial.named_parameters()}
    steps = []
    result = train_dpo(
        policy_path=tiny_policy_dir,
        pairs=pairs,
        config=DPOConfig(batch_size=len(pairs), learning_rate=1e-3, max_length=64, device="cpu"),
        out_dir=tmp_path / "policy",
        progress=lambda step, total, loss: steps.append((step, total, loss)),
        keep_model=True,
    )
    changed, unchanged = _changed_parameters(before, result.model)
    assert changed and not unchanged, unchanged
    assert [(step, total) for step, total, _ in steps] == [(1, 1)]
    assert abs(steps[0][2] - 0.6931) < 1e-3  # Policy == reference at step 0: loss is log 2.
    assert result.metrics["train_encoding"]["truncated"] == 1
    assert read_json(result.checkpoint, METRICS_FILE)["steps"] == 1
    assert read_json(result.checkpoint, CONFIG_FILE)["beta"] == 0.1
    assert load_causal_lm(str(result.checkpoint)).model is not None


def test_reference_cache_hit_skips_recomputing_reference_log_probs(tiny_policy_dir, pairs, tmp_path, monkeypatch):
    calls = []
    original = dpo_module.compute_sequence_log_probs

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dpo_module, "compute_sequence_log_probs", counting)
    config = DPOConfig(batch_size=4, max_length=64, device="cpu")
    first = train_dpo(policy_path=tiny_policy_dir, pairs=pairs, config=config, cache_dir=tmp_path / "cache")
    second = train_dpo(policy_path=tiny_policy_dir, pairs=pairs, config=config, cache_dir=tmp_path / "cache")
    assert (first.metrics["reference_cache_hit"], second.metrics["reference_cache_hit"]) == (False, True)
    assert len(calls) == 1
    assert first.metrics["train_loss"] == second.metrics["train_loss"]
    # A different max_length is a different key: recomputed.
    train_dpo(policy_path=tiny_policy_dir, pairs=pairs, config=DPOConfig(batch_size=4, max_length=60, device="cpu"),
              cache_dir=tmp_path / "cache")
    assert len(calls) == 2


def test_dpo_against_a_separate_reference_checkpoint(tiny_policy_dir, sharp_reference_dir, pairs):
    result = train_dpo(
        policy_path=tiny_policy_dir,
        pairs=pairs,
        config=DPOConfig(batch_size=4, max_length=64, device="cpu", reference_path=str(sharp_reference_dir)),
    )
    assert result.metrics["reference"] == str(sharp_reference_dir)
    assert abs(result.metrics["train_loss"] - 0.6931) > 1e-2  # The reference is not the policy.


def test_lora_dpo_trains_only_the_adapter_and_saves_a_merged_model(tiny_policy_dir, pairs, tmp_path):
    result = train_dpo(
        policy_path=tiny_policy_dir,
        pairs=pairs,
        config=DPOConfig(batch_size=2, learning_rate=1e-2, max_length=64, lora_rank=4, device="cpu",
                         gradient_checkpointing=True),
        out_dir=tmp_path / "lora-policy",
    )
    assert abs(result.metrics["train_loss_mean"] - 0.6931) < 0.05
    assert result.metrics["steps"] == 2
    saved = AutoModelForCausalLM.from_pretrained(result.checkpoint, dtype=torch.float32)
    initial = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32)
    assert not any("lora" in name for name, _ in saved.named_parameters())
    projection = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(saved.named_parameters())[projection], dict(initial.named_parameters())[projection])
    embedding = "model.embed_tokens.weight"  # Not a LoRA target: frozen.
    assert torch.equal(dict(saved.named_parameters())[embedding], dict(initial.named_parameters())[embedding])


def test_one_reward_step_changes_every_parameter_and_stores_reward_statistics(tiny_policy_dir, pairs, tmp_path):
    torch.manual_seed(0)
    result = train_reward_model(
        model_path=tiny_policy_dir,
        train_pairs=pairs,
        eval_pairs=pairs[:2],
        config=RewardConfig(batch_size=len(pairs), learning_rate=1e-3, max_length=80, use_margin=True,
                            center_rewards_coefficient=0.01, device="cpu"),
        out_dir=tmp_path / "reward",
        keep_model=True,
    )
    from training.checkpoints import load_reward_model

    torch.manual_seed(0)  # Same seed, same fresh score head as the run started from.
    initial = load_reward_model(str(tiny_policy_dir)).model
    before = {name: parameter.detach().clone() for name, parameter in initial.named_parameters()}
    changed, unchanged = _changed_parameters(before, result.model)
    assert changed and not unchanged, unchanged
    metrics = read_json(result.checkpoint, METRICS_FILE)
    assert metrics["statistics_on"] == "held_out" and metrics["eval_pairs"] == 2
    assert {"reward_mean", "reward_std", "eval_accuracy", "eval_mean_margin"} <= metrics.keys()
    assert metrics["train_encoding"]["kept"] == 4


def test_sft_lowers_the_loss_on_its_demonstrations(tiny_policy_dir, demonstrations, tmp_path):
    result = train_sft(
        model_path=tiny_policy_dir,
        demonstrations=demonstrations * 4,
        config=SFTConfig(batch_size=2, learning_rate=3e-3, max_length=128, epochs=2, device="cpu", seed=1),
        out_dir=tmp_path / "sft",
    )
    assert result.metrics["steps"] == 8
    assert result.metrics["train_loss"] < result.metrics["train_loss_mean"]
    assert read_json(result.checkpoint, CONFIG_FILE)["stage"] == "sft"


def test_gradient_checkpointing_gives_the_same_training_as_without(tiny_policy_dir, sharp_reference_dir, pairs):
    losses = []
    for checkpointing in (False, True):
        config = DPOConfig(batch_size=2, learning_rate=1e-3, max_length=64, device="cpu", shuffle=False,
                           reference_path=str(sharp_reference_dir), gradient_checkpointing=checkpointing)
        losses.append(train_dpo(policy_path=tiny_policy_dir, pairs=pairs, config=config).metrics["train_loss"])
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])


def test_reward_early_stopping_stops_once_held_out_accuracy_falls_below_the_best():
    assert not accuracy_fell([0.5, 0.6, 0.6])
    assert accuracy_fell([0.5, 0.7, 0.6])
    assert best_epoch([0.5, 0.7, 0.6, 0.7]) == 1


def test_reward_early_stopping_records_each_epoch_and_keeps_the_best_epochs_weights(tiny_policy_dir, tmp_path):
    train = [PreferencePair(prompt=[{"role": "user", "content": f"Question {n}?"}], chosen="Yes, gladly.",
                            rejected="No.") for n in range(8)]
    held_out = [PreferencePair(prompt=[{"role": "user", "content": f"Other {n}?"}], chosen="Yes, gladly.",
                               rejected="No.") for n in range(4)]
    result = train_reward_model(
        model_path=tiny_policy_dir, train_pairs=train, eval_pairs=held_out, out_dir=tmp_path / "rm",
        config=RewardConfig(learning_rate=1e-3, epochs=3, batch_size=4, max_length=64, device="cpu",
                            early_stopping=True),
    )
    accuracies = result.metrics["epoch_eval_accuracies"]
    assert 1 <= len(accuracies) <= 3
    assert result.metrics["best_epoch"] == best_epoch(accuracies)
    # The saved model scores the held-out pairs as the best epoch did, not as the last one.
    assert result.metrics["eval_accuracy"] == pytest.approx(accuracies[result.metrics["best_epoch"]])
