"""Train a ``MobileNetV3Supernet`` by progressive shrinking, with checkpoints and exact resume.

``train_supernet(config, out_dir)`` runs the phases of a ``SupernetTrainConfig`` (see
``search.supernet.schedule``) in order. Per step the phase's rule picks the subnets to train
(uniform / sandwich / fairnas); their gradients are accumulated and one optimizer step is taken.
In a sandwich step the largest subnet is trained on cross-entropy and every other subnet on
``distillation_loss`` against the largest one's detached logits (in-place distillation).
Each phase gets a fresh optimizer (SGD with momentum or Adam) with a cosine LR from the phase's
``lr`` to 0 over the phase's steps; ``resort_channels`` re-sorts expanded channels by importance
first.

After every epoch: the largest and smallest subnets of the *space* are extracted, their
BatchNorm statistics recalibrated on training images and evaluated on the validation split (the
supernet itself is not touched, so evaluation does not perturb training); a line goes to stderr;
and ``checkpoint.pt`` (model, optimizer, scheduler, torch and numpy RNG states, phase/epoch
counters, history) is written atomically. ``resume=True`` continues from it and yields the same
weights as an uninterrupted run. Artefacts: ``supernet.pt`` (state dict), ``config.yaml``
(resolved), ``history.json``, ``checkpoint.pt``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from runtime.fileio import temp_path_beside, write_text_atomic
from search.arch import Arch
from search.data import Dataset, batches
from search.supernet.model import MobileNetV3Supernet, recalibrate_bn, resize_input
from search.supernet.schedule import PhaseConfig, PhaseSampler, SupernetConfigError, SupernetTrainConfig, make_space
from search.supernet.trained import load_splits

__all__ = ["TrainResult", "distillation_loss", "evaluate", "train_supernet"]

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced: where, the per-epoch history and the final accuracies."""

    out_dir: Path
    history: tuple[dict[str, Any], ...]
    max_accuracy: float
    min_accuracy: float
    seconds: float
    resumed: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {
            "out_dir": str(self.out_dir),
            "epochs": len(self.history),
            "max_accuracy": self.max_accuracy,
            "min_accuracy": self.min_accuracy,
            "seconds": self.seconds,
            "resumed": self.resumed,
            "history": list(self.history),
        }


def distillation_loss(
    student: Tensor, teacher: Tensor, target: Tensor, weight: float, temperature: float, label_smoothing: float = 0.0
) -> Tensor:
    """``(1−λ)·CE(student, target) + λ·τ²·KL(softmax(teacher/τ) ‖ softmax(student/τ))``, teacher detached.

    The KL is the standard knowledge-distillation direction (Hinton et al.; Once-for-All's soft
    cross-entropy differs from it by the teacher's entropy, a constant): the student is pulled
    towards the teacher's distribution; ``τ²`` keeps gradient magnitudes independent of ``τ``.
    """
    ce = F.cross_entropy(student, target, label_smoothing=label_smoothing)
    if weight == 0.0:
        return ce
    log_s = F.log_softmax(student / temperature, dim=1)
    log_t = F.log_softmax(teacher.detach() / temperature, dim=1)
    kl = F.kl_div(log_s, log_t, reduction="batchmean", log_target=True)
    return (1.0 - weight) * ce + weight * temperature**2 * kl


