"""EDM: Ensemble of Diverse Models (Kariyappa, Prakash & Qureshi, "Protecting DNNs from Theft
using an Ensemble of Diverse Models", ICLR 2021).

K members of the victim's architecture are trained together so that they agree on
in-distribution inputs (each is an accurate classifier) and disagree on out-of-distribution
ones; a keyed hash of the query picks which single member answers it. Extraction queries are
mostly out of distribution, so an attacker sees answers from members that contradict each
other, and since the hash changes with any change of the input, the API is discontinuous:
a zeroth-order probe x + eps*u is usually answered by another member than x, which breaks
the finite differences of data-free attacks. Benign in-distribution queries get the same
class from every member, so utility is kept.

Training objective (the paper's):

    L = sum_k CE(f_k(x_in), y)  +  lambda * DivLoss(x_out)
    DivLoss(x) = log sum_{a<b} exp(cos(f_a(x), f_b(x)))

with f_k(x) the members' probability vectors and the log-sum-exp a smooth stand-in for the
maximum pairwise cosine similarity (the paper's "coherence"). Both terms are averaged over
their rows in each batch; in- and out-of-distribution rows are drawn shuffled together.

Outliers: synthesised from the defender's own training images (`_outliers.py`: uniform noise
and low-frequency blobs by default, the kinds a data-free generator's samples look like), or,
when `outlier_dataset` names one, a real torchvision set read from `--data-root` (its train
and validation images; the paper uses such a set). The defence never sees the attacker pool
or the test split.

Hash: BLAKE2b of each image's float32 bytes as the API receives them (after the oracle's
clamp to [0, 1]), keyed with the defender's seed (a secret of the deployment), modulo K. It is
a function of the image alone, so answers do not depend on batching, and the same seed gives
the same answers.

Deviations, for 2 CPU cores: members are trained for 15 epochs (the paper trains until
convergence); K defaults to 5 LeNet-size members on MNIST (cheap: only one member answers
each query, so serving costs one model). The paper's lambda is not reproduced here from its
code (none was available offline); `lam` is the knob, and the trade-off it makes between
clean accuracy and diversity is what the arena's trade-off curve shows.
"""

from __future__ import annotations

import hashlib
import itertools

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engines.data.base import to_floats
from engines.defenders._outliers import OUTLIER_LABEL, OutlierSource, fit_with_outliers, outlier_images
from engines.defenders.base import DEFENDERS, Defender
from engines.training import TrainConfig, accuracy


class EdmParams(OutlierSource):
    k: int = Field(5, ge=2)  # members; one member cannot disagree with itself
    lam: float = Field(1.0, ge=0)  # weight of the diversity loss
    epochs: int = Field(15, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(128, ge=1)


class _Members(nn.Module):
    """The K members side by side: logits (N, K, C), so one `fit` trains them jointly."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members], dim=1)


def coherence(probs: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities of the members' probability vectors: (N, K*(K-1)/2)."""
    unit = F.normalize(probs, dim=2)
    pairs = list(itertools.combinations(range(probs.shape[1]), 2))
    return torch.stack([(unit[:, a] * unit[:, b]).sum(1) for a, b in pairs], dim=1)


def edm_loss(lam: float):
    """The paper's objective on a batch of logits (N, K, C) with labels, OUTLIER_LABEL for outliers."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        inside = targets != OUTLIER_LABEL
        total = logits.new_zeros(())
        if inside.any():
            members = logits.shape[1]
            labels = targets[inside].repeat_interleave(members)
            total = total + F.cross_entropy(logits[inside].flatten(0, 1), labels) * members
        if lam > 0 and (~inside).any():
            probs = torch.softmax(logits[~inside], dim=2)
            total = total + lam * torch.logsumexp(coherence(probs), dim=1).mean()
        return total

    return loss


def member_index(images: torch.Tensor, k: int, key: bytes) -> torch.Tensor:
    """Which member answers each image: keyed BLAKE2b of its float32 bytes, modulo k."""
    flat = images.detach().float().cpu().contiguous().flatten(1).numpy()
    picks = [
        int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8, key=key).digest(), "little") % k for row in flat
    ]
    return torch.tensor(picks, dtype=torch.long)


@DEFENDERS.register("edm")
class Edm(Defender):
    description = "EDM: diverse ensemble, a keyed hash of each query picks the member that answers"
    Params = EdmParams
    smoke_params = {"k": 2, "epochs": 1, "train_limit": 128, "batch_size": 64}
    knob = "lam"
    knob_values = (0.5, 1.0, 2.0)
    zero_protection_params = None  # K retrained members never serve the victim's exact answers
    utility_tolerance = 1.0  # EDM reports clean accuracy within about a point of the undefended model

    @classmethod
    def datasets_needed(cls, params: EdmParams) -> list[str]:
        return params.datasets_needed()

    def prepare(self) -> dict:
        ctx, p = self.ctx, self.params
        splits = ctx.splits
        train = p.training_images(splits)

        def build():
            generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + 41)
            outliers = outlier_images(p, train, generator, ctx)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed * 1_000_003 + 43)
                ensemble = _Members([ctx.fresh_victim_model() for _ in range(p.k)])
            cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, augment=False)
            ctx.log(f"edm: training {p.k} members on {len(train)} images and {len(outliers)} outliers")
            report = fit_with_outliers(ensemble, train, outliers, cfg, generator, ctx, edm_loss(p.lam))
            tensors = {f"m{k}.{name}": v for k, m in enumerate(ensemble.members) for name, v in m.state_dict().items()}
            with torch.inference_mode():
                probs = torch.softmax(ensemble(to_floats(outliers[:512]).to(ctx.device)), dim=2)
                outlier_coherence = coherence(probs).amax(1).mean().item()
            facts = {
                "outliers": len(outliers),
                "member_val_accuracy": [accuracy(m, splits.defender_val, ctx.device) for m in ensemble.members],
                "outlier_max_coherence": outlier_coherence,
                "train_seconds": report["train_seconds"],
            }
            return tensors, facts

        tensors, facts, reused = ctx.store.get_or_build("defender", self.training_spec(), build)
        self.members = []
        for k in range(p.k):
            member = ctx.fresh_victim_model()
            member.load_state_dict({n[len(f"m{k}.") :]: v for n, v in tensors.items() if n.startswith(f"m{k}.")})
            self.members.append(member.to(ctx.device).eval())
        self.key = ctx.seed.to_bytes(8, "little", signed=True)
        if reused:
            ctx.log("edm: members loaded from the artifact cache")
        return {"reused": reused, **facts, "k": p.k, "lam": p.lam}

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        pick = member_index(images, len(self.members), self.key).to(images.device)
        answers = torch.empty((len(images), self.ctx.splits.num_classes), device=images.device)
        for k, member in enumerate(self.members):
            rows = (pick == k).nonzero().flatten()
            if len(rows):  # each member answers only the images hashed to it
                answers[rows] = torch.softmax(member(images[rows]).float(), dim=1)
        return answers
