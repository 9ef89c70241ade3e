"""Supernet training configuration, progressive-shrinking phases and the subnet sampling rules.

numpy-only (no torch): the configuration can be validated and the samplers tested without torch.

**Configuration** (``SupernetTrainConfig.load(path)``; every key optional, unknown keys are errors
naming the file, the dotted field path and the allowed keys)::

    space: mnist             # preset name, a space YAML path, or a mapping of MobileNetV3Config fields
    alignment: 8             # channel rounding (make_divisible) of the supernet
    seed: 0                  # torch + numpy seeds, data split/proxy/shuffle, subnet sampling
    threads: 2               # torch.set_num_threads
    deterministic: true      # torch.use_deterministic_algorithms(True)
    data: {dataset: mnist5k, split: [0.7, 0.15, 0.15], split_seed: null, proxy_fraction: 1.0, batch_size: 64,
           max_batches: null}  # split_seed: seeds the split and proxy (null: ``seed``)
    optimizer: {name: sgd, momentum: 0.9, nesterov: true, weight_decay: 3.0e-5, label_smoothing: 0.0}
    distill: {lambda: 0.5, temperature: 1.0}
    eval: {bn_images: 500, max_images: null}
    phases:                  # run in order; each phase rebuilds the optimizer, cosine LR within it
      - {name: full, epochs: 2, lr: 0.05, rule: uniform}
      - {name: kernel, epochs: 1, lr: 0.02, rule: sandwich, n_random: 1}
      - {name: depth, epochs: 1, lr: 0.01, rule: fairnas}
      - {name: expand, epochs: 1, lr: 0.01, rule: sandwich, resort_channels: true,
         sampling_temperature: {t0: 2.0, tau: 100}}

**Phases** (progressive shrinking, Once-for-All): a phase releases a set of *elastic dimensions*
(``resolution``, ``width``, ``depth``, ``kernel``, ``expand``); dimensions not released stay at
their largest option. ``elastic`` lists them; if omitted it follows from ``name``:
``full`` → none (the largest network only), ``kernel`` → kernel, ``depth`` → kernel + depth,
``expand`` → kernel + depth + expand, ``all`` → all five. ``resort_channels: true`` calls
``reorder_by_importance()`` at the start of the phase.

**Rules**: ``uniform`` trains one sampled subnet per step; ``sandwich`` the phase's largest and
smallest subnets plus ``n_random`` sampled ones, the non-largest distilled in place from the
largest (``distill``); ``fairnas`` (strict fairness, Chu et al. 2021) trains a *group* of ``G``
subnets per step, ``G`` the least common multiple of the released block-gene option counts, in
which every option of every released kernel / expand gene of every block slot appears exactly
``G / n_options`` times (an independent random permutation per gene); depth, width and resolution
are sampled uniformly per subnet.

**Sampling temperature** (uniform and sandwich's random subnets): with ``sampling_temperature:
{t0, tau}`` an option of rank ``r ∈ [0, 1]`` (0 = smallest, 1 = largest choice of its gene) is
drawn with probability ``∝ exp(T_t · r)``, ``T_t = t0 · e^(−t / tau)``, ``t`` the step within the
phase. ``T_t`` is the *preference for larger choices*: ``t0 = 2`` makes the largest of three
options ``e² ≈ 7.4``× as likely as the smallest at the start of the phase, and as ``T_t`` decays to
0 the distribution becomes uniform — large subnets (the teachers of the smaller ones) are
trained first, small ones increasingly later. Without it sampling is uniform.
"""

from __future__ import annotations

import importlib.resources
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from search.arch import Arch
from search.space.mobilenetv3 import MobileNetV3Config, MobileNetV3Space

__all__ = [
    "DIMENSIONS",
    "PHASE_PRESETS",
    "RULES",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "PhaseSampler",
    "SamplingTemperature",
    "SupernetConfigError",
    "SupernetTrainConfig",
    "fair_permutations",
    "make_space",
]

