"""Federated architecture search over a simulated heterogeneous fleet, on Flower's Simulation Engine.

The scenario (``Scenario``): N devices, each with a hardware tier drawn from the catalogue (the
MCU excluded: the MNIST space does not fit its SRAM), a deadline per tier (a quantile of the
tier's latency over a public sample of the space, so the constraint bites), a Dirichlet(α)
non-IID partition of the embedded MNIST-5k digits, and a battery trace (a device below the floor
and not charging sits the round out). The ServerApp and ClientApp of ``federation`` run unchanged
on ``flwr.simulation.run_simulation`` (Ray backend, one CPU per client).

Under ``run_simulation`` the run config is empty and each node gets only ``partition-id`` and
``num-partitions``, so the configuration travels in the apps themselves: the factories
``make_server_app(config, ...)`` and ``make_client_app(ClientSettings(...))`` close over frozen
values (Ray pickles the ClientApp to its workers), and each node derives its tier from its
partition id and the seed. Battery traces are ordinary trace files (``runtime.telemetry``)
written to ``<out>/traces``, read by the clients like a deployed device would read its own.

Outputs in ``out``: ``round_NNN.json`` (global front per tier, chosen arch per tier, ε, failures),
``summary.json``, ``privacy_utility.json`` + ``.png`` (for each ε, the regret of the privately
chosen arch against the non-private choice on the same last-round scores, over many noise
seeds) and ``fronts_<tier>.png``.

Weight rounds (``Scenario.weight_rounds``): the ServerApp starts from a trained supernet
(``Scenario.supernet``, default the cache dir's, trained on demand like the predictor), each
such round the devices fine-tune it on their partitions and the server averages the clipped
(and noised) updates; ``summary.json`` reports the largest and smallest subnet's validation
top-1 before and after each weight round, and the final global supernet is saved to
``<out>/supernet/`` (a trained-supernet directory).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import atomic_writer, write_text_atomic

__all__ = [
    "DescendantTracker",
    "Scenario",
    "ScenarioError",
    "battery_traces",
    "default_tiers",
    "fleet_setup",
    "inprocess_send",
    "inprocess_task",
    "privacy_utility",
    "rescore_history",
    "resolve_predictor",
    "resolve_supernet",
    "run_scenario",
    "tier_deadlines",
    "weight_round_line",
]

DEFAULT_EPSILONS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


class ScenarioError(ValueError):
    """A scenario option a user got wrong; the message names the option and the allowed values."""


@dataclass(frozen=True)
class Scenario:
    """A federated search simulation (every field has a default)."""

    clients: int = 20
    rounds: int = 5
    epsilon: float = 1.0
    delta: float = 1e-5
    dp_mode: str = "central"  # central | local | off
    alpha: float = 0.5
    seed: int = 0
    budget: int = 120
    top_k: int = 4
    seed_pool: int = 24
    predictor: str | None = None  # per-class AccuracyPredictor .npz; None: the demo supernet's (built if missing)
    space: str | None = None  # space preset or JSON file of the predictor; None: space.json next to it, else mnist
    cache_dir: str = "out/demo/artefacts"  # shared with `fleetnas demo`: its predictor is reused
    battery_floor: float = 15.0
    deadline_quantile: float = 0.6
    # One latency budget (ms) for every tier — an app's requirement, so slower tiers get smaller
    # networks; None: each tier's own ``deadline_quantile`` (a deadline that bites on every tier,
    # which with latency rankings that agree across tiers admits nearly the same architectures).
    deadline_ms: float | None = None
    quorum: float = 0.5
    clip: float = 0.1  # L2 clip of a client's (baseline-subtracted, centred) score vector
    baseline: bool = True  # subtract the public per-tier baseline (central predictor, catalogue deadlines)
    final_pool: int = 5  # successive halving of the scored pool down to this many (0: off)
    budget_ramp: float = 1.0  # round r's score release gets budget_ramp**(r-1) of the budget (relative)
    noise_seed: int | None = None  # None: OS entropy for the run's noise (the curve always uses seeded noise)
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    utility_seeds: int = 50
    cpus_per_client: float = 1.0
    weight_rounds: tuple[int, ...] = ()  # rounds that also fine-tune and average the supernet
    supernet: str | None = None  # initial weights (supernet dir or .npz); None: the cache dir's, built if missing
    weight_clip: float = 3.0  # L2 clip of a device's supernet update (federation.server.FederationConfig)
    train_steps: int = 5  # local fine-tuning steps per weight round
    train_lr: float = 0.003  # measured: 0.01 lowered the demo supernet's top-1 after one round, 0.003 raised it

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ScenarioError:
            return ScenarioError(f"scenario: option {name!r}: {why}, got {getattr(self, name)!r}")

        for name in ("clients", "rounds", "budget", "top_k", "utility_seeds"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise bad(name, "need an integer >= 1")
        if self.clients < 2:
            raise bad("clients", "need at least 2 clients")
        if self.dp_mode not in ("central", "local", "off"):
            raise bad("dp_mode", "allowed: central, local, off")
        if not (self.epsilon > 0 and 0 < self.delta < 1):
            raise bad("epsilon", "need epsilon > 0 and 0 < delta < 1")
        if not self.alpha > 0:
            raise bad("alpha", "need a Dirichlet concentration > 0 (0.1: very skewed, 100: near IID)")
        if not 0 < self.deadline_quantile <= 1:
            raise bad("deadline_quantile", "need a number in (0, 1]")
        if self.deadline_ms is not None and not (math.isfinite(self.deadline_ms) and self.deadline_ms > 0):
            raise bad("deadline_ms", "need a positive number of ms, or none for per-tier quantiles")
        if not self.clip > 0:
            raise bad("clip", "need a positive L2 clip")
        if not self.epsilons or any(e <= 0 for e in self.epsilons):
            raise bad("epsilons", "need a non-empty list of positive numbers")
        if any(isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= self.rounds for r in self.weight_rounds):
            raise bad("weight_rounds", f"need round numbers in 1..{self.rounds} (--rounds)")
        if not (math.isfinite(self.weight_clip) and self.weight_clip > 0):
            raise bad("weight_clip", "need a finite L2 norm > 0")
        if not (math.isfinite(self.train_lr) and self.train_lr > 0):
            raise bad("train_lr", "need a learning rate > 0")
        if isinstance(self.train_steps, bool) or not isinstance(self.train_steps, int) or self.train_steps < 1:
            raise bad("train_steps", "need an integer >= 1")


# ---- the fleet ---------------------------------------------------------------------------------
def default_tiers() -> tuple[str, ...]:
    """Catalogue devices a MobileNetV3 network can run on (every kind but the microcontrollers)."""
    from runtime.hardware import list_devices, load_device

    return tuple(d for d in list_devices() if load_device(d).kind != "mcu")


def tier_deadlines(space: Any, tiers: Sequence[str], quantile: float, seed: int = 0, n: int = 2000) -> dict[str, float]:
    """Per tier, the ``quantile`` of latency (ms) over ``n`` public random archs: a deadline that bites."""
    from runtime.hardware import load_device
    from search.cost.table import SpaceCostTable

    codes = space.sample(n, np.random.default_rng([seed, 4242]))
    out = {}
    for tier in tiers:
        lat = SpaceCostTable(space, load_device(tier)).evaluate(codes)["latency_ms"]
        out[tier] = float(np.round(np.quantile(lat, quantile), 4))
    return out


def scenario_deadlines(scenario: Scenario, space: Any, tiers: Sequence[str]) -> dict[str, float]:
    """Per tier, the deadline (ms) its devices search under: the app's ``deadline_ms`` or the tier's own quantile."""
    if scenario.deadline_ms is not None:
        return {tier: float(scenario.deadline_ms) for tier in tiers}
    return tier_deadlines(space, tiers, scenario.deadline_quantile, scenario.seed)


def battery_traces(out_dir: Path, clients: int, rounds: int, seed: int) -> dict[str, Any]:
    """Write one battery trace per client (trace time = round number); returns offline counts per round.

    Each device starts between 20 % and 100 %, drains 2–12 points per round, and a quarter of them
    are plugged in for a random stretch — so some devices cross the floor mid-run and drop out.
    """
    from runtime.telemetry import Signals, write_trace

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    levels = np.zeros((clients, rounds + 1))
    plugged = np.zeros((clients, rounds + 1), dtype=bool)
    for pid in range(clients):
        start, drain = rng.uniform(20, 100), rng.uniform(2, 12)
        charge_from = rng.integers(1, rounds + 1) if rng.random() < 0.25 else rounds + 2
        level = start
        samples = []
        for t in range(rounds + 1):
            on = charge_from <= t < charge_from + 2
            level = min(100.0, level + 15.0) if on else max(0.0, level - (drain if t else 0.0))
            levels[pid, t], plugged[pid, t] = level, on
            samples.append(Signals(t=float(t), battery_percent=round(level, 2), plugged=bool(on)))
        write_trace(out_dir / f"battery_{pid:05d}.csv", samples)
    return {"levels": levels, "plugged": plugged}


def resolve_predictor(scenario: Scenario, progress: bool) -> tuple[str, Any]:
    """(predictor path, MobileNetV3Space) of the scenario: the given file, or the demo supernet's (built on demand)."""
    from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

    if scenario.predictor is None:
        from search.supernet.artefacts import ensure_class_predictor, space_of

        path = ensure_class_predictor(Path(scenario.cache_dir), progress=progress)
        return str(path), space_of(Path(scenario.cache_dir))
    path = Path(scenario.predictor)
    if not path.is_file():
        raise ScenarioError(f"--predictor: {path}: file not found")
    if scenario.space is not None:
        spec = scenario.space
        if spec.endswith(".json"):
            from search.supernet.schedule import make_space

            return str(path), make_space(json.loads(Path(spec).read_text()))
        from search.space import load_space

        return str(path), load_space(spec)
    if (path.parent / "space.json").is_file():
        from search.supernet.schedule import make_space

        return str(path), make_space(json.loads((path.parent / "space.json").read_text()))
    return str(path), MobileNetV3Space(MobileNetV3Config.preset("mnist"))


