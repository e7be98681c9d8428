"""DNF: Dynamic Neural Fortresses (Luan, Wang, Shen, Gu, Wu & Tao, "Dynamic Neural Fortresses:
An Adaptive Shield for Model Extraction Defense", ICLR 2025).

The victim becomes an early-exit network: small classifier heads are attached after its
stages, and a query leaves at the first exit whose answer is confident enough (max softmax
above that exit's threshold); a query no exit claims takes the full path and gets the
victim's own answer. The heads are trained so that in-distribution queries are *not*
confident at early exits (they go the whole way and keep the victim's accuracy) while
attack-like, out-of-distribution queries *are* (they leave early with a shallow head's
answer, which carries little of the victim's function and costs less to compute).

Facts read from the public code (SYCodeShare/Dynamic-Neural-Fortresses, data-free ResNet):
- the backbone is the trained victim, frozen; only the exit heads are trained;
- a head is global average pooling, Linear(planes, 10*C), ReLU, Linear(10*C, C);
- thresholds rise with depth, 0.9, 0.92, 0.94, 0.96 (base 0.9, step 0.02);
- loss per batch: for each exit e, CE(exit_e(x_in), y) - 0.1 * H(exit_e(x_in)) on
  in-distribution images (high entropy: they do not exit), and
  CE(exit_e(x_out), y_out) + 0.1 * H(exit_e(x_out)) on out-of-distribution images (low
  entropy: they exit), where y_out is the first exit's own argmax (self-labelling);
  entropy weight 0.1, OOD weight 1; SGD momentum 0.9 at lr 0.1 (its schedule sets 0.1 for
  the first 80 epochs), 20 epochs;
- OOD images are samples of a generator.
The final exit's terms are left out here: with the backbone frozen they have no trainable
parameter.

Deliberate differences:
- The public serving path compares exit *logits* with the probability thresholds; here the
  thresholds apply to probabilities, as the method describes.
- The public script applies the OOD term only in its first epoch (a test that is true for
  epoch 0 only); here it applies in every epoch.
- OOD images are built from the defender's own data (`_outliers.py`: uniform noise,
  low-frequency blobs and samples of an untrained generator of the data-free attacks' layout;
  the public code loads a generator trained by a data-free attack, which the defender cannot
  have before the attack), or drawn from a torchvision set named with `outlier_dataset`.
  The defence never sees the attacker pool or the test split.
- 10 epochs instead of 20 for 2 CPU cores (only the heads train, so the cost is small).

Exits: LeNet-5 victims get three (after each pooling stage and after the first dense layer),
ResNet-8x victims four (after each stage), as in the public code. Every image's exit is a
function of that image alone, so answers do not depend on batching.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engines.data.base import to_floats
from engines.defenders._outliers import OUTLIER_LABEL, OutlierKind, OutlierSource, fit_with_outliers, outlier_images
from engines.defenders.base import DEFENDERS, Defender
from engines.errors import ArenaError
from engines.models.lenet import LeNet5
from engines.models.resnet8x import ResNet8x
from engines.training import TrainConfig

SERVING_ONLY = frozenset({"exit_threshold", "threshold_step"})  # knobs that do not change the trained heads


class DnfParams(OutlierSource):
    exit_threshold: float = Field(0.9, ge=0, le=1)  # the first exit's; 1.0 = no query exits early
    threshold_step: float = Field(0.02, ge=0, le=1)  # added per deeper exit (capped at 1)
    entropy_weight: float = Field(0.1, ge=0)
    ood_weight: float = Field(1.0, ge=0)
    epochs: int = Field(10, ge=1)
    lr: float = Field(0.1, gt=0)
    batch_size: int = Field(128, ge=1)
    outliers: tuple[OutlierKind, ...] = Field(("noise", "blobs", "generator"), min_length=1)

    def thresholds(self, exits: int) -> list[float]:
        return [min(1.0, self.exit_threshold + self.threshold_step * i) for i in range(exits)]


def exit_points(victim: nn.Module) -> list[nn.Module]:
    """The modules after which exits are attached (their outputs feed the heads)."""
    body = victim[1] if isinstance(victim, nn.Sequential) and len(victim) == 2 else victim
    if isinstance(body, LeNet5):
        return [body.features[2], body.features[5], body.classifier[2]]
    if isinstance(body, ResNet8x):
        blocks = list(body.layers)
        ends = [i - 1 for i in range(1, len(blocks)) if blocks[i].conv1.stride != (1, 1)]
        return [blocks[i] for i in ends] + [blocks[-1]]
    raise ArenaError("dnf attaches exits to LeNet-5 and ResNet-8x victims only; choose one of those as --victim arch")


class ExitHead(nn.Module):
    """Pool (for feature maps), Linear(planes, 10C), ReLU, Linear(10C, C)."""

    def __init__(self, planes: int, num_classes: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(planes, 10 * num_classes), nn.ReLU(), nn.Linear(10 * num_classes, num_classes)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:
            features = F.adaptive_avg_pool2d(features, 1).flatten(1)
        return self.net(features)


class EarlyExitNetwork(nn.Module):
    """A frozen copy of the victim with exit heads; forward gives every exit's logits,
    the final (victim) logits last: (N, exits + 1, C)."""

    def __init__(self, victim: nn.Module, num_classes: int, input_shape: tuple[int, int, int]):
        super().__init__()
        self.backbone = copy.deepcopy(victim).eval()
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(False)
        self._taps: list[torch.Tensor] = []
        points = exit_points(self.backbone)
        for point in points:
            point.register_forward_hook(lambda _m, _i, out: self._taps.append(out))
        with torch.no_grad():
            self.backbone(torch.zeros((1, *input_shape), device=next(self.backbone.parameters()).device))
        widths = [tap.shape[1] for tap in self._taps]
        self._taps.clear()
        self.heads = nn.ModuleList(ExitHead(w, num_classes) for w in widths)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: batch norm statistics stay the victim's
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._taps.clear()
        final = self.backbone(x)
        taps, self._taps = self._taps, []
        return torch.stack([head(tap) for head, tap in zip(self.heads, taps, strict=True)] + [final], dim=1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1)


def dnf_loss(entropy_weight: float, ood_weight: float):
    """The public code's objective on early exits (logits (N, exits + 1, C); labels, or
    OUTLIER_LABEL for out-of-distribution rows)."""

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        early = logits[:, :-1]
        exits = early.shape[1]
        inside = targets != OUTLIER_LABEL
        total = logits.new_zeros(())
        if inside.any():
            x = early[inside]
            labels = targets[inside].repeat_interleave(exits)
            total = total + F.cross_entropy(x.flatten(0, 1), labels) * exits
            total = total - entropy_weight * entropy(x).mean() * exits
        if ood_weight > 0 and (~inside).any():
            x = early[~inside]
            self_labels = x[:, 0].argmax(1).detach().repeat_interleave(exits)
            ood = F.cross_entropy(x.flatten(0, 1), self_labels) * exits + entropy_weight * entropy(x).mean() * exits
            total = total + ood_weight * ood
        return total

    return loss


def choose_exit(logits: torch.Tensor, thresholds: list[float]) -> torch.Tensor:
    """Index of the exit that answers each image: the first early exit whose max softmax
    exceeds its threshold, else the final one."""
    probs = torch.softmax(logits[:, :-1].float(), dim=2)
    confident = probs.amax(2) > torch.tensor(thresholds, device=logits.device)
    final = torch.full((len(logits), 1), True, device=logits.device)
    return torch.cat([confident, final], dim=1).float().argmax(1)


@DEFENDERS.register("dnf")
class Dnf(Defender):
    description = "DNF: early-exit network; attack-like queries leave at shallow exits with low-value answers"
    Params = DnfParams
    smoke_params = {"epochs": 1, "train_limit": 128, "batch_size": 64}
    knob = "exit_threshold"
    knob_values = (0.99, 0.95, 0.9, 0.8)  # weak -> strong: lower thresholds let more queries exit early
    zero_protection_params = {"exit_threshold": 1.0}  # nothing exceeds 1: every query takes the full path
    utility_tolerance = 1.0

    @classmethod
    def datasets_needed(cls, params: DnfParams) -> list[str]:
        return params.datasets_needed()

    def prepare(self) -> dict:
        ctx, p = self.ctx, self.params
        splits = ctx.splits
        train = p.training_images(splits)
        network = EarlyExitNetwork(ctx.victim, splits.num_classes, tuple(train.images.shape[1:])).to(ctx.device)

        def build():
            generator = torch.Generator().manual_seed(ctx.seed * 1_000_003 + 47)
            outliers = outlier_images(p, train, generator, ctx)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(ctx.seed * 1_000_003 + 59)
                for head in network.heads:
                    for module in head.modules():
                        if isinstance(module, nn.Linear):
                            module.reset_parameters()
            cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, augment=False, schedule="constant")
            ctx.log(
                f"dnf: training {len(network.heads)} exit heads on {len(train)} images and {len(outliers)} outliers"
            )
            loss_fn = dnf_loss(p.entropy_weight, p.ood_weight)
            report = fit_with_outliers(network, train, outliers, cfg, generator, ctx, loss_fn)
            tensors = {f"h.{k}": v for k, v in network.heads.state_dict().items()}
            return tensors, {"outliers": len(outliers), "train_seconds": report["train_seconds"]}

        tensors, facts, reused = ctx.store.get_or_build("defender", self.training_spec(SERVING_ONLY), build)
        network.heads.load_state_dict({k[2:]: v for k, v in tensors.items()})
        self.network = network.eval()
        self.thresholds = p.thresholds(len(network.heads))
        with torch.inference_mode():
            exits = choose_exit(self.network(to_floats(splits.defender_val.images).to(ctx.device)), self.thresholds)
        if reused:
            ctx.log("dnf: exit heads loaded from the artifact cache")
        return {
            "reused": reused,
            **facts,
            "thresholds": self.thresholds,
            "val_early_exit_share": (exits < len(self.thresholds)).float().mean().item(),
        }

    def serve(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network(images)
        exits = choose_exit(logits, self.thresholds)
        chosen = logits[torch.arange(len(images), device=images.device), exits]
        return torch.softmax(chosen.float(), dim=1)
