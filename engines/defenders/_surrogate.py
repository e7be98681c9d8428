"""The surrogate model a gradient-based output defence owns, and per-image Jacobians of its
log-probabilities with respect to its parameters.

Prediction Poisoning (MAD, `mad.py`) and GRAD² (`grad2.py`) both reason about the gradient an
attacker's clone would take when trained with cross-entropy on the served answer y~:
grad_theta CE(y~) = -J^T y~, where J (K x D) is the Jacobian of the clone's log-probabilities
with respect to its D parameters. The defender cannot see the clone, so it uses a surrogate:
a model of the data set family's default architecture (`default_model_for`: LeNet-5 for
MNIST-like sets), built from the defender's seed. It is either

- randomly initialised (MAD: the public code's surrogates are "randomly-initialized models
  exhibiting chance-level performance", trained with learning rate 0), or
- distilled from the victim's soft answers on the defender's own training split for a few
  epochs (GRAD²: the public code's surrogates are students distilled from the teacher and
  taken early, after 10 of 50 epochs). Trained weights are cached with `ctx.store`.

The surrogate never sees the attacker pool or the test split.

Jacobians are computed for all images of a batch at once with `torch.func` (`vmap` of
`jacrev` through `functional_call`), in chunks so memory stays bounded. Which parameters:
`"last"` is the final linear layer's weight (the MAD code's choice, a K x (K*H) Jacobian,
cheap: only the last matrix product is differentiated), `"all"` is every parameter (GRAD²'s
choice; for LeNet-5, D = 61,706, so one image's Jacobian is 10 x 61,706 floats). Each image's
Jacobian depends only on that image (the model is in eval mode), so answers do not depend on
how queries are batched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vmap

from engines.defenders.base import DefenderContext
from engines.errors import ArenaError
from engines.models import MODELS, build_model, default_model_for
from engines.training import TrainConfig, accuracy, fit, predict_probs

GradParams = Literal["last", "all"]
SURROGATE_VERSION = 1  # bump when a change in surrogate training changes the weights
_CHUNK_FLOATS = 1 << 24  # Jacobian entries computed at once (64 MiB of float32)


def family(ctx: DefenderContext) -> str:
    """The data set family ("mnist" or "cifar") of the match's splits."""
    from engines.data import DATASETS

    try:
        return DATASETS.get(ctx.splits.name).family
    except ArenaError:
        return "mnist" if ctx.splits.channels == 1 else "cifar"


def resolve_arch(ctx: DefenderContext, arch: str) -> str:
    """`auto` -> the family's default architecture; any other name must be a registered model."""
    if arch == "auto":
        return default_model_for(family(ctx))
    MODELS.get(arch)  # raises a one-line ArenaError for an unknown name
    return arch


def _fresh_model(ctx: DefenderContext, arch: str, seed: int) -> nn.Module:
    splits = ctx.splits
    with torch.random.fork_rng(devices=[]):  # initialise from `seed` without touching the global stream
        torch.manual_seed(seed)
        model = build_model(arch, splits.channels, splits.num_classes, splits.mean, splits.std)
    return model


def random_surrogate(ctx: DefenderContext, arch: str, seed_offset: int) -> nn.Module:
    """A randomly initialised surrogate (MAD), on the device, in eval mode."""
    return _fresh_model(ctx, arch, ctx.seed * 7919 + seed_offset).to(ctx.device).eval()