def evaluate(
    supernet: MobileNetV3Supernet,
    arch: Arch,
    train: Dataset,
    val: Dataset,
    bn_images: int,
    batch_size: int,
    max_images: int | None = None,
) -> float:
    """Validation accuracy of ``arch`` extracted from ``supernet`` after BN recalibration on ``train``."""
    sub = supernet.extract(arch)
    res = int(arch["resolution"])
    calib = (torch.from_numpy(x) for x, _ in batches(train, batch_size, shuffle=True, seed=12345))
    recalibrate_bn(sub, calib, num_images=min(bn_images, len(train)), resolution=res)
    sub.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches(val, 256, shuffle=False):
            if max_images is not None and total >= max_images:
                break
            out = sub(resize_input(torch.from_numpy(x), res))
            correct += int((out.argmax(1) == torch.from_numpy(y)).sum())
            total += len(y)
    return correct / max(total, 1)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = temp_path_beside(path)  # torch.save creates it: the umask's permissions
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _optimizer(cfg: SupernetTrainConfig, model: nn.Module, phase: PhaseConfig, steps: int) -> tuple[Any, Any]:
    o = cfg.optimizer
    opt: torch.optim.Optimizer
    if o.name == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=phase.lr, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(),
            lr=phase.lr,
            momentum=o.momentum,
            nesterov=o.nesterov and o.momentum > 0,
            weight_decay=o.weight_decay,
        )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    return opt, sched


class _Progress:
    """A line per epoch on ``stream``; an in-place bar during the epoch when it is a TTY."""

    def __init__(self, enabled: bool, stream: TextIO):
        self.enabled, self.stream = enabled, stream
        self.tty = enabled and stream.isatty()

    def bar(self, label: str, done: int, total: int, loss: float) -> None:
        if self.tty:
            width = 30
            fill = int(width * done / max(total, 1))
            self.stream.write(f"\r{label} [{'#' * fill}{'.' * (width - fill)}] {done}/{total} loss {loss:.4f}")
            self.stream.flush()

    def line(self, text: str) -> None:
        if self.enabled:
            if self.tty:
                self.stream.write("\r\033[K")
            print(text, file=self.stream, flush=True)


