"""Pictures of Pareto fronts: 2-D staircase, parallel coordinates and a pairwise scatter matrix.

matplotlib is optional (a device running a local search has numpy only), so it is imported
inside each function; without it every function returns ``None`` instead of a path. Figures
are built on ``matplotlib.figure.Figure`` directly, not pyplot, so no global figure registry
or interactive backend is involved, and files are written to a temporary name and renamed so
a reader never sees half a PNG.

Inputs are *raw* values (natural direction, as reported) with one direction per objective;
dominance is decided in minimisation form via ``search.pareto``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.fileio import atomic_writer
from search.pareto import Directed, ParetoError, direction_signs, pareto_front, to_minimisation

# Colours for chosen operating points, cycled in the order the mapping gives them.
_CHOSEN_COLOURS = ("#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")
_FRONT_COLOUR = "#1f77b4"
_DOMINATED_COLOUR = "#b0b0b0"


def _axis_label(name: str, direction: str) -> str:
    return f"{name} ↑ (higher is better)" if direction == "max" else f"{name} ↓ (lower is better)"


def _directions(directions: Sequence[str | Directed], m: int) -> list[str]:
    if len(directions) != m:
        raise ParetoError(f"directions: {len(directions)} given for {m} objectives")
    return ["min" if s > 0 else "max" for s in direction_signs(directions)]


def _check_inputs(
    F_raw: np.ndarray, names: Sequence[str], directions: Sequence[str | Directed], min_objectives: int
) -> tuple[np.ndarray, list[str]]:
    V = np.asarray(F_raw, dtype=float)
    if V.ndim != 2 or V.shape[1] < min_objectives:
        raise ParetoError(f"F_raw: expected shape (n, m) with m >= {min_objectives}, got {V.shape}")
    if len(names) != V.shape[1]:
        raise ParetoError(f"names: {len(names)} given for {V.shape[1]} objectives")
    return V, _directions(directions, V.shape[1])


def _check_chosen(chosen: Mapping[str, int] | None, n: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for label, i in (chosen or {}).items():
        if not 0 <= int(i) < n:
            raise ParetoError(f"chosen[{label!r}]: index {i} outside 0..{n - 1}")
        out[label] = int(i)
    return out


def _front_mask(V: np.ndarray, dirs: Sequence[str], front_mask: np.ndarray | None) -> np.ndarray:
    if front_mask is not None:
        mask = np.asarray(front_mask, dtype=bool)
        if mask.shape != (len(V),):
            raise ParetoError(f"front_mask: shape {mask.shape}, expected ({len(V)},)")
        return mask
    mask = np.zeros(len(V), dtype=bool)
    mask[pareto_front(to_minimisation(V, dirs))] = True
    return mask


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fmt = target.suffix.lstrip(".") or "png"
    with atomic_writer(target) as fh:
        fig.savefig(fh, format=fmt, dpi=120, bbox_inches="tight")
    return target


def plot_front_2d(
    F_raw: np.ndarray,
    names: Sequence[str],
    directions: Sequence[str | Directed],
    path: str | os.PathLike[str],
    chosen: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Path | None:
    """Path of the written 2-objective picture (``None`` without matplotlib).

    Dominated points grey, the front in colour joined by its attainment staircase (the edge of
    the region it dominates), ``chosen`` points (label → row index, e.g. high / balanced / low)
    marked and annotated with their values. Rows with NaN are not drawn.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    V, dirs = _check_inputs(F_raw, names, directions, 2)
    if V.shape[1] != 2:
        raise ParetoError(f"F_raw: plot_front_2d needs exactly 2 objectives, got {V.shape[1]}")
    picks = _check_chosen(chosen, len(V))
    signs = direction_signs(dirs)
    M = V * signs
    front = pareto_front(M)
    front = front[np.lexsort((M[front, 1], M[front, 0]))]
    dominated = np.ones(len(V), dtype=bool)
    dominated[front] = False
    dominated &= ~np.isnan(V).any(axis=1)

    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    ax.scatter(V[dominated, 0], V[dominated, 1], s=12, c=_DOMINATED_COLOUR, label="dominated")
    if len(front):
        # staircase in minimisation form (right along f1, then down to the next point), mapped
        # back to raw axes so it is right whichever objective is maximised
        P = M[front]
        steps = np.empty((2 * len(P) - 1, 2))
        steps[0::2] = P
        steps[1::2, 0] = P[1:, 0]
        steps[1::2, 1] = P[:-1, 1]
        steps *= signs
        ax.plot(steps[:, 0], steps[:, 1], c=_FRONT_COLOUR, lw=1.2, zorder=2)
        ax.scatter(V[front, 0], V[front, 1], s=22, c=_FRONT_COLOUR, zorder=3, label=f"Pareto front ({len(front)})")
    for k, (label, i) in enumerate(picks.items()):
        colour = _CHOSEN_COLOURS[k % len(_CHOSEN_COLOURS)]
        ax.scatter([V[i, 0]], [V[i, 1]], s=140, marker="*", c=colour, edgecolors="black", zorder=4, label=label)
        ax.annotate(
            f"{label}\n{names[0]}={V[i, 0]:.4g}, {names[1]}={V[i, 1]:.4g}",
            (V[i, 0], V[i, 1]),
            xytext=(8, 8),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel(_axis_label(names[0], dirs[0]))
    ax.set_ylabel(_axis_label(names[1], dirs[1]))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def _best_is_one(V: np.ndarray, dirs: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # every axis scaled to [0, 1] with 1 = best, so "up is better" on every axis of the picture
    lo = np.nanmin(V, axis=0)
    hi = np.nanmax(V, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    X = (V - lo) / span
    maximised = np.array([d == "max" for d in dirs])
    X[:, ~maximised] = 1.0 - X[:, ~maximised]
    return X, lo, hi


def plot_parallel(
    F_raw: np.ndarray,
    names: Sequence[str],
    directions: Sequence[str | Directed],
    path: str | os.PathLike[str],
    front_mask: np.ndarray | None = None,
    chosen: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Path | None:
    """Path of the written parallel-coordinates picture (``None`` without matplotlib).

    One vertical axis per objective, each scaled to [0, 1] with 1 = best (the raw best and
    worst values are printed at the ends), one polyline per candidate: dominated grey, the
    front (``front_mask``, default: computed) in colour, ``chosen`` points thick and labelled.
    Meant for 3 or more objectives; 2 also work.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    V, dirs = _check_inputs(F_raw, names, directions, 2)
    picks = _check_chosen(chosen, len(V))
    mask = _front_mask(V, dirs, front_mask)
    ok = ~np.isnan(V).any(axis=1)
    X, lo, hi = _best_is_one(V, dirs)
    m = V.shape[1]
    xs = np.arange(m)

    fig = Figure(figsize=(max(6.0, 1.8 * m), 4.8))
    ax = fig.add_subplot()
    for rows, colour, width, alpha in (
        (np.flatnonzero(ok & ~mask), _DOMINATED_COLOUR, 0.6, 0.4),
        (np.flatnonzero(ok & mask), _FRONT_COLOUR, 1.0, 0.7),
    ):
        if len(rows):
            # one plot call per group (columns = lines) keeps thousands of candidates fast
            ax.plot(xs, X[rows].T, c=colour, lw=width, alpha=alpha)
    for k, (label, i) in enumerate(picks.items()):
        ax.plot(xs, X[i], c=_CHOSEN_COLOURS[k % len(_CHOSEN_COLOURS)], lw=2.5, marker="o", label=label, zorder=4)
    for k in range(m):
        ax.axvline(k, c="black", lw=0.8)
        best, worst = (hi[k], lo[k]) if dirs[k] == "max" else (lo[k], hi[k])
        ax.annotate(f"{best:.4g}", (k, 1.0), xytext=(0, 4), textcoords="offset points", ha="center", fontsize=8)
        ax.annotate(f"{worst:.4g}", (k, 0.0), xytext=(0, -12), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{name}\n({'max' if d == 'max' else 'min'})" for name, d in zip(names, dirs, strict=True)])
    ax.set_ylim(-0.08, 1.08)
    ax.set_ylabel("normalised (1 = best)")
    ax.set_title(title or f"{int((ok & mask).sum())} front points of {int(ok.sum())}")
    if picks:
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_pairwise(
    F_raw: np.ndarray,
    names: Sequence[str],
    directions: Sequence[str | Directed],
    path: str | os.PathLike[str],
    front_mask: np.ndarray | None = None,
    chosen: Mapping[str, int] | None = None,
    title: str | None = None,
) -> Path | None:
    """Path of the written scatter-matrix picture (``None`` without matplotlib).

    Panel (r, c) plots objective c against objective r in raw units: dominated grey, the front
    (``front_mask``, default: computed over all objectives) in colour, ``chosen`` as stars. The
    diagonal shows each objective's histogram (all vs front) and its direction.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    V, dirs = _check_inputs(F_raw, names, directions, 2)
    picks = _check_chosen(chosen, len(V))
    mask = _front_mask(V, dirs, front_mask)
    ok = ~np.isnan(V).any(axis=1)
    m = V.shape[1]
    rest, front = ok & ~mask, ok & mask

    fig = Figure(figsize=(2.4 * m + 1.0, 2.4 * m), layout="constrained")
    axes = fig.subplots(m, m, squeeze=False)
    for r in range(m):
        for c in range(m):
            ax = axes[r][c]
            if r == c:
                edges = np.histogram_bin_edges(V[ok, c], bins=20)  # shared, so the bars line up
                ax.hist(V[ok, c], bins=edges, color=_DOMINATED_COLOUR, label="all")
                ax.hist(V[front, c], bins=edges, color=_FRONT_COLOUR, alpha=0.8, label="front")
                ax.set_title(_axis_label(names[c], dirs[c]), fontsize=8)
            else:
                ax.scatter(V[rest, c], V[rest, r], s=5, c=_DOMINATED_COLOUR)
                ax.scatter(V[front, c], V[front, r], s=8, c=_FRONT_COLOUR)
                for k, (label, i) in enumerate(picks.items()):
                    colour = _CHOSEN_COLOURS[k % len(_CHOSEN_COLOURS)]
                    ax.scatter([V[i, c]], [V[i, r]], s=80, marker="*", c=colour, edgecolors="black", label=label)
            if r == m - 1:
                ax.set_xlabel(names[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(names[r], fontsize=8)
            ax.tick_params(labelsize=7)
    if picks and m > 1:
        handles, labels = axes[0][1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper right", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_convergence(
    n_evals: Sequence[int],
    best: Sequence[float],
    name: str,
    direction: str,
    path: str | os.PathLike[str],
    title: str | None = None,
) -> Path | None:
    """Path of a best-so-far-vs-evaluations picture for a one-objective search (``None`` without matplotlib).

    ``best`` is in the objective's natural direction (as reported, not minimisation form).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    ax.step(list(n_evals), list(best), where="post", color="tab:blue")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(_axis_label(name, direction))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)
