"""search.profiling: block decomposition and keys, robust timing, resumable store, ORT fusion facts, the CLI."""

from __future__ import annotations

import collections
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from runtime.cli import main
from runtime.hardware.profile import DeviceProfile
from runtime.onnx_builder import build_model
from search.cost.table import SpaceCostTable
from search.predictors.latency import LatencyTable
from search.profiling.blocks import decompose
from search.profiling.cli import register
from search.profiling.run import Settings, profile_device
from search.profiling.store import ResultStore, StoreError
from search.profiling.timing import create_session, prepare, robust_stats, time_interleaved
from search.space import MobileNetV3Config, MobileNetV3Space, load_space

TINY = {
    "name": "tiny",
    "in_channels": 1,
    "num_classes": 10,
    "resolutions": [16],
    "depths": [1, 2],
    "kernels": [3, 5],
    "expands": [3],
    "stem_channels": 8,
    "stem_stride": 1,
    "first_block_channels": 8,
    "stage_channels": [16, 24],
    "stage_strides": [2, 2],
    "stage_se": [False, True],
    "stage_acts": ["relu", "hswish"],
    "feature_channels": 32,
}
KEY = re.compile(
    r"^(conv:k\d+:cin\d+:cout\d+:hw\d+:s[12]:act=\w+"
    r"|mbconv:k\d+:e[\d.]+:cin\d+:mid\d+:cout\d+:hw\d+:s[12]:se\d+:act=\w+"
    r"|head:cin\d+:hw\d+:conv\d+:fc\d+:out\d+:act=\w+)$"
)


def tiny_space() -> MobileNetV3Space:
    return MobileNetV3Space(MobileNetV3Config.from_dict(TINY))


# ---- decomposition --------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["imagenet", "mnist"])
def test_fragments_add_up_to_the_cost_table_and_keys_are_readable(preset: str) -> None:
    space = load_space(preset)
    blocks = decompose(space, 8)
    assert all(KEY.match(k) for k in blocks.keys)
    codes = space.sample(40, np.random.default_rng(0))
    table = SpaceCostTable(space, alignment=8).evaluate(codes)
    for metric in ("macs", "params"):
        summed = [sum(blocks.fragments[k].net.cost_arrays()[metric].sum() for k in blocks.arch_keys(c)) for c in codes]
        np.testing.assert_array_equal(summed, table[metric])
    # whole networks: the fragments are the network's layers, block for block
    for code in codes[:5]:
        net = space.to_netspec(space.decode(code), alignment=8)
        layers = sum(len(blocks.fragments[k].net.layers) for k in blocks.arch_keys(code))
        assert layers == len(net.layers)


def test_alignment_changes_widths_and_therefore_keys() -> None:
    space = load_space("imagenet")
    a8, a16 = decompose(space, 8), decompose(space, 16)
    assert set(a8.keys) != set(a16.keys)
    assert "mbconv:k3:e3:cin16:mid48:cout24:hw80:s2:se0:act=relu" in a8.fragments


# ---- timing ----------------------------------------------------------------------------------
def test_robust_stats_rejects_outliers_by_mad() -> None:
    rng = np.random.default_rng(1)
    clean = 2.0 + 0.02 * rng.standard_normal(60)
    stats = robust_stats(np.concatenate([clean, [4.5, 7.0, 0.2]]))
    assert stats.rejected == 3 and stats.n == 60
    assert stats.median_ms == pytest.approx(np.median(clean), abs=1e-12)
    assert 0.01 < stats.mad_ms < 0.04
    plain = float(np.mean(np.concatenate([clean, [4.5, 7.0, 0.2]])))
    assert abs(plain - 2.0) > 5 * abs(stats.median_ms - 2.0)  # the mean is dragged, the robust median is not
    ties = robust_stats([1.0, 1.0, 1.0, 1.0, 9.0])  # MAD 0: keep the values equal to the median
    assert (ties.median_ms, ties.n, ties.rejected, ties.mad_ms) == (1.0, 4, 1, 0.0)
    with pytest.raises(ValueError, match="non-empty finite"):
        robust_stats([])
    with pytest.raises(ValueError, match="non-empty finite"):
        robust_stats([1.0, float("nan")])


