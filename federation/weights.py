"""Supernet weights of the federated weight rounds: file format, secure DP noise, and the supernet as a torch thing.

What lives here (numpy + flwr; torch only inside the functions that need it, so a torch-free
server imports this module):

- ``SupernetWeights``: the global supernet's state (every array of its ``state_dict``, BatchNorm
  counters included), its channel ``alignment`` and its training configuration (what
  ``config.yaml`` holds: space, data splits). ``save_weights``/``read_weights`` store it as an
  ``.npz`` (no pickle, readable by any NumPy; the metadata is a JSON string inside), written
  atomically; ``weights_digest`` is a SHA-256 of the *content* (names, dtypes, shapes, bytes), so
  a state file can name the weights it belongs to and a swapped or damaged file is refused.
- ``load_weights``: an ``.npz`` of ours, or a ``fleetnas supernet train`` output directory
  (``supernet.pt`` + ``config.yaml``; torch). ``export_supernet`` writes the global weights back as
  such a directory, so ``TrainedSupernet.load`` and the bundle pipeline take the federated result.
- ``SupernetProbe``: the global supernet's top-1 on the training run's held-out validation split
  for the largest and the smallest subnet, BatchNorm recalibrated (``SupernetEvaluator``; torch).
  The split is public (the embedded digits), so measuring a released state costs no privacy.
- ``SecureClientSideFixedClipping``: Flower's ``DifferentialPrivacyClientSideFixedClipping`` with
  one change. Flower adds its Gaussian noise in ``_add_noise_to_aggregated_arrays`` with
  ``np.random.normal`` (``flwr.supercore.differential_privacy.add_gaussian_noise_inplace``): NumPy's
  global Mersenne Twister, whose state can be recovered from its outputs and which any library may
  seed. The subclass draws the same N(0, (σ·clip/n)²) from ``federation.dp.NoiseSource`` (the OS
  CSPRNG unless a seed is given) and keeps everything else of Flower's wrapper (its clip in the
  ``train`` config, its argument checks, FedAvg's aggregation).
- ``local_noise_mod``/``add_local_noise``: local-DP weight rounds. The client clips its update
  (Flower's ``fixedclipping_mod``) and then adds N(0, (σ_c·clip)²) to every coordinate before the
  reply leaves the device (``LOCAL_NOISE`` in the ``train`` config carries σ_c). Against the server
  each reply is a Gaussian mechanism on that client's data whose *replace-one* sensitivity is
  2·clip (two clipped updates differ by up to 2·clip; the server knows who it asked, so
  add/remove-one and sampling amplification do not apply) — the same argument as the local score
  releases in ``federation.dp`` — so a round is charged at σ_c/2, sampling rate 1.
- ``attach_supernet``/``read_supernet``: the global weights on ``query.propose``/``query.score``
  messages of ``supernet`` accuracy rounds (see ``attach_supernet`` for why they travel there).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
from flwr.supercore.differential_privacy import compute_stdv

from federation.dp import NoiseSource, as_noise_source, snap
from runtime.fileio import write_bytes_atomic, write_npz_atomic

__all__ = [
    "LOCAL_NOISE",
    "SUPERNET_META",
    "SUPERNET_RECORD",
    "WEIGHTS_FORMAT",
    "SecureClientSideFixedClipping",
    "SupernetProbe",
    "SupernetWeights",
    "WeightsError",
    "add_local_noise",
    "attach_supernet",
    "export_supernet",
    "load_weights",
    "local_noise_mod",
    "read_supernet",
    "read_weights",
    "save_weights",
    "weights_digest",
]

WEIGHTS_FORMAT = "fleetnas.supernet-weights/1"
SUPERNET_RECORD = "supernet"  # ArrayRecord of the global weights on propose/score messages
SUPERNET_META = "supernet-meta"  # ConfigRecord next to it: alignment and SHA-256 of the arrays
LOCAL_NOISE = "local-noise-multiplier"  # train config: σ a client adds to its clipped update (local DP)
_META_KEY = "__meta__"  # the npz member holding the JSON metadata (array names never start with "__")


class WeightsError(ValueError):
    """A weights file, directory or record that cannot be used; the message names it and what was expected."""


@dataclass(frozen=True)
class SupernetWeights:
    """A supernet state (name -> array, ``state_dict`` order), its channel alignment and training config (or None)."""

    arrays: Mapping[str, np.ndarray]
    alignment: int = 8
    train_config: Mapping[str, Any] | None = field(default=None)

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the arrays' content (``weights_digest``)."""
        return weights_digest(self.arrays)

    def space_config(self) -> Mapping[str, Any] | None:
        """The space field of the training config (a preset name or a mapping), or None without a config."""
        return None if self.train_config is None else self.train_config.get("space")


