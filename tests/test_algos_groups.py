"""The group-by helpers against slow python references (rftkit/algos/groups.py)."""

import statistics

import pytest
import torch

from rftkit.algos.advantages import group_stats
from rftkit.algos.groups import group_reduce, group_rows


def _slow_rows(labels):
    out = {}
    for row, key in enumerate(labels):
        if key not in out:
            out[key] = []
        out[key].append(row)
    return out


def _slow_reduce(values, ids):
    """Per group in first-appearance order: (label, first row, count, mean, std, min, max)."""
    rows = _slow_rows(ids)
    out = []
    for label, rs in rows.items():
        v = [values[r] for r in rs]
        std = statistics.stdev(v) if len(v) > 1 else 0.0
        out.append((label, rs[0], len(v), statistics.fmean(v), std, min(v), max(v)))
    return out


def test_group_rows_tensor_and_keys_first_appearance_order():
    assert group_rows(torch.tensor([2, 2, 0, 1, 0, 2])) == {2: [0, 1, 5], 0: [2, 4], 1: [3]}
    assert list(group_rows(torch.tensor([2, 2, 0, 1, 0, 2]))) == [2, 0, 1]
    assert group_rows(["b", "a", "b"]) == {"b": [0, 2], "a": [1]}
    assert group_rows(iter([])) == {} and group_rows(torch.tensor([], dtype=torch.long)) == {}


@pytest.mark.parametrize("seed", range(20))
def test_group_reduce_matches_slow_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 40, (1,), generator=g))
    ids = torch.randint(-3, 7, (n,), generator=g) * 5  # arbitrary, non-contiguous labels
    values = torch.randn(n, generator=g, dtype=torch.float64)
    if seed % 3 == 0:
        values = torch.randint(0, 2, (n,), generator=g).double()  # 0/1 rewards: many equal groups
    got = group_reduce(values, ids)
    ref = _slow_reduce(values.tolist(), ids.tolist())
    assert got.labels.tolist() == [r[0] for r in ref]
    assert got.first.tolist() == [r[1] for r in ref]
    assert got.count.tolist() == [r[2] for r in ref]
    for field, j in (("mean", 3), ("std", 4), ("min", 5), ("max", 6)):
        assert torch.allclose(getattr(got, field), torch.tensor([r[j] for r in ref], dtype=torch.float64)), field
    assert ((got.max == got.min) == torch.tensor([r[5] == r[6] for r in ref])).all()
    # the per-row counterpart the advantage estimators use agrees with it
    mean, std, count = group_stats(values, ids)
    inv = torch.tensor([list(_slow_rows(ids.tolist())).index(i) for i in ids.tolist()])
    assert torch.allclose(mean, got.mean[inv]) and torch.allclose(std, got.std[inv])
    assert torch.equal(count, got.count[inv])


def test_group_reduce_equal_values_and_edge_cases():
    v = torch.full((3,), 0.1)  # 0.1 + 0.1 + 0.1 != 0.3: std may round, min == max does not
    got = group_reduce(v, torch.zeros(3, dtype=torch.long))
    assert bool(got.min == got.max) and got.std.item() == pytest.approx(0.0, abs=1e-7)
    one = group_reduce(torch.tensor([5.0]), torch.tensor([9]))
    assert one.std.tolist() == [0.0] and one.labels.tolist() == [9] and one.first.tolist() == [0]
    ints = group_reduce(torch.tensor([1, 0, 1]), torch.tensor([0, 0, 1]))
    assert ints.mean.tolist() == [0.5, 1.0]
    empty = group_reduce(torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert empty.count.numel() == 0
    with pytest.raises(ValueError):
        group_reduce(torch.zeros(2), torch.zeros(3, dtype=torch.long))
