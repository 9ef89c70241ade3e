"""Search spaces: one interface (``SearchSpace``), concrete spaces, and a loader by name or file."""

from __future__ import annotations

from pathlib import Path

from search.space.base import Encoding, SearchSpace, SpaceError
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

PRESETS = ("imagenet", "mnist")


def load_space(spec: str | Path = "imagenet") -> SearchSpace:
    """A space from a preset name (``imagenet``, ``mnist``) or a YAML configuration file."""
    text = str(spec)
    if text in PRESETS:
        return MobileNetV3Space(MobileNetV3Config.preset(text))
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return MobileNetV3Space(MobileNetV3Config.from_yaml(path))
    raise SpaceError(f"unknown space {text!r}; allowed: {', '.join(PRESETS)} or a path to a .yaml file")


__all__ = [
    "PRESETS",
    "Encoding",
    "MobileNetV3Config",
    "MobileNetV3Space",
    "SearchSpace",
    "SpaceError",
    "load_space",
]