def weights_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) over each array's name, dtype, shape and bytes, in order: equal content, equal digest."""
    h = hashlib.sha256()
    for name, value in arrays.items():
        a = np.ascontiguousarray(np.asarray(value))
        h.update(json.dumps([str(name), a.dtype.str, list(a.shape)]).encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---- files -------------------------------------------------------------------------------------
def save_weights(path: str | os.PathLike[str], weights: SupernetWeights) -> str:
    """Write ``weights`` to ``path`` (.npz, no pickle) atomically; returns their content digest."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = weights.digest
    meta = {
        "format": WEIGHTS_FORMAT,
        "names": list(weights.arrays),
        "alignment": int(weights.alignment),
        "train_config": weights.train_config,
        "sha256": digest,
    }
    members = {f"a{i}": np.asarray(v) for i, v in enumerate(weights.arrays.values())}
    members[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    write_npz_atomic(target, members)
    return digest


def read_weights(path: str | os.PathLike[str], expect_digest: str | None = None) -> SupernetWeights:
    """The SupernetWeights in an .npz ``save_weights`` wrote; WeightsError if it is not one or its digest differs."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as data:
            if _META_KEY not in data.files:
                raise WeightsError(f"{p}: not a {WEIGHTS_FORMAT} file (no {_META_KEY!r} member)")
            meta = json.loads(bytes(data[_META_KEY]).decode())
            if meta.get("format") != WEIGHTS_FORMAT:
                raise WeightsError(f"{p}: field 'format' is {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
            arrays = {str(name): np.array(data[f"a{i}"]) for i, name in enumerate(meta["names"])}
    except FileNotFoundError:
        raise WeightsError(f"{p}: file not found") from None
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise WeightsError(f"{p}: not a readable {WEIGHTS_FORMAT} .npz ({exc})") from None
    weights = SupernetWeights(arrays, int(meta.get("alignment", 8)), meta.get("train_config"))
    digest = weights.digest
    if digest != meta.get("sha256"):
        raise WeightsError(f"{p}: the arrays' SHA-256 {digest[:16]}… does not match the one recorded in the file")
    if expect_digest is not None and digest != expect_digest:
        raise WeightsError(
            f"{p}: holds weights with SHA-256 {digest[:16]}…, but the run state expects {expect_digest[:16]}… "
            "(the file was replaced or belongs to another run); restore the matching file or start a new run"
        )
    return weights


def load_weights(source: str | os.PathLike[str]) -> SupernetWeights:
    """The weights at ``source``: our .npz, or a ``fleetnas supernet train`` output directory (reads it with torch)."""
    p = Path(source)
    if p.is_file():
        return read_weights(p)
    if not p.is_dir():
        raise WeightsError(
            f"{p}: not found; need a trained supernet directory (supernet.pt + config.yaml) or a weights .npz"
        )
    from search.supernet.schedule import SupernetConfigError, SupernetTrainConfig
    from search.supernet.trained import CONFIG_FILE, WEIGHTS_FILE

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (p / name).is_file():
            raise WeightsError(f"{p}: no {name}; not a `fleetnas supernet train` output directory")
    try:
        cfg = SupernetTrainConfig.load(p / CONFIG_FILE)
    except SupernetConfigError as exc:
        raise WeightsError(str(exc)) from None
    import torch

    state = torch.load(p / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    arrays = {k: v.detach().cpu().numpy().copy() for k, v in state.items()}
    return SupernetWeights(arrays, int(cfg.alignment), cfg.to_dict())


def export_supernet(weights: SupernetWeights, out_dir: str | os.PathLike[str]) -> Path:
    """``out_dir`` written as a trained-supernet directory (config.yaml, supernet.pt, weights.npz); returns it.

    ``supernet.pt`` (a plain ``state_dict``, what ``TrainedSupernet.load`` reads) needs torch and is
    written only when torch imports; ``weights.npz`` (``save_weights``) always is. Needs the
    training configuration (WeightsError without it: the directory would not be loadable).
    """
    import yaml

    from runtime.fileio import write_text_atomic

    if weights.train_config is None:
        raise WeightsError("export_supernet: the weights carry no training configuration (config.yaml)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "weights.npz", weights)
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is not None:
        state = {k: torch.from_numpy(np.array(v)) for k, v in weights.arrays.items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        write_bytes_atomic(out / "supernet.pt", buf.getvalue())
    # config.yaml last: TrainedSupernet.load needs both files, so a half-written directory is not loadable.
    write_text_atomic(out / "config.yaml", yaml.safe_dump(dict(weights.train_config), sort_keys=False))
    return out


# ---- measuring the global supernet (torch) ------------------------------------------------------
class SupernetProbe:
    """``weights -> {"largest": %, "smallest": %}``: top-1 on the training run's validation split (torch, lazily).

    Built from the weights' training configuration: its space, alignment and data splits
    (``search.supernet.trained.load_splits``, the splits training drew). Each subnet is extracted
    and its BatchNorm recalibrated on ``recalibration_images`` training images
    (``SupernetEvaluator``). Results are cached by the weights' digest, so the "before" of a weight
    round is the previous round's "after" without measuring again.
    """

    def __init__(self, train_config: Mapping[str, Any], recalibration_images: int = 256, seed: int = 0) -> None:
        from search.supernet.schedule import SupernetTrainConfig, make_space
        from search.supernet.trained import load_splits

        cfg = SupernetTrainConfig.from_dict(dict(train_config), source="supernet training config")
        self.space = make_space(cfg.space)
        self.alignment = int(cfg.alignment)
        parts = load_splits(cfg)
        self.train, self.val = parts[0], parts[1]
        self.recalibration_images = int(recalibration_images)
        self.seed = int(seed)
        card = self.space.cardinalities
        self.codes = self.space.canonicalise(np.stack([card - 1, np.zeros_like(card)]))
        self._cache: dict[str, dict[str, float]] = {}

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
        """{"largest": top-1 %, "smallest": top-1 %} of the supernet with these arrays."""
        digest = weights_digest(arrays)
        if digest not in self._cache:
            from federation.client import supernet_from_arrays
            from search.supernet.evaluation import SupernetEvaluator

            net = supernet_from_arrays(self.space, self.alignment, arrays, "global supernet")
            net.eval()
            ev = SupernetEvaluator(net, self.space, self.train, self.val,
                                   recalibration_images=self.recalibration_images, seed=self.seed)
            acc = ev(self.codes)["accuracy"]
            self._cache[digest] = {"largest": float(acc[0]), "smallest": float(acc[1])}
        return dict(self._cache[digest])


# ---- secure noise on weights ------------------------------------------------------------------------
def _noised(a: np.ndarray, std: float, src: NoiseSource) -> np.ndarray:
    """``a`` + N(0, std²) per coordinate from ``src`` (float64, snapped, cast back) if floating; else ``a``."""
    if std > 0 and np.issubdtype(a.dtype, np.floating):
        return snap(a.astype(np.float64) + src.normal(std, a.shape), std).astype(a.dtype)
    return a


# ---- secure central noise: Flower's wrapper, our randomness --------------------------------------
class SecureClientSideFixedClipping(DifferentialPrivacyClientSideFixedClipping):
    """Flower's client-side fixed-clipping DP wrapper whose Gaussian noise comes from ``noise`` (see module doc).

    Only the noise step differs: the same std (Flower's ``compute_stdv``: σ·clip/num_sampled_clients)
    on every floating array of the aggregate, drawn in float64 from the ``NoiseSource``, snapped
    (``federation.dp.snap``: post-processing against floating-point attacks) and cast back to the
    array's dtype. NumPy's global generator is never touched. ``last_noise_std`` is the std used.
    """

    def __init__(
        self,
        strategy: Any,
        noise_multiplier: float,
        clipping_norm: float,
        num_sampled_clients: int,
        *,
        noise: NoiseSource | np.random.Generator | int | None = None,
        accountant: Any = None,
    ) -> None:
        super().__init__(strategy, noise_multiplier, clipping_norm, num_sampled_clients, accountant=accountant)
        self.noise = as_noise_source(noise)
        self.last_noise_std = 0.0

    def __repr__(self) -> str:
        """Name of the wrapper."""
        return "Differential Privacy Strategy Wrapper (Client-Side Fixed Clipping, CSPRNG noise)"

    def _add_noise_to_aggregated_arrays(self, aggregated_arrays: ArrayRecord) -> ArrayRecord:
        std = compute_stdv(self.noise_multiplier, self.clipping_norm, self.num_sampled_clients)
        self.last_noise_std = float(std)
        noised = {key: Array(_noised(arr.numpy(), float(std), self.noise)) for key, arr in aggregated_arrays.items()}
        return ArrayRecord(noised)


# ---- local DP: the client noises its own clipped update -----------------------------------------
def add_local_noise(
    arrays: Iterable[np.ndarray], clip: float, noise_multiplier: float, noise: NoiseSource | int | None
) -> list[np.ndarray]:
    """``arrays`` (an already clipped state) + N(0, (σ·clip)²) per floating coordinate, snapped; others unchanged."""
    if not (math.isfinite(clip) and clip > 0):
        raise WeightsError(f"local DP weights: field 'clip': need a finite clip > 0, got {clip!r}")
    if not noise_multiplier > 0:
        raise WeightsError(f"local DP weights: field {LOCAL_NOISE!r}: need σ > 0, got {noise_multiplier!r}")
    src = as_noise_source(noise)
    std = float(noise_multiplier) * float(clip)
    return [_noised(np.asarray(a), std, src) for a in arrays]


def local_noise_mod(noise_for: Callable[[Message, Context], NoiseSource | int | None]) -> Any:
    """A ClientApp mod: after Flower's ``fixedclipping_mod`` clipped a ``train`` reply, add the local-DP noise.

    Put it *before* ``fixedclipping_mod`` in the handler's ``mods`` (mods[0] is the outermost, so it
    sees the reply after the clipping). It acts only when the request's config carries
    ``LOCAL_NOISE`` > 0; then it also zeroes the reply's ``update-norm`` metric, which would tell
    the server something about the client's data outside the mechanism. ``noise_for(msg, context)``
    gives the noise source (None: the OS CSPRNG).
    """
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    def mod(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
        configs = list(msg.content.config_records.values())
        sigma = float(configs[0].get(LOCAL_NOISE, 0.0)) if len(configs) == 1 else 0.0
        reply = call_next(msg, context)
        if not sigma > 0 or reply.has_error():
            return reply
        clip = float(configs[0][KEY_CLIPPING_NORM])
        (key, record), = reply.content.array_records.items()
        noised = add_local_noise(record.to_numpy_ndarrays(), clip, sigma, noise_for(msg, context))
        reply.content[key] = ArrayRecord({k: Array(v) for k, v in zip(record.keys(), noised, strict=True)})
        for mkey, metrics in reply.content.metric_records.items():
            if "update-norm" in metrics:
                reply.content[mkey] = MetricRecord({**dict(metrics), "update-norm": 0.0})
        return reply

    return mod


# ---- the global weights on query messages ----------------------------------------------------------
def attach_supernet(content: RecordDict, weights: SupernetWeights) -> RecordDict:
    """``content`` with the global supernet's floating arrays (ArrayRecord) and their alignment + SHA-256 added.

    Why the score (and propose) requests carry the weights, rather than clients keeping the state
    they last trained from: after a weight round the global state is the *server's* noisy average,
    which no client holds; a client may not have been asked to train at all (sampling, battery);
    and a client that was offline misses any broadcast. Sending the weights with every
    ``supernet`` accuracy request makes every client score with exactly the state the server
    holds (the digest lets it check, and cache the rebuilt network across the round's two
    messages). The cost is the state's size per message (≈ 0.5 MB for the demo supernet), paid
    only in ``supernet`` rounds.
    """
    floats = {k: v for k, v in weights.arrays.items() if np.issubdtype(np.asarray(v).dtype, np.floating)}
    content[SUPERNET_RECORD] = ArrayRecord({k: Array(np.array(v, order="C")) for k, v in floats.items()})
    content[SUPERNET_META] = ConfigRecord({"alignment": int(weights.alignment), "sha256": weights_digest(floats)})
    return content


def read_supernet(content: RecordDict, node: int | str | None = None) -> SupernetWeights | None:
    """The global weights ``attach_supernet`` put in ``content`` (None if absent); WeightsError on a bad digest."""
    if SUPERNET_RECORD not in content:
        return None
    who = "message" if node is None else f"node {node}"
    rec, meta = content[SUPERNET_RECORD], content.get(SUPERNET_META)
    if not isinstance(rec, ArrayRecord) or not isinstance(meta, ConfigRecord):
        raise WeightsError(
            f"{who}: records {SUPERNET_RECORD!r}/{SUPERNET_META!r}: need an ArrayRecord and a ConfigRecord"
        )
    arrays = {k: a.numpy() for k, a in rec.items()}
    digest = weights_digest(arrays)
    if digest != meta.get("sha256"):
        raise WeightsError(f"{who}: record {SUPERNET_RECORD!r}: SHA-256 {digest[:16]}… differs from "
                           f"{SUPERNET_META!r}.sha256 (damaged in transit)")
    return SupernetWeights(arrays, int(meta.get("alignment", 8)))