def distilled_surrogate(
    ctx: DefenderContext,
    arch: str,
    seed_offset: int,
    cfg: TrainConfig,
    train_limit: int | None = None,
) -> tuple[nn.Module, dict, bool]:
    """A surrogate distilled from the victim's probabilities on the defender's training split
    (GRAD²), trained with `engines.training.fit` and cached. Returns (model, report, reused)."""
    splits = ctx.splits
    train = splits.defender_train
    if train_limit is not None:
        train = train.subset(torch.arange(min(train_limit, len(train))))
    seed = ctx.seed * 7919 + seed_offset
    spec = {
        "victim": ctx.victim_key,
        "method": "gradient-defence-surrogate",
        "arch": arch,
        "train": cfg.model_dump(),
        "train_limit": train_limit,
        "seed": seed,
        "version": SURROGATE_VERSION,
    }

    def build():
        ctx.log(f"distilling a {arch} surrogate from the victim ({cfg.epochs} epochs, {len(train)} images)")
        model = _fresh_model(ctx, arch, seed)
        targets = predict_probs(ctx.victim, train.images, ctx.device)
        with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            report = fit(
                model,
                train.images,
                targets.clone(),
                cfg,
                ctx.device,
                torch.Generator().manual_seed(seed + 1),
                progress=ctx.progress,
                should_stop=ctx.should_stop,
            )
        report["val_accuracy"] = accuracy(model, splits.defender_val, ctx.device)
        return dict(model.state_dict()), report

    tensors, report, reused = ctx.store.get_or_build("defender", spec, build)
    model = _fresh_model(ctx, arch, seed)
    model.load_state_dict(tensors)
    return model.to(ctx.device).eval(), report, reused


class Surrogate:
    """A frozen model and the subset of its parameters that Jacobians are taken against."""

    def __init__(self, model: nn.Module, grad_params: GradParams):
        self.model = model.eval()
        named = dict(model.named_parameters())
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise ArenaError("the surrogate must end with a linear layer")
        self.num_classes = linear[-1].out_features  # K
        if grad_params == "last":
            names = [n for n, p in named.items() if p is linear[-1].weight]
        else:
            names = list(named)
        self.names = names
        self.params = {n: named[n].detach() for n in names}
        self.fixed = {n: p.detach() for n, p in named.items() if n not in self.params}
        self.fixed.update({n: b.detach() for n, b in model.named_buffers()})
        self.size = sum(p.numel() for p in self.params.values())  # D

    def _log_probs(self, params: dict, images: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.model, {**self.fixed, **params}, (images,))
        return torch.log_softmax(logits.float(), dim=-1)

    def _one(self, params: dict, image: torch.Tensor) -> torch.Tensor:
        return self._log_probs(params, image.unsqueeze(0)).squeeze(0)

    def chunks(self, images: torch.Tensor, per_image: int) -> Iterator[slice]:
        """Slices of the batch holding at most _CHUNK_FLOATS intermediate floats each."""
        step = max(1, _CHUNK_FLOATS // per_image)
        for start in range(0, len(images), step):
            yield slice(start, start + step)

    def jacobian(self, images: torch.Tensor) -> torch.Tensor:
        """Jacobian (N, K, D) of the surrogate's log-probabilities on each image; column order
        follows `self.names`, each parameter flattened."""
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            per_image = vmap(jacrev(self._one), in_dims=(None, 0))
            jacs = []
            for part in self.chunks(images, self.num_classes * self.size):
                jac = per_image(self.params, images[part])
                jacs.append(
                    torch.cat([jac[n].reshape(jac[n].shape[0], self.num_classes, -1) for n in self.names], dim=2)
                )
        return torch.cat(jacs).detach()

    def jvp(self, images: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """J_n t_n for every image n (tangents (N, D), or (D,) for one shared direction):
        the directional derivative of the log-probabilities along t, without forming J."""
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()
            shared = tangents.ndim == 1

            def one(image: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
                return jvp(lambda p: self._one(p, image), (self.params,), (self._unflatten(tangent),))[1]

            per_image = vmap(one, in_dims=(0, None if shared else 0))
            out = [
                per_image(images[part], tangents if shared else tangents[part])
                for part in self.chunks(images, self.size)
            ]
        return torch.cat(out).detach()

    def vjp(self, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """J_n^T w_n for every image n (weights (N, K)): the gradient of w . log q per image."""
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().clone()

            def one(image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
                grads = torch.func.grad(lambda p: (self._one(p, image) * weight).sum())(self.params)
                return torch.cat([grads[n].reshape(-1) for n in self.names])

            per_image = vmap(one, in_dims=(0, 0))
            out = [per_image(images[part], weights[part]) for part in self.chunks(images, self.size)]
        return torch.cat(out).detach()

    def _unflatten(self, flat: torch.Tensor) -> dict:
        out, start = {}, 0
        for n in self.names:
            p = self.params[n]
            out[n] = flat[start : start + p.numel()].view_as(p)
            start += p.numel()
        return out
