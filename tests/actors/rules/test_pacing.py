import pytest

from actors.rules.pacing import Backoff, Pacer, TokenBucket


def test_token_bucket_keeps_the_rate_after_the_burst():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    sent, now = 0, 0.0
    while now < 10.0:
        wait = bucket.wait(now)
        if wait == 0:
            bucket.take(now)
            sent += 1
        else:
            now += wait
    assert 100 <= sent <= 106  # 5 of burst + 10/s for 10 s


def test_an_item_larger_than_the_burst_is_slowed_not_stuck():
    bucket = TokenBucket(rate=100, burst=100, now=0.0)
    assert bucket.wait(0.0, 1000) == 0.0
    bucket.take(0.0, 1000)
    assert bucket.wait(0.0, 1000) == pytest.approx(10.0)  # the debt, then a full bucket


def test_pacer_waits_for_the_slower_of_messages_and_bytes():
    pacer = Pacer(messages_per_s=100, bytes_per_s=1000, now=0.0)
    pacer.take(0.0, 1000)
    assert pacer.wait(0.0, 500) == pytest.approx(0.5)
    assert Pacer(None, None, now=0.0).wait(0.0, 10**9) == 0.0


def test_backoff_doubles_up_to_the_cap_with_jitter_around_it():
    low = Backoff(first_s=1, max_s=8, jitter=0.5, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high = Backoff(first_s=1, max_s=8, jitter=0.5, rand=lambda: 0.999999)
    assert high.next_delay() == pytest.approx(1.5, abs=1e-5)
    high.reset()
    assert high.attempts == 0
    with pytest.raises(ValueError):
        Backoff(first_s=0)