def resolve_supernet(scenario: Scenario, progress: bool) -> str | None:
    """Path of the initial supernet of the weight rounds (None without any): the given one, else the cache dir's.

    The cache dir's is trained on demand (``search.supernet.artefacts.ensure_trained`` with the demo
    configuration), as ``resolve_predictor`` does for the predictor it is measured from.
    """
    if not scenario.weight_rounds:
        return None
    if scenario.supernet is not None:
        path = Path(scenario.supernet)
        if not path.exists():
            raise ScenarioError(f"--supernet: {path}: not found (a trained supernet directory or a weights .npz)")
        return str(path.resolve())
    from search.supernet.trained import CONFIG_FILE, WEIGHTS_FILE

    root = Path(scenario.cache_dir) / "supernet"
    if not ((root / WEIGHTS_FILE).is_file() and (root / CONFIG_FILE).is_file()):
        from search.supernet.artefacts import ensure_trained

        ensure_trained("demo", root, progress=progress,
                       log=(lambda m: print(f"[artefacts] {m}", flush=True)) if progress else (lambda m: None))
    return str(root.resolve())


# ---- privacy-utility ---------------------------------------------------------------------------
def rescore_history(search: Any, send: Callable[..., Any]) -> list[Any]:
    """Every aggregated round of ``search`` re-scored without noise over *every* candidate the run scored.

    The experimenter's ground truth, not part of the protocol (it reads raw scores, simulation
    only): the nodes that answered round r are asked again, in process, for their raw scores of
    the union of all the run's pools, with the round's own reliabilities and deadlines. With
    successive halving the real run scored a shrinking pool; this lets the replay follow other
    noise draws into other survivors, and compares the private choice with the non-private
    choice over all the candidates, not just the survivors.
    """
    from federation.protocol import SCORE, ScoreRequest
    from federation.server import ScoredRound

    history = search.score_history
    if not history:
        raise ScenarioError("rescore_history: no aggregated round to re-score")
    cfg = search.config
    superset = _distinct(np.concatenate([h.pool for h in history]))
    out = []
    for h in history:
        req = ScoreRequest(cfg.space, h.round, superset, cfg.source, "central", cfg.dp.clip, 0.0, 1.0, cfg.seed)
        replies = send(SCORE, {rep.node_id: req for rep in h.reports}, None)
        reports = []
        for rep in h.reports:
            got = replies.get(rep.node_id)
            if not hasattr(got, "scores") or len(got.scores) != len(superset):
                raise ScenarioError(f"rescore_history: node {rep.node_id} did not re-score round {h.round}: {got!r}")
            reports.append(replace(rep, scores=np.asarray(got.scores, dtype=float)))
        base = search.baselines(superset, sorted({rep.tier for rep in reports}), h.deadlines)
        out.append(ScoredRound(h.round, superset, reports, base, h.union, h.deadlines))
    return out


