"""`misleader-datafree`: an EXTENSION of MISLEADER (Cheng et al., arXiv 2506.02362, 2025),
not MISLEADER itself.

Why: MISLEADER's extraction term is evaluated on augmented training images only, while a
data-free attack such as DFME (Truong et al., CVPR 2021) queries generator samples that start
out nothing like them; on mnist5k DFME clones the `misleader` ensemble better than the
undefended victim (docs/results.md). This extension also evaluates the term on data-free-like
inputs: each simulated-attacker batch x' (augmented training images, as in `misleader`) is
extended by as many images from a fixed pool, so the simulated attacker is trained on them
and the member is pushed away from it there too (`train_members(extra_queries=...)`).

The pool (fixed per `pool_seed`, independent of the match seed, built before training):
`generator_fraction` of it are samples of an untrained generator with DFME's layout and
default width and noise size (`engines.attackers._generators.UpsampleGenerator`, batch-norm
statistics of batches of DFME's default batch size, i.e. what DFME's first queries look like),
the rest uniform noise in [0, 1]. Everything else (presets, parameters, serving) is
`misleader`'s; the artifact key adds the pool's settings.
"""

from __future__ import annotations

import torch
from pydantic import Field

from engines.attackers._generators import UpsampleGenerator, to_pixels
from engines.attackers.dfme import DfmeParams
from engines.defenders.base import DEFENDERS
from engines.defenders.misleader import Misleader, MisleaderParams


class MisleaderDatafreeParams(MisleaderParams):
    pool_size: int = Field(2400, ge=2)  # data-free-like images (the MNIST preset trains on 2,400)
    generator_fraction: float = Field(0.5, ge=0, le=1)  # the rest is uniform noise
    pool_seed: int = Field(0, ge=0)


def datafree_pool(size: int, generator_fraction: float, seed: int, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """float32 images in [0, 1]: untrained-DFME-generator samples, then uniform noise.

    A pure function of its arguments; leaves the global RNG state alone."""
    dfme = DfmeParams()
    channels, height, _ = image_shape
    count = round(size * generator_fraction)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        generator = UpsampleGenerator(
            dfme.nz, dfme.generator_width, channels, height, conv_bias=False, affine_output=False
        ).train()  # DFME queries its generator in training mode (batch statistics)
        samples = [
            to_pixels(generator(torch.randn(min(dfme.batch_size, count - start), dfme.nz)))
            for start in range(0, count, dfme.batch_size)
        ]
        noise = torch.rand(size - count, *image_shape)
    return torch.cat([*samples, noise]) if samples else noise


@DEFENDERS.register("misleader-datafree")
class MisleaderDatafree(Misleader):
    description = "EXTENSION of MISLEADER: extraction term also on untrained-generator samples and uniform noise"
    Params = MisleaderDatafreeParams
    smoke_params = {**Misleader.smoke_params, "pool_size": 64}

    def extra_queries(self) -> torch.Tensor:
        p: MisleaderDatafreeParams = self.params
        return datafree_pool(p.pool_size, p.generator_fraction, p.pool_seed, tuple(self.ctx.splits.image_shape))

    def artifact_spec(self, plans, loop) -> dict:
        p: MisleaderDatafreeParams = self.params
        dfme = DfmeParams()
        return {
            **super().artifact_spec(plans, loop),
            "method": "misleader-datafree",
            "datafree_pool": {
                "size": p.pool_size,
                "generator_fraction": p.generator_fraction,
                "seed": p.pool_seed,
                "generator": {"nz": dfme.nz, "width": dfme.generator_width, "batch": dfme.batch_size},
            },
        }
