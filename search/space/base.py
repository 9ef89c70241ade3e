"""The interface every search space implements (one interface, like pymoo's Problem).

A space maps between three forms of an architecture: the readable, hashable ``Arch``; a
fixed-length integer encoding (one gene per choice, value = index into that gene's options) for
vectorised search; and the ``NetSpec`` it compiles to. Batch operations work on ``(n, L)``
int arrays and always return *canonical* encodings (genes that do not change the network are
zeroed), so equal networks have equal encodings and de-duplication is a row comparison.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np

from runtime.netspec import NetSpec
from search.arch import Arch

Encoding = np.ndarray  # (L,) or (n, L) integer array


class SpaceError(ValueError):
    """A space configuration or an architecture/encoding that does not fit the space."""


class SearchSpace(ABC):
    """A search space: encode/decode, sample/mutate/crossover, size, compile to NetSpec."""

    name: str

    # ---- encoding ----------------------------------------------------------------------------
    @property
    @abstractmethod
    def cardinalities(self) -> np.ndarray:
        """Number of options of every gene, shape ``(L,)``."""

    @property
    def encoding_length(self) -> int:
        """Number of genes L."""
        return int(self.cardinalities.shape[0])

    @abstractmethod
    def encode(self, arch: Arch) -> Encoding:
        """The canonical ``(L,)`` encoding of ``arch``; raises SpaceError if it is not in the space."""

    @abstractmethod
    def decode(self, code: Encoding) -> Arch:
        """The Arch of one encoding (canonicalised first)."""

    @abstractmethod
    def canonicalise(self, codes: Encoding) -> Encoding:
        """Copies of ``codes`` with genes that do not affect the network set to 0."""

    def encode_batch(self, archs: Sequence[Arch]) -> Encoding:
        """``(n, L)`` int array of the archs' encodings."""
        if not archs:
            return np.zeros((0, self.encoding_length), dtype=np.int64)
        return np.stack([self.encode(a) for a in archs])

    def decode_batch(self, codes: Encoding) -> list[Arch]:
        """The Archs of an ``(n, L)`` array."""
        return [self.decode(row) for row in self.check_codes(codes)]

    def check_codes(self, codes: Encoding) -> np.ndarray:
        """``codes`` as a 2-D int64 array; raises SpaceError on wrong length or out-of-range genes."""
        arr = np.asarray(codes)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.encoding_length:
            raise SpaceError(f"{self.name}: encodings must have {self.encoding_length} genes, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise SpaceError(f"{self.name}: encodings must be integers, got {arr.dtype}")
        bad = (arr < 0) | (arr >= self.cardinalities)
        if bad.any():
            row, gene = np.argwhere(bad)[0]
            raise SpaceError(
                f"{self.name}: gene {gene} ({self.gene_names[gene]}) of row {row} is {arr[row, gene]}, "
                f"allowed 0..{self.cardinalities[gene] - 1}"
            )
        return arr.astype(np.int64, copy=False)

    @property
    @abstractmethod
    def gene_names(self) -> tuple[str, ...]:
        """A readable name per gene (for messages and plots)."""

    # ---- variation ---------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> Encoding:
        """``n`` canonical encodings, each gene uniform over its options."""
        codes = rng.integers(0, self.cardinalities, size=(n, self.encoding_length))
        return self.canonicalise(codes)

    def distinct_sample(
        self, n: int, rng: np.random.Generator, exclude: Encoding | None = None, attempts: int = 100
    ) -> Encoding:
        """Up to ``n`` distinct canonical encodings, none a row of ``exclude`` (fewer only if the space runs out).

        Held-out sets must not repeat training rows, so duplicates are redrawn, ``attempts`` batches at most.
        """
        banned: set[bytes] = set()
        if exclude is not None and len(exclude):
            banned = {row.tobytes() for row in self.canonicalise(exclude)}
        seen: dict[bytes, np.ndarray] = {}
        for _ in range(attempts):
            for row in self.sample(n, rng):
                key = row.tobytes()
                if key not in banned:
                    seen.setdefault(key, row)
                if len(seen) == n:
                    return np.stack(list(seen.values()))
        return np.stack(list(seen.values())) if seen else np.zeros((0, self.encoding_length), dtype=np.int64)

    def mutate(self, codes: Encoding, p: float, rng: np.random.Generator) -> Encoding:
        """Each gene of each row is, with probability ``p``, moved to a different option."""
        arr = self.check_codes(codes).copy()
        card = self.cardinalities
        hit = (rng.random(arr.shape) < p) & (card > 1)
        # shift by 1..card-1 modulo card: uniform over the *other* options
        shift = 1 + (rng.random(arr.shape) * np.maximum(card - 1, 1)).astype(np.int64)
        arr = np.where(hit, (arr + shift) % card, arr)
        return self.canonicalise(arr)

    def crossover(self, a: Encoding, b: Encoding, rng: np.random.Generator) -> Encoding:
        """Uniform crossover of paired rows of ``a`` and ``b``: each gene from either parent."""
        pa, pb = self.check_codes(a), self.check_codes(b)
        if pa.shape != pb.shape:
            raise SpaceError(f"{self.name}: crossover needs equal batches, got {pa.shape} and {pb.shape}")
        take_a = rng.random(pa.shape) < 0.5
        return self.canonicalise(np.where(take_a, pa, pb))

    # ---- size --------------------------------------------------------------------------------
    @abstractmethod
    def size(self) -> int:
        """Number of distinct networks in the space (exact integer)."""

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Encoding]:
        """Every canonical encoding, in batches; raises SpaceError if the space exceeds ``limit``."""
        raise SpaceError(f"{self.name}: enumeration is not supported; size() = {self.size():.3e}")

    # ---- compile -----------------------------------------------------------------------------
    @abstractmethod
    def to_netspec(self, arch: Arch, alignment: int = 8, dtype: str = "float32") -> NetSpec:
        """The NetSpec ``arch`` compiles to, channels rounded to ``alignment``."""

    def describe(self) -> dict[str, object]:
        """A JSON-ready summary of the space."""
        return {"name": self.name, "genes": self.encoding_length, "size": self.size()}
