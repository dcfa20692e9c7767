"""Tiny randomly initialised models for tests and smoke runs.

They share the bundled SmolLM2 tokenizer and chat template, so every code path (chat template,
EOS handling, padding) is the real one, while a forward pass costs milliseconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from training.checkpoints import bundled_gguf_path, save_checkpoint
from training.runtime import set_seed


def build_tiny_causal_lm(out_dir: Path, *, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Save a tiny random Llama with the bundled tokenizer into `out_dir` and return the path."""
    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    set_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return save_checkpoint(
        model, tokenizer, out_dir, config={"tiny_random": True, "seed": seed}, metrics={}
    )
