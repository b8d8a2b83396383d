"""The checkpoint bookkeeping: which state to restore for a new prompt, what a memory bound evicts."""

from __future__ import annotations

from localagent.engines.checkpoints import CheckpointStore


def test_best_is_the_longest_prefix_within_the_limit():
    store = CheckpointStore(budget_bytes=1000)
    store.add([1, 2], b"a", pinned=True)
    store.add([1, 2, 3, 4], b"b")
    store.add([1, 2, 9, 9, 9], b"c")
    found = store.best([1, 2, 3, 4, 5, 6], limit=5)
    assert found is not None and found.data == b"b"
    # a checkpoint as long as the limit is allowed; one past it is not
    assert store.best([1, 2, 3, 4, 5], limit=4).data == b"b"
    assert store.best([1, 2, 3, 4, 5], limit=3).data == b"a"
    # another conversation that shares only the system prompt
    assert store.best([1, 2, 7, 7], limit=3).data == b"a"
    assert store.best([5, 2, 3], limit=2) is None
    assert store.restored == 4


def test_count_bound_evicts_least_recently_used_but_keeps_the_pinned_system_prompt():
    store = CheckpointStore(budget_bytes=10_000, max_count=3)
    store.add([1], b"s", pinned=True)
    for n in range(2, 7):
        store.add(list(range(1, n + 1)), b"x")
    assert len(store) == 3
    assert store.positions() == [1, 5, 6]  # the system prompt survives, the newest two stay
    assert store.evicted == 3


def test_byte_budget_is_never_exceeded_and_an_oversized_state_is_refused():
    store = CheckpointStore(budget_bytes=100, max_count=8)
    assert store.add([1], b"s" * 30, pinned=True)
    assert store.add([1, 2], b"a" * 40)
    assert store.add([1, 2, 3], b"b" * 40)
    assert store.bytes_used <= 100
    assert store.positions() == [1, 3]
    assert not store.add([1, 2, 3, 4], b"c" * 101)
    assert store.positions() == [1, 3]


def test_pinned_goes_last_when_nothing_else_is_left():
    store = CheckpointStore(budget_bytes=50, max_count=8)
    store.add([1], b"s" * 30, pinned=True)
    store.add([1, 2], b"a" * 40)  # 70 bytes: the pinned one must go, the newest stays
    assert store.positions() == [2]


def test_same_tokens_replace_the_old_state():
    store = CheckpointStore(budget_bytes=100)
    store.add([1, 2], b"old")
    store.add([1, 2], b"new")
    assert len(store) == 1 and store.best([1, 2, 3], limit=2).data == b"new"
    assert store.has([1, 2]) and not store.has([1])
