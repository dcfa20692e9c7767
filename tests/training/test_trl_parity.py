"""Our DPO and reward numbers equal TRL 1.16's trainers' on identical tiny batches (float32, 1e-5 relative)."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM

from training.checkpoints import load_reward_model
from training.data import encode_pairs, pair_to_trl_record
from training.dpo import compute_sequence_log_probs
from training.losses import bradley_terry_loss, dpo_sigmoid_loss
from training.packing import pack_pairs, sequence_log_probs, sequence_rewards

trl = pytest.importorskip("trl")

RTOL = 1e-5
MAX_LENGTH = 64  # The multi-turn pair (53 prompt tokens, 19-token rejected reply) is cut to fit.


def _close(ours: float, theirs: float, *, scale: float | None = None) -> bool:
    """Equal to RTOL relative to `scale`, by default the value itself.

    A DPO reward is beta * (log pi - log ref), a difference of two summed log-probs: float32 rounds
    each sum relative to the sum, so the reward's tolerance is relative to the sums (pass them as
    `scale`), not to their much smaller difference, which otherwise depends on the CPU's kernels.
    """
    return abs(ours - theirs) <= RTOL * (abs(theirs) if scale is None else scale) + 1e-7


def _trl_dpo_trainer(policy_dir, reference_dir, tokenizer, pairs, tmp_path, **overrides):
    settings = {"per_device_train_batch_size": len(pairs), **overrides}
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl-dpo"),
        max_length=MAX_LENGTH,
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL turns bf16 autocast on by default, even on the CPU; parity is in float32.
        gradient_checkpointing=False,
        precompute_ref_log_probs=False,
        **settings,
    )
    return trl.DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32),
        ref_model=AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32),
        args=args,
        train_dataset=Dataset.from_list([pair_to_trl_record(pair) for pair in pairs]),
        processing_class=tokenizer,
    )


def _trl_dpo_numbers(trainer, rows) -> dict[str, float]:
    trainer.model.train()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows)).item()
    metrics = {name: values[-1] for name, values in trainer._metrics["train"].items()}
    return {"loss": loss, **metrics}


def _our_dpo_numbers(policy, reference, encoded, *, beta, label_smoothing=0.0) -> tuple[dict[str, float], dict[str, float]]:
    packed = pack_pairs(encoded, pad_token_id=2)
    sums, _ = sequence_log_probs(policy, packed)
    chosen, rejected = sums.chunk(2)
    reference_chosen, reference_rejected = compute_sequence_log_probs(reference, encoded, pad_token_id=2, batch_size=8)
    result = dpo_sigmoid_loss(
        chosen, rejected, reference_chosen, reference_rejected, beta=beta, label_smoothing=label_smoothing
    )
    # What each reward is computed from (see _close): beta * (|log pi| + |log ref|), per pair.
    scale = {
        "rewards/chosen": (beta * (chosen.abs() + reference_chosen.abs())).mean().item(),
        "rewards/rejected": (beta * (rejected.abs() + reference_rejected.abs())).mean().item(),
    }
    numbers = {
        "loss": result.loss.item(),
        "rewards/chosen": result.chosen_rewards.mean().item(),
        "rewards/rejected": result.rejected_rewards.mean().item(),
        "rewards/accuracies": (result.chosen_rewards > result.rejected_rewards).float().mean().item(),
        "rewards/margins": (result.chosen_rewards - result.rejected_rewards).mean().item(),
        "logps/chosen": chosen.mean().item(),
        "logps/rejected": rejected.mean().item(),
    }
    return numbers, scale


def test_encoding_matches_trl_dpo_tokenization_and_truncation(sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path):
    trainer = _trl_dpo_trainer(sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path)
    encoded, report = encode_pairs(tokenizer, pairs, max_length=MAX_LENGTH, overflow="truncate")
    assert report.truncated == 1
    for row, ours in zip(trainer.train_dataset, encoded):
        # TRL truncates in its collator (keep_start), so compare the sequences after that cut.
        assert list(ours.prompt_ids) == row["prompt_ids"]
        assert list(ours.chosen_sequence) == (row["prompt_ids"] + row["chosen_ids"])[:MAX_LENGTH]
        assert list(ours.rejected_sequence) == (row["prompt_ids"] + row["rejected_ids"])[:MAX_LENGTH]


def test_dpo_loss_matches_trl_dpo_trainer(sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path):
    beta = 0.1
    trainer = _trl_dpo_trainer(sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path, beta=beta)
    rows = [trainer.train_dataset[index] for index in range(len(pairs))]
    encoded, _ = encode_pairs(tokenizer, pairs, max_length=MAX_LENGTH, overflow="truncate")
    policy = AutoModelForCausalLM.from_pretrained(sharp_policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(sharp_reference_dir, dtype=torch.float32)

    theirs = _trl_dpo_numbers(trainer, rows)
    ours, scale = _our_dpo_numbers(policy, reference, encoded, beta=beta)
    assert 0 < theirs["rewards/accuracies"] < 1  # The batch is not degenerate.
    for name, value in ours.items():
        assert _close(value, theirs[name], scale=scale.get(name)), (name, value, theirs[name])

    # Pair by pair too, so a mean cannot hide two errors that cancel.
    for index, row in enumerate(rows):
        theirs = _trl_dpo_numbers(trainer, [row])
        ours, scale = _our_dpo_numbers(policy, reference, encoded[index : index + 1], beta=beta)
        for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies"):
            assert _close(ours[name], theirs[name], scale=scale.get(name)), (index, name, ours[name], theirs[name])


def test_dpo_label_smoothing_is_the_cdpo_form_trl_uses_in_its_aot_loss(
    sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path
):
    # TRL 1.16's "sigmoid" loss ignores label_smoothing; its "aot" loss applies the cDPO form to
    # sorted batch log-ratios, which for a one-pair batch is exactly cDPO on that pair.
    smoothing = 0.2
    trainer = _trl_dpo_trainer(
        sharp_policy_dir, sharp_reference_dir, tokenizer, pairs, tmp_path,
        loss_type=["aot"], label_smoothing=smoothing, per_device_train_batch_size=1,
    )
    encoded, _ = encode_pairs(tokenizer, pairs, max_length=MAX_LENGTH, overflow="truncate")
    policy = AutoModelForCausalLM.from_pretrained(sharp_policy_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(sharp_reference_dir, dtype=torch.float32)
    for index in range(len(pairs)):
        theirs = _trl_dpo_numbers(trainer, [trainer.train_dataset[index]])
        ours, _ = _our_dpo_numbers(policy, reference, encoded[index : index + 1], beta=0.1, label_smoothing=smoothing)
        assert _close(ours["loss"], theirs["loss"]), (index, ours["loss"], theirs["loss"])


def test_reward_loss_matches_trl_reward_trainer(sharp_policy_dir, tokenizer, pairs, tmp_path):
    torch.manual_seed(0)
    model = load_reward_model(str(sharp_policy_dir)).model
    ours_model = copy.deepcopy(model)
    args = trl.RewardConfig(
        output_dir=str(tmp_path / "trl-reward"),
        max_length=80,
        per_device_train_batch_size=len(pairs),
        report_to="none",
        use_cpu=True,
        bf16=False,  # TRL turns bf16 autocast on by default, even on the CPU; parity is in float32.
        gradient_checkpointing=False,
        center_rewards_coefficient=0.01,
    )
    records = [{**pair_to_trl_record(pair), "margin": pair.margin} for pair in pairs]
    trainer = trl.RewardTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(records), processing_class=tokenizer
    )
    rows = [trainer.train_dataset[index] for index in range(len(pairs))]
    trainer.model.train()
    their_loss = trainer.compute_loss(trainer.model, trainer.data_collator(rows)).item()
    theirs = {name: values[-1] for name, values in trainer._metrics["train"].items()}

    encoded, report = encode_pairs(tokenizer, pairs, max_length=80, overflow="drop")
    assert report.kept == len(pairs) == len(trainer.train_dataset)
    for row, ours in zip(rows, encoded):
        assert list(ours.chosen_sequence) == row["chosen_ids"]
        assert list(ours.rejected_sequence) == row["rejected_ids"]
    packed = pack_pairs(encoded, pad_token_id=tokenizer.pad_token_id)
    chosen, rejected = sequence_rewards(ours_model, packed).chunk(2)
    loss = bradley_terry_loss(chosen, rejected, margin=packed.margins, center_coefficient=0.01).item()
    assert _close(loss, their_loss), (loss, their_loss)
    assert _close((chosen > rejected).float().mean().item(), theirs["accuracy"])
    assert _close((chosen - rejected).mean().item(), theirs["margin"])
    assert _close(torch.cat([chosen, rejected]).mean().item(), theirs["mean_reward"])