def train_supernet(
    config: SupernetTrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train the supernet per ``config`` into ``out_dir``; returns the run's ``TrainResult``.

    ``stop_after_epochs`` ends this call after that many epochs (checkpoint written), as an
    interruption would; ``resume=True`` then continues. Raises ``SupernetConfigError`` when
    resuming without a checkpoint or with a different configuration.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    try:
        return _train(config, out, ckpt_path, resume, _Progress(progress, sys.stderr), stop_after_epochs)
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _train(
    cfg: SupernetTrainConfig, out: Path, ckpt_path: Path, resume: bool, prog: _Progress, stop_after: int | None
) -> TrainResult:
    start = time.perf_counter()
    resolved = cfg.to_dict()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    space = make_space(cfg.space)
    model = MobileNetV3Supernet(space, cfg.alignment)
    train, val = load_splits(cfg)[:2]
    rng = np.random.default_rng(cfg.seed)
    steps_per_epoch = len(train) // cfg.data.batch_size
    if steps_per_epoch == 0:
        raise SupernetConfigError(
            f"field 'data.batch_size': {cfg.data.batch_size} exceeds the {len(train)} training images"
        )
    if cfg.data.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.data.max_batches)
    history: list[dict[str, Any]] = []
    phase_i, epoch_in_phase, global_epoch = 0, 0, 0
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.exists():
            raise SupernetConfigError(f"--resume: no checkpoint at {ckpt_path}")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("config") != resolved:
            raise SupernetConfigError(f"--resume: {ckpt_path} was written with a different configuration")
        model.load_state_dict(state["model"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_global_rng"])
        rng.bit_generator.state = state["sampler_rng"]
        phase_i, epoch_in_phase, global_epoch = state["phase"], state["epoch_in_phase"], state["global_epoch"]
        history = list(state["history"])
    write_text_atomic(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    opt: Any = None
    sched: Any = None
    epochs_this_call = 0
    while phase_i < len(cfg.phases):
        phase = cfg.phases[phase_i]
        sampler = PhaseSampler(space, phase)
        if epoch_in_phase == 0:
            if phase.resort_channels:
                model.reorder_by_importance()
            opt, sched = _optimizer(cfg, model, phase, phase.epochs * steps_per_epoch)
        elif opt is None:  # resumed mid-phase
            opt, sched = _optimizer(cfg, model, phase, phase.epochs * steps_per_epoch)
            assert state is not None
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        loss = _epoch(cfg, model, train, sampler, rng, opt, sched, steps_per_epoch, epoch_in_phase, global_epoch, prog)
        accs = {
            key: evaluate(model, arch, train, val, cfg.eval.bn_images, cfg.data.batch_size, cfg.eval.max_images)
            for key, arch in (("max", model.max_arch()), ("min", model.min_arch()))
        }
        record = {
            "epoch": global_epoch + 1,
            "phase": phase.name,
            "phase_epoch": epoch_in_phase + 1,
            "loss": loss,
            "lr": float(sched.get_last_lr()[0]),
            "val_acc_max": accs["max"],
            "val_acc_min": accs["min"],
        }
        history.append(record)
        prog.line(
            f"[{phase.name} {epoch_in_phase + 1}/{phase.epochs}] epoch {global_epoch + 1}/{cfg.total_epochs} "
            f"loss {loss:.4f}  val acc max {accs['max']:.4f} min {accs['min']:.4f}"
        )
        global_epoch += 1
        epoch_in_phase += 1
        if epoch_in_phase == phase.epochs:
            phase_i, epoch_in_phase, opt, sched = phase_i + 1, 0, None, None
        _atomic_save(
            {
                "version": CHECKPOINT_VERSION,
                "config": resolved,
                "model": model.state_dict(),
                "optimizer": opt.state_dict() if opt is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "torch_rng": torch.get_rng_state(),
                "numpy_global_rng": np.random.get_state(),
                "sampler_rng": rng.bit_generator.state,
                "phase": phase_i,
                "epoch_in_phase": epoch_in_phase,
                "global_epoch": global_epoch,
                "history": history,
            },
            ckpt_path,
        )
        write_text_atomic(out / "history.json", json.dumps(history, indent=2))
        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after and phase_i < len(cfg.phases):
            break
    _atomic_save(model.state_dict(), out / "supernet.pt")
    last = history[-1] if history else {"val_acc_max": float("nan"), "val_acc_min": float("nan")}
    return TrainResult(
        out,
        tuple(history),
        float(last["val_acc_max"]),
        float(last["val_acc_min"]),
        time.perf_counter() - start,
        resume,
    )


def _epoch(
    cfg: SupernetTrainConfig,
    model: MobileNetV3Supernet,
    train: Dataset,
    sampler: PhaseSampler,
    rng: np.random.Generator,
    opt: Any,
    sched: Any,
    steps: int,
    epoch_in_phase: int,
    global_epoch: int,
    prog: _Progress,
) -> float:
    """Train one epoch; returns the mean loss (over steps and subnets)."""
    model.train()
    smoothing, dist = cfg.optimizer.label_smoothing, cfg.distill
    total, count = 0.0, 0
    label = f"[{sampler.phase.name}] epoch {global_epoch + 1}"
    data = batches(train, cfg.data.batch_size, shuffle=True, seed=cfg.seed * 100_003 + global_epoch, drop_last=True)
    for step, (xb, yb) in enumerate(data):
        if step >= steps:
            break
        x, y = torch.from_numpy(xb), torch.from_numpy(yb)
        archs, distil = sampler.step_archs(rng, epoch_in_phase * steps + step)
        opt.zero_grad(set_to_none=True)
        teacher: Tensor | None = None
        for i, arch in enumerate(archs):
            model.set_active(arch)
            logits = model(resize_input(x, int(arch["resolution"])))
            if distil and i == 0:
                teacher = logits.detach()
                loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            elif distil and teacher is not None:
                loss = distillation_loss(logits, teacher, y, dist.weight, dist.temperature, smoothing)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            loss.backward()
            total += float(loss.detach())
            count += 1
        opt.step()
        sched.step()
        prog.bar(label, step + 1, steps, total / max(count, 1))
    model.set_active(model.max_arch())
    return total / max(count, 1)
