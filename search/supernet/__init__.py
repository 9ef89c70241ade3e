"""Once-for-All weight-sharing supernet over ``MobileNetV3Space`` (PyTorch).

``elastic``: elastic layers (leading channels, the 7→5→3 kernel transform chain, importance
sorting); ``model``: ``MobileNetV3Supernet`` (``set_active`` / ``forward`` / ``extract``), the plain
``NetSpecModule`` an extracted subnet is, ``recalibrate_bn`` and ``resize_input``; ``export``: ONNX
export with BatchNorm folded, and NetSpec-named weights for ``runtime.onnx_builder``;
``evaluation``: ``SupernetEvaluator``, subnet accuracy (BN recalibrated, cached) for ``SpaceProblem``.

torch is imported only inside this package's modules (and, elsewhere in ``search``, the
compression modules). Importing the package itself does not import torch: the names below load
their module on first use, so ``import search.supernet`` stays cheap and torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from search.supernet.elastic import (
        ElasticBatchNorm2d,
        ElasticConv2d,
        ElasticConvBN,
        ElasticDepthwiseConv,
        ElasticInvertedResidual,
        ElasticLinear,
        ElasticPointwiseConv,
        ElasticSqueezeExcite,
    )
    from search.supernet.evaluation import SupernetEvaluator
    from search.supernet.export import export_onnx, fold_batchnorm, folded_weights
    from search.supernet.model import MobileNetV3Supernet, NetSpecModule, recalibrate_bn, resize_input

_EXPORTS = {
    "ElasticBatchNorm2d": "elastic",
    "ElasticConv2d": "elastic",
    "ElasticConvBN": "elastic",
    "ElasticDepthwiseConv": "elastic",
    "ElasticInvertedResidual": "elastic",
    "ElasticLinear": "elastic",
    "ElasticPointwiseConv": "elastic",
    "ElasticSqueezeExcite": "elastic",
    "MobileNetV3Supernet": "model",
    "NetSpecModule": "model",
    "SupernetEvaluator": "evaluation",
    "export_onnx": "export",
    "fold_batchnorm": "export",
    "folded_weights": "export",
    "recalibrate_bn": "model",
    "resize_input": "model",
}

__all__ = [
    "ElasticBatchNorm2d",
    "ElasticConv2d",
    "ElasticConvBN",
    "ElasticDepthwiseConv",
    "ElasticInvertedResidual",
    "ElasticLinear",
    "ElasticPointwiseConv",
    "ElasticSqueezeExcite",
    "MobileNetV3Supernet",
    "NetSpecModule",
    "SupernetEvaluator",
    "export_onnx",
    "fold_batchnorm",
    "folded_weights",
    "recalibrate_bn",
    "resize_input",
]


def __getattr__(name: str) -> Any:
    """Load ``name`` from its submodule on first access (which imports torch)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
