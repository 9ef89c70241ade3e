"""What a federated client computes, as plain functions (no Flower): local search, scoring, fine-tuning.

- ``local_search``: NSGA-II (``search.strategies.nsga2``, driven by ``search.strategies.base.run``)
  on (accuracy on the client's own data, max; latency on the client's own device, min) with the
  client's deadline as a constraint, seeded from node id + round so a client's answer is
  reproducible; returns its top-K feasible architectures.
- ``score_candidates``: Score_i(A) = accuracy_i(A) / 100 in [0, 1], and 0 where A misses the
  device's deadline.
- Accuracy on the client's own data without torch: a per-class accuracy predictor mixed by the
  client's label histogram (``predictor_accuracy``: Σ_c p_i(c)·acc_A(c)); or, in ``supernet``
  rounds, the supernet itself evaluated on the client's partition (``supernet_accuracy``, torch,
  imported lazily).
- ``fine_tune``: a few sandwich-rule steps of the shared supernet on the local partition (torch,
  lazily), returning the new weights and the update's norm. In the ClientApp the update is
  clipped by Flower's own ``fixedclipping_mod`` (the client side of
  ``DifferentialPrivacyClientSideFixedClipping``); ``clip_update`` applies the same Flower
  function (``compute_clip_model_update``) where no mod runs.

Latency and energy come from the public catalogue profile through ``SpaceCostTable`` (vectorised
over many codes), so they cost no privacy.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search.cost.table import SpaceCostTable
from search.pareto import pareto_front
from search.problem import Constraint, Objective, SpaceProblem
from search.space.mobilenetv3 import MobileNetV3Space
from search.strategies.base import run
from search.strategies.nsga2 import NSGA2, fresh_rows

if TYPE_CHECKING:
    from search.data import Dataset
    from search.predictors.mlp import AccuracyPredictor

__all__ = [
    "ClientError",
    "LocalProposal",
    "client_seed",
    "clip_update",
    "cost_evaluator",
    "fine_tune",
    "label_histogram",
    "local_search",
    "predictor_accuracy",
    "score_candidates",
    "select_top_k",
    "supernet_accuracy",
]

MetricFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]


class ClientError(ValueError):
    """A client-side option that does not fit (budget, top-K, deadline, class weights); names the field."""


@dataclass(frozen=True)
class LocalProposal:
    """A client's local search result: its top-K codes and their local scores."""

    codes: np.ndarray  # (k, L)
    accuracy: np.ndarray  # (k,) in %
    latency_ms: np.ndarray  # (k,)
    n_evals: int
    n_feasible: int
    seconds: float