def _distinct(codes: np.ndarray) -> np.ndarray:
    """Rows of ``codes`` without repeats, in first-seen order."""
    seen: set[bytes] = set()
    keep = []
    for i, row in enumerate(np.asarray(codes, dtype=np.int64)):
        key = row.tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(codes, dtype=np.int64)[keep]


def privacy_utility(
    history: Sequence[Any],
    rescored: Sequence[Any],
    epsilons: Sequence[float],
    config: Any,
    clients: int,
    seeds: int,
    seed: int = 0,
) -> dict[str, Any]:
    """For each ε: the regret distribution of the private choice vs the non-private one over the same candidates.

    ``history`` is the run's ``score_history`` (its pools and union releases), ``rescored`` the same
    rounds re-scored over every candidate (``rescore_history``), ``config`` the run's
    FederationConfig and ``clients`` the number asked per round (the noise plan depends on it).
    For each ε and noise seed the server's selection is replayed with the server's own functions:
    the noise plan for that ε (``plan_noise``: union skipped or not, per-round σ), round 1's pool,
    then per round the survivors of the last round's noisy pooled means (``survivors``,
    ``pool_sizes``) plus that round's union release (held at the run's: the proposals are not
    re-run), the tiered Gaussian release (``tiered_release``) and the inverse-variance pooling
    (``accumulate``); the choice is the argmax of the last round's pool. Its "true" score is the
    exact weighted mean of the last round's clients, and the non-private choice is the argmax of
    that over *all* candidates the run scored (``rescored``'s pool), whatever the halving kept.
    """
    from federation.aggregate import aggregate_scores, regret, relative_regret
    from federation.server import accumulate, plan_noise, pool_sizes, round_clip, survivors, tiered_release

    if not history or len(history) != len(rescored):
        raise ScenarioError("privacy_utility: need the run's aggregated rounds and as many re-scored ones")
    base = config.dp
    mode = base.mode if base.mode != "off" else "central"
    if mode != "central":
        raise ScenarioError(f"privacy_utility: replays central DP only, got mode {base.mode!r}")
    superset = rescored[-1].pool
    index = {row.tobytes(): j for j, row in enumerate(np.asarray(superset, dtype=np.int64))}
    exact = aggregate_scores(superset, rescored[-1].reports, replace(base, mode="off"), 0.0, None)
    true = np.asarray(exact.mean_scores)
    halving = config.final_pool > 0
    rows = []
    for eps in epsilons:
        conf = replace(config, dp=replace(base, mode=mode, epsilon=float(eps), noise_multiplier=None))
        plan = plan_noise(conf, clients)
        regrets, rel, finals = [], [], []
        for k in range(seeds):
            rng = np.random.default_rng([seed, k, int(eps * 1000)])
            acc: dict[bytes, tuple[float, float]] = {}
            pool = mean = None
            first = len(history[0].pool)
            for h, t in zip(history, rescored, strict=True):
                if pool is None or not halving:
                    pool = np.asarray(h.pool, dtype=np.int64)
                else:
                    size = pool_sizes(first, config.final_pool, config.rounds)[h.round - 1]
                    kept = survivors(pool, mean, size)
                    pool = _distinct(np.concatenate([kept, h.union]) if len(h.union) else kept)
                cols = np.asarray([index[row.tobytes()] for row in pool])
                reports = [replace(rep, scores=rep.scores[cols]) for rep in t.reports]
                baselines = None if t.baselines is None else {tier: b[cols] for tier, b in t.baselines.items()}
                sigma = plan.score_sigmas[h.round - 1]
                clip = round_clip(conf.dp.clip, len(pool), first, config.final_pool)
                sums, count = tiered_release(pool, reports, replace(conf.dp, clip=clip), sigma, rng, baselines)
                mean = accumulate(acc, pool, sums, count, plan.accumulation_weight(h.round))
            chosen = index[pool[int(np.argmax(mean))].tobytes()]
            finals.append(len(pool))
            regrets.append(regret(chosen, true))
            rel.append(relative_regret(chosen, true))
        r = np.asarray(regrets)
        rr = np.asarray(rel)
        rows.append(
            {
                "epsilon": float(eps),
                "noise_multiplier": float(plan.score_sigmas[-1]),
                "score_noise_multipliers": [float(x) for x in plan.score_sigmas],
                "union_run": plan.union,
                "final_pool_mean": float(np.mean(finals)),
                "regret_mean": float(r.mean()),
                "regret_median": float(np.median(r)),
                "regret_p90": float(np.quantile(r, 0.9)),
                "relative_regret_pct_mean": float(rr.mean()),
                "within_1pct_share": float(np.mean(rr <= 1.0)),
                "regrets": [float(v) for v in r],
            }
        )
    return {
        "mode": mode,
        "clients": len(rescored[-1].reports),
        "candidates": len(superset),
        "first_pool": len(history[0].pool),
        "rounds_replayed": len(history),
        "seeds": seeds,
        "non_private_best_index": int(exact.best_index),
        "non_private_best_score": float(true.max()),
        "curve": rows,
    }