def test_time_interleaved_keeps_one_or_all_runs_per_visit() -> None:
    space = tiny_space()
    blocks = decompose(space, 8)
    frag = next(iter(blocks.fragments.values()))
    models = {"a": prepare(create_session(build_model(frag.net))), "b": prepare(create_session(build_model(frag.net)))}
    fastest = time_interleaved(models, rounds=3, runs_per_visit=4, warmup=1)
    every = time_interleaved(models, rounds=3, runs_per_visit=4, warmup=1, per_visit="all")
    assert {k: len(v) for k, v in fastest.items()} == {"a": 3, "b": 3}
    assert {k: len(v) for k, v in every.items()} == {"a": 9, "b": 9}
    assert all(t > 0 for v in every.values() for t in v)
    with pytest.raises(ValueError, match="per_visit"):
        time_interleaved(models, per_visit="mean")


# ---- ONNX Runtime's fusions, as features.py documents them -----------------------------------
def test_onnxruntime_fuses_as_the_feature_rules_say(tmp_path: Path) -> None:
    space = tiny_space()
    code = space.canonicalise(space.sample(1, np.random.default_rng(3)))[0]
    code[space.depth_offset + 1] = 1  # two blocks in the SE stage: one has a residual add
    arch = space.decode(code)
    net = space.to_netspec(arch, alignment=8)
    path = tmp_path / "opt.onnx"
    create_session(build_model(net), optimized_path=str(path))
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    n_se = sum(1 for layer in net.layers if layer.op == "se")
    n_add = sum(1 for layer in net.layers if layer.op == "add")
    assert n_add >= 1 and n_se >= 1
    assert ops["Add"] == 0  # residual adds fused into the projection convs
    assert ops["Mul"] == n_se + 1  # SE scaling not fused; + HardSwish after the head's Gemm
    assert ops["HardSwish"] == 0  # conv + HardSwish fused


# ---- resumable store --------------------------------------------------------------------------
def test_store_resumes_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "p.partial.json"
    store = ResultStore(path, {"space": "x", "rounds": 3}, resume=False)
    store.put("blocks", {"k1": {"median_ms": 1.0}})
    with pytest.raises(StoreError, match="pass --resume"):
        ResultStore(path, {"space": "x", "rounds": 3}, resume=False)
    again = ResultStore(path, {"space": "x", "rounds": 3}, resume=True)
    assert again.section("blocks") == {"k1": {"median_ms": 1.0}}
    with pytest.raises(StoreError, match=r"different rounds \(was \[3\], now \[5\]\)"):
        ResultStore(path, {"space": "x", "rounds": 5}, resume=True)
    again.remove()
    assert not path.exists()


# ---- the whole run and the CLI ----------------------------------------------------------------
SMALL = Settings(block_rounds=2, block_runs=2, block_batch=4, net_rounds=2, net_runs=2, net_batch=2)


