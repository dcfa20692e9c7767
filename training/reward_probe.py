"""A reward model that learns from tens of pairs: a linear Bradley-Terry head on a frozen backbone.

Fine-tuning all of a 135M-parameter model on the 15-60 decided pairs a round of human judging
yields leaves the reward model at chance on held-out pairs (bench/loop_learning.py measured
0.48-0.57). Frozen features with a linear head are the low-data regime's answer: the policy's
hidden states at a middle layer, averaged over the reply's tokens, already separate many of the
properties people prefer, and a regularised logistic regression fits those few pairs without
memorising them. On SmolLM2-135M replies judged by the `gives_figures` rule, held-out accuracy
from about 26 training pairs was 0.84 with this probe against 0.73 for the last token's final
hidden state (the feature a fine-tuned sequence classifier reads); see the README.

The model:
    h = mean over t of Backbone_{1..L}(x, y)_t    (first L layers, then the norm; t runs over the
                                                   positions predicting the reply's tokens)
    r(y|x) = w . h
trained with the Bradley-Terry loss of training.losses on the difference of the two replies'
features, plus an L2 penalty on w in standardised units:
    loss = mean_i -log sigmoid(w . (h(y+_i) - h(y-_i)) / s) + l2 * |w|^2,   s = per-feature std
The scale s is folded into the saved head (w / s), so scoring needs no extra state. A bias would
cancel in every difference, so the head has none.

The saved checkpoint holds the truncated backbone (only the layers the probe reads), the
tokenizer and the head; training.checkpoints.load_reward_model recognises it by PROBE_FILE.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel
from transformers.utils import logging as transformers_logging

from training.data import EncodedPair
from training.losses import bradley_terry_loss
from training.packing import PackedBatch, backbone_hidden_states, pack_pairs

PROBE_FILE = "reward_probe.json"
HEAD_FILE = "reward_probe_head.safetensors"
MAX_LBFGS_ITERATIONS = 200


def probe_depth(num_hidden_layers: int, layer_fraction: float) -> int:
    """How many of the backbone's layers the probe keeps: the fraction of the depth, at least one."""
    if not 0 < layer_fraction <= 1:
        raise ValueError(f"probe_layer_fraction must be in (0, 1], not {layer_fraction}.")
    return max(1, round(num_hidden_layers * layer_fraction))


class ProbeRewardModel(torch.nn.Module):
    """A frozen, truncated backbone and a linear head over the mean hidden state of the reply."""

    def __init__(self, backbone: torch.nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(hidden_size, 1, bias=False)
        torch.nn.init.zeros_(self.head.weight)
        self.backbone.requires_grad_(False)

    @property
    def config(self):
        return self.backbone.config

    def pooled_features(self, batch: PackedBatch) -> torch.Tensor:
        """Mean hidden state over each sequence's completion tokens: (num_sequences, H) float32."""
        hidden = backbone_hidden_states(self.backbone, batch)  # (L, H)
        # The states that predict the reply's tokens (the prompt's last token through the reply's
        # second to last): packed pairs share their prefix, so these are the positions a packed row
        # lays out per sequence, where the reply tokens' own positions are not.
        token_states = hidden.index_select(0, batch.target_index).float()  # (N, H)
        sums = torch.zeros(batch.num_sequences, token_states.shape[1], device=token_states.device)
        sums = sums.index_add(0, batch.target_sequence, token_states)
        counts = torch.bincount(batch.target_sequence, minlength=batch.num_sequences).clamp_min(1)
        return sums / counts.unsqueeze(1).to(sums.dtype)

    def packed_rewards(self, batch: PackedBatch) -> torch.Tensor:
        """Scalar reward of each sequence of a packed batch: (num_sequences,) float32."""
        return self.head(self.pooled_features(batch)).squeeze(-1).float()

    def save_pretrained(self, directory, **kwargs) -> None:
        directory = Path(directory)
        self.backbone.save_pretrained(directory, **kwargs)
        save_file({"weight": self.head.weight.detach().cpu().contiguous()}, str(directory / HEAD_FILE))
        (directory / PROBE_FILE).write_text(json.dumps({"pooling": "mean_reply_tokens",
                                                        "layers": self.backbone.config.num_hidden_layers}))


def is_probe_checkpoint(path: str | Path) -> bool:
    return (Path(path) / PROBE_FILE).is_file()


def probe_from_policy(policy_path: str | Path, *, layer_fraction: float, dtype: torch.dtype) -> ProbeRewardModel:
    """A probe with an untrained head on the first layers of the policy at `policy_path`."""
    config = AutoConfig.from_pretrained(policy_path)
    config.num_hidden_layers = probe_depth(config.num_hidden_layers, layer_fraction)
    # Loading with the smaller config keeps only the first layers' weights; the skipped layers are
    # expected, so transformers' report of them as unexpected keys is silenced.
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        backbone = AutoModel.from_pretrained(policy_path, config=config, dtype=dtype)
    finally:
        transformers_logging.set_verbosity(verbosity)
    return ProbeRewardModel(backbone, config.hidden_size)


def probe_load(path: str | Path, *, dtype: torch.dtype) -> ProbeRewardModel:
    """A trained probe saved by ProbeRewardModel.save_pretrained."""
    backbone = AutoModel.from_pretrained(path, dtype=dtype)
    model = ProbeRewardModel(backbone, backbone.config.hidden_size)
    model.head.weight.data.copy_(load_file(str(Path(path) / HEAD_FILE))["weight"])
    return model.eval()


@torch.inference_mode()
def pair_features(model: ProbeRewardModel, pairs: list[EncodedPair], *, pad_token_id, batch_size: int):
    """Features of each pair's chosen and rejected reply: two (num_pairs, H) float32 tensors."""
    device = next(model.parameters()).device
    chosen, rejected = [], []
    for start in range(0, len(pairs), batch_size):
        batch = pack_pairs(pairs[start : start + batch_size], pad_token_id=pad_token_id).to(device)
        features = model.pooled_features(batch).cpu()
        chosen_part, rejected_part = features.chunk(2)
        chosen.append(chosen_part)
        rejected.append(rejected_part)
    hidden = model.head.in_features
    if not chosen:
        return torch.zeros(0, hidden), torch.zeros(0, hidden)
    return torch.cat(chosen), torch.cat(rejected)


def fit_linear_head(differences: torch.Tensor, *, l2: float, margins: torch.Tensor | None = None):
    """Weights w (in the features' units) minimising the penalised Bradley-Terry loss above.

    `differences` is (P, H): chosen features minus rejected. Returns (w, final loss, iterations).
    """
    scale = differences.std(dim=0).clamp_min(1e-6) if len(differences) > 1 else differences.abs().clamp_min(1e-6)
    standardised = differences / scale
    weight = torch.zeros(differences.shape[1], requires_grad=True)
    optimiser = torch.optim.LBFGS([weight], max_iter=MAX_LBFGS_ITERATIONS, line_search_fn="strong_wolfe")
    zeros = torch.zeros(len(differences))

    def closure():
        optimiser.zero_grad()
        rewards = standardised @ weight
        loss = bradley_terry_loss(rewards, zeros, margin=margins) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimiser.step(closure)
    with torch.no_grad():
        loss = bradley_terry_loss(standardised @ weight, zeros, margin=margins) + l2 * weight.square().sum()
    iterations = optimiser.state[weight].get("n_iter", 0)
    return weight.detach() / scale, float(loss), iterations
