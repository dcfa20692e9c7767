"""The loss functions compute the formulas in their docstrings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.losses import bradley_terry_loss, dpo_sigmoid_loss, sft_loss, token_log_probs


def test_dpo_sigmoid_loss_is_minus_log_sigmoid_of_beta_times_the_log_ratio_difference():
    policy_chosen, policy_rejected = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    reference_chosen, reference_rejected = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -3.5])
    result = dpo_sigmoid_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.5)
    h = torch.tensor([(1.0) - (-1.0), (0.5) - (0.5)])
    assert torch.allclose(result.loss, -F.logsigmoid(0.5 * h).mean())
    assert torch.allclose(result.chosen_rewards, torch.tensor([0.5, 0.25]))
    assert torch.allclose(result.rejected_rewards, torch.tensor([-0.5, 0.25]))


def test_dpo_label_smoothing_is_the_expected_loss_under_flipped_labels():
    args = (torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]))
    eps = 0.1
    smoothed = dpo_sigmoid_loss(*args, beta=1.0, label_smoothing=eps).loss
    logit = torch.tensor(2.0)
    expected = -(1 - eps) * F.logsigmoid(logit) - eps * F.logsigmoid(-logit)
    assert torch.allclose(smoothed, expected)
    assert torch.allclose(dpo_sigmoid_loss(*args, beta=1.0).loss, -F.logsigmoid(logit))


def test_bradley_terry_loss_subtracts_the_margin_and_adds_the_centering_term():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    assert math.isclose(bradley_terry_loss(chosen, rejected).item(), -F.logsigmoid(torch.tensor([1.0, -1.0])).mean().item(), rel_tol=1e-6)
    margin = torch.tensor([1.0, 0.5])
    expected = -F.logsigmoid(torch.tensor([0.0, -1.5])).mean() + 0.1 * torch.tensor([9.0, 1.0]).mean()
    assert torch.allclose(bradley_terry_loss(chosen, rejected, margin=margin, center_coefficient=0.1), expected)


def test_sft_loss_is_the_mean_negative_log_likelihood_of_the_scored_tokens():
    assert torch.allclose(sft_loss(torch.tensor([-1.0, -3.0])), torch.tensor(2.0))


def test_chunked_token_log_probs_equal_full_log_softmax_in_value_and_gradient():
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(101, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(101, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 101, (37,))
    upstream = torch.randn(37, dtype=torch.float32)

    ours = token_log_probs(hidden, weight, targets, bias=bias, chunk_size=8)
    (ours * upstream).sum().backward()
    ours_grads = [tensor.grad.clone() for tensor in (hidden, weight, bias)]
    for tensor in (hidden, weight, bias):
        tensor.grad = None

    full = F.log_softmax(hidden @ weight.T + bias, dim=-1).gather(1, targets[:, None]).squeeze(1)
    (full * upstream.double()).sum().backward()
    assert torch.allclose(ours.double(), full, atol=1e-5)
    for ours_grad, tensor in zip(ours_grads, (hidden, weight, bias)):
        assert torch.allclose(ours_grad, tensor.grad, atol=1e-5)
