"""Supernet-inherited accuracy of architectures: extract, recalibrate BatchNorm, evaluate top-1 (torch).

``SupernetEvaluator`` is a ``SpaceProblem`` evaluator (``codes -> {"accuracy": (n,) array in %}``)
backed by a trained ``MobileNetV3Supernet``. For each distinct architecture (by canonical
encoding) it

1. extracts the subnet (``supernet.extract``: a plain module with copies of its weights, so the
   supernet itself is never modified and evaluations cannot interfere);
2. recalibrates its BatchNorm statistics on a fixed subset of ``recalibration_images`` training
   images at the arch's resolution — the supernet's running statistics were accumulated over
   many different subnets and belong to none of them (Once-for-All uses 2,000 images);
3. scores it on ``val``, resized to the arch's resolution (``resize_input``), by ``score``:

   - ``"top1"`` (default): top-1 accuracy in %, what a user reads and a bundle reports;
   - ``"expected"``: the *expected* top-1 in %, the mean softmax probability of the true label
     (the accuracy of a classifier that draws its answer from its own softmax). It is a ranking
     score, not a reported accuracy: every image adds a fraction instead of 0 or 1, so two
     subnets that differ by a few borderline images no longer swap places by chance. On 96
     subnets of the ``slim`` space it ranks them like stand-alone training better than top-1
     does for each of four supernet seeds: Kendall τ 0.80–0.84 against 0.75–0.81
     (``benchmarks/supernet_ranking.py``; figures in the README).

With ``per_class`` the evaluator also returns ``class_accuracy``, an ``(n, classes)`` array of
per-class top-1 accuracy in % (nan for a class absent from ``val``): what a per-class accuracy
predictor is fitted on, so a device can weigh it by its own label mix (the federated search).

``SupernetEnsembleEvaluator`` averages the scores of several supernets of one space, trained
with different seeds on the same data split (``fleetnas supernet train --seed N``). One
supernet's ranking is a single noisy draw: on the ``slim`` space two supernets that differ only in
their training seed rank the same 96 subnets with τ 0.76–0.80 against each other (top-1), and
averaging members removes that noise the way averaging seeds does for the stand-alone reference
(``benchmarks/supernet_ranking.py --ensemble``).

The recalibration subset is drawn once, by ``seed``, and fed in the same order for every arch,
so an arch's accuracy does not depend on which archs were evaluated before it. Results are cached
by the canonical encoding's bytes (``cache=True``); ``n_evaluations`` counts subnets actually
measured and ``n_queries`` rows asked for. Importing this module imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import Tensor

from search.arch import Arch
from search.data import Dataset
from search.data.splits import rng_for
from search.space.mobilenetv3 import MobileNetV3Space
from search.supernet.model import MobileNetV3Supernet, NetSpecModule, recalibrate_bn, resize_input

__all__ = ["SCORES", "ModuleScores", "SupernetEnsembleEvaluator", "SupernetEvalError", "SupernetEvaluator"]

SCORES = ("top1", "expected")


@dataclass(frozen=True)
class ModuleScores:
    """One subnet on the validation images: top-1 and expected top-1 (%), overall and per class (nan: absent)."""

    top1: float
    expected: float
    class_top1: np.ndarray
    class_expected: np.ndarray


class SupernetEvalError(ValueError):
    """An evaluator option or dataset that does not fit the supernet; the message names the field."""


class SupernetEvaluator:
    """``codes -> {metric: score in %}`` of subnets inherited from ``supernet`` (see module doc).

    ``score`` is ``"top1"`` (top-1 accuracy) or ``"expected"`` (mean true-label probability);
    ``per_class`` results use the same score.

    ``recalibrate=False`` keeps the inherited statistics (only for comparisons: they are wrong
    for subnets). ``device`` is where subnets run; data stays on the CPU until batched.
    """

    def __init__(
        self,
        supernet: MobileNetV3Supernet,
        space: MobileNetV3Space,
        train: Dataset,
        val: Dataset,
        recalibration_images: int = 2000,
        batch_size: int = 256,
        cache: bool = True,
        recalibrate: bool = True,
        seed: int = 0,
        metric: str = "accuracy",
        device: str | torch.device = "cpu",
        per_class: bool = False,
        score: str = "top1",
    ) -> None:
        if score not in SCORES:
            raise SupernetEvalError(f"field 'score': {score!r}; allowed: {', '.join(SCORES)}")
        if space.name != supernet.space.name or list(space.cardinalities) != list(supernet.space.cardinalities):
            raise SupernetEvalError(
                f"field 'space': {space.name!r} is not the supernet's space {supernet.space.name!r}"
            )
        c = space.config
        for name, ds in (("train", train), ("val", val)):
            if not isinstance(ds, Dataset):
                raise SupernetEvalError(f"field {name!r}: need a search.data.Dataset, got {type(ds).__name__}")
            if ds.input_shape[0] != c.in_channels:
                raise SupernetEvalError(
                    f"field {name!r}: dataset {ds.name!r} has {ds.input_shape[0]} channels, "
                    f"the space needs {c.in_channels}"
                )
            if ds.num_classes > c.num_classes:
                raise SupernetEvalError(
                    f"field {name!r}: dataset {ds.name!r} has {ds.num_classes} classes, the space only {c.num_classes}"
                )
        if len(val) == 0:
            raise SupernetEvalError("field 'val': the validation set is empty")
        for name, value in (("recalibration_images", recalibration_images), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SupernetEvalError(f"field {name!r}: need a positive integer, got {value!r}")
        if recalibrate and len(train) == 0:
            raise SupernetEvalError("field 'train': recalibration needs training images, the set is empty")
        self.supernet, self.space = supernet, space
        self.batch_size, self.cache_enabled, self.recalibrate = batch_size, cache, recalibrate
        self.metric, self.device, self.seed = metric, torch.device(device), seed
        self.per_class, self.score = per_class, score
        self.num_classes = int(c.num_classes)
        # The fixed recalibration subset: the same images, in the same order, for every arch.
        n_recal = min(recalibration_images, len(train))
        idx = rng_for(seed).permutation(len(train))[:n_recal] if len(train) else np.zeros(0, dtype=np.int64)
        self.recalibration_images = int(n_recal)
        self._recal_x = torch.from_numpy(np.array(train.x[idx], dtype=np.float32))
        self._val_x = torch.from_numpy(np.array(val.x, dtype=np.float32))
        self._val_y = torch.from_numpy(np.array(val.y, dtype=np.int64))
        self._class_counts = np.bincount(np.asarray(val.y, dtype=np.int64), minlength=self.num_classes).astype(float)
        self._class_counts[self._class_counts == 0] = np.nan
        self._cache: dict[bytes, tuple[float, np.ndarray]] = {}
        self.n_evaluations = 0
        self.n_queries = 0
        self.seconds = 0.0

    # ---- the SpaceProblem interface --------------------------------------------------------
    def __call__(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """``{metric: (n,) float64}`` top-1 accuracy in % of each row's subnet (+ ``class_accuracy`` (n, classes))."""
        canon = self.space.canonicalise(self.space.check_codes(codes))
        canon = np.atleast_2d(canon)
        self.n_queries += canon.shape[0]
        keys = [row.astype(np.int64).tobytes() for row in canon]
        found: dict[bytes, tuple[float, np.ndarray]] = {}
        for key, row in zip(keys, canon, strict=True):
            if key in found:
                continue
            if key in self._cache:
                found[key] = self._cache[key]
                continue
            found[key] = self._measure(self.space.decode(row))
            if self.cache_enabled:
                self._cache[key] = found[key]
        out = {self.metric: np.array([found[k][0] for k in keys], dtype=np.float64)}
        if self.per_class:
            out["class_accuracy"] = np.stack([found[k][1] for k in keys]).astype(np.float64)
        return out

    @property
    def cache_size(self) -> int:
        """Distinct architectures whose accuracy is cached."""
        return len(self._cache)

    # ---- one architecture ------------------------------------------------------------------
    def evaluate_arch(self, arch: Arch) -> float:
        """``score`` (%) on ``val`` of ``arch``'s subnet after BN recalibration (not cached, counted)."""
        return self._measure(arch)[0]

    def subnet(self, arch: Arch) -> NetSpecModule:
        """``arch``'s standalone subnet, BatchNorm recalibrated (unless disabled), in eval mode."""
        was_training = self.supernet.training
        self.supernet.eval()
        try:
            sub = self.supernet.extract(arch).to(self.device)
        finally:
            self.supernet.train(was_training)
        if self.recalibrate:
            recalibrate_bn(sub, self._chunks(self._recal_x), self.recalibration_images, int(arch["resolution"]))
        return sub.eval()

    def accuracy_of(self, module: NetSpecModule, resolution: int) -> tuple[float, np.ndarray]:
        """(top-1 %, per-class top-1 % with nan for absent classes) of ``module`` on ``val`` at ``resolution``."""
        m = self.scores_of(module, resolution)
        return m.top1, m.class_top1

    def scores_of(self, module: NetSpecModule, resolution: int) -> ModuleScores:
        """Top-1 and expected top-1 of ``module`` on ``val`` at ``resolution``, from one pass over the images."""
        hits = np.zeros(self.num_classes, dtype=np.float64)
        mass = np.zeros(self.num_classes, dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(self._val_y), self.batch_size):
                x = resize_input(self._val_x[start : start + self.batch_size].to(self.device), resolution)
                logits = cast(Tensor, module(x)).double()
                y = self._val_y[start : start + self.batch_size].to(self.device)
                labels = y.cpu().numpy()
                right = (logits.argmax(dim=1) == y).cpu().numpy()
                p_true = logits.softmax(dim=1).gather(1, y[:, None])[:, 0].cpu().numpy()
                np.add.at(hits, labels[right], 1.0)
                np.add.at(mass, labels, p_true)
        n = len(self._val_y)
        with np.errstate(invalid="ignore", divide="ignore"):
            class_top1, class_expected = 100.0 * hits / self._class_counts, 100.0 * mass / self._class_counts
        return ModuleScores(100.0 * hits.sum() / n, 100.0 * mass.sum() / n, class_top1, class_expected)

    def _measure(self, arch: Arch) -> tuple[float, np.ndarray]:
        started = time.perf_counter()
        m = self.scores_of(self.subnet(arch), int(arch["resolution"]))
        result = (m.top1, m.class_top1) if self.score == "top1" else (m.expected, m.class_expected)
        self.n_evaluations += 1
        self.seconds += time.perf_counter() - started
        return result

    def _chunks(self, x: Tensor) -> Iterator[Tensor]:
        for start in range(0, len(x), self.batch_size):
            yield x[start : start + self.batch_size].to(self.device)


