"""``fleetnas federate simulate``: federated architecture search over a simulated fleet (Flower + Ray).

``register`` adds the ``federate`` command group; flwr, Ray and torch are imported inside the
handler, so ``fleetnas --help`` stays cheap and works without the federation extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from runtime.cli_common import CliError, add_json_flag, emit, format_table

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    """Add ``fleetnas federate`` with its ``simulate`` subcommand."""
    p = subparsers.add_parser(
        "federate",
        help="federated architecture search on Flower under differential privacy (simulate a fleet)",
        description="Federated architecture search: devices search locally on their own data and hardware, "
        "the server aggregates architectures and scores under differential privacy and reports the (ε, δ) spent.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="federate_command", metavar="COMMAND", required=True)
    s = sub.add_parser(
        "simulate",
        help="run a federated search over N simulated devices on Flower's Simulation Engine",
        description="Simulate a heterogeneous fleet — hardware tiers from the catalogue, non-IID Dirichlet "
        "partitions of the embedded MNIST digits, battery traces that take devices offline — and run the "
        "federated search on Flower's Simulation Engine (Ray). Each round: local NSGA-II on every device, a "
        "private set union of the proposals, private score aggregation, per-tier fronts and mode plans. "
        "Writes per-round JSON, a privacy-utility curve (ε vs regret against the non-private choice) and "
        "front plots to --out; one progress line per round goes to stderr.\n\n"
        "Without --predictor the demo supernet is trained and its per-class accuracy predictor fitted "
        "first (cached in --cache-dir, a few minutes the first time).",
        epilog="examples:\n"
        "  fleetnas federate simulate --clients 20 --rounds 3 --epsilon 1 --out out/fed\n"
        "  fleetnas federate simulate --clients 100 --rounds 5 --epsilon 1 --alpha 0.3 --out out/fed100 --json\n"
        "  fleetnas federate simulate --clients 10 --rounds 2 --no-dp --out out/fed-nodp\n"
        "  fleetnas federate simulate --clients 10 --rounds 3 --weight-rounds 2 --out out/fed-weights",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--clients", type=int, default=20, metavar="N", help="simulated devices [20]")
    s.add_argument("--rounds", type=int, default=5, metavar="R", help="search rounds [5]")
    s.add_argument("--epsilon", type=float, default=1.0, metavar="E", help="total privacy budget ε of the run [1.0]")
    s.add_argument("--delta", type=float, default=1e-5, help="δ of the run [1e-5]")
    s.add_argument("--no-dp", action="store_true", help="exact aggregation, no noise (ε is not spent)")
    s.add_argument("--local-dp", action="store_true", help="each device noises its own scores (local variant)")
    s.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration of the label skew [0.5]")
    s.add_argument("--seed", type=int, default=0, help="seed of the fleet, partitions and searches [0]")
    s.add_argument("--predictor", metavar="FILE", help="per-class AccuracyPredictor .npz [the demo supernet's]")
    s.add_argument("--space", metavar="PRESET|FILE", help="the predictor's space [space.json next to it, else mnist]")
    s.add_argument("--cache-dir", default="out/demo/artefacts",
                   help="where the demo predictor is built or reused (shared with fleetnas demo) [out/demo/artefacts]")
    s.add_argument("--top-k", type=int, default=4, help="architectures each device proposes per round [4]")
    s.add_argument("--budget", type=int, default=120, help="local NSGA-II evaluations per device per round [120]")
    s.add_argument("--seed-pool", type=int, default=24, help="public random candidates scored each round [24]")
    s.add_argument("--clip", type=float, default=0.1, help="L2 clip of a device's score vector [0.1]")
    s.add_argument("--deadline-ms", type=float, metavar="MS",
                   help="one latency budget for every tier (an app's requirement: slower tiers get smaller "
                        "networks) [each tier's own 60 %% latency quantile]")
    s.add_argument("--no-baseline", action="store_true",
                   help="no public per-tier score baseline (central predictor, catalogue deadlines)")
    s.add_argument("--utility-seeds", type=int, default=50, help="noise seeds per ε for the privacy-utility curve [50]")
    s.add_argument("--weight-rounds", type=_rounds, default=(), metavar="R,R,...",
                   help="rounds that also fine-tune the supernet on the devices and average it (DP-FedAvg) [none]")
    s.add_argument("--supernet", metavar="DIR|NPZ",
                   help="initial supernet of the weight rounds [the --cache-dir's, trained if missing]")
    s.add_argument("--weight-clip", type=float, default=3.0,
                   help="L2 clip of a device's supernet update in weight rounds [3.0]")
    s.add_argument("--train-steps", type=int, default=5, help="local fine-tuning steps per weight round [5]")
    s.add_argument("--train-lr", type=float, default=0.003, help="local fine-tuning learning rate (Adam) [0.003]")
    s.add_argument("--out", required=True, help="output directory")
    add_json_flag(s)
    s.set_defaults(func=_simulate)

    e = sub.add_parser(
        "export-weights",
        help="write a trained supernet as a weights .npz a torch-free ServerApp can start weight rounds from",
        description="Convert a `fleetnas supernet train` output directory (supernet.pt + config.yaml) into one "
        ".npz (arrays, alignment and training configuration; no pickle) for the ServerApp's run_config key "
        "'supernet-weights'. Needs torch here, not on the server.",
    )
    e.add_argument("--supernet", required=True, metavar="DIR", help="trained supernet directory")
    e.add_argument("--out", required=True, metavar="FILE.npz", help="weights file to write")
    add_json_flag(e)
    e.set_defaults(func=_export_weights)


def _rounds(text: str) -> tuple[int, ...]:
    """Round numbers from '2,4' (argparse type)."""
    try:
        rounds = tuple(int(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"need comma-separated round numbers such as 2,4, got {text!r}") from None
    if any(r < 1 for r in rounds):
        raise argparse.ArgumentTypeError(f"round numbers start at 1, got {text!r}")
    return rounds


def _export_weights(args: argparse.Namespace) -> int:
    from federation.weights import WeightsError, load_weights, save_weights

    try:
        weights = load_weights(args.supernet)
        digest = save_weights(args.out, weights)
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    result = {"out": args.out, "sha256": digest, "arrays": len(weights.arrays), "alignment": weights.alignment}
    emit(args, result, lambda r: f"wrote {r['out']} ({r['arrays']} arrays, sha256 {r['sha256'][:16]}…)")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from simulations.federated_search import Scenario, ScenarioError, run_scenario, weight_round_line

    if args.no_dp and args.local_dp:
        raise CliError("--no-dp and --local-dp exclude each other")
    try:
        scenario = Scenario(
            clients=args.clients,
            rounds=args.rounds,
            epsilon=args.epsilon,
            delta=args.delta,
            dp_mode="off" if args.no_dp else ("local" if args.local_dp else "central"),
            alpha=args.alpha,
            seed=args.seed,
            budget=args.budget,
            top_k=args.top_k,
            seed_pool=args.seed_pool,
            predictor=args.predictor,
            space=args.space,
            cache_dir=args.cache_dir,
            utility_seeds=args.utility_seeds,
            clip=args.clip,
            deadline_ms=args.deadline_ms,
            baseline=not args.no_baseline,
            weight_rounds=tuple(args.weight_rounds),
            supernet=args.supernet,
            weight_clip=args.weight_clip,
            train_steps=args.train_steps,
            train_lr=args.train_lr,
        )
    except ScenarioError as exc:
        raise CliError(str(exc)) from None
    try:
        result = run_scenario(scenario, args.out, progress=True)
    except KeyboardInterrupt:
        print(f"fleetnas: interrupted; per-round results so far are in {args.out}", file=sys.stderr)
        raise

    def human(r: dict[str, Any]) -> str:
        dp = r["dp"]
        lines = [
            f"federated search: {r['scenario']['clients']} clients, {r['rounds_run']}/{r['rounds_planned']} rounds "
            f"in {r['wall_seconds']:.0f} s"
            + (" (stopped: privacy budget)" if r["stopped_by_budget"] else ""),
            f"privacy: {dp['mode']}, ε spent {dp['epsilon_spent']:.3g} of {dp['epsilon_budget']:g} "
            f"(δ {dp['delta_spent']:.2g}), noise multiplier {dp['noise_multiplier']:.3g}",
        ]
        if r.get("chosen"):
            lines.append(f"global choice: score {r['chosen']['score']:.4f}, arch {r['chosen']['arch']}")
        weights = r.get("weights") or {}
        for row in weights.get("rounds", []):
            lines.append(f"round {row['round']}: {weight_round_line(row)}")
        if weights.get("supernet_dir"):
            lines.append(f"global supernet saved to {weights['supernet_dir']}")
        rows = []
        for tier, modes in sorted(r.get("chosen_per_tier", {}).items()):
            high = modes.get("high") if modes else None
            rows.append([tier, r["tier_deadlines_ms"].get(tier), str(high) if high else "no plan"])
        if rows:
            lines.append(format_table(["tier", "deadline ms", "high mode"], rows))
        if "privacy_utility" in r:
            pu = [[c["epsilon"], c["relative_regret_pct_mean"], c["within_1pct_share"]]
                  for c in r["privacy_utility"]["curve"]]
            lines.append(format_table(["ε", "mean regret %", "within 1 %"], pu))
        lines.append(f"written to {args.out}")
        return "\n".join(lines)

    emit(args, result, human)
    return 0
