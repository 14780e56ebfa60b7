import pytest

from actors.rules.histogram import Histogram, quantile_bound


def test_values_land_in_the_bucket_of_their_upper_bound():
    h = Histogram((1, 10, 100))
    for v in (0.5, 1, 1.01, 10, 50, 100, 1000):
        h.observe(v)
    assert h.snapshot()["counts"] == [2, 2, 2, 1]


def test_quantile_bound_reads_the_bucket_of_the_quantile():
    h = Histogram((1, 10, 100))
    for _ in range(98):
        h.observe(0.5)
    h.observe(50)
    h.observe(5000)
    snap = h.snapshot()
    assert quantile_bound(snap, 0.5) == 1.0
    assert quantile_bound(snap, 0.99) == 100.0
    assert quantile_bound(snap, 1.0) == float("inf")


def test_quantile_bound_of_what_came_after_an_earlier_snapshot():
    h = Histogram((1, 10, 100))
    for _ in range(1000):
        h.observe(0.5)
    before = h.snapshot()
    for _ in range(10):
        h.observe(50)
    assert quantile_bound(h.snapshot(), 0.99) == 1.0  # drowned by the old ones
    assert quantile_bound(h.snapshot(), 0.99, since=before) == 100.0
    assert quantile_bound(before, 0.5, since=before) is None


def test_bounds_must_increase():
    with pytest.raises(ValueError):
        Histogram((10, 1))
