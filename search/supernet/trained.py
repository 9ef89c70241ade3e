"""A trained supernet loaded back from a ``fleetnas supernet train`` output directory (torch).

The directory holds ``config.yaml`` (the exact training configuration) and ``supernet.pt`` (the
weights, a plain ``state_dict``). ``TrainedSupernet.load`` rebuilds the space and the network and
re-creates the data splits exactly as training drew them (same dataset, proxy and seed), so the
validation split used for search and the test split used for the bundle's reported accuracy
are the ones training never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from search.data import Dataset, load_dataset, proxy, split
from search.space.mobilenetv3 import MobileNetV3Space
from search.supernet.model import MobileNetV3Supernet
from search.supernet.schedule import SupernetConfigError, SupernetTrainConfig, make_space

__all__ = ["TrainedSupernet", "load_splits"]

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "supernet.pt"


def load_splits(cfg: SupernetTrainConfig) -> tuple[Dataset, ...]:
    """The (train, validation[, test]) datasets exactly as ``train_supernet`` splits them for ``cfg``."""
    d = cfg.data
    ds = load_dataset(d.dataset)
    if d.proxy_fraction < 1.0:
        ds = proxy(ds, d.proxy_fraction, seed=cfg.split_seed)
    return tuple(split(ds, d.split, seed=cfg.split_seed))


@dataclass(frozen=True)
class TrainedSupernet:
    """A trained supernet with its configuration, space and data splits (``test`` may be None)."""

    root: Path
    config: SupernetTrainConfig
    space: MobileNetV3Space
    net: MobileNetV3Supernet
    train: Dataset
    val: Dataset
    test: Dataset | None

    @classmethod
    def load(cls, root: str | Path) -> TrainedSupernet:
        """Load ``root`` (a training output directory); raises SupernetConfigError naming a missing file."""
        path = Path(root)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise SupernetConfigError(
                    f"{path}: no {name} — not a `fleetnas supernet train` output directory, or training is unfinished"
                )
        cfg = SupernetTrainConfig.load(path / CONFIG_FILE)
        space = make_space(cfg.space)
        net = MobileNetV3Supernet(space, cfg.alignment)
        net.load_state_dict(torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        net.eval()
        parts = load_splits(cfg)
        return cls(path, cfg, space, net, parts[0], parts[1], parts[2] if len(parts) > 2 else None)
