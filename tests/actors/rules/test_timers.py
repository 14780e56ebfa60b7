"""TimerHeap: one deadline per key, popped in time order."""

from actors.rules.timers import TimerHeap


def test_empty_heap():
    heap = TimerHeap()
    assert len(heap) == 0
    assert heap.next_at() is None
    assert heap.pop_due(1e12) == []


def test_pop_due_in_time_order_with_payloads():
    heap = TimerHeap()
    heap.schedule("c", 30.0, "pc")
    heap.schedule("a", 10.0, "pa")
    heap.schedule("b", 20.0, "pb")
    assert len(heap) == 3
    assert heap.next_at() == 10.0
    assert heap.pop_due(25.0) == [("a", 10.0, "pa"), ("b", 20.0, "pb")]
    assert len(heap) == 1
    assert heap.next_at() == 30.0
    assert heap.pop_due(30.0) == [("c", 30.0, "pc")]  # due exactly at its time
    assert heap.next_at() is None
    assert len(heap) == 0


def test_not_due_before_its_time():
    heap = TimerHeap()
    heap.schedule("a", 10.0)
    assert heap.pop_due(9.999) == []
    assert len(heap) == 1


def test_equal_times_pop_in_schedule_order():
    heap = TimerHeap()
    for key in ("x", "y", "z"):
        heap.schedule(key, 5.0)
    assert [k for k, _, _ in heap.pop_due(5.0)] == ["x", "y", "z"]


def test_replace_to_later_time():
    heap = TimerHeap()
    heap.schedule("a", 10.0, "old")
    heap.schedule("a", 50.0, "new")
    assert len(heap) == 1
    assert heap.next_at() == 50.0
    assert heap.pop_due(20.0) == []  # the replaced entry never fires
    assert heap.pop_due(50.0) == [("a", 50.0, "new")]
    assert heap.pop_due(1e9) == []


def test_replace_to_earlier_time():
    heap = TimerHeap()
    heap.schedule("a", 50.0, "old")
    heap.schedule("a", 10.0, "new")
    assert heap.next_at() == 10.0
    assert heap.pop_due(60.0) == [("a", 10.0, "new")]  # fires once, not twice
    assert len(heap) == 0


def test_cancel():
    heap = TimerHeap()
    heap.schedule("a", 10.0)
    heap.schedule("b", 20.0)
    heap.cancel("a")
    heap.cancel("never-scheduled")  # harmless
    assert len(heap) == 1
    assert heap.next_at() == 20.0
    assert heap.pop_due(100.0) == [("b", 20.0, None)]
    heap.cancel("b")
    assert heap.next_at() is None


def test_cancel_then_schedule_again():
    heap = TimerHeap()
    heap.schedule("a", 10.0, 1)
    heap.cancel("a")
    heap.schedule("a", 15.0, 2)
    assert heap.pop_due(100.0) == [("a", 15.0, 2)]


def test_many_replacements_stay_bounded_and_correct():
    heap = TimerHeap()
    for i in range(10_000):
        heap.schedule(i % 7, float(i))
    assert len(heap) == 7
    assert len(heap._heap) <= 4 * 7 + 64 + 1  # compaction keeps stale entries bounded
    due = heap.pop_due(1e9)
    assert sorted(k for k, _, _ in due) == list(range(7))
    assert [at for _, at, _ in due] == sorted(at for _, at, _ in due)
    assert {at for _, at, _ in due} == {float(i) for i in range(10_000 - 7, 10_000)}


def test_tuple_keys():
    heap = TimerHeap()
    heap.schedule(("device", "u1"), 3.0)
    heap.schedule(("command", 7), 2.0)
    assert [k for k, _, _ in heap.pop_due(3.0)] == [("command", 7), ("device", "u1")]
