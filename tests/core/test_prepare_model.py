"""`prepare_model` converts the bundled GGUF SmolLM2 into a checkpoint that loads fast and chats."""

import json

import pytest
from django.core.management import call_command

from preference_app.core.generation import model_version_base_ensure
from preference_app.core.model_store import base_model_location
from training.checkpoints import ModelUnavailable, load_causal_lm
from training.generate import GenerationConfig, generate_replies

pytestmark = pytest.mark.slow


def test_prepare_model_converts_the_bundled_gguf_into_a_working_checkpoint(settings, tmp_path, capsys):
    settings.MODELS_DIR = tmp_path
    call_command("prepare_model")
    target = tmp_path / "SmolLM2-135M-Instruct"
    assert "Model ready in" in capsys.readouterr().out
    assert (target / "model.safetensors").stat().st_size > 400_000_000  # 135M float32 parameters.
    assert "quantization_config" not in json.loads((target / "config.json").read_text())

    loaded = load_causal_lm(str(target))
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    (reply,), = generate_replies(loaded.model, loaded.tokenizer, [question],
                                 GenerationConfig(candidates_per_context=1, temperature=0, max_new_tokens=16))
    assert "Paris" in reply.text
    assert reply.finished_with_eos

    # A second run finds the checkpoint and leaves it alone.
    modified = (target / "model.safetensors").stat().st_mtime
    call_command("prepare_model")
    assert (target / "model.safetensors").stat().st_mtime == modified


def test_an_unprepared_bundled_model_says_which_command_to_run(settings, tmp_path, db):
    settings.MODELS_DIR = tmp_path
    with pytest.raises(ModelUnavailable, match="manage.py prepare_model"):
        base_model_location()
    with pytest.raises(ModelUnavailable, match="manage.py prepare_model"):
        model_version_base_ensure()


def test_a_local_model_directory_is_used_as_it_is(settings, tiny_model_dir, db):
    settings.MODEL_NAME = str(tiny_model_dir)
    version = model_version_base_ensure()
    assert version.path == str(tiny_model_dir.resolve())
    assert version.is_serving
    assert model_version_base_ensure().pk == version.pk
