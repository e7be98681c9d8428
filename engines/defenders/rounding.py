"""Output truncation: `rounding` (probabilities rounded to a few decimals) and `top1` (only
the top-1 class, served as a one-hot probability vector).

Both are the passive baselines of the extraction literature: Tramèr, Zhang, Juels, Reiter,
Ristenpart, "Stealing Machine Learning Models via Prediction APIs" (USENIX Security 2016)
round confidences to a few decimals as the countermeasure to equation-solving attacks, and
report only the class label as the strongest truncation; Orekondy et al. (Prediction
Poisoning, ICLR 2020) call such truncation the "passive" defences their active perturbation
is compared against.

`rounding`: each probability rounded to `decimals` decimal places (round half to even), then
renormalised so the answer stays a probability vector, as the oracle contract requires. The
renormalisation is a fixed function of the rounded vector, so the answer carries exactly the
rounded vector's information: it is what a rounding API "means". A row whose entries all
round to 0 (only when every probability is at most half a unit of the last decimal: at
decimals 0 when no class is above 1/2, at decimals 1 only with more than 20 classes) is
served as the one-hot of its top class, the rounded vector nearest to it that is a
distribution. Knob: `decimals` (>= 0; fewer is stronger). Default 2
(two decimals, as a percentage API shows them); trade-off points 4, 3, 2, 1, 0.
Rounding can create ties at the top (0.444 and 0.436 both become 0.4), and the served argmax
of a tie is the lower class index, so `rounding` does not guarantee the victim's top-1.
There is no zero-protection setting: any finite number of decimals changes some answers.

`top1`: the one-hot vector of the victim's top class. A defence, distinct from the oracle's
`hard` label mode: the defender decides it (so soft-label attacks get one-hot vectors and
report it), and it composes with the oracle's modes. It guarantees the victim's top-1 and has
no knob (its trade-off curve is a single point).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from engines.defenders.base import DEFENDERS, Defender


class RoundingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decimals: int = Field(2, ge=0, le=8)  # float32 probabilities carry about 7 decimals


def round_probabilities(probs: torch.Tensor, decimals: int) -> torch.Tensor:
    """Rows rounded to `decimals` places and renormalised; an all-zero row becomes its top-1 one-hot."""
    rounded = torch.round(probs, decimals=decimals)
    totals = rounded.sum(1, keepdim=True)
    one_hot = F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
    return torch.where(totals > 0, rounded / totals.clamp_min(1e-12), one_hot)


@DEFENDERS.register("rounding")
class Rounding(Defender):
    description = "probabilities rounded to `decimals` places, renormalised (Tramèr et al. 2016)"
    Params = RoundingParams
    smoke_params = {}
    knob = "decimals"
    knob_values = (4, 3, 2, 1, 0)
    zero_protection_params = None

    def prepare(self) -> dict:
        self.ctx.victim.eval()
        return {}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.ctx.victim_logits(images).float(), dim=1)
        return round_probabilities(probs, self.params.decimals)


@DEFENDERS.register("top1")
class Top1(Defender):
    description = "only the top-1 class, served as a one-hot probability vector"
    smoke_params = {}
    knob = None
    knob_values = ()
    zero_protection_params = None

    @classmethod
    def preserves_top1(cls, params) -> bool:
        return True

    def prepare(self) -> dict:
        self.ctx.victim.eval()
        return {}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.ctx.victim_logits(images).float(), dim=1)  # the argmax the arena scores
        return F.one_hot(probs.argmax(1), probs.shape[1]).float()