@pytest.mark.slow
def test_interrupted_profile_resumes_and_writes_a_loadable_profile(tmp_path: Path) -> None:
    space = tiny_space()
    out = tmp_path / "dev.yaml"
    seen: list[str] = []

    def interrupt(message: str) -> None:
        seen.append(message)
        if message.startswith("blocks 8/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile_device(out, space, space_spec="tiny", quick=True, calibrate=2, settings=SMALL, progress=interrupt)
    partial = json.loads((tmp_path / "dev.partial.json").read_text())
    assert len(partial["sections"]["blocks"]) == 8
    with pytest.raises(StoreError, match="--resume"):
        profile_device(out, space, space_spec="tiny", quick=True, calibrate=2, settings=SMALL)
    lines: list[str] = []
    result = profile_device(
        out, space, space_spec="tiny", quick=True, resume=True, calibrate=2, settings=SMALL, progress=lines.append
    )
    assert any("resuming" in line for line in lines)
    assert not (tmp_path / "dev.partial.json").exists()
    blocks = decompose(space, result.profile.alignment("float32"))
    table = LatencyTable.load(result.lut_path)
    assert set(table.entries) == set(blocks.keys)
    assert result.profile == DeviceProfile.from_yaml(out)
    assert result.predictor_path is not None and result.predictor_path.exists()


@pytest.mark.slow
def test_cli_profile_quick_on_a_tiny_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "board.yaml"
    argv = ["profile", "--out", str(out), "--quick", "--space", str(space_file), "--calibrate", "0", "--json"]
    code = main([*argv, "--alignment", "8", "--name", "board"], commands={"profile": register})
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["device"] == "board" and payload["predictor"] is None
    profile = DeviceProfile.from_yaml(out)
    assert profile.measured is not None and profile.measured.predictor is None
    assert profile.measured.roofline["peak_gflops"] > 0 and profile.measured.roofline["bandwidth_gbps"] > 0
    prov = profile.measured.provenance
    assert prov["ort_version"] and prov["strategy"] == "no_spin" and prov["quick"] is True
    assert profile.alignment("float32") == 8 and profile.cores >= 1
    assert "ESTIMATE" in out.read_text()
    table = LatencyTable.load(profile.measured.resolve(profile.measured.lut))
    assert set(table.entries) == set(decompose(tiny_space(), 8).keys)
    assert all(v >= 0 for v in table.entries.values())
    # file round trip: from_yaml(to_yaml) of the written profile
    copy = tmp_path / "copy.yaml"
    copy.write_text(profile.to_yaml())
    assert DeviceProfile.from_yaml(copy) == profile


def test_cli_profile_help_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["profile", "--help"], commands={"profile": register})
    text = capsys.readouterr().out
    assert "fleetnas profile --out my_board.yaml --quick" in text and "--resume" in text
    code = main(["profile", "--out", "x.yaml", "--space", "nasbench201"], commands={"profile": register})
    assert code == 2 and "not a MobileNetV3 space" in capsys.readouterr().err


class _FakeClock:
    """A deterministic clock: each run of a fake session advances it by duration x the current load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.load = 1.0
        self.runs = 0

    def __call__(self) -> float:
        return self.now


class _FakeSession:
    def __init__(self, clock: _FakeClock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds

    def run(self, outputs, feed) -> None:
        self.clock.runs += 1
        if self.clock.runs == 30:  # another job starts: everything takes 3x as long from now on
            self.clock.load = 3.0
        self.clock.now += self.seconds * self.clock.load


def test_anchor_ratios_cancel_drift(monkeypatch: pytest.MonkeyPatch) -> None:
    from search.profiling import timing

    clock = _FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    models = {n: timing.Timed(_FakeSession(clock, s), {}, []) for n, s in (("a", 1e-3), ("b", 2e-3), ("c", 4e-3))}
    raw = timing.time_interleaved(models, rounds=6, runs_per_visit=3, warmup=0)
    assert max(raw["a"]) == pytest.approx(3 * min(raw["a"]))  # the drift is in the raw times
    clock.runs, clock.load = 0, 1.0
    anchor = timing.Anchor(timing.Timed(_FakeSession(clock, 2e-3), {}, []), runs_per_visit=3)
    ratios = timing.time_interleaved(models, rounds=6, runs_per_visit=3, warmup=0, anchor=anchor, anchor_every=2)
    assert max(anchor.visits) == pytest.approx(3 * min(anchor.visits))  # the anchor saw the drift too
    for name, want in (("a", 0.5), ("b", 1.0), ("c", 2.0)):
        # ... and the ratios do not: exact except where the load changed between two anchor visits
        exact = np.isclose(ratios[name], want, rtol=1e-9)
        assert exact.sum() >= len(exact) - 1
        assert timing.robust_stats(ratios[name]).median_ms == pytest.approx(want)
    stats = timing.scale_stats(timing.robust_stats(ratios["c"]), anchor.reference_ms)
    assert stats.median_ms == pytest.approx(2.0 * anchor.reference_ms)