class SupernetEnsembleEvaluator:
    """``codes -> {metric: score in %}`` averaged over member evaluators (supernets of one space, see module doc).

    Members must share the space, the validation labels, ``score``, ``metric`` and ``per_class``:
    their scores are then averages of the same quantity over the same images.
    """

    def __init__(self, members: Sequence[SupernetEvaluator]) -> None:
        members = list(members)
        if not members:
            raise SupernetEvalError("field 'members': need at least one SupernetEvaluator")
        first = members[0]
        for i, m in enumerate(members):
            if not isinstance(m, SupernetEvaluator):
                raise SupernetEvalError(f"field 'members[{i}]': need a SupernetEvaluator, got {type(m).__name__}")
            for name in ("score", "metric", "per_class"):
                if getattr(m, name) != getattr(first, name):
                    raise SupernetEvalError(
                        f"field 'members[{i}].{name}': {getattr(m, name)!r}, member 0 has {getattr(first, name)!r}"
                    )
            if m.space.name != first.space.name or list(m.space.cardinalities) != list(first.space.cardinalities):
                raise SupernetEvalError(f"field 'members[{i}]': space {m.space.name!r} is not member 0's")
            if not torch.equal(m._val_y, first._val_y):
                raise SupernetEvalError(
                    f"field 'members[{i}]': other validation labels than member 0 — train members on the same "
                    "data split (data.split_seed, or `fleetnas supernet train --seed`)"
                )
        self.members = members
        self.space, self.metric, self.score, self.per_class = first.space, first.metric, first.score, first.per_class

    def __call__(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """The members' outputs for ``codes``, averaged key by key."""
        outs = [m(codes) for m in self.members]
        return {key: np.mean([o[key] for o in outs], axis=0) for key in outs[0]}

    def member_scores(self, arch: Arch) -> list[ModuleScores]:
        """Each member's top-1 and expected top-1 of ``arch`` (BN recalibrated, not cached)."""
        res = int(arch["resolution"])
        return [m.scores_of(m.subnet(arch), res) for m in self.members]

    @property
    def n_evaluations(self) -> int:
        """Subnets measured, summed over members."""
        return sum(m.n_evaluations for m in self.members)
