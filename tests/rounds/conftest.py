"""Fixtures for round tests: a tiny base policy that writes short replies of varied length."""

import json
import random

import pytest

from preference_app.core.models import ModelVersion
from preference_app.core.prompts import BUILTIN_PROMPTS_FILE
from training.data import Demonstration
from training.sft import SFTConfig, train_sft


@pytest.fixture(scope="session")
def varied_length_policy_dir(tiny_model_dir, tmp_path_factory):
    """The tiny random model after a short SFT on replies of 1 to 14 words.

    A freshly initialised model almost never samples EOS, so every reply would hit the length cap
    and no length preference could be expressed or learned; this base model ends its replies at
    varied lengths, like a real one.
    """
    prompts = [json.loads(line)["text"] for line in BUILTIN_PROMPTS_FILE.read_text().splitlines()]
    words = " ".join(prompts).split()
    rng = random.Random(0)
    demonstrations = [
        Demonstration(
            prompt=[{"role": "user", "content": rng.choice(prompts)}],
            completion=" ".join(rng.choice(words) for _ in range(rng.randint(1, 14))),
        )
        for _ in range(160)
    ]
    result = train_sft(
        model_path=tiny_model_dir,
        demonstrations=demonstrations,
        config=SFTConfig(learning_rate=1e-2, epochs=3, batch_size=16, max_length=256, device="cpu"),
        out_dir=tmp_path_factory.mktemp("models") / "varied-length-base",
    )
    return result.checkpoint


@pytest.fixture
def base_policy(varied_length_policy_dir):
    return ModelVersion.objects.create(
        name="base:tiny", kind=ModelVersion.Kind.POLICY, path=str(varied_length_policy_dir),
        base_model_id="tiny-random", is_serving=True,
    )
