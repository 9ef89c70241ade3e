"""Build a bundle from NetSpecs (until the supernet exports real weights, with random or given ones).

With ``share_weights`` (the default) the modes are treated as subnets of one backbone, matched
by layer name — Once-for-All's convention: a mode's tensor is the leading channels and the
centre kernel crop of the shared tensor. The shared tensors are stored once (``shared.bin``);
each mode's ONNX model references them as external data and slices its part, so the bundle
holds the weights once and every model still loads on its own in any ONNX Runtime.

All modes take one input shape (the largest resolution among them): a mode compiled for a lower
resolution starts with a ``Resize`` node, so an app feeds the same tensor whatever the mode and
a switch can never make a request fail on a shape mismatch.

The bundle is written into a staging directory and renamed into place only when complete.
"""

from __future__ import annotations

import datetime as _dt
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from runtime.bundle import (
    ARCHIVE_SUFFIX,
    BUNDLE_FORMAT,
    Bundle,
    BundleError,
    Expected,
    Manifest,
    ModeEntry,
    TensorSpec,
    pack,
    publish_directory,
    sha256_file,
    write_manifest,
)
from runtime.fileio import temp_path_beside
from runtime.netspec import NetSpec

SHARED_FILE = "shared.bin"


@dataclass(frozen=True)
class ModeSpec:
    """What to put in one mode: its network, and optionally its arch, accuracy and own weights."""

    name: str
    netspec: NetSpec
    arch: Mapping[str, Any] | None = None
    accuracy: float | None = None
    weights: Mapping[str, np.ndarray] | None = None


