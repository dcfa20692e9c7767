"""Losses and advantage estimators of the online stages (PPO, RLOO, GRPO), as small pure functions.

Shapes: B is the number of sampled replies, T the longest reply in tokens, k the replies sampled per
prompt (so B = prompts * k, each prompt's k replies adjacent). Per-token tensors are (B, T), padded
on the right, with `mask` (B, T) 1.0 on reply tokens and 0.0 on padding. Every function here is the
formula in its docstring and nothing else; the stages (training.ppo, training.online) decide what
goes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Added to a standard deviation before dividing by it, as TRL's RLOO and GRPO trainers do.
STD_EPSILON = 1e-4


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """sum(values * mask) / sum(mask), over `dim` or over everything."""
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8) over the masked entries (Huang et al. 2024, details on whitening).

    The variance is the unbiased one (n - 1), as in OpenAI's lm-human-preferences and TRL's PPO.
    With shift_mean=False the mean is added back, which only rescales: TRL's reward whitening, so
    that whitening the per-token rewards does not change the sign of a reply's total reward.
    Padding entries come back as 0.
    """
    mean = masked_mean(values, mask)
    count = mask.sum()
    variance = masked_mean((values - mean) ** 2, mask) * count / (count - 1).clamp(min=1.0)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def kl_penalized_rewards(
    scores: torch.Tensor,
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    mask: torch.Tensor,
    *,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards of RLHF with a KL penalty (Ziegler et al. 2019 eq. 2; Ouyang et al. 2022 eq. 2).

        kl_t = log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)      on the sampled ids y_t
        r_t  = -beta * kl_t + [t = last reply token] * score

    scores: (B,) reward-model score of each reply (with any missing-EOS penalty already applied);
    policy_logps, reference_logps: (B, T) log-probs of the sampled tokens under the policy that
    sampled them and under the reference. Returns r (B, T) and kl (B, T), both zero on padding.
    The sum of kl_t over a reply is k1 of training.evaluate.KLEstimate, one sample of KL(pi || ref).
    """
    kl = (policy_logps - reference_logps) * mask  # (B, T)
    rewards = -beta * kl  # (B, T)
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of each reply's last token
    rewards = rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))
    return rewards * mask, kl


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (Schulman et al. 2016, eq. 16) and the value targets.

        delta_t = r_t + gamma * V_{t+1} - V_t          with V = 0 after a reply's last token
        A_t     = sum_{l >= 0} (gamma * lam)^l * delta_{t+l}
        R_t     = A_t + V_t                             (the critic's regression target)

    rewards, values, mask: (B, T). Computed backwards with A_t = delta_t + gamma * lam * A_{t+1}.
    Returns (advantages, returns), (B, T), zero on padding.
    """
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(rewards)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    next_value = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class ClippedLoss:
    loss: torch.Tensor  # () masked mean over tokens
    clip_fraction: torch.Tensor  # () share of tokens where the clipped term was the one taken, detached


def clipped_surrogate_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float,
    normalizer: torch.Tensor | float | None = None,
) -> ClippedLoss:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), negated to be minimised.

        rho_t = exp(log pi(y_t) - log pi_old(y_t))
        L_t   = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps))

    logps: (B, T) under the policy being trained; old_logps: (B, T) under the policy that sampled
    the replies; advantages: (B, T). The loss is sum(L_t * mask) / normalizer, by default the
    number of tokens in `mask`; a caller that splits one minibatch into several forward passes
    passes the minibatch's token count so the pieces add up to the minibatch's mean.
    """
    ratio = torch.exp(logps - old_logps)  # (B, T)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    losses = torch.maximum(unclipped, clipped)  # (B, T)
    normalizer = mask.sum().clamp(min=1.0) if normalizer is None else normalizer
    return ClippedLoss(
        loss=(losses * mask).sum() / normalizer,
        clip_fraction=masked_mean((clipped > unclipped).float(), mask).detach(),
    )


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip: float,
    normalizer: torch.Tensor | float | None = None,
) -> ClippedLoss:
    """The critic's clipped value loss (Huang et al. 2024, detail "value function loss clipping").

        V_clip = old_V + clip(V - old_V, -eps, eps)
        L_t    = 1/2 * max((V - R)^2, (V_clip - R)^2)

    values: (B, T) from the critic being trained; old_values: (B, T) from the critic at rollout
    time; returns: (B, T) GAE targets. Normalised as in `clipped_surrogate_loss`.
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    losses = 0.5 * torch.maximum(unclipped_error, clipped_error)  # (B, T)
    normalizer = mask.sum().clamp(min=1.0) if normalizer is None else normalizer
    return ClippedLoss(
        loss=(losses * mask).sum() / normalizer,
        clip_fraction=masked_mean((clipped_error > unclipped_error).float(), mask).detach(),
    )


def _group_std(grouped: torch.Tensor) -> torch.Tensor:
    """Unbiased standard deviation (n - 1) of each row of a (prompts, k) tensor, as torch.std."""
    return grouped.std(dim=1, correction=1)


