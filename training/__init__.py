"""Training code for the RLHF loop: plain torch + transformers, importable without Django.

Each stage lives in its own module (data, losses, reward, dpo, sft, generate, evaluate, checkpoints)
with one config dataclass per stage.
"""