def client_seed(node_id: int, round_: int, base_seed: int = 0) -> int:
    """A 63-bit seed from (base seed, node id, round): the same client in the same round searches the same way."""
    digest = hashlib.sha256(f"{base_seed}/{node_id}/{round_}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def label_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """float64 ``(num_classes,)`` class frequencies of ``labels`` (sums to 1; uniform for an empty set)."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ClientError(f"labels: values must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return counts / counts.sum() if counts.sum() else np.full(num_classes, 1.0 / num_classes)


def predictor_accuracy(predictor: AccuracyPredictor, class_weights: np.ndarray, metric: str = "accuracy") -> MetricFn:
    """``codes -> {metric: Σ_c p_c·acc_c(codes)}``: the per-class predictor weighed by the client's label mix."""
    from search.predictors.mlp import class_mix_evaluator

    p = np.asarray(class_weights, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or p.min() < 0 or not np.isclose(p.sum(), 1.0):
        raise ClientError(f"class_weights: need a 1-D probability vector, got {p!r}")
    return class_mix_evaluator(predictor, p, metric=metric)


def cost_evaluator(table: SpaceCostTable) -> MetricFn:
    """``codes -> {"latency_ms", "energy_mj"}`` on the table's device (public catalogue profile)."""

    def evaluate(codes: np.ndarray) -> dict[str, np.ndarray]:
        costs = table.evaluate(codes)
        return {"latency_ms": costs["latency_ms"], "energy_mj": costs["energy_mj"]}

    return evaluate


def select_top_k(accuracy: np.ndarray, latency_ms: np.ndarray, feasible: np.ndarray, k: int) -> np.ndarray:
    """Indices of at most ``k`` feasible rows: the (accuracy, latency) front spread from most to least accurate.

    The most accurate feasible row is always first (it is what the global argmax needs); the rest
    are spaced evenly along the front so the server's per-tier fronts see the trade-off, and a
    front shorter than ``k`` is topped up with the next most accurate feasible rows.
    """
    acc, lat = np.asarray(accuracy, dtype=float), np.asarray(latency_ms, dtype=float)
    ok = np.flatnonzero(np.asarray(feasible, dtype=bool))
    if k < 1 or ok.size == 0:
        return np.zeros(0, dtype=np.int64)
    front = ok[pareto_front(np.column_stack([-acc[ok], lat[ok]]))]
    front = front[np.lexsort((lat[front], -acc[front]))]
    if front.size > k:
        picks = np.unique(np.round(np.linspace(0, front.size - 1, k)).astype(np.int64))
        chosen = list(front[picks])
    else:
        chosen = list(front)
    if len(chosen) < k:
        rest = np.setdiff1d(ok, np.asarray(chosen, dtype=np.int64))
        rest = rest[np.lexsort((lat[rest], -acc[rest]))]
        chosen.extend(rest[: k - len(chosen)])
    return np.asarray(chosen[:k], dtype=np.int64)


def local_search(
    space: MobileNetV3Space,
    accuracy: MetricFn,
    cost: SpaceCostTable,
    deadline_ms: float,
    budget: int,
    top_k: int,
    seed: int,
    initial: np.ndarray | None = None,
    pop_size: int | None = None,
) -> LocalProposal:
    """NSGA-II on (accuracy max, latency_ms min) with ``latency_ms <= deadline_ms``; the top-K feasible archs.

    ``initial`` (e.g. the public global fronts) seeds the first population, so clients refine
    what the federation already knows instead of starting from scratch every round.
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 4:
        raise ClientError(f"field 'budget': need an integer >= 4 evaluations, got {budget!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ClientError(f"field 'top-k': need an integer >= 1, got {top_k!r}")
    if not deadline_ms > 0:
        raise ClientError(f"field 'deadline-ms': need a positive number, got {deadline_ms!r}")
    started = time.perf_counter()
    costs = cost_evaluator(cost)
    problem = SpaceProblem(
        space,
        [accuracy, costs],
        [Objective("accuracy", "max"), Objective("latency_ms", "min")],
        [Constraint("latency_ms", float(deadline_ms))],
    )
    pop = pop_size or int(np.clip(budget // 6, 8, 64))
    init = None
    if initial is not None and len(initial):
        init = space.canonicalise(space.check_codes(initial))
        init = init[fresh_rows(np.zeros((0, init.shape[1]), dtype=init.dtype), init)][:pop]
    strategy = NSGA2(problem, seed=seed % (2**32), pop_size=pop, initial=init)
    result = run(strategy, max_evals=budget, stop_on_convergence=False)
    X = space.canonicalise(result.X)
    unique = fresh_rows(np.zeros((0, X.shape[1]), dtype=X.dtype), X)
    X = X[unique]
    acc, lat, G = -result.F[unique, 0], result.F[unique, 1], result.G[unique]
    feasible = np.all(G <= 0, axis=1)
    pick = select_top_k(acc, lat, feasible, top_k)
    return LocalProposal(
        codes=X[pick],
        accuracy=acc[pick],
        latency_ms=lat[pick],
        n_evals=len(result.X),
        n_feasible=int(feasible.sum()),
        seconds=time.perf_counter() - started,
    )


def score_candidates(codes: np.ndarray, accuracy: MetricFn, cost: SpaceCostTable, deadline_ms: float) -> np.ndarray:
    """float64 ``(m,)`` in [0, 1]: accuracy on the client's data / 100, 0 where the device misses its deadline."""
    arr = np.asarray(codes)
    if len(arr) == 0:
        return np.zeros(0)
    acc = np.asarray(accuracy(arr)["accuracy"], dtype=np.float64)
    lat = cost.evaluate(arr)["latency_ms"]
    return np.where(lat <= deadline_ms, np.clip(acc / 100.0, 0.0, 1.0), 0.0)


# ---- torch paths (imported lazily) -------------------------------------------------------------
def supernet_from_arrays(
    space: MobileNetV3Space, alignment: int, arrays: Mapping[str, np.ndarray], what: str
) -> Any:
    """A ``MobileNetV3Supernet`` holding ``arrays`` (numpy, by ``state_dict`` name) — torch; ClientError if unfit.

    BatchNorm statistics and step counters may be missing: they are not federated
    (``federation.protocol.federated_arrays``); training normalises with the batch's statistics
    and every evaluation recalibrates them. ``what`` names the arrays in the error.
    """
    import torch

    from federation.protocol import BN_STATISTICS
    from search.supernet.model import MobileNetV3Supernet

    net = MobileNetV3Supernet(space, alignment)
    result = net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith(("num_batches_tracked", *BN_STATISTICS))]
    if missing or result.unexpected_keys:
        unexpected = result.unexpected_keys[:3]
        raise ClientError(f"{what}: does not fit the space's supernet (missing {missing[:3]}, unexpected {unexpected})")
    return net


def supernet_accuracy(
    supernet: Any,
    space: MobileNetV3Space,
    partition: Dataset,
    seed: int = 0,
    val_fraction: float = 0.3,
    recalibration_images: int = 500,
) -> MetricFn:
    """``codes -> {"accuracy": %}`` measured with the supernet on the client's own partition (torch).

    The partition is split (stratified, by ``seed``) into a recalibration part for BatchNorm and a
    held-out part the accuracy is measured on, so a client never scores on the images it
    recalibrated with.
    """
    from search.data import split
    from search.supernet.evaluation import SupernetEvaluator

    if len(partition) < 2:
        raise ClientError(f"partition: need at least 2 examples to evaluate on, got {len(partition)}")
    train, val = split(partition, (1.0 - val_fraction, val_fraction), seed=seed)
    if len(val) == 0:
        train, val = partition, partition
    return SupernetEvaluator(
        supernet, space, train, val, recalibration_images=min(recalibration_images, max(len(train), 1)), seed=seed
    )


def clip_update(
    new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray], clip: float
) -> tuple[dict[str, np.ndarray], float]:
    """(old + update scaled to L2 norm ≤ ``clip``, the update's norm before clipping); ``clip`` 0 or ∞ = no clipping.

    The clipping is Flower's ``compute_clip_model_update`` (what ``fixedclipping_mod`` calls) on
    the floating arrays; integer arrays (BatchNorm's step counters) are copied from ``new``, as
    they are not part of the federated update (``federation.protocol.federated_arrays``).
    """
    from flwr.supercore.differential_privacy import compute_clip_model_update, get_norm

    floats = [k for k in old if np.issubdtype(np.asarray(old[k]).dtype, np.floating)]
    ref = [np.array(old[k]) for k in floats]
    params = [np.array(new[k], dtype=np.asarray(old[k]).dtype) for k in floats]
    norm = get_norm([p - r for p, r in zip(params, ref, strict=True)])
    if 0 < clip < math.inf and norm > 0:  # Flower divides by the norm: a zero update needs no clipping
        compute_clip_model_update(params, ref, clip)
    clipped = dict(zip(floats, params, strict=True))
    out = {k: clipped[k].astype(np.asarray(v).dtype) if k in clipped else np.asarray(new[k]).copy()
           for k, v in old.items()}
    return out, float(norm)


