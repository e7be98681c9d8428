"""`reverse-sigmoid`: Lee, Edwards, Molloy, Srivastava, "Defending Against NN Model Stealing
Attacks Using Deceptive Perturbations" (arXiv 1806.00054; IEEE S&P Workshops 2019).

What is perturbed: every probability y_i of the victim's answer, coordinatewise,
    r(y_i) = beta * (sigmoid(gamma * logit(y_i)) - 1/2)          (the reverse sigmoid)
    y'_i  = alpha * (y_i - r(y_i)),  alpha normalising y' to sum 1.
r pulls large probabilities down and pushes small ones up; with gamma < 1 the map
y -> y - r(y) is not monotone near 0 and 1 (its slope there tends to minus infinity), so an
attacker that fits the served probabilities (cross-entropy or KL on logits) is pushed the
wrong way, while the top-1 label survives on nearly every input.

Knob: `beta` (> 0), the perturbation's magnitude; `gamma` (> 0) sets how sharply the
reversal acts. Defaults beta = 1.0, gamma = 0.1: those of the implementation by the paper's
own group (IBM's Adversarial Robustness Toolbox, `art.defences.postprocessor.ReverseSigmoid`);
the arXiv text's per-experiment settings were not available offline. Trade-off points for
beta: 0.1, 0.5, 1.0, 2.0. There is no zero-protection setting: beta <= 0 is refused (beta = 0
would be the undefended answer; the paper's parameter is positive).

What is preserved (checked in tests/test_output_defences.py): a valid probability vector,
always (every y - r(y) is clipped at 0 before renormalising, as the ART implementation does;
for beta <= 1 no coordinate ever goes below 0, since r(y) < y when y > 1/2 and r(y) <= 0
when y <= 1/2). The top-1 label is *not* guaranteed: with the defaults, f(y) = y - r(y) gives
f(1e-9) = 0.388 but f(0.3) = 0.321, so a low-confidence top class (about 0.1 to 0.33) next to
a class at ~1e-9 loses its rank. `preserves_top1` is therefore False; the served clean
accuracy the arena records is the measure.

Deliberate choices: probabilities are clipped to [1e-9, 1 - 1e-9] before the logit (the ART
value; the prediction-poisoning re-implementation has no clip and returns NaN at 0 or 1) and
the transform is computed in float64, because float32 cannot represent 1 - 1e-9.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from engines.defenders.base import DEFENDERS, Defender

CLIP = 1e-9


class ReverseSigmoidParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beta: float = Field(1.0, gt=0.0)  # magnitude of the perturbation
    gamma: float = Field(0.1, gt=0.0)  # convergence (sharpness) parameter


def reverse_sigmoid(probs: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Lee et al.'s perturbed answer for probability rows `probs` (any float dtype in, same out)."""
    y = probs.double().clamp(CLIP, 1.0 - CLIP)
    r = beta * (torch.sigmoid(gamma * torch.logit(y)) - 0.5)
    perturbed = (probs.double() - r).clamp_min(0.0)
    return (perturbed / perturbed.sum(1, keepdim=True).clamp_min(1e-300)).to(probs.dtype)


@DEFENDERS.register("reverse-sigmoid")
class ReverseSigmoid(Defender):
    description = "reverse sigmoid perturbation of the probabilities (Lee et al., arXiv 1806.00054)"
    Params = ReverseSigmoidParams
    smoke_params = {}
    knob = "beta"
    knob_values = (0.1, 0.5, 1.0, 2.0)
    zero_protection_params = None

    def prepare(self) -> dict:
        self.ctx.victim.eval()
        return {}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.ctx.victim_logits(images).float(), dim=1)
        return reverse_sigmoid(probs, self.params.beta, self.params.gamma)
