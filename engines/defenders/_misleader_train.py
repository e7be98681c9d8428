"""MISLEADER's losses and its alternating member / simulated-attacker training loop.

Per member d (with its own simulated attacker a, same architecture by default), per batch:
  1. `a_iter` simulated-attacker updates on the augmented batch x' (real optimizer steps, or
     the public code's "accumulate a_iter gradients, then one step" with `accumulate`);
  2. one member update on  L_util(x, y) - lambda * L_ext(x')  with
       L_util = alpha*T^2*KL(softmax(t(x)/T) || softmax(d(x)/T)) + (1-alpha)*CE(d(x), y)
       L_ext  = KL(softmax(d(x')) || softmax(a(x')))   (a detached).
SGD (member lr 0.1, attacker lr 0.01, momentum 0.9, wd 5e-4), per-step cosine schedules,
gradient-norm clip 5 on both, autocast + GradScaler on CUDA. After each epoch every member is
scored on the *validation* split and its best state kept (ties: the later epoch).

Members are trained in lockstep, epoch by epoch: each member has its own initialisation,
batch order and x' order (its own torch.Generator), and they share only the epoch's augmented
copy of the training split (augmenting once per epoch instead of once per member saves K-1
passes of per-image torchvision transforms). Member k's seeds depend on (seed, k) only, so
member 0 of an ablation matches member 0 of the full ensemble where their settings agree.

Why this is not `engines.training.fit`: each member step is a joint objective over two models
(the member's distillation term on x and its extraction term against a simulated attacker on
x', which takes its own steps in between), with gradient clipping and loss scaling; `fit`
trains one model on fixed (input, target) pairs. The loop reuses fit's parts instead: the
optimizer and schedule builders, the seeded batch order, `to_floats` and keep-best selection.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engines.data.base import ImageSet, to_floats
from engines.defenders._misleader_augment import attacker_query_chain, augment_images, utility_train_chain
from engines.models import build_model
from engines.training import (
    BestWeights,
    TrainConfig,
    accuracy,
    iterate_batches,
    make_optimizer,
    make_scheduler,
    predict_probs,
    top1_agreement,
)


# ----------------------------------------------------------------------------- losses
def kl_logits(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(p) || softmax(q)), computed in float32 from logits."""
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def utility_loss(
    member_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, T: float, alpha: float
) -> torch.Tensor:
    """alpha*T^2*KL(softmax(t/T) || softmax(d/T)) + (1-alpha)*CE(d, y)."""
    kd = kl_logits(teacher_logits.float() / T, member_logits.float() / T)
    return alpha * T * T * kd + (1.0 - alpha) * F.cross_entropy(member_logits.float(), labels)


