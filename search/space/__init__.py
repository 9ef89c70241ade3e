"""Search spaces: one interface (``SearchSpace``), concrete spaces, and a loader by name or file."""

from __future__ import annotations

from pathlib import Path

from search.space.base import Encoding, SearchSpace, SpaceError
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space
from search.space.nasbench201 import NasBench201Space

PRESETS = ("imagenet", "mnist")


def load_space(spec: str | Path = "imagenet") -> SearchSpace:
    """A space from a preset name (``imagenet``, ``mnist``) or a YAML configuration file."""
    text = str(spec)
    if text.split("-", 1)[0] == "nasbench201":
        return NasBench201Space.from_name(text)
    if text in PRESETS:
        return MobileNetV3Space(MobileNetV3Config.preset(text))
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return MobileNetV3Space(MobileNetV3Config.from_yaml(path))
    raise SpaceError(
        f"unknown space {text!r}; allowed: {', '.join(PRESETS)}, nasbench201[-cifar10|-cifar100|-imagenet16-120] "
        "or a path to a .yaml file"
    )


__all__ = [
    "PRESETS",
    "Encoding",
    "MobileNetV3Config",
    "MobileNetV3Space",
    "NasBench201Space",
    "SearchSpace",
    "SpaceError",
    "load_space",
]