DIMENSIONS = ("resolution", "width", "depth", "kernel", "expand")
PHASE_PRESETS: dict[str, tuple[str, ...]] = {
    "full": (),
    "kernel": ("kernel",),
    "depth": ("kernel", "depth"),
    "expand": ("kernel", "depth", "expand"),
    "all": DIMENSIONS,
}
RULES = ("uniform", "sandwich", "fairnas")
OPTIMIZERS = ("sgd", "adam")


PRESETS: tuple[str, ...] = ("demo", "long", "slim")


class SupernetConfigError(ValueError):
    """A supernet training configuration error naming the file, the field and what is allowed."""


# ---- configuration values ------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Which data the supernet trains on; ``split`` is (train, validation[, test]) fractions.

    ``split_seed`` draws the split and the proxy subset; None uses the run's ``seed``. Members of
    a supernet ensemble differ in ``seed`` only, so they must pin it: they are compared on the
    same validation images.
    """

    dataset: str = "mnist5k"
    split: tuple[float, ...] = (0.7, 0.15, 0.15)
    split_seed: int | None = None
    proxy_fraction: float = 1.0
    batch_size: int = 64
    max_batches: int | None = None  # cap per epoch (quick runs, tests)


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD (momentum, Nesterov) or Adam; ``label_smoothing`` applies to the cross-entropy terms."""

    name: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 3.0e-5
    label_smoothing: float = 0.0


@dataclass(frozen=True)
class DistillConfig:
    """In-place distillation: ``(1−λ)·CE + λ·τ²·KL(teacher ‖ student)`` at temperature τ."""

    weight: float = 0.5  # λ (YAML key ``lambda``)
    temperature: float = 1.0


@dataclass(frozen=True)
class EvalConfig:
    """Per-epoch evaluation: BN recalibration images, and an optional cap on validation images."""

    bn_images: int = 500
    max_images: int | None = None


@dataclass(frozen=True)
class SamplingTemperature:
    """``T_t = t0 · e^(−t / tau)``: preference for larger choices, decaying to uniform sampling."""

    t0: float = 2.0
    tau: float = 100.0

    def at(self, step: int) -> float:
        """``T_t`` at step ``step`` of the phase."""
        return self.t0 * math.exp(-step / self.tau)


@dataclass(frozen=True)
class PhaseConfig:
    """One training phase: which dimensions are elastic, how long, which LR and sampling rule."""

    name: str = "full"
    elastic: tuple[str, ...] = ()
    epochs: int = 1
    lr: float = 0.05
    rule: str = "uniform"
    n_random: int = 2
    resort_channels: bool = False
    sampling_temperature: SamplingTemperature | None = None


