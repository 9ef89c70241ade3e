"""End to end: a tiny in-process fleet runs a federated search with one supernet weight round (torch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from federation.client_app import ClientSettings
from federation.dp import DPConfig
from federation.server import STATE_FILE, FederatedSearch, FederationConfig
from federation.server_app import prepare_supernet, save_supernet
from simulations.federated_search import inprocess_send, inprocess_task
from tests.federation.conftest import SMALL_SPACE, TIERS


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A (randomly initialised) supernet of the small space, written as a `fleetnas supernet train` directory."""
    import torch

    from search.space.mobilenetv3 import MobileNetV3Space
    from search.supernet.model import MobileNetV3Supernet
    from search.supernet.schedule import SupernetTrainConfig

    root = tmp_path_factory.mktemp("supernet")
    torch.manual_seed(0)
    net = MobileNetV3Supernet(MobileNetV3Space(SMALL_SPACE), 8)
    cfg = SupernetTrainConfig.from_dict({"space": {k: v for k, v in vars(SMALL_SPACE).items()}, "alignment": 8,
                                         "data": {"dataset": "mnist5k", "split": [0.7, 0.15, 0.15]}})
    (root / "config.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict(), default=list))))
    torch.save(net.state_dict(), root / "supernet.pt")
    return root


@pytest.mark.slow
def test_one_weight_round_on_a_tiny_fleet(supernet_dir: Path, class_predictor_path: Path, tmp_path: Path) -> None:
    from search.supernet.trained import TrainedSupernet

    clients = 4
    config = FederationConfig(
        space=SMALL_SPACE, rounds=2, budget=30, top_k=2, seed_pool=6, min_nodes=clients, timeout_s=None,
        dp=DPConfig(mode="central", epsilon=8.0, clip=0.1, seed=0), weight_rounds=(1,), train_steps=2,
        train_lr=0.003, weight_clip=2.0,
    )
    settings = ClientSettings(predictor=str(class_predictor_path), tiers=TIERS, data_seed=0)
    out = tmp_path / "out"
    search = FederatedSearch(config, out_dir=out, rng_seed=0)
    prepare_supernet(search, supernet_dir)
    assert search.supernet_probe is not None  # torch is here: the global supernet is measured
    initial = {k: np.array(v) for k, v in search.supernet_state.items()}
    with inprocess_task():
        summary = search.run(inprocess_send(settings, clients, search.global_supernet), lambda: list(range(clients)))
    saved = save_supernet(search, out, summary)

    assert summary["rounds_run"] == 2 and [r["status"] for r in summary["rounds"]] == ["ok", "ok"]
    weights = summary["weights"]
    (row,) = weights["rounds"]
    assert row["round"] == 1 and row["status"] == "ok" and row["answered"] == clients
    for key in ("accuracy_before", "accuracy_after"):
        assert set(row[key]) == {"largest", "smallest"} and all(0.0 <= v <= 100.0 for v in row[key].values())
    assert row["mean_update_norm"] > 0 and row["clip"] == 2.0
    assert row["noise_std"] == pytest.approx(search.plan.weight_sigma * 2.0 / clients)
    assert row["epsilon_charged"] > 0 and summary["dp"]["epsilon_spent"] <= 8.0 + 1e-9
    assert weights["accuracy_initial"] == row["accuracy_before"] and weights["accuracy_final"] == row["accuracy_after"]
    # the weights changed, the BatchNorm step counters (not federated) did not
    assert any(not np.array_equal(search.supernet_state[k], v) for k, v in initial.items())
    counters = [k for k in initial if k.endswith("num_batches_tracked")]
    assert counters and all(np.array_equal(search.supernet_state[k], initial[k]) for k in counters)
    # the final global supernet loads as a trained supernet, with exactly the server's weights
    assert saved == out / "supernet" and weights["supernet_dir"] == str(saved)
    loaded = TrainedSupernet.load(saved)
    state = loaded.net.state_dict()
    assert all(np.array_equal(state[k].numpy(), search.supernet_state[k]) for k in search.supernet_state)
    assert json.loads((out / "summary.json").read_text())["weights"]["supernet_dir"] == str(saved)
    # state.json names the weights file by digest: a resumed run continues from these weights
    record = json.loads((out / STATE_FILE).read_text())["supernet"]
    assert record["sha256"] == search.global_supernet().digest and (out / record["file"]).is_file()
