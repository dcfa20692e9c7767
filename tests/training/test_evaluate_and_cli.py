"""Evaluation report and the command line, on tiny models."""

from __future__ import annotations

import json

from training.__main__ import main
from training.evaluate import EvaluationConfig, evaluate_policy
from training.generate import GenerationConfig
from training.reward import RewardConfig, train_reward_model

CONTEXTS = [[{"role": "user", "content": "Say hello."}], [{"role": "user", "content": "Name a colour."}]]


def test_evaluation_reports_win_rate_kl_length_eos_rate_and_truncations(tiny_policy_dir, sharp_reference_dir, pairs, tmp_path):
    reward = train_reward_model(
        model_path=tiny_policy_dir, train_pairs=pairs, config=RewardConfig(batch_size=4, max_length=80, device="cpu"),
        out_dir=tmp_path / "rm",
    )
    config = EvaluationConfig(generation=GenerationConfig(max_new_tokens=6, temperature=1.0, top_p=1.0), device="cpu")
    report = evaluate_policy(
        policy_path=tiny_policy_dir,
        baseline_path=sharp_reference_dir,
        reward_path=reward.checkpoint,
        reference_path=tiny_policy_dir,
        contexts=CONTEXTS,
        config=config,
    )
    assert report.contexts == 2
    assert 0.0 <= report.win_rate <= 1.0
    # The policy is its own reference.
    assert max(abs(report.kl_k1), abs(report.kl_k3), report.kl_k1_stderr, report.kl_k3_stderr) <= 1e-6
    assert 0 < report.mean_response_tokens <= 6
    assert 0.0 <= report.eos_rate <= 1.0
    assert report.truncated == round((1 - report.eos_rate) * report.contexts)


def test_the_cli_prints_the_evaluation_report(tiny_policy_dir, sharp_reference_dir, tmp_path, capsys):
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text("".join(json.dumps({"prompt": context}) + "\n" for context in CONTEXTS))
    main(["evaluate", "--policy", str(tiny_policy_dir), "--baseline", str(sharp_reference_dir), "--reward",
          # A causal LM loads as a reward model with a fresh score head; its scores need not mean anything here.
          str(tiny_policy_dir), "--reference", str(sharp_reference_dir), "--contexts", str(contexts),
          "--max-new-tokens", "4", "--device", "cpu"])
    report = json.loads(capsys.readouterr().out)
    assert report["contexts"] == 2
    assert report["kl_k3"] >= 0.0 and report["kl_k1_stderr"] >= 0.0
    assert {"kl_k1", "kl_k3_stderr", "eos_rate", "truncated"} <= report.keys()


def test_cli_trains_a_dpo_policy_from_exported_jsonl(tiny_policy_dir, pairs, tmp_path, capsys):
    from training.data import pair_to_trl_record

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(pair_to_trl_record(pair)) + "\n" for pair in pairs))
    main(["dpo", "--policy", str(tiny_policy_dir), "--train", str(data), "--out", str(tmp_path / "policy"),
          "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", "--max-length", "64", "--device", "cpu"])
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)
    assert metrics["checkpoint"] == str(tmp_path / "policy")
    assert metrics["train_encoding"] == {"total": 4, "kept": 4, "truncated": 1, "dropped": {}}
    assert "step 1/1 loss" in captured.err
