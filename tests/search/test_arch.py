import json

import pytest

from search.arch import Arch, ArchError


def test_arch_is_hashable_and_order_independent():
    a = Arch.create("s", depths=[2, 3], width=1.0, kernels=[[3, 5], [7, 7, 3]])
    b = Arch.create("s", width=1.0, kernels=((3, 5), (7, 7, 3)), depths=(2, 3))
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a["kernels"] == ((3, 5), (7, 7, 3))


def test_json_round_trip_keeps_types():
    a = Arch.create("s", resolution=224, width=1.2, depths=[2, 4], name="x")
    text = json.dumps(a.to_json())
    back = Arch.from_json(json.loads(text))
    assert back == a
    assert isinstance(back["width"], float) and isinstance(back["resolution"], int)
    assert a.dumps() == back.dumps()


def test_replace_and_missing_key():
    a = Arch.create("s", width=1.0)
    assert a.replace(width=1.2)["width"] == 1.2
    with pytest.raises(KeyError, match="width"):
        a["depth"]


def test_bad_json_is_named():
    with pytest.raises(ArchError, match="space"):
        Arch.from_json({"width": 1.0})
    with pytest.raises(ArchError, match="depths"):
        Arch.create("s", depths={"a": 1})