def rloo_advantages(rewards: torch.Tensor, k: int, *, normalize: bool = False) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, eq. 7; TRL 1.16's RLOOTrainer).

        A_i = r_i - 1/(k-1) * sum_{j != i} r_j          over the k replies of one prompt

    rewards: (B,) with each prompt's k replies adjacent (B = prompts * k, k >= 2). With `normalize`
    the advantages are then whitened over the whole batch: (A - mean) / (std + 1e-4), std unbiased.
    Returns (B,).
    """
    if k < 2:
        raise ValueError("Leave-one-out needs at least two replies per prompt.")
    grouped = rewards.view(-1, k)  # (prompts, k)
    baselines = (grouped.sum(dim=1, keepdim=True) - grouped) / (k - 1)  # (prompts, k)
    advantages = (grouped - baselines).reshape(-1)  # (B,)
    if normalize:
        advantages = (advantages - advantages.mean()) / (advantages.std(correction=1) + STD_EPSILON)
    return advantages


def grpo_advantages(rewards: torch.Tensor, k: int, *, scale: str = "group") -> torch.Tensor:
    """Group-normalised advantages (Shao et al. 2024, sec. 4.1.2; TRL 1.16's GRPOTrainer).

        A_i = (r_i - mean(r_group)) / (std + 1e-4)

    where std is the unbiased standard deviation of the prompt's k rewards (scale="group", GRPO),
    of the whole batch's rewards (scale="batch"), or no division at all (scale="none", Dr. GRPO).
    rewards: (B,) with each prompt's k replies adjacent. Returns (B,).
    """
    grouped = rewards.view(-1, k)  # (prompts, k)
    advantages = grouped - grouped.mean(dim=1, keepdim=True)  # (prompts, k)
    if scale == "group":
        advantages = advantages / (_group_std(grouped)[:, None] + STD_EPSILON)
    elif scale == "batch":
        advantages = advantages / (rewards.std(correction=1) + STD_EPSILON)
    elif scale != "none":
        raise ValueError(f"scale must be 'group', 'batch' or 'none', not {scale!r}.")
    return advantages.reshape(-1)


@dataclass(frozen=True)
class OnlineLoss:
    loss: torch.Tensor  # ()
    clip_fraction: torch.Tensor  # () share of replies (RLOO) or tokens (GRPO) in the clipped region, detached
    kl: torch.Tensor | None = None  # () mean per-token KL estimate k3 (GRPO with beta > 0), detached


def rloo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
) -> OnlineLoss:
    """RLOO's sequence-level clipped objective, as TRL 1.16's RLOOTrainer computes it.

        rho_i = exp(log pi(y_i|x) - log pi_old(y_i|x))            summed over the reply's tokens
        L     = mean_i -min(rho_i * A_i, clip(rho_i, 1 - eps_low, 1 + eps_high) * A_i)

    logps, old_logps: (B,) summed log-probs of each reply; advantages: (B,). With one update per
    batch rho = 1 and this is REINFORCE with the leave-one-out baseline (Ahmadian et al. 2024,
    eq. 7); the clip only matters when a batch is reused. The KL penalty is in the reward, not here.
    """
    ratio = torch.exp(logps - old_logps)  # (B,)
    losses = -torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages)
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    return OnlineLoss(loss=losses.mean(), clip_fraction=clipped.float().mean().detach())


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    reference_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "dapo",
    kl_importance_weighting: bool = True,
    max_completion_length: int | None = None,
    normalizer: torch.Tensor | float | None = None,
) -> OnlineLoss:
    """GRPO's token-level clipped objective with a KL term (Shao et al. 2024, eq. 3), as TRL 1.16 computes it.

        rho_t = exp(log pi(y_t) - log pi_old(y_t))
        kl_t  = exp(log ref - log pi) - (log ref - log pi) - 1       (Schulman's k3, eq. 4; never negative)
        L_t   = -min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A) + beta * w_t * kl_t

    w_t = rho_t with `kl_importance_weighting` (TRL 1.16's default use_bias_correction_kl, after
    DeepSeek-V3.2): the replies were sampled from pi_old, so weighting by rho_t makes the KL
    term's gradient that of KL(pi || ref) itself; w_t = 1 is the paper's original term.
    logps, old_logps, reference_logps, mask: (B, T); advantages: (B,), one per reply. The token
    losses are aggregated by `loss_type`:
        "grpo"     mean over each reply's tokens, then over replies (the paper's 1/|o_i|)
        "dapo"     sum over all tokens / `normalizer` (default: the tokens in `mask`), TRL's default
        "dr_grpo"  sum over all tokens / (B * max_completion_length) (Liu et al. 2025)
    """
    ratio = torch.exp(logps - old_logps)  # (B, T)
    advantages = advantages[:, None]  # (B, 1)
    losses = -torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * advantages)
    kl = None
    if beta != 0.0:
        if reference_logps is None:
            raise ValueError("A KL term (beta != 0) needs the reference's log-probs.")
        log_ratio = reference_logps - logps  # (B, T)
        per_token_kl = torch.exp(log_ratio) - log_ratio - 1
        if kl_importance_weighting:
            per_token_kl = per_token_kl * ratio
        losses = losses + beta * per_token_kl
        kl = masked_mean(per_token_kl, mask).detach()
    if loss_type == "grpo":
        loss = masked_mean(losses, mask, dim=1).mean()
    elif loss_type == "dapo":
        loss = (losses * mask).sum() / (mask.sum().clamp(min=1.0) if normalizer is None else normalizer)
    elif loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("loss_type='dr_grpo' divides by max_completion_length; pass it.")
        loss = (losses * mask).sum() / (losses.shape[0] * max_completion_length)
    else:
        raise ValueError(f"loss_type must be 'grpo', 'dapo' or 'dr_grpo', not {loss_type!r}.")
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    return OnlineLoss(loss=loss, clip_fraction=masked_mean(clipped.float(), mask).detach(), kl=kl)


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (sec. 2.2), as OpenAI's lm-human-preferences has it.

        e_t       = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_t+1  = beta_t * (1 + e_t * n_t / horizon)

    KL_t is the step's mean KL(pi || ref) per reply and n_t the replies it was measured on, so
    beta rises while the policy drifts past the target and falls while it stays inside it.
    """

    def __init__(self, beta: float, *, target: float, horizon: int):
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta
