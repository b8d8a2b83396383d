"""Replies stuck in a loop: the same run of tokens, over and over, to max_tokens.

Small models (and any model at temperature 0) fall into loops: a line, a phrase or one token
repeated until the reply runs out of room, which costs the whole of max_tokens at every step
that does it. The decode loops (llamacpp._generate, guided.GuidedDecoder) feed each token to a
LoopDetector and stop the reply with finish reason `repetition` once the last tokens are one
unit of at most MAX_PERIOD tokens written back to back often enough.

The test per token is O(MAX_PERIOD) integer comparisons (about 5 µs in Python), against
milliseconds for the token itself: for every period p it keeps how many of the last tokens
equal the token p before them, a count that grows by one or falls to zero with each token.

Thresholds, chosen so that real text does not trip them (tests/test_loops.py tokenizes this
repository's Python files and the README with the bundled model's tokenizer; none trips them):
the repeated stretch must span MIN_SPAN tokens and hold the unit MIN_REPEATS times. A unit of
one token repeated 48 times or a 20-token line written 4 times is a loop; `====` underlines,
`0, 0, 0` rows and a test's few repeated lines are not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

MAX_PERIOD = 64  # the longest repeated unit looked for, in tokens
MIN_SPAN = 48  # tokens the repeated stretch must cover (the unit's first copy included)
MIN_REPEATS = 4  # copies of the unit, back to back


@dataclass(frozen=True)
class Loop:
    """A loop found at the end of a reply: `period` tokens repeated over its last `span`."""

    period: int
    span: int
    at: int  # the reply's length in tokens when it was found

    def describe(self) -> str:
        copies = self.span / self.period
        return f"the same {self.period}-token run {copies:.1f} times over its last {self.span} tokens"


class LoopDetector:
    """Tokens in, a Loop out once the reply ends in one. Incremental: `add` costs O(max_period)."""

    def __init__(self, *, max_period: int = MAX_PERIOD, min_span: int = MIN_SPAN, min_repeats: int = MIN_REPEATS):
        self.max_period, self.min_span, self.min_repeats = max_period, min_span, min_repeats
        self.tokens: list[int] = []
        # runs[p]: how many of the last tokens each equal the token p places before them
        self._runs = [0] * (max_period + 1)

    def add(self, token: int) -> Loop | None:
        tokens, runs = self.tokens, self._runs
        tokens.append(token)
        n = len(tokens)
        found: Loop | None = None
        for p in range(1, min(self.max_period, n - 1) + 1):
            if tokens[n - 1 - p] != token:
                runs[p] = 0
                continue
            runs[p] += 1
            span = runs[p] + p
            if found is None and span >= self.min_span and span >= self.min_repeats * p:
                found = Loop(period=p, span=span, at=n)
        return found

    def extend(self, tokens: Iterable[int]) -> Loop | None:
        """Add several tokens (a batch the grammar forced); the first loop found, if any."""
        found: Loop | None = None
        for token in tokens:
            loop = self.add(token)
            if found is None:
                found = loop
        return found


def find_loop(tokens: Iterable[int], **thresholds: int) -> Loop | None:
    """The first point where `tokens` end in a loop, or None: what the decode loops would stop at."""
    detector = LoopDetector(**thresholds)
    for token in tokens:
        loop = detector.add(token)
        if loop is not None:
            return loop
    return None
