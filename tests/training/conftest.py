"""Fixtures of the training tests: tiny models (random and "sharp") and a few preference pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from training.checkpoints import load_tokenizer, save_checkpoint
from training.data import Demonstration, PreferencePair
from training.tiny import build_tiny_causal_lm

HH_FILE = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
HH_FILE_RECORDS = 2312
# The 200 pairs bundled with the demo (same format, MIT licence), for a clone with no ../shared beside it.
HH_SAMPLE = Path(__file__).resolve().parents[2] / "preference_app" / "core" / "demo_data" / "hh-rlhf-harmless-base-sample.jsonl"
HH_SAMPLE_RECORDS = 200

PAIRS = [
    PreferencePair([{"role": "user", "content": "Say hello."}], "Hello! How can I help?", "No.", margin=1.0),
    PreferencePair(
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "Are you sure?"},
        ],
        "Yes, 2+2 is 4.",
        "Maybe 5, it depends on the day of the week and the weather outside.",
        margin=0.5,
    ),
    PreferencePair([{"role": "user", "content": "Name a colour."}], "Blue.", "Blue.", margin=0.0),
    PreferencePair(
        [{"role": "user", "content": "Write one short line about the sea, please, in plain words."}],
        "The sea rolls grey and slow.",
        "Water.",
        margin=2.0,
    ),
]

DEMONSTRATIONS = [
    Demonstration([{"role": "user", "content": "Say hello."}], "Hello! How can I help you today?"),
    Demonstration([{"role": "user", "content": "Name a colour."}], "Blue, the colour of a clear sky."),
]


def _sharpen(source: Path, target: Path, *, scale: float) -> Path:
    """Copy a tiny model with its (tied) embeddings scaled so its next-token distributions are peaked.

    A freshly initialised tiny model predicts nearly uniform tokens, so two of them assign almost the
    same log-probs and DPO rewards would be differences of nearly equal numbers; peaked models make
    policy and reference disagree, which is what a parity test needs to compare.
    """
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(scale)
    return save_checkpoint(model, load_tokenizer(str(source)), target, config={"sharpened": scale}, metrics={})


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("training-models") / "tiny-policy", seed=0)


@pytest.fixture(scope="session")
def sharp_policy_dir(tmp_path_factory, tiny_policy_dir) -> Path:
    return _sharpen(tiny_policy_dir, tmp_path_factory.mktemp("training-models") / "sharp-policy", scale=40.0)


@pytest.fixture(scope="session")
def sharp_reference_dir(tmp_path_factory) -> Path:
    random_model = build_tiny_causal_lm(tmp_path_factory.mktemp("training-models") / "tiny-reference", seed=1)
    return _sharpen(random_model, tmp_path_factory.mktemp("training-models") / "sharp-reference", scale=40.0)


@pytest.fixture(scope="session")
def tokenizer(tiny_policy_dir):
    return load_tokenizer(str(tiny_policy_dir))


@pytest.fixture
def pairs() -> list[PreferencePair]:
    return list(PAIRS)


@pytest.fixture
def demonstrations() -> list[Demonstration]:
    return list(DEMONSTRATIONS)


@pytest.fixture
def hh_file() -> tuple[Path, int]:
    """The full HH-RLHF harmless-base test split from ../shared/data/hh-rlhf/ where it is, else the
    bundled sample, so a clone on its own skips nothing; with the number of records each holds."""
    if HH_FILE.is_file():
        return HH_FILE, HH_FILE_RECORDS
    return HH_SAMPLE, HH_SAMPLE_RECORDS