def extraction_loss(member_logits: torch.Tensor, attacker_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(d(x')) || softmax(a(x'))) with the attacker detached (the member's view)."""
    return kl_logits(member_logits, attacker_logits.detach())


def attacker_loss(attacker_logits: torch.Tensor, member_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(d(x')).detach() || softmax(a(x'))): the simulated attacker distils the member."""
    return kl_logits(member_logits.detach(), attacker_logits)


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class MemberPlan:
    arch: str
    lam: float
    T: float
    alpha: float


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    a_iter: int = 5
    attacker_update: str = "steps"  # "steps" (a_iter real steps) or "accumulate" (public code)
    augment: bool = True  # x' = augmented images; False: plain training images
    train_augment: bool = False  # standard crop+flip on utility batches (CIFAR preset)
    lr_member: float = 0.1
    lr_attacker: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    clip: float = 5.0
    amp: bool = True  # only on CUDA


def member_seed(seed: int, k: int) -> int:
    return seed * 1_000_003 + 7_919 * (k + 1)


class _Step:
    """Optimizer, schedule, clipping and (on CUDA) loss scaling for one model."""

    def __init__(self, model: nn.Module, lr: float, s: LoopSettings, total_steps: int, amp: bool):
        self.model = model
        recipe = TrainConfig(lr=lr, momentum=s.momentum, weight_decay=s.weight_decay, schedule="cosine")
        self.opt = make_optimizer(model.parameters(), recipe)
        self.sched = make_scheduler(self.opt, recipe, total_steps)
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp)
        self.clip = s.clip

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> None:
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=self.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def attacker_update(
    member: nn.Module,
    attacker: nn.Module,
    x_aug: torch.Tensor,
    a_iter: int,
    mode: str,
    step: _Step,
    device: torch.device,
    amp: bool,
) -> float:
    """Simulated-attacker update(s) on x'; returns the last attacker loss."""
    with torch.no_grad(), _autocast(device, amp):
        target = member(x_aug).float()  # the member is fixed during these updates
    loss_value = float("nan")
    for i in range(a_iter):
        with _autocast(device, amp):
            loss = attacker_loss(attacker(x_aug), target)
        step.backward(loss)
        loss_value = loss.item()
        if mode == "steps" or i == a_iter - 1:
            step.step()
    return loss_value


def member_update(
    member: nn.Module,
    attacker: nn.Module,
    teacher: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    x_aug: torch.Tensor,
    plan: MemberPlan,
    step: _Step,
    device: torch.device,
    amp: bool,
) -> tuple[float, float]:
    """One member step on L_util(x, y) - lambda * L_ext(x'); returns (L_util, L_ext) before the step."""
    with torch.no_grad(), _autocast(device, amp):
        teacher_logits = teacher(x).float()
        attacker_logits = attacker(x_aug).float()
    with _autocast(device, amp):
        util = utility_loss(member(x), teacher_logits, y, plan.T, plan.alpha)
        ext = extraction_loss(member(x_aug), attacker_logits)
        loss = util - plan.lam * ext
    step.backward(loss)
    step.step()
    return util.item(), ext.item()


# ----------------------------------------------------------------------------- the loop
def train_members(
    teacher: nn.Module,
    plans: list[MemberPlan],
    s: LoopSettings,
    train: ImageSet,
    val: ImageSet,
    channels: int,
    num_classes: int,
    mean,
    std,
    device: torch.device,
    seed: int,
    progress: Callable[[int, int, str], None] = lambda d, t, m: None,
    log: Callable[[str], None] = lambda m: None,
    should_stop: Callable[[], None] = lambda: None,
    extra_queries: torch.Tensor | None = None,
) -> tuple[list[nn.Module], dict]:
    """Train every member of `plans`; returns (members at their best validation epoch, report).

    Reads `train` (batches and augmented queries) and `val` (checkpoint selection) only.
    `extra_queries` (images, uint8 or float in [0, 1]; the `misleader-datafree` extension):
    when given, every x' batch is extended by as many images drawn from it (with replacement,
    from a generator of its own per member, so the other draws stay as without it), and the
    simulated attacker and the extraction term see both halves."""
    started = time.perf_counter()
    teacher.eval()
    amp = s.amp and device.type == "cuda"
    n = len(train)
    total_steps = s.epochs * math.ceil(n / s.batch_size)
    chain = attacker_query_chain(channels)
    train_chain = utility_train_chain() if s.train_augment else None
    members, attackers, member_steps, attacker_steps, generators = [], [], [], [], []
    for k, plan in enumerate(plans):
        torch.manual_seed(member_seed(seed, k))
        member = build_model(plan.arch, channels, num_classes, mean, std).to(device).train()
        attacker = build_model(plan.arch, channels, num_classes, mean, std).to(device).train()
        members.append(member)
        attackers.append(attacker)
        member_steps.append(_Step(member, s.lr_member, s, total_steps, amp))
        attacker_steps.append(_Step(attacker, s.lr_attacker, s, total_steps, amp))
        generators.append(torch.Generator().manual_seed(member_seed(seed, k) + 1))
    extra_generators = [torch.Generator().manual_seed(member_seed(seed, k) + 2) for k in range(len(plans))]
    best = [BestWeights(ties="later") for _ in plans]
    history = [[] for _ in plans]
    for epoch in range(s.epochs):
        should_stop()
        queries = (
            augment_images(train.images, chain, seed * 1_000_003 + 104_729 * (epoch + 1)) if s.augment else train.images
        )
        inputs = (
            augment_images(train.images, train_chain, seed * 1_000_003 + 15_485_863 * (epoch + 1))
            if train_chain is not None
            else train.images
        )
        for k, plan in enumerate(plans):
            should_stop()
            member, attacker = members[k], attackers[k]
            member.train()
            attacker.train()
            query_order = torch.randperm(n, generator=generators[k])
            sums = {"util": 0.0, "ext": 0.0, "attacker": 0.0, "batches": 0}
            for b, idx in enumerate(iterate_batches(n, s.batch_size, generators[k])):
                q_idx = query_order[b * s.batch_size : (b + 1) * s.batch_size]
                x = to_floats(inputs[idx]).to(device)
                y = train.labels[idx].to(device)
                x_aug = to_floats(queries[q_idx]).to(device)
                if extra_queries is not None:
                    pick = torch.randint(len(extra_queries), (len(q_idx),), generator=extra_generators[k])
                    x_aug = torch.cat([x_aug, to_floats(extra_queries[pick]).to(device)])
                a_loss = attacker_update(
                    member, attacker, x_aug, s.a_iter, s.attacker_update, attacker_steps[k], device, amp
                )
                util, ext = member_update(member, attacker, teacher, x, y, x_aug, plan, member_steps[k], device, amp)
                member_steps[k].sched.step()
                attacker_steps[k].sched.step()
                sums["util"] += util
                sums["ext"] += ext
                sums["attacker"] += a_loss
                sums["batches"] += 1
            val_acc = accuracy(member, val, device)
            member.train()
            record = {
                "epoch": epoch,
                "val_accuracy": val_acc,
                **{f"mean_{key}": sums[key] / max(1, sums["batches"]) for key in ("util", "ext", "attacker")},
            }
            history[k].append(record)
            best[k].offer(member, val_acc, epoch)
            progress(
                epoch * len(plans) + k + 1,
                s.epochs * len(plans),
                f"member {k + 1}/{len(plans)} ({plan.arch}) epoch {epoch + 1}/{s.epochs}: val {val_acc:.3f}",
            )
        log(
            f"misleader epoch {epoch + 1}/{s.epochs}: val " + ", ".join(f"{h[-1]['val_accuracy']:.3f}" for h in history)
        )
    report_members = []
    for k, plan in enumerate(plans):
        final_attacker_agreement = _agreement(members[k], attackers[k], val, device)
        best[k].restore(members[k])
        members[k].eval()
        last = history[k][-1]
        report_members.append(
            {
                "arch": plan.arch,
                "lambda": plan.lam,
                "T": plan.T,
                "alpha": plan.alpha,
                "val_accuracy": best[k].score,
                "best_epoch": best[k].epoch,
                "final_mean_util": last["mean_util"],
                "final_mean_ext": last["mean_ext"],
                "final_mean_attacker_loss": last["mean_attacker"],
                "simulated_attacker_val_agreement": final_attacker_agreement,
                "val_history": [round(h["val_accuracy"], 4) for h in history[k]],
            }
        )
    return members, {"train_seconds": time.perf_counter() - started, "members": report_members}


def _agreement(member: nn.Module, attacker: nn.Module, val: ImageSet, device: torch.device) -> float:
    """Top-1 agreement of the final simulated attacker with its (final) member on validation images."""
    return top1_agreement(attacker, val.images, predict_probs(member, val.images, device).argmax(1), device)
