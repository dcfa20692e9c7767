"""An export loads with `datasets` and trains TRL's DPOTrainer for a step with a tiny model."""

from __future__ import annotations

import pytest

from tests.api.conftest import judge, make_comparison


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["trl_conversational", "trl_standard"])
def test_dpo_trainer_trains_one_step_on_an_export(clients, annotators, tiny_model_dir, tmp_path, dataset):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    for number in range(4):
        comparison = make_comparison(
            context=(("user", f"Question {number}?"), ("assistant", "Let me think."), ("user", "Go on.")),
            texts=(f"A careful answer {number}.", f"Whatever {number}."),
        )
        judge(comparison, annotators[0], "a", 3)
    response = clients["researcher"].get("/api/export/", {"dataset": dataset})
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(response.streaming_content))
    train = load_dataset("json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert train.num_rows == 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        save_strategy="no", logging_steps=1, max_length=128, dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    before = next(model.parameters()).detach().clone()
    result = trainer.train()
    assert result.global_step == 1
    assert not next(model.parameters()).detach().equal(before)
