"""RateLimiter: a token bucket per device (PROTOCOL.md "Security")."""

import pytest

from actors.rules.rate import RateLimiter


def test_burst_then_rate():
    limiter = RateLimiter(rate=10.0, burst=100.0)
    t = 1000.0
    assert all(limiter.allow("d", t) for _ in range(100))  # the whole burst at once
    assert not limiter.allow("d", t)  # then nothing at the same instant
    assert not limiter.allow("d", t + 0.05)  # half a token
    assert limiter.allow("d", t + 0.1)  # one token after 1/rate s
    assert not limiter.allow("d", t + 0.1)
    # one second later: exactly `rate` more
    allowed = sum(limiter.allow("d", t + 1.1) for _ in range(50))
    assert allowed == 10


def test_refill_is_capped_at_burst():
    limiter = RateLimiter(rate=10.0, burst=5.0)
    for _ in range(5):
        assert limiter.allow("d", 0.0)
    assert not limiter.allow("d", 0.0)
    # a long silence refills to the burst, never beyond
    assert sum(limiter.allow("d", 3600.0) for _ in range(20)) == 5


def test_devices_do_not_slow_each_other():
    limiter = RateLimiter(rate=1.0, burst=3.0)
    for _ in range(3):
        assert limiter.allow("loop", 0.0)
    assert not limiter.allow("loop", 0.0)
    assert limiter.allow("quiet", 0.0)
    assert limiter.allow("quiet", 0.0)


def test_steady_rate_passes():
    limiter = RateLimiter(rate=200.0, burst=10_000.0)
    now = 0.0
    for _ in range(20_000):  # 100 s at exactly the rate
        assert limiter.allow("d", now)
        now += 1 / 200.0


def test_device_in_a_loop_held_to_rate():
    limiter = RateLimiter(rate=200.0, burst=10_000.0)
    passed = 0
    # 1000 messages/s for 20 s: the burst, then 200/s
    for i in range(20_000):
        passed += limiter.allow("d", i / 1000.0)
    assert passed == pytest.approx(10_000 + 200 * 20, abs=5)


def test_clock_going_backwards_gives_no_tokens():
    limiter = RateLimiter(rate=1.0, burst=1.0)
    assert limiter.allow("d", 100.0)
    assert not limiter.allow("d", 50.0)
    assert not limiter.allow("d", 100.5)  # still measured from 100
    assert limiter.allow("d", 101.0)


def test_bounded_number_of_buckets_least_recently_used_dropped():
    limiter = RateLimiter(rate=1.0, burst=1.0, max_devices=2)
    assert limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.0)  # a is now the most recently used
    assert limiter.allow("c", 0.0)  # b is forgotten
    assert len(limiter) == 2
    assert not limiter.allow("a", 0.0)  # a was kept with its empty bucket
    assert limiter.allow("b", 0.0)  # b starts again full
