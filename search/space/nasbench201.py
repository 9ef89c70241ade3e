"""NasBench201Space: the NAS-Bench-201 cell space (Dong & Yang, ICLR 2020), as a real benchmark.

A cell is a DAG of 4 nodes (0 = cell input, 3 = cell output) with 6 edges, each carrying one of 5
operations; a node is the sum of its incoming edges. 5^6 = 15,625 cells. The cell is repeated
in NAS-Bench-201's fixed CIFAR macro network (``to_netspec``).

Encoding (L = 6): one op index per edge, in the order of NAS-Bench-201's ``cellstr``
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` — edges 1←0, 2←0, 2←1, 3←0, 3←1, 3←2 — with op indices
into ``OPS`` = (none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3), NAS-Bench-201's
own op order. ``index`` maps an encoding to its base-5 number (edge 1←0 most significant), which
tabular evaluators use to look results up in flat arrays.

Arch JSON: ``{"space": "nasbench201", "cell": "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|"}``.
The space name is the same for every dataset preset: a cell is the benchmark's unit, the dataset
only changes the classifier (and, for ImageNet16-120, the input size).

No canonicalisation: NAS-Bench-201 lists all 15,625 cells as distinct entries (each trained
separately), so ``canonicalise`` is the identity. Many of them are the same network, though:
- isomorphic cells (e.g. swapping what nodes 1 and 2 compute when that yields the same graph);
- cells with *dead* edges — an edge whose source cannot be reached from the input through
  non-``none`` edges, or whose target cannot reach the output — which change nothing;
  ``prune`` zeroes them (``to_netspec`` never emits them);
- *disconnected* cells, where every input→output path crosses a ``none`` edge: the network's
  output does not depend on its input (NAS-Bench-201 reports chance accuracy for them, 10 % on
  CIFAR-10). ``connected`` finds them; they have no NetSpec (``to_netspec`` raises).

Strictly, NAS-Bench-201's PyTorch cell also runs dead ops, and a ``nor_conv`` fed by an all-zero
node adds its BatchNorm shift (a learned constant); a deployed network drops both, and so do we.
``published_counts`` gives the benchmark's own FLOPs/params convention (every non-``none`` op
counted), which matches the figures NAS-Bench-201 publishes exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.netspec import Activation, Add, Conv, Linear, NetSpec, Pool
from search.arch import Arch
from search.builder import NetBuilder
from search.space.base import Encoding, SearchSpace, SpaceError

SPACE_NAME = "nasbench201"
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NONE, SKIP, CONV1, CONV3, AVG_POOL = range(5)
# (source, target) of every gene, in cellstr order: node 1's edge, node 2's two, node 3's three.
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625
# Base-5 place value of each gene: the first edge (1←0) is the most significant digit.
PLACE = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1, dtype=np.int64)

DATASETS = ("cifar10", "cifar100", "imagenet16-120")


@dataclass(frozen=True)
class NasBench201Config:
    """The macro network around the cell; defaults are NAS-Bench-201's CIFAR-10 network."""

    dataset: str = "cifar10"
    in_channels: int = 3
    resolution: int = 32
    num_classes: int = 10
    channels: int = 16  # C of the first stage; stages run C, 2C, 4C
    cells_per_stage: int = 5  # N

    def __post_init__(self) -> None:
        where = f"nasbench201 config {self.dataset!r}"
        for key in ("in_channels", "resolution", "num_classes", "channels", "cells_per_stage"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpaceError(f"{where}: field '{key}': must be a positive integer, got {value!r}")
        # Two stride-2 reductions whose conv path (padded 3×3, rounds up) and shortcut path
        # (2×2 pool, rounds down) must agree in size: true only for multiples of 4.
        if self.resolution % 4:
            raise SpaceError(f"{where}: field 'resolution': must be a multiple of 4, got {self.resolution}")

    @classmethod
    def preset(cls, dataset: str) -> NasBench201Config:
        """NAS-Bench-201's network for ``dataset``: cifar10, cifar100 (32×32) or imagenet16-120 (16×16)."""
        if dataset == "cifar10":
            return cls()
        if dataset == "cifar100":
            return cls(dataset="cifar100", num_classes=100)
        if dataset == "imagenet16-120":
            return cls(dataset="imagenet16-120", resolution=16, num_classes=120)
        raise SpaceError(f"unknown NAS-Bench-201 dataset {dataset!r}; allowed: {', '.join(DATASETS)}")

    @property
    def stage_channels(self) -> tuple[int, int, int]:
        """Channels of the three stages."""
        return (self.channels, 2 * self.channels, 4 * self.channels)

    @property
    def stage_resolutions(self) -> tuple[int, int, int]:
        """Spatial size of the three stages."""
        return (self.resolution, self.resolution // 2, self.resolution // 4)


# ---- cellstr ---------------------------------------------------------------------------------
def to_cellstr(code: Encoding) -> str:
    """NAS-Bench-201's ``cellstr`` of one ``(6,)`` encoding, e.g. ``|nor_conv_3x3~0|+|...|``."""
    row = np.asarray(code).reshape(-1)
    if row.shape[0] != len(EDGES) or not np.issubdtype(row.dtype, np.integer):
        raise SpaceError(f"{SPACE_NAME}: an encoding has {len(EDGES)} integer genes, got {np.asarray(code)!r}")
    if row.min() < 0 or row.max() >= len(OPS):
        raise SpaceError(f"{SPACE_NAME}: genes must be 0..{len(OPS) - 1} (op indices), got {row.tolist()}")
    parts = []
    for node in range(1, NUM_NODES):
        edges = [f"{OPS[row[e]]}~{src}" for e, (src, dst) in enumerate(EDGES) if dst == node]
        parts.append("|" + "|".join(edges) + "|")
    return "+".join(parts)


def from_cellstr(text: str) -> np.ndarray:
    """The ``(6,)`` int64 encoding of a NAS-Bench-201 ``cellstr``; raises SpaceError saying what is malformed."""
    if not isinstance(text, str):
        raise SpaceError(f"{SPACE_NAME}: field 'cell': need a cellstr string, got {type(text).__name__}")
    where = f"{SPACE_NAME}: field 'cell': {text!r}"
    form = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
    parts = text.strip().split("+")
    if len(parts) != NUM_NODES - 1:
        raise SpaceError(f"{where}: need {NUM_NODES - 1} nodes joined by '+' ({form}), got {len(parts)}")
    code = np.zeros(len(EDGES), dtype=np.int64)
    gene = 0
    for node, part in enumerate(parts, start=1):
        if len(part) < 2 or part[0] != "|" or part[-1] != "|":
            raise SpaceError(f"{where}: node {node} must be wrapped in '|' like |op~0|, got {part!r}")
        tokens = part[1:-1].split("|")
        if len(tokens) != node:
            raise SpaceError(f"{where}: node {node} needs {node} edge(s) (inputs 0..{node - 1}), got {part!r}")
        for src, token in enumerate(tokens):
            op, sep, source = token.partition("~")
            if not sep:
                raise SpaceError(f"{where}: node {node}: edge {token!r} must be 'op~input'")
            if source != str(src):
                raise SpaceError(
                    f"{where}: node {node}: edge {token!r} must read node {src} "
                    f"(a node lists its inputs in order 0..{node - 1})"
                )
            if op not in OPS:
                raise SpaceError(f"{where}: node {node}: unknown op {op!r}; allowed: {', '.join(OPS)}")
            code[gene] = OPS.index(op)
            gene += 1
    return code


class NasBench201Space(SearchSpace):
    """The NAS-Bench-201 cell space (see module docstring for the encoding and its caveats)."""

    def __init__(self, config: NasBench201Config | None = None) -> None:
        self.config = config or NasBench201Config()
        self.name = SPACE_NAME
        self._card = np.full(len(EDGES), len(OPS), dtype=np.int64)
        self._gene_names = tuple(f"edge {dst}<-{src}" for src, dst in EDGES)

    @classmethod
    def from_name(cls, spec: str) -> NasBench201Space:
        """A space from ``nasbench201`` (CIFAR-10) or ``nasbench201-<dataset>`` (cifar10, cifar100, imagenet16-120)."""
        if spec == SPACE_NAME:
            return cls()
        prefix = SPACE_NAME + "-"
        if spec.startswith(prefix) and spec[len(prefix) :] in DATASETS:
            return cls(NasBench201Config.preset(spec[len(prefix) :]))
        allowed = [SPACE_NAME, *(prefix + d for d in DATASETS)]
        raise SpaceError(f"unknown space {spec!r}; allowed: {', '.join(allowed)}")

    # ---- encoding ----------------------------------------------------------------------------
    @property
    def cardinalities(self) -> np.ndarray:
        return self._card

    @property
    def gene_names(self) -> tuple[str, ...]:
        return self._gene_names

    def canonicalise(self, codes: Encoding) -> Encoding:
        """A copy of ``codes``: every one of the 15,625 cells is its own benchmark entry."""
        return np.array(codes, dtype=np.int64, copy=True)

    def encode(self, arch: Arch) -> Encoding:
        if arch.space != self.name:
            raise SpaceError(f"field 'space': arch belongs to {arch.space!r}, this space is {self.name!r}")
        if arch.names != ("cell",):
            raise SpaceError(f"{self.name}: arch fields {list(arch.names)} do not match the space; need ['cell']")
        return from_cellstr(arch["cell"])

    def decode(self, code: Encoding) -> Arch:
        return Arch.create(self.name, cell=to_cellstr(self.check_codes(code)[0]))

    def index(self, codes: Encoding) -> np.ndarray:
        """``(n,)`` int64 base-5 numbers of the encodings (0 .. 15,624), edge 1←0 most significant."""
        return self.check_codes(codes) @ PLACE

    def from_index(self, index: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """``(n, 6)`` encodings of base-5 numbers (the inverse of ``index``)."""
        idx = np.atleast_1d(np.asarray(index))
        if not np.issubdtype(idx.dtype, np.integer) or idx.min(initial=0) < 0 or idx.max(initial=0) >= NUM_ARCHS:
            raise SpaceError(f"{self.name}: indices must be integers 0..{NUM_ARCHS - 1}")
        return (idx.astype(np.int64)[:, None] // PLACE[None, :]) % len(OPS)

    # ---- structure ---------------------------------------------------------------------------
    def reach(self, codes: Encoding) -> tuple[np.ndarray, np.ndarray]:
        """Booleans ``(n, 4)``: which nodes the input reaches, and which nodes reach the output.

        Both follow non-``none`` edges only.
        """
        on = self.check_codes(codes) != NONE
        n = on.shape[0]
        fwd = np.zeros((n, NUM_NODES), dtype=bool)
        fwd[:, 0] = True
        for e, (src, dst) in enumerate(EDGES):  # EDGES is in topological order of targets
            fwd[:, dst] |= on[:, e] & fwd[:, src]
        back = np.zeros((n, NUM_NODES), dtype=bool)
        back[:, NUM_NODES - 1] = True
        for e in reversed(range(len(EDGES))):
            src, dst = EDGES[e]
            back[:, src] |= on[:, e] & back[:, dst]
        return fwd, back

    def live_edges(self, codes: Encoding) -> np.ndarray:
        """Boolean ``(n, 6)``: edges that are not ``none`` and lie on an input→output path."""
        arr = self.check_codes(codes)
        fwd, back = self.reach(arr)
        src = np.array([s for s, _ in EDGES])
        dst = np.array([d for _, d in EDGES])
        return (arr != NONE) & fwd[:, src] & back[:, dst]

    def connected(self, codes: Encoding) -> np.ndarray:
        """Boolean ``(n,)``: the cell output depends on its input (some path avoids ``none``)."""
        return self.reach(codes)[0][:, NUM_NODES - 1]

    def prune(self, codes: Encoding) -> np.ndarray:
        """Copies of ``codes`` with dead edges set to ``none``: the encoding of the network that runs.

        Cells with equal pruned codes compile to the same NetSpec (disconnected cells prune to
        all-``none``).
        """
        arr = self.check_codes(codes)
        return np.where(self.live_edges(arr), arr, NONE)

    # ---- size --------------------------------------------------------------------------------
    def size(self) -> int:
        return NUM_ARCHS

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Encoding]:
        """Every encoding, as one ``(15625, 6)`` batch in base-5 order (row i has ``index`` i)."""
        if limit < NUM_ARCHS:
            raise SpaceError(f"{self.name}: {NUM_ARCHS:,} networks exceed the enumeration limit {limit:,}")
        yield self.from_index(np.arange(NUM_ARCHS))

    # ---- compile -----------------------------------------------------------------------------
    def add_stem(self, b: NetBuilder) -> int:
        """Append the stem (3×3 conv to C channels + BN, no activation); returns its index."""
        return b.conv(self.config.channels, 3, name="stem")

    def add_cell(self, b: NetBuilder, code: Encoding, name: str = "cell") -> int:
        """Append one cell's live edges and node sums to ``b``; returns the index of the cell output.

        The cell reads ``b.current`` and keeps its channel count. ``nor_conv_k`` is ReLU → conv →
        BN; a node feeding several convs gets one shared ReLU (the tensor is the same). ``skip``
        adds no layer, ``none`` and dead edges are left out, a node summing one term is that term.
        ``avg_pool_3x3`` is NAS-Bench-201's ``nn.AvgPool2d(3, stride=1, padding=1,
        count_include_pad=False)``: shape-preserving, no weights, no MACs. The cell must be
        connected (see ``connected``).
        """
        row = self.check_codes(code)[0]
        live = self.live_edges(row)[0]
        channels = b.channels
        nodes: list[int | None] = [b.current]
        relu_of: dict[int, int] = {}
        for node in range(1, NUM_NODES):
            terms: list[int] = []
            for e, (src, dst) in enumerate(EDGES):
                if dst != node or not live[e]:
                    continue
                x = nodes[src]
                assert x is not None  # a live edge's source is reachable, so it was built
                op = OPS[row[e]]
                edge = f"{name}.n{node}.e{src}.{op}"
                if row[e] == SKIP:
                    terms.append(x)
                elif row[e] in (CONV1, CONV3):
                    if src not in relu_of:
                        relu_of[src] = b.add(Activation(name=f"{name}.n{src}.relu", kind="relu", inputs=(x,)))
                    kernel = 3 if row[e] == CONV3 else 1
                    terms.append(b.add(Conv(name=edge, out_channels=channels, kernel=kernel, inputs=(relu_of[src],))))
                else:  # avg_pool_3x3
                    pool = Pool(
                        name=edge, kind="avg", kernel=3, stride=1, padding=1, count_include_pad=False, inputs=(x,)
                    )
                    terms.append(b.add(pool))
            if not terms:
                nodes.append(None)
            elif len(terms) == 1:
                nodes.append(terms[0])
            else:
                nodes.append(b.add(Add(name=f"{name}.n{node}.sum", inputs=tuple(terms))))
        out = nodes[-1]
        if out is None:
            raise SpaceError(
                f"{self.name}: cell {to_cellstr(row)!r} has no path of non-'none' edges from its input (node 0) "
                "to its output (node 3): the network ignores its input and has no NetSpec "
                "(NAS-Bench-201 lists such cells with chance accuracy; space.connected(codes) finds them)"
            )
        b.current, b.channels = out, channels
        return out

    def add_reduction(self, b: NetBuilder, out: int, name: str = "reduction") -> int:
        """Append NAS-Bench-201's residual reduction block (stride 2, ``out`` channels); returns the sum's index.

        ReLU → 3×3/2 conv → BN → ReLU → 3×3 conv → BN, plus a shortcut 2×2/2 average pool → 1×1
        conv (no BN), summed. The ReLU between the convs is fused into the first.
        """
        x = b.current
        relu = b.add(Activation(name=f"{name}.relu", kind="relu", inputs=(x,)))
        conv_a = b.add(Conv(name=f"{name}.conv_a", out_channels=out, kernel=3, stride=2, act="relu", inputs=(relu,)))
        conv_b = b.add(Conv(name=f"{name}.conv_b", out_channels=out, kernel=3, inputs=(conv_a,)))
        pool = b.add(Pool(name=f"{name}.shortcut.pool", kind="avg", kernel=2, stride=2, inputs=(x,)))
        short = b.add(Conv(name=f"{name}.shortcut.conv", out_channels=out, kernel=1, bn=False, inputs=(pool,)))
        return b.add(Add(name=f"{name}.add", inputs=(conv_b, short)), out)

    def add_head(self, b: NetBuilder) -> int:
        """Append BN + ReLU, global average pool and the linear classifier; returns the classifier's index.

        Our NetSpec has no stand-alone BatchNorm; at inference it is a per-channel scale and
        shift, i.e. a depthwise 1×1 conv with bias — 2·C parameters, like the BN it replaces.
        """
        c = b.channels
        b.add(Conv(name="lastact", out_channels=c, kernel=1, groups=c, bias=True, bn=False, act="relu"))
        b.add(Pool(name="head.pool", kind="avg", global_pool=True))
        return b.add(Linear(name="head.classifier", out_channels=self.config.num_classes), self.config.num_classes)

    def to_netspec(self, arch: Arch, alignment: int = 8, dtype: str = "float32") -> NetSpec:
        """The NetSpec of NAS-Bench-201's macro network with ``arch``'s cell.

        Channels are fixed by the benchmark (16, 32, 64), so ``alignment`` is accepted for the
        interface and ignored. Raises SpaceError for disconnected cells (see ``connected``).
        """
        code = self.encode(arch)
        c = self.config
        b = NetBuilder((c.in_channels, c.resolution, c.resolution), name=f"{self.name}-{c.dataset}", dtype=dtype)
        self.add_stem(b)
        for stage, channels in enumerate(c.stage_channels):
            if stage:
                self.add_reduction(b, channels, name=f"reduction{stage}")
            for cell in range(c.cells_per_stage):
                self.add_cell(b, code, name=f"stage{stage}.cell{cell}")
        self.add_head(b)
        return b.build()

    # ---- the benchmark's own counts ---------------------------------------------------------
    def published_counts(self, codes: Encoding) -> dict[str, np.ndarray]:
        """NAS-Bench-201's ``flops`` and ``params`` (both in millions) of every row, as the benchmark counts them.

        Its counter sums conv and linear multiply-accumulates plus linear bias adds (no pooling,
        BN or activations) and parameters including BN's scale and shift; every non-``none`` op
        of the cell counts, dead or not. This reproduces the published values exactly, e.g.
        CIFAR-10 min/max 7.78305 / 220.11969 MFLOPs and 0.073306 / 1.531546 M params.
        """
        arr = self.check_codes(codes)
        c = self.config
        macs = 0.0
        params = 0.0
        per_op_macs = np.zeros(len(OPS))
        per_op_params = np.zeros(len(OPS))
        cin = c.in_channels
        for stage, (ch, res) in enumerate(zip(c.stage_channels, c.stage_resolutions, strict=True)):
            hw = res * res
            if stage == 0:
                macs += hw * ch * cin * 9  # stem
                params += ch * cin * 9 + 2 * ch
            else:
                prev, out_hw = ch // 2, hw
                macs += out_hw * ch * prev * 9 + out_hw * ch * ch * 9 + out_hw * ch * prev  # conv_a, conv_b, 1×1
                params += (ch * prev * 9 + 2 * ch) + (ch * ch * 9 + 2 * ch) + ch * prev
            per_op_macs[CONV1] += c.cells_per_stage * hw * ch * ch
            per_op_macs[CONV3] += c.cells_per_stage * hw * ch * ch * 9
            per_op_params[CONV1] += c.cells_per_stage * (ch * ch + 2 * ch)
            per_op_params[CONV3] += c.cells_per_stage * (ch * ch * 9 + 2 * ch)
        last = c.stage_channels[-1]
        macs += last * c.num_classes + c.num_classes
        params += 2 * last + last * c.num_classes + c.num_classes  # lastact BN, classifier
        # every one of the N cells per stage carries the same ops, so an op's total is per edge
        return {
            "nb201_flops": (macs + per_op_macs[arr].sum(axis=1)) / 1e6,
            "nb201_params": (params + per_op_params[arr].sum(axis=1)) / 1e6,
        }

    def describe(self) -> dict[str, object]:
        c = self.config
        return {
            **super().describe(),
            "dataset": c.dataset,
            "ops": list(OPS),
            "edges": [f"{dst}<-{src}" for src, dst in EDGES],
            "resolution": c.resolution,
            "num_classes": c.num_classes,
            "stage_channels": list(c.stage_channels),
            "cells_per_stage": c.cells_per_stage,
        }


__all__ = [
    "DATASETS",
    "EDGES",
    "NUM_ARCHS",
    "OPS",
    "SPACE_NAME",
    "NasBench201Config",
    "NasBench201Space",
    "from_cellstr",
    "to_cellstr",
]