@dataclass(frozen=True)
class SupernetTrainConfig:
    """The whole supernet training run (see the module docstring for the YAML form)."""

    space: str | dict[str, Any] = "mnist"
    alignment: int = 8
    seed: int = 0
    threads: int = 2
    deterministic: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    phases: tuple[PhaseConfig, ...] = (PhaseConfig(),)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> SupernetTrainConfig:
        """Validate a mapping (parsed YAML); errors name ``source``, the field path and the allowed keys."""
        if data is None:
            data = {}
        top = _mapping(data, source, "")
        _check_keys(
            top,
            source,
            "",
            (
                "space",
                "alignment",
                "seed",
                "threads",
                "deterministic",
                "data",
                "optimizer",
                "distill",
                "eval",
                "phases",
            ),
        )
        space = top.get("space", "mnist")
        if not isinstance(space, str | Mapping):
            raise SupernetConfigError(f"{source}: field 'space': need a preset name, a YAML path or a mapping")
        if isinstance(space, Mapping):
            MobileNetV3Config.from_dict(space, source=f"{source}: field 'space'")  # validates now
            space = dict(space)
        kw: dict[str, Any] = {"space": space}
        for key, lo in (("alignment", 1), ("seed", 0), ("threads", 1)):
            if key in top:
                kw[key] = _int(top[key], source, key, lo)
        if "deterministic" in top:
            kw["deterministic"] = _bool(top["deterministic"], source, "deterministic")
        d = _mapping(top.get("data", {}), source, "data")
        _check_keys(d, source, "data", [f.name for f in fields(DataConfig)])
        dkw: dict[str, Any] = {}
        if "dataset" in d:
            if not isinstance(d["dataset"], str):
                raise SupernetConfigError(f"{source}: field 'data.dataset': need a string such as mnist5k, digits")
            dkw["dataset"] = d["dataset"]
        if "split" in d:
            sp = d["split"]
            if (
                not isinstance(sp, list | tuple)
                or len(sp) not in (2, 3)
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in sp)
                or abs(sum(sp) - 1.0) > 1e-6
            ):
                raise SupernetConfigError(
                    f"{source}: field 'data.split': need 2 or 3 positive fractions summing to 1, got {sp!r}"
                )
            dkw["split"] = tuple(float(v) for v in sp)
        if d.get("split_seed") is not None:
            dkw["split_seed"] = _int(d["split_seed"], source, "data.split_seed", 0)
        if "proxy_fraction" in d:
            dkw["proxy_fraction"] = _float(d["proxy_fraction"], source, "data.proxy_fraction", 0.0, 1.0, lo_open=True)
        if "batch_size" in d:
            dkw["batch_size"] = _int(d["batch_size"], source, "data.batch_size", 1)
        if d.get("max_batches") is not None:
            dkw["max_batches"] = _int(d["max_batches"], source, "data.max_batches", 1)
        kw["data"] = DataConfig(**dkw)
        o = _mapping(top.get("optimizer", {}), source, "optimizer")
        _check_keys(o, source, "optimizer", [f.name for f in fields(OptimizerConfig)])
        okw: dict[str, Any] = {}
        if "name" in o:
            if o["name"] not in OPTIMIZERS:
                raise SupernetConfigError(
                    f"{source}: field 'optimizer.name': {o['name']!r}; allowed: {', '.join(OPTIMIZERS)}"
                )
            okw["name"] = o["name"]
        if "momentum" in o:
            okw["momentum"] = _float(o["momentum"], source, "optimizer.momentum", 0.0, 1.0)
        if "nesterov" in o:
            okw["nesterov"] = _bool(o["nesterov"], source, "optimizer.nesterov")
        if "weight_decay" in o:
            okw["weight_decay"] = _float(o["weight_decay"], source, "optimizer.weight_decay", 0.0, math.inf)
        if "label_smoothing" in o:
            okw["label_smoothing"] = _float(o["label_smoothing"], source, "optimizer.label_smoothing", 0.0, 1.0)
        kw["optimizer"] = OptimizerConfig(**okw)
        di = _mapping(top.get("distill", {}), source, "distill")
        _check_keys(di, source, "distill", ("lambda", "temperature"))
        kw["distill"] = DistillConfig(
            weight=_float(di.get("lambda", 0.5), source, "distill.lambda", 0.0, 1.0),
            temperature=_float(di.get("temperature", 1.0), source, "distill.temperature", 0.0, math.inf, lo_open=True),
        )
        e = _mapping(top.get("eval", {}), source, "eval")
        _check_keys(e, source, "eval", [f.name for f in fields(EvalConfig)])
        ekw: dict[str, Any] = {}
        if "bn_images" in e:
            ekw["bn_images"] = _int(e["bn_images"], source, "eval.bn_images", 1)
        if e.get("max_images") is not None:
            ekw["max_images"] = _int(e["max_images"], source, "eval.max_images", 1)
        kw["eval"] = EvalConfig(**ekw)
        if "phases" in top:
            ph = top["phases"]
            if not isinstance(ph, list) or not ph:
                raise SupernetConfigError(f"{source}: field 'phases': need a non-empty list of phase mappings")
            kw["phases"] = tuple(_phase(p, source, i) for i, p in enumerate(ph))
        return cls(**kw)

    @classmethod
    def load(cls, path: str | Path) -> SupernetTrainConfig:
        """Load and validate a YAML file, or a shipped preset by name (``demo``, ``long``, ``slim``)."""
        if isinstance(path, str) and path in PRESETS:
            return cls.preset(path)
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text())
        except FileNotFoundError:
            raise SupernetConfigError(f"{p}: file not found") from None
        except yaml.YAMLError as exc:
            raise SupernetConfigError(f"{p}: not valid YAML ({exc})") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def preset(cls, name: str) -> SupernetTrainConfig:
        """The shipped configuration ``name``.

        ``demo`` (the demo's ~1-minute MNIST run), ``long`` (the full MNIST space) or ``slim`` (a
        width-elastic MNIST space whose subnets differ by points: the ranking benchmark's).
        """
        if name not in PRESETS:
            raise SupernetConfigError(f"supernet preset {name!r} is not known; allowed: {', '.join(PRESETS)}")
        resource = importlib.resources.files("search.supernet") / "presets" / f"{name}.yaml"
        return cls.from_dict(yaml.safe_load(resource.read_text()), source=f"preset {name!r} ({resource})")

    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as plain data (``from_dict(to_dict())`` round-trips)."""
        out = asdict(self)
        out["data"]["split"] = list(self.data.split)
        out["distill"] = {"lambda": self.distill.weight, "temperature": self.distill.temperature}
        out["phases"] = [{**asdict(p), "elastic": list(p.elastic)} for p in self.phases]
        return out

    @property
    def split_seed(self) -> int:
        """The seed of the data split and proxy: ``data.split_seed``, else ``seed``."""
        return self.seed if self.data.split_seed is None else self.data.split_seed

    def reseeded(self, seed: int) -> SupernetTrainConfig:
        """This run with another training ``seed`` (init, subnet sampling, batch order) on the same data split."""
        return replace(self, seed=seed, data=replace(self.data, split_seed=self.split_seed))

    @property
    def total_epochs(self) -> int:
        """Epochs over all phases."""
        return sum(p.epochs for p in self.phases)


def make_space(spec: str | Mapping[str, Any]) -> MobileNetV3Space:
    """The ``MobileNetV3Space`` a config's ``space`` names (preset, YAML path or field mapping)."""
    if isinstance(spec, Mapping):
        return MobileNetV3Space(MobileNetV3Config.from_dict(spec, source="field 'space'"))
    if spec.endswith((".yaml", ".yml")) or Path(spec).exists():
        return MobileNetV3Space(MobileNetV3Config.from_yaml(spec))
    return MobileNetV3Space(MobileNetV3Config.preset(spec))