def _random_full_weights(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """He-normal weights (fan-in from the full shape) and small biases, deterministic per seed."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(shapes):
        shape = shapes[name]
        if name.endswith("bias"):
            out[name] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) or 1
            out[name] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    return out


def _prepend_resize(model: Any, input_name: str, target_hw: tuple[int, int], bundle_hw: tuple[int, int]) -> Any:
    """Make ``model`` take the bundle's input resolution by resizing it to the mode's own first."""
    from onnx import helper, numpy_helper

    if target_hw == bundle_hw:
        return model
    graph = model.graph
    inner = f"{input_name}__resized"
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == input_name:
                node.input[i] = inner
    scales_name = f"{input_name}__resize_sizes"
    # sizes needs the batch dimension too: take it from the input's shape at run time
    shape_node = helper.make_node("Shape", [input_name], [f"{input_name}__shape"], name="resize.shape", end=2)
    hw = numpy_helper.from_array(np.array(target_hw, dtype=np.int64), scales_name)
    concat = helper.make_node(
        "Concat", [f"{input_name}__shape", scales_name], [f"{input_name}__sizes"], name="resize.sizes", axis=0
    )
    resize = helper.make_node(
        "Resize",
        [input_name, "", "", f"{input_name}__sizes"],
        [inner],
        name="resize",
        mode="linear",
        coordinate_transformation_mode="half_pixel",
    )
    new_nodes = [shape_node, concat, resize, *graph.node]
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.append(hw)
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = bundle_hw
    return model


def expected_figures(netspec: NetSpec, devices: Sequence[Any], accuracy: float | None) -> dict[str, Expected]:
    """Roofline latency and energy per inference at each device's fastest OPP (analytic estimates)."""
    from runtime.energy import energy_per_inference

    out = {}
    for device in devices:
        e = energy_per_inference(netspec, device, netspec.dtype)
        out[device.name] = Expected(latency_ms=e.latency_s * 1e3, energy_mj=e.energy_j * 1e3, accuracy=accuracy)
    return out


def build_bundle(
    modes: Sequence[ModeSpec],
    out: str | Path,
    *,
    share_weights: bool = True,
    full_weights: Mapping[str, np.ndarray] | None = None,
    devices: Sequence[Any] = (),
    target_device: Any = None,
    seed: int = 0,
    bundle_version: str = "0.1.0",
    created_by: str | None = None,
    input_name: str = "input",
    output_name: str = "logits",
    dynamic_batch: bool = True,
) -> Bundle:
    """Write a bundle for ``modes`` (most to least capable) to ``out``; returns it, verified.

    ``out`` ending in ``.fnb`` writes the single-file archive. ``full_weights`` gives the
    shared tensors (default: random, from ``seed``); a ``ModeSpec.weights`` gives a mode's own
    weights when ``share_weights`` is off. ``devices`` get expected latency/energy in the
    manifest; ``target_device`` is embedded so the runtime can estimate energy on its own.
    """
    from runtime import onnx_builder as ob

    if not modes:
        raise BundleError("build: need at least one mode")
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise BundleError(f"build: duplicate mode names in {names}")
    channels = {m.netspec.input_shape[0] for m in modes}
    if len(channels) != 1:
        raise BundleError(f"build: modes disagree on input channels {sorted(channels)}")
    bundle_hw = max((m.netspec.input_shape[1:] for m in modes), key=lambda hw: hw[0] * hw[1])
    input_shape: tuple[int | str, ...] = ("batch" if dynamic_batch else 1, channels.pop(), *bundle_hw)
    dev_list = list(devices)
    if target_device is not None and all(d.name != target_device.name for d in dev_list):
        dev_list.append(target_device)

    out_path = Path(out)
    archive = out_path.suffix == ARCHIVE_SUFFIX
    parent = out_path.parent if str(out_path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    staging = temp_path_beside(out_path)
    staging.mkdir(mode=0o777)  # the umask's permissions (mkdtemp's 0700 would survive the rename)
    try:
        layout = None
        shared_entry = None
        if share_weights:
            shapes = ob.shared_union([ob.weight_shapes(m.netspec) for m in modes])
            full = dict(full_weights) if full_weights is not None else _random_full_weights(shapes, seed)
            missing = sorted(set(shapes) - set(full))
            if missing:
                raise BundleError(f"build: full_weights lacks tensors {missing[:5]}{'…' if len(missing) > 5 else ''}")
            layout = ob.write_shared(staging / SHARED_FILE, {k: full[k] for k in shapes})
            shared_entry = layout
        entries = []
        for i, m in enumerate(modes):
            file = f"{m.name}.onnx"
            model = ob.build_model(
                m.netspec,
                None if share_weights else m.weights,
                seed=seed + i,
                input_name=input_name,
                output_name=output_name,
                dynamic_batch=dynamic_batch,
                shared=layout,
            )
            mode_hw = (m.netspec.input_shape[1], m.netspec.input_shape[2])
            model = _prepend_resize(model, input_name, mode_hw, (bundle_hw[0], bundle_hw[1]))
            ob.save_model(model, staging / file)
            entries.append(
                ModeEntry(
                    name=m.name,
                    file=file,
                    netspec=m.netspec,
                    input=TensorSpec(input_name, input_shape, m.netspec.dtype),
                    outputs=(output_name,),
                    arch=m.arch,
                    expected=expected_figures(m.netspec, dev_list, m.accuracy),
                )
            )
        files = {f.name: sha256_file(f) for f in sorted(staging.iterdir()) if not f.name.startswith(".")}
        manifest = Manifest(
            bundle_version=bundle_version,
            created_by=created_by or f"fleetnas {runtime.__version__}",
            created_at=_dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            modes=tuple(entries),
            files=files,
            device=target_device.name if target_device is not None else None,
            device_profile=target_device.to_json() if target_device is not None else None,
            shared_weights=shared_entry,
            format=BUNDLE_FORMAT,
        )
        write_manifest(staging, manifest)
        Bundle.load(staging)  # verify before publishing: never ship a defective bundle
        if archive:
            pack(staging, out_path)
            shutil.rmtree(staging, ignore_errors=True)
        else:
            publish_directory(staging, out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Bundle.load(out_path)