def _save_figure(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        fig.savefig(fh, format="png", dpi=110, bbox_inches="tight")
    return path


def plot_privacy_utility(curve: dict[str, Any], path: Path) -> Path | None:
    """Path of the ε-vs-regret picture (None without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = curve["curve"]
    eps = [r["epsilon"] for r in rows]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    ax.plot(eps, [r["relative_regret_pct_mean"] for r in rows], "o-", label="mean relative regret (%)")
    ax.plot(eps, [100 * np.quantile(np.asarray(r["regrets"]) / max(curve["non_private_best_score"], 1e-12), 0.9)
                  for r in rows], "s--", label="90th percentile (%)")
    ax2 = ax.twinx()
    ax2.plot(eps, [100 * r["within_1pct_share"] for r in rows], "^:", c="#2ca02c", label="seeds within 1 % (%)")
    ax2.set_ylabel("seeds within 1 % of the non-private choice (%)")
    ax2.set_ylim(0, 105)
    ax.set_xscale("log")
    ax.set_xlabel("ε (whole run, δ fixed)")
    ax.set_ylabel("regret vs non-private choice (% of best score)")
    ax.set_title(f"privacy–utility: {curve['clients']} clients, {curve['candidates']} candidates, "
                 f"{curve['seeds']} seeds ({curve['mode']})", fontsize=9)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper right")
    return _save_figure(fig, path)


def plot_fronts(search: Any, out_dir: Path) -> list[str]:
    """Paths of ``fronts_<tier>.png``: every scored candidate on (latency, aggregated score) per tier, modes starred."""
    from search.plots import plot_front_2d

    codes, means = search.known()  # every candidate scored, with its current estimate (what the fronts use)
    if len(codes) == 0:
        return []
    written = []
    last = next((h for h in reversed(search.history) if h.status == "ok"), None)
    for tier, table in sorted(search._tables.items()):
        lat = table.evaluate(codes)["latency_ms"]
        F = np.column_stack([lat, means])
        chosen: dict[str, int] = {}
        plan = (last.plans or {}).get(tier) if last else None
        if plan:
            front_codes = np.asarray(last.fronts[tier]["codes"])
            for mode in plan["modes"]:
                code = front_codes[mode["index"]]
                match = np.flatnonzero((codes == code).all(axis=1))
                if match.size:
                    chosen[mode["name"]] = int(match[0])
        p = plot_front_2d(
            F, ["latency_ms", "aggregated score"], ["min", "max"], out_dir / f"fronts_{tier}.png", chosen,
            title=f"{tier}: global front, round {search.round}",
        )
        if p is not None:
            written.append(str(p))
    return written


# ---- an in-process fleet (no Ray) ---------------------------------------------------------------
def inprocess_send(
    settings: Any, clients: int, supernet: Callable[[], Any] | None = None
) -> Callable[..., dict[int, Any]]:
    """A ``federation.server.Send`` answering with the ClientApp's own handlers in this process (node id = partition).

    The same ``answer_propose``/``answer_score`` the Flower handlers call, minus the transport: for
    experiments that repeat a whole federated run many times (the benchmark's DP seeds). ``train``
    requests (the RecordDict Flower's strategy built) are answered by ``train_reply``: the handler
    plus what its mods do (Flower's clipping, the local-DP noise). ``supernet()`` gives the global
    weights that ``supernet`` accuracy requests carry (as ``grid_send`` attaches them).
    """
    from federation.client_app import Offline, answer_propose, answer_score, settings_for, train_reply
    from federation.protocol import PROPOSE, SCORE, TRAIN, decode_train_request
    from federation.server import Failure
    from federation.weights import LOCAL_NOISE

    nodes = {
        pid: settings_for({"partition-id": pid, "num-partitions": clients}, {}, settings) for pid in range(clients)
    }

    def send(mtype: str, requests: Any, timeout: float | None) -> dict[int, Any]:
        out: dict[int, Any] = {}
        for node, req in requests.items():
            try:
                if mtype == TRAIN:
                    treq = decode_train_request(req, node=node)
                    out[node] = train_reply(nodes[node], treq, float(req["config"].get(LOCAL_NOISE, 0.0)))
                elif mtype in (PROPOSE, SCORE):
                    answer = answer_propose if mtype == PROPOSE else answer_score
                    weights = supernet() if supernet is not None and req.source == "supernet" else None
                    out[node] = answer(nodes[node], req, supernet=weights)
                else:
                    raise ScenarioError(f"inprocess_send: message type {mtype!r} is not simulated in process")
            except Offline as exc:
                out[node] = Failure(node, str(exc))
        return out

    return send


@contextlib.contextmanager
def inprocess_task(run_id: int = 0) -> Any:
    """Context in which Flower Messages can be built outside a Flower run (the in-process fleet's weight rounds).

    Flower's strategies build ``train`` Messages (``configure_train``), and a Message reads the
    process's task identity, which only a ServerApp run sets. For an in-process fleet this sets a
    local one (``run_id``) when none is set, and restores the previous identity on exit.
    """
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    if saved[0] is None:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = run_id, 1, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def fleet_setup(scenario: Scenario, out_dir: Path, progress: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """(FederationConfig, ClientSettings, facts) of the scenario: predictor, tiers, deadlines, battery traces."""
    from federation.client_app import ClientSettings
    from federation.dp import DPConfig
    from federation.server import FederationConfig

    predictor, space = resolve_predictor(scenario, progress)
    tiers = default_tiers()
    deadlines = scenario_deadlines(scenario, space, tiers)
    battery = battery_traces(out_dir / "traces", scenario.clients, scenario.rounds, scenario.seed)
    offline = (battery["levels"][:, 1:] < scenario.battery_floor) & ~battery["plugged"][:, 1:]
    dp = DPConfig(
        mode=scenario.dp_mode, epsilon=scenario.epsilon, delta=scenario.delta, rounds=scenario.rounds,
        seed=scenario.noise_seed, clip=scenario.clip,
    )
    config = FederationConfig(
        space=space.config, rounds=scenario.rounds, budget=scenario.budget, top_k=scenario.top_k,
        seed_pool=scenario.seed_pool, min_nodes=scenario.clients, quorum=scenario.quorum, dp=dp,
        seed=scenario.seed, tier_deadlines=deadlines, timeout_s=None,
        baseline_predictor=str(Path(predictor).resolve()) if scenario.baseline else None,
        final_pool=scenario.final_pool, budget_ramp=scenario.budget_ramp,
        weight_rounds=tuple(scenario.weight_rounds), weight_clip=scenario.weight_clip,
        train_steps=scenario.train_steps, train_lr=scenario.train_lr,
    )
    settings = ClientSettings(
        predictor=str(Path(predictor).resolve()), alpha=scenario.alpha, data_seed=scenario.seed, tiers=tiers,
        tier_deadlines=deadlines, battery_floor=scenario.battery_floor,
        battery_dir=str((out_dir / "traces").resolve()),
    )
    facts = {"tiers": tiers, "deadlines": deadlines, "offline_per_round": offline.sum(axis=0).tolist(),
             "supernet": resolve_supernet(scenario, progress)}
    return config, settings, facts


class DescendantTracker:
    """Remembers every descendant process seen while active; ``reap`` ends the ones still alive.

    Ray's workers are children of its raylet; when ``run_simulation`` shuts Ray down they are
    re-parented to init and linger for half a minute. They are ours (we started Ray), so after the
    run we end exactly those processes, by PID and creation time, and nothing else.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        import threading

        import psutil

        self._me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _snapshot(self) -> None:
        import psutil

        for p in self._me.children(recursive=True):
            try:
                self._seen.setdefault(p.pid, p.create_time())
            except psutil.NoSuchProcess:
                continue

    def _run(self) -> None:
        while not self._stop.is_set():
            self._snapshot()
            self._stop.wait(self._interval)

    def __enter__(self) -> DescendantTracker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (idempotent) after one last look, so nothing started since the last tick is missed."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._snapshot()

    def reap(self, timeout_s: float = 10.0) -> list[int]:
        """End the tracked processes still alive (SIGTERM, then SIGKILL after ``timeout_s``); returns their PIDs.

        Sampling stops first: the sampler thread would otherwise add PIDs while they are iterated.
        """
        import psutil

        self.stop()
        alive = []
        for pid, created in self._seen.items():
            try:
                p = psutil.Process(pid)
                if p.create_time() == created:  # not a recycled PID
                    alive.append(p)
            except psutil.NoSuchProcess:
                continue
        for p in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, still = psutil.wait_procs(alive, timeout=timeout_s)
        for p in still:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(still, timeout=timeout_s)
        return [p.pid for p in alive]


# ---- the run -----------------------------------------------------------------------------------
def run_scenario(
    scenario: Scenario,
    out_dir: str | Path,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the scenario on Flower's Simulation Engine; returns the JSON summary (also written to ``out_dir``)."""
    import logging

    from flwr.simulation import run_simulation

    from federation.client_app import make_client_app
    from federation.server import FederatedSearch
    from federation.server_app import make_server_app

    say = log or ((lambda s: print(f"[federate] {s}", file=sys.stderr, flush=True)) if progress else (lambda s: None))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    config, settings, facts = fleet_setup(scenario, out, progress)
    tiers, deadlines = facts["tiers"], facts["deadlines"]
    say(f"{scenario.clients} clients over tiers {', '.join(tiers)}; deadlines (ms) "
        + ", ".join(f"{t} {d:.3g}" for t, d in deadlines.items())
        + f"; offline per round (battery) {facts['offline_per_round']}")
    finished: list[tuple[FederatedSearch, dict[str, Any]]] = []

    def on_finish(search: FederatedSearch, summary: dict[str, Any]) -> None:
        finished.append((search, summary))

    def on_round(result: Any) -> None:
        say(f"round {result.round}/{scenario.rounds}: {result.status}, "
            f"{len(result.asked) - len(result.failures)}/{len(result.asked)} answered, pool {result.pool_size}"
            + (f", best {'noisy ' if scenario.dp_mode != 'off' else ''}score {result.chosen['score']:.4f}"
               if result.chosen else "")
            + f", ε {result.epsilon:.3g} [{time.perf_counter() - started:.0f} s]")
        if result.train is not None:
            say(f"round {result.round}: {weight_round_line(result.train)}")

    server_app = make_server_app(config, out, on_finish=on_finish, noise_seed=scenario.noise_seed, on_round=on_round,
                                 supernet=facts["supernet"])
    client_app = make_client_app(settings)
    # Flower logs every message at INFO; our per-round line is the progress.
    logging.getLogger("flwr").setLevel(logging.WARNING)
    backend = {
        "client_resources": {"num_cpus": scenario.cpus_per_client, "num_gpus": 0.0},
        "init_args": {"num_cpus": max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2),
                      "logging_level": "ERROR", "log_to_driver": False},
    }
    sim_started = time.perf_counter()
    with DescendantTracker() as tracker:
        try:
            run_simulation(server_app, client_app, num_supernodes=scenario.clients, backend_config=backend)
        finally:
            sim_seconds = time.perf_counter() - sim_started
            lingering = tracker.reap()
    if lingering:
        say(f"ended {len(lingering)} Ray process(es) left behind by the simulation")
    if not finished:
        raise RuntimeError(f"the ServerApp did not finish; see the Flower log above and {out}")
    search, summary = finished[0]
    result: dict[str, Any] = {
        "scenario": {**asdict(scenario), "epsilons": list(scenario.epsilons)},
        "tiers": list(tiers),
        "tier_deadlines_ms": deadlines,
        "simulation_seconds": sim_seconds,
        **summary,
        "chosen_per_tier": {
            tier: ({m["name"]: m["arch"] for m in plan["modes"]} if plan else None)
            for tier, plan in summary.get("plans", {}).items()
        },
    }
    if search.score_history and scenario.dp_mode == "central":
        say(f"privacy-utility curve: {len(scenario.epsilons)} ε values × {scenario.utility_seeds} noise seeds")
        # Flower's node ids on Ray cannot be mapped back to partitions after the run, so the curve is
        # taken on an in-process replica of the same fleet (same scenario, client code and noise seed).
        send = inprocess_send(settings, scenario.clients)
        replica = FederatedSearch(config, rng_seed=scenario.noise_seed)
        replica.run(send, lambda: list(range(scenario.clients)))
        rescored = rescore_history(replica, send)
        curve = privacy_utility(
            replica.score_history, rescored, scenario.epsilons, config, replica.plan.clients, scenario.utility_seeds,
            scenario.seed,
        )
        write_text_atomic(out / "privacy_utility.json", json.dumps(curve, indent=1))
        png = plot_privacy_utility(curve, out / "privacy_utility.png")
        result["privacy_utility"] = {
            "json": str(out / "privacy_utility.json"),
            "png": str(png) if png else None,
            "curve": [{k: v for k, v in row.items() if k != "regrets"} for row in curve["curve"]],
        }
    result["front_pngs"] = plot_fronts(search, out)
    result["wall_seconds"] = time.perf_counter() - started
    write_text_atomic(out / "simulation.json", json.dumps(result, indent=1, default=_json_default))
    return result


def weight_round_line(info: Mapping[str, Any]) -> str:
    """One line about a weight round's result (its ``RoundResult.train`` info)."""
    def acc(a: Mapping[str, float] | None) -> str:
        return f"{a['largest']:.2f}/{a['smallest']:.2f} %" if a else "not measured"

    if info.get("status") != "ok":
        return f"weight round {info.get('status')} ({info.get('answered', 0)}/{info.get('asked', 0)} answered)"
    norm = info.get("mean_update_norm")
    return (f"weight round {info['answered']}/{info['asked']} trained, top-1 largest/smallest "
            f"{acc(info.get('accuracy_before'))} -> {acc(info.get('accuracy_after'))}, "
            f"mean update norm {'n/a' if norm is None else f'{norm:.3g}'}, noise std {info['noise_std']:.3g}, "
            f"ε charged {info['epsilon_charged']:.3g}")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)
