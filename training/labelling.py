"""On-policy data labelled by a reward model: the iterative-DPO and rejection-sampling recipes.

Online iterative DPO (Xiong et al. 2024; Dong et al. 2024, "RLHF Workflow"; the Llama 3 recipe)
samples n replies per prompt from the current policy, lets a reward model trained on human labels
rank them, and trains DPO on the best against the worst: pairs on the policy's own distribution,
many more of them than people could judge. Rejection sampling (best-of-n SFT; Bai et al. 2022,
Touvron et al. 2023) keeps only the best reply and fine-tunes on it.

A pair is kept only when the reward model separates best and worst by at least `min_gap` standard
deviations of all the batch's rewards: below that the label is mostly the reward model's noise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from training.data import Demonstration, Message, PreferencePair


@dataclass(frozen=True)
class Labelled:
    pairs: list[PreferencePair]
    demonstrations: list[Demonstration]  # The best reply of every prompt (best-of-n).
    prompts: int
    dropped_small_gap: int  # Prompts whose best and worst reward were closer than min_gap.
    reward_sd: float


def label_with_rewards(
    contexts: list[list[Message]], replies: list[list[str]], rewards: list[list[float]], *, min_gap: float
) -> Labelled:
    """Best-vs-worst pairs (gap >= min_gap reward sds) and best-of-n demonstrations per context."""
    if not (len(contexts) == len(replies) == len(rewards)):
        raise ValueError("One list of replies and one list of rewards per context are needed.")
    everything = [reward for scores in rewards for reward in scores]
    sd = statistics.pstdev(everything) if len(everything) > 1 else 0.0
    pairs, demonstrations, dropped = [], [], 0
    for context, texts, scores in zip(contexts, replies, rewards):
        if len(texts) != len(scores) or len(texts) < 2:
            raise ValueError("Each context needs at least two replies, each with a reward.")
        best = max(range(len(scores)), key=scores.__getitem__)
        worst = min(range(len(scores)), key=scores.__getitem__)
        demonstrations.append(Demonstration(prompt=context, completion=texts[best]))
        gap = scores[best] - scores[worst]
        if sd == 0.0 or gap < min_gap * sd or texts[best] == texts[worst]:
            dropped += 1
            continue
        pairs.append(PreferencePair(prompt=context, chosen=texts[best], rejected=texts[worst], margin=0.0))
    return Labelled(pairs=pairs, demonstrations=demonstrations, prompts=len(contexts), dropped_small_gap=dropped,
                    reward_sd=sd)
