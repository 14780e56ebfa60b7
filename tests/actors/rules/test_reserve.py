"""The free-space reserve rule, without a disk: the database's own free
pages count as room, a shortage starts and ends once."""

from actors.rules.reserve import MB, Reserve


def test_free_pages_inside_the_database_count_as_room():
    reserve = Reserve(64 * MB)
    assert reserve.check(0.0, disk_free=100 * MB, reusable=0).deficit == 0
    short = reserve.check(1.0, disk_free=40 * MB, reusable=10 * MB)
    assert short.deficit == 14 * MB and short.started and not short.ended
    still = reserve.check(2.0, disk_free=40 * MB, reusable=20 * MB)
    assert still.deficit == 4 * MB and not still.started
    reserve.pruned_rows(5000)
    done = reserve.check(3.0, disk_free=40 * MB, reusable=30 * MB)
    assert done.deficit == 0 and done.ended
    snap = reserve.snapshot(3.0)
    assert snap["shortages"] == 1 and snap["pruned_for_reserve"] == 5000 and snap["short_for_s"] is None


def test_off_when_zero():
    reserve = Reserve(0)
    assert not reserve.enabled
    assert reserve.check(0.0, disk_free=0, reusable=0).deficit == 0
