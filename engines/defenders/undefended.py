"""`undefended`: the victim's own softmax, the reference every defence is compared with."""

import torch

from engines.defenders.base import DEFENDERS, Defender


@DEFENDERS.register("undefended")
class Undefended(Defender):
    description = "no defence: serves the victim's own probabilities"
    smoke_params = {}  # nothing to train
    zero_protection_params = {}

    @classmethod
    def preserves_top1(cls, params) -> bool:
        return True

    def prepare(self) -> dict:
        self.ctx.victim.eval()
        return {}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.ctx.victim_logits(images), dim=1)
