"""Claim: the supernet ranks subnets like training them from scratch does (Kendall τ ≥ 0.8).

Once-for-All's premise is that a subnet's accuracy *inherited* from the weight-sharing supernet
(after BatchNorm recalibration) ranks architectures the way their *stand-alone* accuracy (each
trained from scratch) does, so a search may use the former. This script measures that rank
agreement in one run and prints one JSON document:

1. the supernets: ``--supernet DIR [DIR ...]`` (``train_supernet`` output directories with
   ``supernet.pt`` and ``config.yaml``) or, without it, ``--ensemble`` K (default 4) trained here
   from ``--config`` (default the ``slim`` preset) with seeds ``seed … seed+K−1`` on one data
   split, into ``--out/member_k``;
2. ``--n-subnets`` (≥ 12) architectures spread over the space: a seeded pool is costed (MACs of the
   NetSpec) and one arch is drawn from each MACs quantile bin;
3. each one's supernet-inherited score on the validation split, per member
   (``SupernetEvaluator``: extract, BN recalibration on ``eval.bn_images`` training images,
   evaluate) and averaged over members: ``--score expected`` (default; the mean softmax
   probability of the true label) or ``top1``; the JSON gives τ for both, and per member;
4. each one's stand-alone top-1 on the same images: the extracted architecture re-initialised
   (seeded) and trained from scratch on the same training split (Adam, cosine LR) for
   ``--epochs`` epochs (a short schedule), ``--standalone-seeds`` times, averaged;
5. for each subnet set (``--seed S …``: each picks its own subnets) and for all of them pooled
   (the top-level figures, and ``goal_met``): Kendall τ-b and Spearman ρ between the two, the
   same for MACs alone (the proxy a supernet has to beat to be worth its training), per-subnet
   rows and timings, and the reference's own noise ceiling (``reference_noise``): from the
   seed-to-seed spread and the subnets' true spread, the τ a *perfect* ranker could reach
   against this reference.

    python -m benchmarks.supernet_ranking [--supernet DIR ...] [--ensemble 4] [--config YAML]
        [--score expected] [--epochs 5] [--standalone-seeds 5] [--eval-split val+test]
        [--reference-cache FILE.json] [--seed 0 [1 …]] [--quick]

Read ``kendall_tau`` against ``reference_noise.expected_tau_ceiling`` and
``kendall_tau_macs_vs_standalone``. A τ goal above the ceiling cannot be shown against the
reference whatever the supernet, so the defaults are chosen by the ceiling alone:

- the ``demo`` space is no place to measure ranking: on the embedded digits every one of its
  subnets trains to 95–97 % on its own, the subnets' true spread (~0.4 points) is no larger than
  one training's seed noise (~0.4 points on 1,500 images), and even 8 seeds leave the ceiling at
  0.77 (12 epochs);
- the ``slim`` preset adds elastic width (0.25–1×); its subnets train to 84–95 % in 5 epochs, a
  true spread of ~3.4 points against ~1.2 points of seed noise: ceiling 0.87 with 3 seeds,
  0.86–0.90 with 5 (four subnet sets). With 12 epochs its spread shrinks to ~1.2 points and the
  ceiling falls to 0.77, so the short schedule is the default.

The supernet side is noisy too, and that, not a bias, is what kept one supernet's top-1 at about
MACs' τ: two ``slim`` supernets that differ only in their training seed rank the same 96 subnets
with τ 0.76–0.80 against each other (two single stand-alone runs: 0.68). Both defaults cut that
noise, measured on six subnet sets (96 subnets; sets 4 and 5 drawn after every choice was made):

- ``--score expected``: each image adds its true-label probability instead of 0 or 1, so a few
  borderline images no longer swap two subnets; members then agree at τ 0.79–0.86, and one
  supernet's τ against the reference rises from 0.78 to 0.81 (mean of four seeds);
- ``--ensemble 4``: averaging four supernets averages their training noise out like the
  reference's five seeds do (τ 0.81 → 0.83 → 0.84 for 1, 2 and 4 members, expected score), for
  4 × 2.4 minutes of training.

The stand-alone reference is the expensive, noisy half (each run is a full training; seeds move
it by points). ``--reference-cache`` keeps every stand-alone run keyed by what determines it
(architecture, seed, schedule, data split, evaluation images): an interrupted benchmark resumes
where it stopped, and several supernets are ranked against the very same reference.

``--quick`` shrinks the training (supernet: one epoch per phase, at most 30 batches each;
stand-alone: one epoch of at most 40 batches; still ``--n-subnets`` × ``--standalone-seeds`` runs,
about 2 minutes on 2 cores): it checks the pipeline and gives rough numbers, not the claim.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from runtime.fileio import write_text_atomic
from search.arch import Arch
from search.cost.report import cost_netspec
from search.data import Dataset, batches
from search.predictors.mlp import kendall_tau, spearman
from search.space.mobilenetv3 import MobileNetV3Space
from search.supernet.evaluation import SCORES, SupernetEnsembleEvaluator, SupernetEvaluator
from search.supernet.model import MobileNetV3Supernet, NetSpecModule, resize_input
from search.supernet.schedule import SupernetTrainConfig, make_space
from search.supernet.trained import load_splits

DEFAULT_CONFIG = "slim"
DEFAULT_ENSEMBLE = 4
GOAL_TAU = 0.8


def quick_config(cfg: SupernetTrainConfig) -> SupernetTrainConfig:
    """``cfg`` shrunk for a smoke run: one epoch per phase, at most 30 batches per epoch."""
    phases = tuple(dataclasses.replace(p, epochs=1) for p in cfg.phases)
    data = dataclasses.replace(cfg.data, max_batches=30)
    return dataclasses.replace(cfg, phases=phases, data=data)


def same_split_and_space(cfg: SupernetTrainConfig) -> tuple[Any, ...]:
    """What ensemble members must share: the space and every input of the data split (``load_splits``)."""
    d = cfg.data
    return (cfg.space, cfg.alignment, d.dataset, d.split, d.proxy_fraction, cfg.split_seed)


def get_supernets(
    args: argparse.Namespace,
) -> tuple[list[MobileNetV3Supernet], SupernetTrainConfig, list[dict[str, Any]]]:
    """The ensemble's supernets (loaded, or trained here one seed each), member 0's config, how each was obtained.

    Members trained here are ``--config`` re-seeded to ``seed + k`` on the config's data split,
    into ``--out/member_k``. Given ones (``--supernet DIR ...``) must share one space and split.
    """
    nets, infos = [], []
    cfg: SupernetTrainConfig | None = None
    sources: list[str | None] = list(args.supernet) if args.supernet else [None] * args.ensemble
    for k, given in enumerate(sources):
        started = time.perf_counter()
        if given:
            path = Path(given)
            weights = path / "supernet.pt" if path.is_dir() else path
            config_path = Path(args.config) if args.config else weights.parent / "config.yaml"
            member_cfg = SupernetTrainConfig.load(config_path)
        else:
            from search.supernet.training import train_supernet  # the colleague's trainer

            base = SupernetTrainConfig.load(args.config or DEFAULT_CONFIG)
            member_cfg = base.reseeded(base.seed + k) if len(sources) > 1 else base
            if args.quick:
                member_cfg = quick_config(member_cfg)
            out = Path(args.out) / f"member_{k}" if len(sources) > 1 else Path(args.out)
            if not args.no_progress:
                print(f"training supernet {k + 1}/{len(sources)} (seed {member_cfg.seed}) into {out}", file=sys.stderr)
            train_supernet(member_cfg, out, progress=not args.no_progress)
            weights = out / "supernet.pt"
        if cfg is None:
            cfg = member_cfg
        elif same_split_and_space(member_cfg) != same_split_and_space(cfg):
            raise SystemExit(
                f"--supernet {given}: another space, alignment or data split than {sources[0]}; "
                "ensemble members differ in their training seed only (fleetnas supernet train --seed N)"
            )
        net = MobileNetV3Supernet(make_space(member_cfg.space), member_cfg.alignment)
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        net.eval()
        nets.append(net)
        infos.append(
            {
                "weights": str(weights),
                "seed": member_cfg.seed,
                "trained_here": not given,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    assert cfg is not None
    return nets, cfg, infos


def pick_subnets(
    space: MobileNetV3Space, alignment: int, n: int, seed: int, pool: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct canonical encodings stratified by MACs (one per quantile bin), and their MACs."""
    rng = np.random.default_rng(seed)
    codes = np.unique(space.canonicalise(space.sample(pool, rng)), axis=0)
    macs = np.array([cost_netspec(space.to_netspec(space.decode(c), alignment)).macs for c in codes], dtype=np.int64)
    order = np.argsort(macs, kind="stable")
    bins = np.array_split(order, n)
    chosen = np.array([rng.choice(b) for b in bins if len(b)])
    return codes[chosen], macs[chosen]


