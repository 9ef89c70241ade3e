"""The one interface every search strategy implements (ask/tell), the run loop and checkpoints.

A strategy proposes candidates (``ask``), is told their evaluation (``tell``), and can dump and
restore its whole state (``state`` / ``load_state``) — population, adaptive parameters, the
generation counter and the random generator — so a run interrupted after any generation and
resumed from its checkpoint produces exactly what the uninterrupted run would have.

``run`` drives a strategy on a problem under an evaluation budget, records every evaluation in
a ``History``, reports progress per generation, checkpoints, and on Ctrl-C writes a last
checkpoint before re-raising.

Checkpoint format: one ``.npz`` file holding the arrays (history and strategy arrays, each
prefixed) and one JSON document (``__meta__``) with the strategy name, parameters, scalars and
the random generator's state — no pickle, so checkpoints survive library upgrades.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import write_npz_atomic
from search.problem import Evaluation, Problem

CHECKPOINT_FORMAT = "fleetnas.search-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the strategy or problem it is loaded into."""


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's state as JSON-ready data."""
    return json.loads(json.dumps(rng.bit_generator.state))


def rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    """A generator restored from ``rng_state``."""
    bit = getattr(np.random, state["bit_generator"])()
    bit.state = state
    return np.random.Generator(bit)


@dataclass
class History:
    """Every evaluation of a run, in order, plus one stats row per generation."""

    X: list[np.ndarray] = field(default_factory=list)
    F: list[np.ndarray] = field(default_factory=list)
    G: list[np.ndarray] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_evals(self) -> int:
        """Evaluations so far."""
        return int(sum(len(x) for x in self.X))

    def add(self, X: np.ndarray, ev: Evaluation) -> None:
        """Record a batch."""
        self.X.append(np.asarray(X))
        self.F.append(np.asarray(ev.F, dtype=float))
        self.G.append(np.asarray(ev.G, dtype=float))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All evaluated X, F, G stacked (empty arrays before the first batch)."""
        if not self.X:
            return np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 0))
        return np.concatenate(self.X), np.concatenate(self.F), np.concatenate(self.G)


@dataclass(frozen=True)
class GenerationStats:
    """What ``run`` reports after each generation (and what the progress callback receives)."""

    generation: int
    n_evals: int
    seconds: float
    best: list[float]  # per objective, minimisation form, over feasible evaluations so far
    feasible_fraction: float
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy(ABC):
    """Base of all strategies: seeded, ask/tell, fully checkpointable."""

    name: str = "strategy"

    def __init__(self, problem: Problem, seed: int = 0) -> None:
        self.problem = problem
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.generation = 0

    @abstractmethod
    def ask(self) -> np.ndarray:
        """The next batch of candidates to evaluate, shape ``(n, n_var)``."""

    @abstractmethod
    def tell(self, X: np.ndarray, evaluation: Evaluation) -> None:
        """Take the evaluation of the batch returned by the last ``ask``."""

    @property
    def converged(self) -> bool:
        """True when the strategy judges further generations pointless (default: never)."""
        return False

    def params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-ready), recorded in checkpoints and checked on resume."""
        return {"seed": self.seed}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON-ready scalars, named arrays) that ``load_state`` restores exactly."""
        return {"generation": self.generation, "rng": rng_state(self.rng)}, {}

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``state`` returned."""
        self.generation = int(scalars["generation"])
        self.rng = rng_from_state(scalars["rng"])


# ---- checkpoints -----------------------------------------------------------------------------
def save_checkpoint(path: str | Path, strategy: Strategy, history: History) -> Path:
    """Write strategy + history atomically to ``path`` (an ``.npz``)."""
    p = Path(path)
    scalars, arrays = strategy.state()
    X, F, G = history.arrays()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "strategy": strategy.name,
        "params": strategy.params(),
        "n_var": strategy.problem.n_var,
        "n_obj": strategy.problem.n_obj,
        "scalars": scalars,
        "batches": [len(x) for x in history.X],
        "generations": history.generations,
    }
    payload: dict[str, Any] = {f"strategy__{k}": v for k, v in arrays.items()}
    payload.update({"history__X": X, "history__F": F, "history__G": G})
    payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_npz_atomic(p, payload)


