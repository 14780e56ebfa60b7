from hypothesis import given, settings
from hypothesis import strategies as st

from actors.rules.acked import AckedRanges

ranges = st.lists(st.tuples(st.integers(1, 200), st.integers(0, 20)).map(lambda t: (t[0], t[0] + t[1])), max_size=30)


@settings(max_examples=300, deadline=None)
@given(ranges, st.integers(0, 230), st.integers(0, 230))
def test_matches_a_plain_set_of_ids(adds, after, upto):
    acked, model = AckedRanges(), set()
    for first, last in adds:
        acked.add(first, last)
        model.update(range(first, last + 1))
    assert all((i in acked) == (i in model) for i in range(0, 240))
    # merged: no two intervals touch
    pairs = acked.to_pairs()
    assert all(b1 + 1 < a2 for (_, b1), (a2, _) in zip(pairs, pairs[1:]))
    # the low watermark from 0
    w = 0
    while w + 1 in model:
        w += 1
    assert acked.low_watermark() == w
    # the gaps are exactly the ids not in the model
    gap_ids = {i for a, b in acked.gaps(after, upto) for i in range(a, b + 1)}
    assert gap_ids == {i for i in range(after + 1, upto + 1) if i not in model}
    # persisted and read back
    assert AckedRanges.from_pairs(pairs).to_pairs() == pairs


def test_out_of_order_acks_merge_into_one_interval():
    acked = AckedRanges()
    acked.add(11, 20)
    acked.add(31, 40)
    assert acked.low_watermark() == 0 and len(acked) == 2
    assert list(acked.gaps(0, 45)) == [(1, 10), (21, 30), (41, 45)]
    acked.add(1, 10)
    acked.add(21, 30)
    assert acked.to_pairs() == [(1, 40)] and acked.low_watermark() == 40


def test_low_watermark_from_a_floor_and_forgetting_pruned_ids():
    acked = AckedRanges([(1, 5), (8, 12)])
    assert acked.low_watermark(7) == 12 and acked.low_watermark(5) == 5
    acked.forget_below(10)
    assert acked.to_pairs() == [(10, 12)]
    assert acked.low_watermark(9) == 12