def train_standalone(
    sub: NetSpecModule,
    arch: Arch,
    train: Dataset,
    val: Dataset,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    max_batches: int | None,
    optimizer: str = "adam",
) -> float:
    """Top-1 (%) on ``val`` of ``sub`` after training it from its current weights on ``train``."""
    resolution = int(arch["resolution"])
    steps_per_epoch = math.ceil(len(train) / batch_size)
    if max_batches:
        steps_per_epoch = min(steps_per_epoch, max_batches)
    total = max(1, epochs * steps_per_epoch)
    # Adam like the demo supernet: with SGD (lr 0.05) these small nets sat at 35-58 % after four
    # epochs, too noisy a reference to rank anything against.
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(sub.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(sub.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=3e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    sub.train()
    for epoch in range(epochs):
        for i, (x, y) in enumerate(batches(train, batch_size, seed=seed + epoch)):
            if i == steps_per_epoch:
                break
            loss = F.cross_entropy(sub(resize_input(torch.from_numpy(x), resolution)), torch.from_numpy(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    sub.eval()
    correct = 0
    with torch.no_grad():
        for x, y in batches(val, 256, shuffle=False):
            pred = sub(resize_input(torch.from_numpy(x), resolution)).argmax(dim=1)
            correct += int((pred == torch.from_numpy(y)).sum())
    return 100.0 * correct / len(val)


class ReferenceCache:
    """Stand-alone accuracies by run key, persisted (atomically) after every run; in memory without a path."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.runs: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.runs = {str(k): float(v) for k, v in data["runs"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SystemExit(
                    f"--reference-cache {self.path}: not a reference cache ({exc}); "
                    'expected {"runs": {key: accuracy}}; move it away to start a new one'
                ) from None

    @staticmethod
    def key(**what: Any) -> str:
        """A stable key for a stand-alone run from everything that determines its result."""
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def get(self, key: str) -> float | None:
        """The cached accuracy of run ``key`` or None."""
        return self.runs.get(key)

    def put(self, key: str, accuracy: float) -> None:
        """Remember run ``key``; persisted at once so an interrupted benchmark resumes after it."""
        self.runs[key] = float(accuracy)
        if self.path is not None:
            write_text_atomic(self.path, json.dumps({"runs": self.runs}, indent=1, sort_keys=True))


def reference_key(
    cfg: SupernetTrainConfig,
    args: argparse.Namespace,
    code: np.ndarray,
    init_seed: int,
    data_seed: int,
    epochs: int,
    max_batches: int | None,
) -> str:
    """The reference cache's key of one stand-alone run: everything that determines its accuracy.

    The supernets' training seeds are not part of it: every ensemble, and one supernet alone, is
    ranked against the same runs.
    """
    return ReferenceCache.key(
        code=[int(v) for v in code],
        space=cfg.space,
        alignment=cfg.alignment,
        init_seed=init_seed,
        data_seed=data_seed,
        epochs=epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        batch_size=cfg.data.batch_size,
        max_batches=max_batches,
        # split_seed has its own entry (the effective seed); leaving the field out keeps caches
        # written before it existed valid
        data={k: v for k, v in dataclasses.asdict(cfg.data).items() if k != "split_seed"},
        split_seed=cfg.split_seed,
        eval_split=args.eval_split,
        # torch's reductions differ with the thread count, and a training amplifies that to a
        # point or so of accuracy: a run on 1 thread is not the run on 2
        threads=args.threads,
    )


def reference_noise(runs: np.ndarray) -> dict[str, Any] | None:
    """How far the stand-alone reference's own noise caps τ: seed and between-subnet spread, expected τ ceiling.

    ``runs`` is (subnets, seeds). The seed-to-seed variance ``e²`` of one run (pooled over subnets)
    and the observed variance of the seed means give the variance of the subnets' true accuracies,
    ``s² = var(means) − e²/S``; a perfect ranker then correlates with the S-seed reference at
    ``ρ = s / √(s² + e²/S)``, i.e. Kendall τ ``(2/π)·asin ρ`` for Gaussian noise (Greiner's relation).
    A τ goal above that ceiling cannot be shown against this reference, whatever the supernet.
    None with a single seed (no noise estimate).
    """
    seeds = runs.shape[1]
    if seeds < 2:
        return None
    seed_var = float(np.mean(np.var(runs, axis=1, ddof=1)))
    means = runs.mean(axis=1)
    true_var = max(float(np.var(means, ddof=1)) - seed_var / seeds, 0.0)
    rho = math.sqrt(true_var / (true_var + seed_var / seeds)) if true_var > 0 else 0.0
    single = [kendall_tau(runs[:, k], np.delete(runs, k, axis=1).mean(axis=1)) for k in range(seeds)]
    return {
        "seed_std_points": math.sqrt(seed_var),
        "between_subnet_std_points": math.sqrt(true_var),
        "reliability_of_seed_mean": rho**2,
        "expected_tau_ceiling": 2.0 / math.pi * math.asin(rho),
        "tau_one_seed_vs_other_seeds": single,
    }


def fresh_subnet(space: MobileNetV3Space, alignment: int, arch: Arch, seed: int) -> NetSpecModule:
    """``arch`` as a plain module with fresh (seeded) initial weights: cut from an untrained supernet."""
    torch.manual_seed(seed)
    return MobileNetV3Supernet(space, alignment).extract(arch)


def measure_set(
    set_seed: int,
    args: argparse.Namespace,
    cfg: SupernetTrainConfig,
    nets: list[MobileNetV3Supernet],
    train: Dataset,
    val: Dataset,
    recalibration_images: int,
    cache: ReferenceCache,
    epochs: int,
    max_batches: int | None,
) -> dict[str, Any]:
    """One subnet set: its subnets' MACs, members' scores, stand-alone runs (arrays by subnet) and JSON rows.

    ``set_seed`` picks the subnets, the recalibration images and the stand-alone runs' seeds.
    """
    space = nets[0].space
    codes, macs = pick_subnets(space, cfg.alignment, args.n_subnets, set_seed)
    ensemble = SupernetEnsembleEvaluator(
        [
            SupernetEvaluator(n, space, train, val, recalibration_images=recalibration_images, seed=set_seed)
            for n in nets
        ]
    )
    t0 = time.perf_counter()
    # (subnets, members): both scores from one evaluation pass per subnet and member
    scored = [ensemble.member_scores(space.decode(code)) for code in codes]
    member_top1 = np.array([[m.top1 for m in row] for row in scored])
    member_expected = np.array([[m.expected for m in row] for row in scored])
    eval_seconds = time.perf_counter() - t0
    reused = 0
    rows = []
    seconds_per_subnet = np.zeros(len(codes))
    all_runs = np.zeros((len(codes), args.standalone_seeds))
    for i, (code, mac) in enumerate(zip(codes, macs, strict=True)):
        arch = space.decode(code)
        t1 = time.perf_counter()
        for rep in range(args.standalone_seeds):
            init_seed = set_seed + 1000 + i + 100_000 * rep
            key = reference_key(cfg, args, code, init_seed, set_seed + rep, epochs, max_batches)
            cached = cache.get(key)
            if cached is not None:
                all_runs[i, rep] = cached
                reused += 1
                continue
            sub = fresh_subnet(space, cfg.alignment, arch, init_seed)
            acc = train_standalone(
                sub, arch, train, val, epochs, args.lr, cfg.data.batch_size, set_seed + rep, max_batches, args.optimizer
            )
            cache.put(key, acc)
            all_runs[i, rep] = acc
        seconds_per_subnet[i] = time.perf_counter() - t1
        top1, expected, standalone = member_top1[i].mean(), member_expected[i].mean(), all_runs[i].mean()
        rows.append(
            {
                "arch": arch.to_json(),
                "code": [int(v) for v in code],
                "macs": int(mac),
                "supernet_accuracy": float(top1),
                "supernet_expected_accuracy": float(expected),
                "member_accuracy": [float(v) for v in member_top1[i]],
                "member_expected_accuracy": [float(v) for v in member_expected[i]],
                "standalone_accuracy": float(standalone),
                "standalone_runs": [float(r) for r in all_runs[i]],
                "standalone_seconds": round(float(seconds_per_subnet[i]), 2),
            }
        )
        if not args.no_progress:
            print(
                f"[set {set_seed}: {i + 1}/{len(codes)}] macs {mac:,} supernet top-1 {top1:.2f}% "
                f"expected {expected:.2f}% standalone {standalone:.2f}% ({seconds_per_subnet[i]:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    return {
        "macs": macs.astype(np.float64),
        "member_top1": member_top1,
        "member_expected": member_expected,
        "standalone_runs": all_runs,
        "standalone": all_runs.mean(axis=1),
        "standalone_seconds": seconds_per_subnet,
        "rows": rows,
        "reused": reused,
        "eval_seconds": eval_seconds,
    }


def rank_summary(m: dict[str, Any], score: str) -> dict[str, Any]:
    """Rank agreement of subnets ``m`` (``measure_set``'s arrays, one set or several pooled) under ``score``."""
    top1, expected = m["member_top1"].mean(axis=1), m["member_expected"].mean(axis=1)
    members = m["member_expected"] if score == "expected" else m["member_top1"]
    inherited, standalone, runs = members.mean(axis=1), m["standalone"], m["standalone_runs"]
    k = members.shape[1]
    return {
        "kendall_tau": kendall_tau(inherited, standalone),
        "supernet_score": score,
        "spearman": spearman(inherited, standalone),
        "kendall_tau_by_score": {"top1": kendall_tau(top1, standalone), "expected": kendall_tau(expected, standalone)},
        "ensemble_size": k,
        "kendall_tau_per_member": {
            "top1": [kendall_tau(m["member_top1"][:, j], standalone) for j in range(k)],
            "expected": [kendall_tau(m["member_expected"][:, j], standalone) for j in range(k)],
        },
        "kendall_tau_between_members": [
            kendall_tau(members[:, a], members[:, b]) for a in range(k) for b in range(a + 1, k)
        ],
        "kendall_tau_macs_vs_standalone": kendall_tau(m["macs"], standalone),
        "kendall_tau_per_standalone_seed": [kendall_tau(inherited, runs[:, j]) for j in range(runs.shape[1])],
        "reference_noise": reference_noise(runs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--supernet",
        nargs="+",
        metavar="DIR",
        help="train_supernet output dir(s) (or supernet.pt; then --config); several: an ensemble, scores averaged",
    )
    parser.add_argument(
        "--ensemble",
        type=int,
        default=DEFAULT_ENSEMBLE,
        metavar="K",
        help="without --supernet: train K supernets (the config's seed, seed+1, …; one data split) "
        f"and average their scores [{DEFAULT_ENSEMBLE}]",
    )
    parser.add_argument("--config", help=f"supernet training YAML or preset name [{DEFAULT_CONFIG}]")
    parser.add_argument("--out", default="runs/supernet_ranking", help="where to train the supernet if not given")
    parser.add_argument("--n-subnets", type=int, default=16, help="subnets ranked, one per MACs quantile bin [16]")
    parser.add_argument("--epochs", type=int, default=5, help="stand-alone training epochs per subnet [5]")
    parser.add_argument("--lr", type=float, default=0.005, help="stand-alone peak learning rate [0.005]")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam", help="stand-alone optimizer [adam]")
    parser.add_argument(
        "--standalone-seeds",
        type=int,
        default=5,
        help="stand-alone trainings per subnet, averaged; ≥ 2 gives the noise ceiling [5]",
    )
    parser.add_argument(
        "--eval-split",
        choices=("val", "val+test"),
        default="val+test",
        help="images both accuracies are measured on; val+test doubles them (less sampling noise) [val+test]",
    )
    parser.add_argument(
        "--recalibration-images", type=int, default=0, help="BN recalibration images [the config's eval.bn_images]"
    )
    parser.add_argument(
        "--reference-cache",
        help="JSON file keeping every stand-alone run (resume; reuse the reference across supernets)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        metavar="S",
        help="subnet set(s): S picks --n-subnets subnets and seeds their stand-alone runs; several sets are "
        "ranked one by one and pooled (the top-level τ and goal_met are the pooled ones) [0]",
    )
    parser.add_argument(
        "--score",
        choices=SCORES,
        default="expected",
        help="the supernet's ranking score: mean true-label probability (expected) or top-1; "
        "the JSON gives τ for both [expected]",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, rough numbers")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.n_subnets < 12:
        parser.error("--n-subnets: need at least 12")
    if args.ensemble < 1:
        parser.error("--ensemble: need at least 1")
    if len(set(args.seed)) != len(args.seed):
        parser.error(f"--seed: {args.seed} repeats a subnet set")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    nets, cfg, supernet_info = get_supernets(args)
    parts = load_splits(cfg)
    train, val = parts[0], parts[1]
    if args.eval_split == "val+test":
        if len(parts) < 3:
            parser.error("--eval-split val+test: the supernet's config has no test split")
        val = dataclasses.replace(val, x=np.concatenate([val.x, parts[2].x]), y=np.concatenate([val.y, parts[2].y]))
    if args.standalone_seeds < 1:
        parser.error("--standalone-seeds: need at least 1")
    epochs = 1 if args.quick else args.epochs
    max_batches = 40 if args.quick else None

    recalibration_images = args.recalibration_images or cfg.eval.bn_images
    cache = ReferenceCache(args.reference_cache)
    sets = [
        measure_set(s, args, cfg, nets, train, val, recalibration_images, cache, epochs, max_batches) for s in args.seed
    ]
    pooled = {key: np.concatenate([m[key] for m in sets]) for key in sets[0] if isinstance(sets[0][key], np.ndarray)}
    summary = rank_summary(pooled, args.score)
    result = {
        "claim": "supernet-inherited accuracy ranks subnets like stand-alone training",
        "goal_kendall_tau": GOAL_TAU,
        **summary,
        "goal_met": bool(summary["kendall_tau"] >= GOAL_TAU),
        "subnet_sets": list(args.seed),
        "n_subnets": len(pooled["standalone"]),
        "quick": bool(args.quick),
        "dataset": {"name": cfg.data.dataset, "train": len(train), "eval": len(val), "eval_split": args.eval_split},
        "supernets": supernet_info,
        "standalone_training": {
            "epochs": epochs,
            "seeds_averaged": args.standalone_seeds,
            "runs_reused_from_cache": sum(m["reused"] for m in sets),
            "reference_cache": args.reference_cache,
            "max_batches_per_epoch": max_batches,
            "lr": args.lr,
            "batch_size": cfg.data.batch_size,
            "optimizer": "adam, cosine" if args.optimizer == "adam" else "sgd nesterov 0.9, cosine, wd 3e-5",
        },
        "recalibration_images": recalibration_images,
        "timing": {
            "supernet_eval_seconds_total": round(sum(m["eval_seconds"] for m in sets), 2),
            "supernet_eval_seconds_per_subnet": round(
                sum(m["eval_seconds"] for m in sets) / len(pooled["standalone"]), 3
            ),
            "standalone_seconds_total": round(float(pooled["standalone_seconds"].sum()), 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        },
        "platform": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "sets": [
            {"seed": seed, **rank_summary(m, args.score), "rows": m["rows"]}
            for seed, m in zip(args.seed, sets, strict=True)
        ],
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
