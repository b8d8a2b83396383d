"""Grammar-constrained decoding with llguidance: json mode's replies at the speed of free decoding.

llama.cpp's GBNF sampler checks the grammar against every candidate token at every step (the
bundled SmolLM2-135M decoded a 200-token write_file call at 60 tokens/s under it against 132
free, 0.46x). Here llguidance holds the grammar (a JSON schema compiled for the model's own
tokenizer) and the decode loop is ours, driving llama-cpp-python's `eval`:

- sample-then-check: the token is chosen from the raw logits and only that token is checked
  against the grammar; the full token mask is computed only when it is refused (llama.cpp's
  own trick). For greedy decoding this is exactly the masked argmax; for temperature sampling
  it is rejection sampling, which draws from the same renormalized allowed distribution.
  Measured (benchmarks/speed.py, SmolLM2-135M, 200-token write_file call, 2 threads): the main
  thread's CPU per token outside llama_decode was 0.22 ms checking first (one full mask in 183
  sampled tokens) against 0.40 ms with a mask every token, 0.23 ms free and 8.8 ms under GBNF;
  decode 1.04x free checking first, 1.00x with a mask every token, 0.67x GBNF. Random weights
  are refused nearly every token, and then cost what a mask every token costs.
- jump-forward: after each token, the bytes the grammar forces (`{"`, `": "`, the rest of a
  tool name once its prefix is unique, `", "arguments": {"path":`, closing braces) are
  appended as llguidance's canonical tokens and evaluated in one batch with the sampled token,
  without sampling.

A reply's tokens end up where llama-cpp-python tracks them (`n_tokens`, `input_ids`), all but
the last evaluated, as its own `generate` leaves them, so the next call's prefix reuse holds.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from localagent.engines.loops import Loop, LoopDetector
from localagent.errors import EngineError

# json.dumps' spacing, the same the GBNF grammar fixes (see grammars.json_mode_gbnf); lenient:
# keywords llguidance does not implement (uniqueItems, `not`) are ignored, as llama.cpp's GBNF
# converter ignores those it does not know, rather than losing the fast path for the schema
JSON_OPTIONS: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}

# llama-cpp-python's sampler defaults, which the free and GBNF paths use at temperature > 0:
# candidates within min-p of the best, at most top-k of them, the top-p mass, then temperature
MIN_P, TOP_K, TOP_P = 0.05, 40, 0.95
_LOG_MIN_P = math.log(MIN_P)


def unavailable_reason() -> str | None:
    """Why llguidance cannot be used here (not installed, or no llama.cpp support), else None."""
    try:
        import llguidance.llamacpp  # noqa: F401
    except ImportError as exc:
        return f"llguidance is not importable ({exc})"
    return None


def build_tokenizer(llama: Any, end_tokens: Sequence[int]) -> Any:
    """llguidance's view of a loaded model's vocabulary (~0.6 s for 49k tokens: build once
    per model). `end_tokens`: every end-of-generation token, each one a way to end a reply
    the grammar accepts."""
    import llama_cpp
    from llguidance.llamacpp import lltokenizer_from_vocab

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    with warnings.catch_warnings():  # it reads each token's attributes through a deprecated alias
        warnings.simplefilter("ignore", DeprecationWarning)
        return lltokenizer_from_vocab(vocab, n_vocab=llama.n_vocab(), eos_token=list(end_tokens) or None)


def closed_objects(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` on every object that has properties and
    says nothing about others. llama.cpp's GBNF converter reads the schemas that way (so
    `json` mode always did); llguidance follows JSON Schema, where unlisted keys are allowed,
    and then could not force the closing brace after a call's last argument."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SUBSCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = closed_objects(out[key])
    for key in _SUBSCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed_objects(item) for item in out[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed_objects(item) for name, item in out[key].items()}
    if (
        isinstance(out.get("properties"), dict)
        and "additionalProperties" not in out
        and out.get("type", "object") == "object"
    ):
        out["additionalProperties"] = False
    return out


# where JSON Schema nests schemas: one, a list of them, a mapping of names to them
_SUBSCHEMA = ("items", "additionalProperties", "contains", "not", "if", "then", "else", "propertyNames")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions")


def compile_schema(tokenizer: Any, schema: dict[str, Any]) -> str:
    """The llguidance grammar for a JSON schema; raises ValueError with llguidance's message
    when it cannot compile it (the caller falls back to GBNF)."""
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_json_schema(closed_objects(schema), overrides=JSON_OPTIONS)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, tokenizer)
    if is_error:
        raise ValueError("; ".join(messages))
    return grammar


Finish = Literal["stop", "length", "repetition"]


@dataclass(frozen=True)
class Decoded:
    """One reply decoded: its tokens (all appended to the model's memory but the last),
    how it ended, when its first token came, and how many tokens were sampled or forced."""

    tokens: list[int]
    finish: Finish
    first_at: float | None
    sampled: int
    forced: int
    masks: int  # full token masks computed (each a refused first choice, or every token when check_first is off)
    loop: Loop | None = None  # the loop that stopped the reply (finish "repetition")
    # prompt-lookup decoding (lookup.py): tokens proposed from the context, and how many of
    # them the model kept (each a token sampled without a llama_decode of its own)
    drafted: int = 0
    accepted: int = 0


class GuidedDecoder:
    """Decodes one reply under a grammar: owns the matcher, the mask buffer and the counters.

    `llama`: a llama_cpp.Llama whose memory holds the prompt and whose last logits start the
    reply. `emit(tokens)` gets each token, or batch of forced tokens, as it is appended (the
    engine turns them into text pieces for on_token, which may raise to stop the reply).
    `loops`: stops the reply once it ends in a loop (finish "repetition"); None never does.
    """

    def __init__(
        self,
        llama: Any,
        matcher: Any,
        *,
        is_end: Callable[[int], bool],
        temperature: float,
        seed: int,
        check_first: bool = True,
        loops: LoopDetector | None = None,
    ):
        from llguidance.numpy import allocate_token_bitmask

        self.llama = llama
        self.matcher = matcher
        self.is_end = is_end
        self.temperature = temperature
        self.rng = np.random.default_rng(seed % 2**64)
        self.check_first = check_first
        self.loops = loops
        self.n_vocab = llama.n_vocab()
        self._mask = allocate_token_bitmask(1, self.n_vocab)
        self.sampled = self.forced = self.masks = 0

    def decode(self, max_tokens: int, emit: Callable[[list[int]], None]) -> Decoded:
        llama, matcher = self.llama, self.matcher
        out: list[int] = []
        pending: list[int] = []  # consumed by the matcher, not yet evaluated
        first_at: float | None = None
        finish: Finish = "length"
        loop: Loop | None = None
        while True:
            forced = matcher.compute_ff_tokens()[: max_tokens - len(out)]
            if forced:
                self._consume(forced)
                if first_at is None:
                    first_at = time.perf_counter()
                out += forced
                pending += forced
                self.forced += len(forced)
                emit(forced)
                loop = self.loops.extend(forced) if self.loops is not None else None
                if loop is not None:
                    finish = "repetition"
                    break
            if matcher.is_stopped():  # nothing can follow: no end token to sample
                finish = "stop"
                break
            if len(out) >= max_tokens:
                break
            if pending:  # the last sampled token and the tokens forced after it, one batch
                llama.eval(pending)
                pending = []
            token = self._choose()
            if first_at is None:
                first_at = time.perf_counter()
            if self.is_end(token):  # chosen only where the grammar accepts the reply
                finish = "stop"
                break
            out.append(token)
            pending = [token]
            self.sampled += 1
            emit([token])
            loop = self.loops.add(token) if self.loops is not None else None
            if loop is not None:
                finish = "repetition"
                break
        if len(pending) > 1:  # as `generate` leaves it: every token but the last in memory
            llama.eval(pending[:-1])
        return Decoded(out, finish, first_at, self.sampled, self.forced, self.masks, loop)

    # --- choosing a token ---------------------------------------------------------------------

    def _choose(self) -> int:
        """The next token, consumed by the matcher unless it ends the reply."""
        import llama_cpp

        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llama.ctx, -1), shape=(self.n_vocab,))
        if self.check_first:
            token = self._pick(logits)
            if self.is_end(token):
                if self.matcher.is_accepting():
                    return token
            elif self.matcher.try_consume_tokens([token]) == 1:
                return token
        allowed = self._allowed()
        token = self._pick(np.where(allowed, logits, -np.inf))
        if not self.is_end(token):
            self._consume([token])
        return token

    def _pick(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        return sample(logits, self.temperature, self.rng)

    def _allowed(self) -> np.ndarray:
        from llguidance.numpy import fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._mask)
        self.masks += 1
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self.n_vocab].view(bool)
        if not allowed.any():
            raise EngineError(
                f"the json-mode grammar allows no next token ({self.matcher.get_error() or self.matcher.stop_reason()})",
                hint="report it with the run's trace (--trace FILE); `--tool-mode native` avoids the grammar",
            )
        return allowed

    def _consume(self, tokens: list[int]) -> None:
        if not self.matcher.consume_tokens(tokens):
            raise EngineError(
                f"the json-mode grammar refused a token it offered: {self.matcher.get_error()}",
                hint="report it with the run's trace (--trace FILE); `--tool-mode native` avoids the grammar",
            )


def sample(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token drawn from `logits` (-inf where not allowed) at `temperature`, after min-p,
    top-k and top-p (llama-cpp-python's defaults). min-p first, since it is relative to the
    best token and keeps a top set: the few candidates left make the rest cheap."""
    best = float(logits.max())
    if not math.isfinite(best):
        raise EngineError("no token is allowed to sample from", hint="report it with the run's trace (--trace FILE)")
    candidates = np.flatnonzero(logits >= best + _LOG_MIN_P)
    if candidates.size > TOP_K:
        candidates = candidates[np.argpartition(logits[candidates], -TOP_K)[-TOP_K:]]
    values = logits[candidates].astype(np.float64)
    order = np.argsort(-values, kind="stable")
    candidates, values = candidates[order], values[order]
    p = np.exp(values - values[0])
    keep = int(np.searchsorted(np.cumsum(p / p.sum()), TOP_P)) + 1
    candidates, values = candidates[:keep], values[:keep]
    p = np.exp((values - values[0]) / temperature)
    cumulative = np.cumsum(p)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(candidates[min(index, len(candidates) - 1)])