def fine_tune(
    state: Mapping[str, np.ndarray],
    space: MobileNetV3Space,
    partition: Dataset,
    steps: int,
    lr: float,
    clip: float,
    seed: int,
    alignment: int = 8,
    batch_size: int = 32,
) -> tuple[dict[str, np.ndarray], float]:
    """(fine-tuned arrays with the update clipped to ``clip``, the unclipped update norm) — torch.

    ``state`` may hold only the federated arrays (``federation.protocol.federated_arrays``): missing
    BatchNorm statistics and step counters start at their defaults (training mode normalises with
    the batch's statistics; momentum-based BatchNorm does not read the counters). The result
    has exactly ``state``'s keys, in its order. ``clip`` 0 or ∞: unclipped (the ClientApp's
    ``fixedclipping_mod`` clips instead). Each step follows the sandwich rule of
    ``search.supernet.training``: the largest subnet on cross-entropy, the smallest and two random
    subnets on ``distillation_loss`` against the largest one's logits, gradients accumulated, one
    Adam step.
    """
    import torch
    import torch.nn.functional as F

    from search.data import batches
    from search.supernet.model import resize_input
    from search.supernet.schedule import DIMENSIONS, PhaseConfig, PhaseSampler
    from search.supernet.training import distillation_loss

    if steps < 1:
        raise ClientError(f"field 'steps': need >= 1, got {steps}")
    if len(partition) == 0:
        raise ClientError("partition: no local examples to fine-tune on")
    torch.manual_seed(seed % (2**31))
    model = supernet_from_arrays(space, alignment, state, "state")
    model.train()
    sampler = PhaseSampler(space, PhaseConfig(name="federated", elastic=DIMENSIONS, rule="sandwich", n_random=2))
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    done, epoch = 0, 0
    while done < steps:
        for xb, yb in batches(partition, min(batch_size, len(partition)), shuffle=True, seed=seed + epoch):
            if done >= steps:
                break
            x, y = torch.from_numpy(xb), torch.from_numpy(yb)
            archs, distil = sampler.step_archs(rng, done)
            opt.zero_grad(set_to_none=True)
            teacher = None
            for i, arch in enumerate(archs):
                model.set_active(arch)
                logits = model(resize_input(x, int(arch["resolution"])))
                if distil and i == 0:
                    teacher = logits.detach()
                    loss = F.cross_entropy(logits, y)
                elif teacher is not None:
                    loss = distillation_loss(logits, teacher, y, 0.5, 1.0)
                else:
                    loss = F.cross_entropy(logits, y)
                loss.backward()
            opt.step()
            done += 1
        epoch += 1
    model.set_active(model.max_arch())
    trained = model.state_dict()
    new = {k: trained[k].detach().cpu().numpy() for k in state}
    return clip_update(new, state, clip)
