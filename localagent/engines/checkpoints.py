"""State checkpoints for models whose memory cannot be cut back to an earlier token.

An attention KV cache can drop every cell past a position, so a prompt that shares a prefix
with the cached one re-evaluates only its new tail. Recurrent state (Mamba, the Gated DeltaNet
layers of Qwen3.5, LFM2's short convolutions) folds every token into one fixed-size state, and
a sliding-window cache forgets cells older than its window: neither can go back. For those the
engine saves the state at turn boundaries (after the system prompt and tools; at the end of
each prompt) and, when a new prompt leaves the cached tokens, restores the longest checkpoint
that is a prefix of it instead of evaluating from the first token — what llama-server does
with its context checkpoints.

This module is the bookkeeping only (which checkpoint to restore, which to evict under a
memory bound); cache.py reads and writes the state bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Checkpoint:
    """The model's (partial) state after evaluating `tokens`."""

    tokens: tuple[int, ...]
    data: bytes
    pinned: bool = False  # the shared system prompt: evicted last, restored by every new conversation

    @property
    def n(self) -> int:
        return len(self.tokens)


@dataclass
class CheckpointStore:
    """At most `max_count` checkpoints in at most `budget_bytes`; least recently used go first,
    pinned ones only when nothing else is left to evict."""

    budget_bytes: int
    max_count: int = 8
    _items: list[Checkpoint] = field(default_factory=list)  # least recently used first
    saved: int = 0
    restored: int = 0
    evicted: int = 0

    @property
    def bytes_used(self) -> int:
        return sum(len(c.data) for c in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def positions(self) -> list[int]:
        return sorted(c.n for c in self._items)

    def has(self, tokens: Sequence[int]) -> bool:
        key = tuple(tokens)
        return any(c.tokens == key for c in self._items)

    def add(self, tokens: Sequence[int], data: bytes, *, pinned: bool = False) -> bool:
        """Keep a checkpoint; False when it alone is over the budget (then nothing changes)."""
        if len(data) > self.budget_bytes or self.max_count < 1:
            return False
        key = tuple(tokens)
        self._items = [c for c in self._items if c.tokens != key]
        self._items.append(Checkpoint(key, data, pinned))
        self.saved += 1
        while len(self._items) > self.max_count or self.bytes_used > self.budget_bytes:
            victims = [c for c in self._items[:-1] if not c.pinned] or self._items[:-1]
            self._items.remove(victims[0])
            self.evicted += 1
        return True

    def best(self, tokens: Sequence[int], limit: int) -> Checkpoint | None:
        """The longest checkpoint of at most `limit` tokens whose tokens begin `tokens`.
        The caller sets `limit` below the prompt's length (the last prompt token must be
        evaluated for its logits) and within what the rest of its memory still holds."""
        found: Checkpoint | None = None
        for c in self._items:
            if c.n <= limit and (found is None or c.n > found.n) and tuple(tokens[: c.n]) == c.tokens:
                found = c
        if found is not None:
            self._items.remove(found)
            self._items.append(found)  # most recently used
            self.restored += 1
        return found

    def clear(self) -> None:
        self._items.clear()