def load_checkpoint(path: str | Path, strategy: Strategy) -> History:
    """Restore ``strategy`` from ``path`` and return the history; refuses a mismatched checkpoint."""
    p = Path(path)
    try:
        data = np.load(p, allow_pickle=False)
    except FileNotFoundError:
        raise CheckpointError(f"{p}: no checkpoint to resume from") from None
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{p}: not a checkpoint ({exc})") from None
    with data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{p}: field 'format': {meta.get('format')!r}; allowed: {CHECKPOINT_FORMAT}")
        for key, mine in (
            ("strategy", strategy.name),
            ("params", strategy.params()),
            ("n_var", strategy.problem.n_var),
            ("n_obj", strategy.problem.n_obj),
        ):
            if meta[key] != mine:
                raise CheckpointError(f"{p}: field '{key}' is {meta[key]!r} in the checkpoint but {mine!r} now")
        arrays = {k[len("strategy__") :]: data[k] for k in data.files if k.startswith("strategy__")}
        strategy.load_state(meta["scalars"], arrays)
        X, F, G = data["history__X"], data["history__F"], data["history__G"]
    history = History(generations=list(meta["generations"]))
    start = 0
    for n in meta["batches"]:
        history.X.append(X[start : start + n])
        history.F.append(F[start : start + n])
        history.G.append(G[start : start + n])
        start += n
    return history


# ---- the run loop ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchResult:
    """A finished (or budget-exhausted) run."""

    strategy: str
    history: History
    X: np.ndarray  # all evaluated candidates
    F: np.ndarray
    G: np.ndarray
    seconds: float
    stopped_by: str  # "budget", "generations", "converged"


@dataclass
class _Running:
    """Best values and feasible count so far, updated per batch (rebuilding them from the whole
    history every generation made long runs quadratic)."""

    best: np.ndarray | None = None
    feasible: int = 0
    total: int = 0

    def add(self, F: np.ndarray, G: np.ndarray) -> None:
        ok = np.all(G <= 0, axis=1) if G.size else np.ones(len(F), dtype=bool)
        self.feasible += int(ok.sum())
        self.total += len(F)
        if ok.any():
            batch_best = F[ok].min(axis=0)
            self.best = batch_best if self.best is None else np.minimum(self.best, batch_best)


def _stats(running: _Running, n_obj: int, generation: int, seconds: float) -> GenerationStats:
    best = running.best.tolist() if running.best is not None else [float("nan")] * n_obj
    fraction = running.feasible / running.total if running.total else 0.0
    return GenerationStats(generation, running.total, seconds, best, fraction)


def run(
    strategy: Strategy,
    *,
    max_evals: int | None = None,
    max_generations: int | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: Callable[[GenerationStats], None] | None = None,
    stop_on_convergence: bool = True,
    checkpoint_every_s: float = 2.0,
) -> SearchResult:
    """Ask/evaluate/tell until a budget is spent, checkpointing as it goes.

    ``max_evals`` caps evaluations (the last batch is trimmed to fit, so budgets are exact);
    ``max_generations`` caps ``tell`` calls. With ``resume`` the run continues from
    ``checkpoint``. The checkpoint is written after a generation once ``checkpoint_every_s``
    has passed since the last one (0: every generation) and at the end; Ctrl-C writes it too
    (the state is consistent between generations) and re-raises. Writing the whole history
    every generation made fast strategies spend most of their time in ``np.savez``.
    """
    if max_evals is None and max_generations is None:
        raise ValueError("run: give max_evals or max_generations")
    history = load_checkpoint(checkpoint, strategy) if resume and checkpoint else History()
    running = _Running()
    for F_b, G_b in zip(history.F, history.G, strict=True):
        running.add(F_b, G_b)
    t0 = time.perf_counter()
    last_save = t0
    stopped_by = "budget"
    try:
        while True:
            if max_evals is not None and history.n_evals >= max_evals:
                stopped_by = "budget"
                break
            if max_generations is not None and strategy.generation >= max_generations:
                stopped_by = "generations"
                break
            if stop_on_convergence and strategy.converged:
                stopped_by = "converged"
                break
            X = strategy.ask()
            if max_evals is not None:
                X = X[: max_evals - history.n_evals]
            ev = strategy.problem.evaluate(X)
            strategy.tell(X, ev)
            history.add(X, ev)
            running.add(np.asarray(ev.F, dtype=float), np.asarray(ev.G, dtype=float))
            stats = _stats(running, strategy.problem.n_obj, strategy.generation, time.perf_counter() - t0)
            history.generations.append(
                {
                    "generation": stats.generation,
                    "n_evals": stats.n_evals,
                    "best": stats.best,
                    "feasible_fraction": stats.feasible_fraction,
                }
            )
            if checkpoint and time.perf_counter() - last_save >= checkpoint_every_s:
                save_checkpoint(checkpoint, strategy, history)
                last_save = time.perf_counter()
            if progress:
                progress(stats)
        if checkpoint:
            save_checkpoint(checkpoint, strategy, history)
    except KeyboardInterrupt:
        if checkpoint:
            save_checkpoint(checkpoint, strategy, history)
        raise
    X, F, G = history.arrays()
    return SearchResult(strategy.name, history, X, F, G, time.perf_counter() - t0, stopped_by)