# ---- validation helpers ------------------------------------------------------------------------------
def _where(path: str) -> str:
    return f"field '{path}'" if path else "top level"


def _mapping(value: Any, source: str, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SupernetConfigError(f"{source}: {_where(path)}: need a mapping, got {value!r}")
    return value


def _check_keys(data: Mapping[str, Any], source: str, path: str, allowed: Sequence[str]) -> None:
    unknown = sorted(str(k) for k in set(data) - set(allowed))
    if unknown:
        prefix = f"{path}." if path else ""
        raise SupernetConfigError(
            f"{source}: unknown field(s) {', '.join(prefix + k for k in unknown)}; "
            f"allowed in {_where(path)}: {', '.join(allowed)}"
        )


def _int(value: Any, source: str, path: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise SupernetConfigError(f"{source}: field '{path}': need an integer >= {lo}, got {value!r}")
    return value


def _bool(value: Any, source: str, path: str) -> bool:
    if not isinstance(value, bool):
        raise SupernetConfigError(f"{source}: field '{path}': need true or false, got {value!r}")
    return value


def _float(value: Any, source: str, path: str, lo: float, hi: float, lo_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and (value < lo or value > hi or (lo_open and value == lo)):
        ok = False
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise SupernetConfigError(f"{source}: field '{path}': need a number in {interval}, got {value!r}")
    return float(value)


def _phase(value: Any, source: str, i: int) -> PhaseConfig:
    path = f"phases[{i}]"
    p = _mapping(value, source, path)
    _check_keys(p, source, path, [f.name for f in fields(PhaseConfig)])
    name = p.get("name", "full")
    if not isinstance(name, str) or not name:
        raise SupernetConfigError(f"{source}: field '{path}.name': need a non-empty string")
    if "elastic" in p:
        el = p["elastic"]
        if not isinstance(el, list) or any(d not in DIMENSIONS for d in el) or len(set(el)) != len(el):
            raise SupernetConfigError(
                f"{source}: field '{path}.elastic': need a list of distinct dimensions from {', '.join(DIMENSIONS)}; "
                f"got {el!r}"
            )
        elastic = tuple(d for d in DIMENSIONS if d in el)
    elif name in PHASE_PRESETS:
        elastic = tuple(d for d in DIMENSIONS if d in PHASE_PRESETS[name])
    else:
        raise SupernetConfigError(
            f"{source}: field '{path}.name': {name!r} is not a preset phase ({', '.join(PHASE_PRESETS)}); "
            f"give 'elastic' explicitly"
        )
    kw: dict[str, Any] = {"name": name, "elastic": elastic}
    if "epochs" in p:
        kw["epochs"] = _int(p["epochs"], source, f"{path}.epochs", 1)
    if "lr" in p:
        kw["lr"] = _float(p["lr"], source, f"{path}.lr", 0.0, math.inf, lo_open=True)
    if "rule" in p:
        if p["rule"] not in RULES:
            raise SupernetConfigError(f"{source}: field '{path}.rule': {p['rule']!r}; allowed: {', '.join(RULES)}")
        kw["rule"] = p["rule"]
    if "n_random" in p:
        kw["n_random"] = _int(p["n_random"], source, f"{path}.n_random", 0)
    if "resort_channels" in p:
        kw["resort_channels"] = _bool(p["resort_channels"], source, f"{path}.resort_channels")
    st = p.get("sampling_temperature")
    if st is not None:
        tpath = f"{path}.sampling_temperature"
        m = _mapping(st, source, tpath)
        _check_keys(m, source, tpath, ("t0", "tau"))
        kw["sampling_temperature"] = SamplingTemperature(
            t0=_float(m.get("t0", 2.0), source, f"{tpath}.t0", 0.0, math.inf),
            tau=_float(m.get("tau", 100.0), source, f"{tpath}.tau", 0.0, math.inf, lo_open=True),
        )
    return PhaseConfig(**kw)


# ---- sampling ---------------------------------------------------------------------------------------
def fair_permutations(rng: np.random.Generator, n_genes: int, n_options: int, group: int) -> np.ndarray:
    """``(group, n_genes)`` option indices: each column holds every option exactly ``group / n_options`` times."""
    if group % n_options:
        raise ValueError(f"group: {group} is not a multiple of the {n_options} options")
    base = np.repeat(np.arange(n_options), group // n_options)
    out = np.empty((group, n_genes), dtype=np.int64)
    for g in range(n_genes):
        out[:, g] = rng.permutation(base)
    return out


class PhaseSampler:
    """Subnets of one phase: released dimensions vary, the others stay at their largest option.

    Draws come from ``rng`` (the caller owns and checkpoints it). Option lists are sorted
    ascending, so index ``n − 1`` is the largest choice of every gene.
    """

    def __init__(self, space: MobileNetV3Space, phase: PhaseConfig):
        self.space, self.phase = space, phase
        c = space.config
        self.options: dict[str, tuple[Any, ...]] = {
            "resolution": tuple(sorted(c.resolutions)),
            "width": tuple(sorted(c.widths)),
            "depth": tuple(sorted(c.depths)),
            "kernel": tuple(sorted(c.kernels)),
            "expand": tuple(sorted(c.expands)),
        }
        self.elastic = frozenset(phase.elastic)

    # The arch from option indices: res/width scalars, depth (S,), kernel/expand (S, D).
    def _arch(self, res: int, width: int, depth: np.ndarray, kernel: np.ndarray, expand: np.ndarray) -> Arch:
        o = self.options
        depths = [int(o["depth"][i]) for i in depth]
        return Arch.create(
            self.space.name,
            resolution=o["resolution"][res],
            width=o["width"][width],
            depths=depths,
            kernels=[[int(o["kernel"][k]) for k in kernel[s, : depths[s]]] for s in range(len(depths))],
            expands=[[int(o["expand"][e]) for e in expand[s, : depths[s]]] for s in range(len(depths))],
        )

    def _shape(self) -> tuple[int, int]:
        return self.space.num_stages, self.space.max_depth

    def _top(self, dim: str) -> int:
        return len(self.options[dim]) - 1

    def largest(self) -> Arch:
        """The phase's largest subnet (the space's largest)."""
        shape = self._shape()
        return self._arch(
            self._top("resolution"),
            self._top("width"),
            np.full(shape[0], self._top("depth")),
            np.full(shape, self._top("kernel")),
            np.full(shape, self._top("expand")),
        )

    def smallest(self) -> Arch:
        """The phase's smallest subnet: smallest released options, largest of the rest."""
        shape = self._shape()

        def low(dim: str) -> int:
            return 0 if dim in self.elastic else self._top(dim)

        return self._arch(
            low("resolution"),
            low("width"),
            np.full(shape[0], low("depth")),
            np.full(shape, low("kernel")),
            np.full(shape, low("expand")),
        )

    def _draw(self, rng: np.random.Generator, dim: str, size: int | tuple[int, ...], temp: float | None) -> np.ndarray:
        n = len(self.options[dim])
        if dim not in self.elastic:
            return np.full(size, n - 1, dtype=np.int64)
        if temp is None or temp == 0.0 or n == 1:
            return rng.integers(0, n, size=size).astype(np.int64)
        return rng.choice(n, size=size, p=self.probabilities(dim, temp)).astype(np.int64)

    def probabilities(self, dim: str, temperature: float) -> np.ndarray:
        """Sampling probabilities of ``dim``'s options at ``temperature``: ``∝ exp(T · rank)``, rank in [0, 1]."""
        n = len(self.options[dim])
        rank = np.arange(n) / max(n - 1, 1)
        w = np.exp(temperature * (rank - 1.0))  # shifted for stability; same distribution
        return np.asarray(w / w.sum())

    def temperature(self, step: int) -> float | None:
        """``T_t`` at ``step`` of the phase, or None (uniform sampling)."""
        st = self.phase.sampling_temperature
        return None if st is None else st.at(step)

    def sample(self, rng: np.random.Generator, step: int = 0) -> Arch:
        """One random subnet of the phase (tempered by the phase's sampling temperature, if any)."""
        s, d = self._shape()
        t = self.temperature(step)
        return self._arch(
            int(self._draw(rng, "resolution", 1, t)[0]),
            int(self._draw(rng, "width", 1, t)[0]),
            self._draw(rng, "depth", s, t),
            self._draw(rng, "kernel", (s, d), t),
            self._draw(rng, "expand", (s, d), t),
        )

    def fair_group(self, rng: np.random.Generator) -> list[Arch]:
        """A strict-fairness group: every released kernel/expand option of every block slot used equally often."""
        s, d = self._shape()
        counts = [len(self.options[g]) for g in ("kernel", "expand") if g in self.elastic]
        group = math.lcm(*counts) if counts else 1
        genes: dict[str, np.ndarray] = {}
        for g in ("kernel", "expand"):
            if g in self.elastic:
                genes[g] = fair_permutations(rng, s * d, len(self.options[g]), group).reshape(group, s, d)
            else:
                genes[g] = np.full((group, s, d), self._top(g), dtype=np.int64)
        return [
            self._arch(
                int(self._draw(rng, "resolution", 1, None)[0]),
                int(self._draw(rng, "width", 1, None)[0]),
                self._draw(rng, "depth", s, None),
                genes["kernel"][i],
                genes["expand"][i],
            )
            for i in range(group)
        ]

    def step_archs(self, rng: np.random.Generator, step: int) -> tuple[list[Arch], bool]:
        """The subnets one training step trains, and whether the first is the distillation teacher."""
        rule = self.phase.rule
        if rule == "uniform":
            return [self.sample(rng, step)], False
        if rule == "fairnas":
            return self.fair_group(rng), False
        archs = [self.largest()]
        small = self.smallest()
        if small != archs[0]:
            archs.append(small)
        archs.extend(self.sample(rng, step) for _ in range(self.phase.n_random))
        return archs, True
