"""Loss functions of the three training stages, as small pure functions.

Shapes: B is the number of preference pairs, N the number of scored tokens, H the hidden size, V the
vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOLoss:
    loss: torch.Tensor  # () mean over the batch
    chosen_rewards: torch.Tensor  # (B,) beta * (log pi(y+|x) - log ref(y+|x)), detached
    rejected_rewards: torch.Tensor  # (B,) beta * (log pi(y-|x) - log ref(y-|x)), detached


def dpo_sigmoid_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> DPOLoss:
    """DPO's sigmoid loss (Rafailov et al. 2023, Eq. 7), averaged over the batch.

        h    = (log pi(y+|x) - log ref(y+|x)) - (log pi(y-|x) - log ref(y-|x))
        loss = -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h)

    Every argument is (B,): the log-probability of each completion summed over its tokens.

    Label smoothing `eps` follows conservative DPO (cDPO, Mitchell 2023): each label is taken to be
    flipped with probability eps, so the loss is the expected loss under that noise. eps = 0 is
    plain DPO. This is what TRL's `loss_type="sigmoid"` computed up to the 0.2x releases; TRL 1.16's
    "sigmoid" ignores `label_smoothing` altogether (only its "robust", "exo_pair" and "aot" losses
    read it, "robust" as the different, unbiased rDPO estimator). So with eps = 0 this equals TRL
    1.16's sigmoid loss, and with eps > 0 it equals TRL's older cDPO, not 1.16's "robust".

    The implicit rewards beta * (log pi - log ref) are returned detached, for logging and accuracy.
    """
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps  # (B,)
    logits = beta * (chosen_logratios - rejected_logratios)  # (B,)
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return DPOLoss(
        loss=losses.mean(),
        chosen_rewards=(beta * chosen_logratios).detach(),
        rejected_rewards=(beta * rejected_logratios).detach(),
    )


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    center_coefficient: float | None = None,
) -> torch.Tensor:
    """Bradley-Terry loss of a reward model (the seed's step 2), averaged over the batch.

        loss = mean(-log sigmoid(r(y+) - r(y-) - m)) + c * mean((r(y+) + r(y-))^2)

    chosen_rewards, rejected_rewards: (B,) scalar rewards. margin m: (B,) or None (m = 0), the
    judgment's strength; a pair only stops contributing once the chosen reward leads by m (Llama 2's
    margin loss). center_coefficient c: None or 0 disables it; otherwise it pulls rewards toward
    zero mean (Eisenstein et al. 2023), as TRL's `center_rewards_coefficient`.
    """
    difference = chosen_rewards - rejected_rewards  # (B,)
    if margin is not None:
        difference = difference - margin
    loss = -F.logsigmoid(difference).mean()
    if center_coefficient:
        loss = loss + center_coefficient * torch.mean((chosen_rewards + rejected_rewards) ** 2)
    return loss


def sft_loss(token_logps: torch.Tensor) -> torch.Tensor:
    """Next-token loss over demonstration tokens (the seed's step 0): -mean_t log p(x_t | x_<t).

    token_logps: (N,) log-probability of each completion token; prompt tokens are not in it.
    """
    return -token_logps.mean()


class _ChunkedTokenLogProbs(torch.autograd.Function):
    """log softmax(h W^T + b)[target], computed chunk by chunk and recomputed in backward.

    Only a (chunk, V) block of logits exists at any time, in the forward and in the backward, so
    memory grows with the chunk size instead of with the number of tokens.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):
        device_type = hidden.device.type
        # Under autocast the head runs in the autocast dtype, in the forward and in the recompute.
        compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
        token_logps = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)  # (N,)
        logsumexps = torch.empty_like(token_logps)  # (N,)
        with torch.autocast(device_type, enabled=False):
            cast_weight, cast_bias = _cast(weight, compute_dtype), _cast(bias, compute_dtype)
            for start in range(0, hidden.shape[0], chunk_size):
                end = start + chunk_size
                logits = F.linear(hidden[start:end].to(compute_dtype), cast_weight, cast_bias).float()  # (chunk, V)
                logsumexps[start:end] = torch.logsumexp(logits, dim=-1)
                token_logps[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - logsumexps[start:end]
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexps)
        ctx.chunk_size = chunk_size
        ctx.compute_dtype = compute_dtype
        return token_logps

    @staticmethod
    def backward(ctx, grad_output):
        hidden, weight, bias, targets, logsumexps = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        compute_dtype = ctx.compute_dtype
        grad_output = grad_output.float()
        cast_weight, cast_bias = _cast(weight, compute_dtype), _cast(bias, compute_dtype)
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            chunk = hidden[start:end].to(compute_dtype)  # (chunk, H)
            logits = F.linear(chunk, cast_weight, cast_bias).float()  # (chunk, V)
            # d log p[target] / d logits = onehot(target) - softmax(logits)
            grad_logits = torch.exp(logits - logsumexps[start:end, None]).mul_(-grad_output[start:end, None])
            grad_logits.scatter_add_(1, targets[start:end, None], grad_output[start:end, None])
            grad_logits = grad_logits.to(compute_dtype)  # (chunk, V)
            if need_hidden:
                grad_hidden[start:end] = (grad_logits @ cast_weight).to(hidden.dtype)
            if need_weight:
                grad_weight.add_(grad_logits.t() @ chunk)
            if need_bias:
                grad_bias.add_(grad_logits.sum(0))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None


def _cast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(dtype)


def token_log_probs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Log-probability of each target token under the LM head, without full-vocabulary logits.

        log p(t_i) = (h_i W^T + b)[t_i] - logsumexp_v (h_i W^T + b)[v]

    hidden: (N, H) hidden states of the positions that predict the targets (already gathered, so
    prompt and padding positions never reach the head). weight: (V, H) LM head; bias: (V,) or None;
    targets: (N,) token ids. Returns (N,) float32. The log-softmax runs in float32 on (chunk, V)
    blocks, which the backward recomputes instead of storing.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + 0 * hidden.sum()
    return _ChunkedTokenLogProbs.apply(hidden, weight, bias, targets, chunk_size)
