"""The llama.cpp engine: a GGUF model loaded in-process through llama-cpp-python.

It renders the conversation with the model's own chat template, append-only, so llama.cpp
keeps the longest common token prefix in its KV cache and evaluates only the new tokens of
each step; it counts those tokens itself (the part of the prompt it sends through `eval`).
Tool calls are either grammar-constrained JSON (`json`, any GGUF; decoded through llguidance in
guided.py, llama.cpp's GBNF sampler where llguidance cannot take the schema) or the model's own
format rendered by its template and parsed from the output (`native`).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import dataclasses
import functools
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import psutil

from localagent import ggufinfo, hardware
from localagent.engines import guided, lazy, lookup, loops, native_calls, reasoning, templates, toolcalls
from localagent.engines.base import EngineConfig, EngineInfo, ToolMode
from localagent.engines.checkpoints import Checkpoint, CheckpointStore
from localagent.engines.templates import ChatTemplate
from localagent.errors import ContextOverflowError, EngineError, IntegrityError, ModelLoadError, ModelNotFoundError
from localagent.records import ArgumentChoice, FinishReason, Message, Reply, Timings, ToolCall, ToolSpec, Usage

if TYPE_CHECKING:
    from localagent.store import ResolvedModel

# what `auto` becomes once the template is known
ResolvedToolMode = Literal["json", "native"]

# The ChatML template, for a GGUF that carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llama.cpp's C log goes through one process-wide callback. Ours prints nothing (stdout may be
# an MCP server's JSON-RPC channel) and keeps the last errors for ModelLoadError messages.
_log_errors: collections.deque[str] = collections.deque(maxlen=8)
_log_callback: Any = None
_GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def _silence_llama_log() -> None:
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def keep_errors(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _GGML_LOG_LEVEL_ERROR:
            _log_errors.append(text.decode("utf-8", "replace").strip())

    _log_callback = keep_errors  # referenced for as long as the process lives
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


def physical_cores() -> int:
    return max(1, psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


@dataclass(frozen=True)
class Prefill:
    """A prompt evaluated: its tokens, how many of them ran through the model (the rest came
    from the cache or a checkpoint), and the logits of the token that would come next."""

    tokens: tuple[int, ...]
    evaluated: int
    logits: Any  # numpy float32 array of n_vocab


class LlamaCppModel:
    """A ChatModel backed by llama-cpp-python. Not thread-safe: one call at a time."""

    def __init__(
        self,
        path: str | Path,
        config: EngineConfig = EngineConfig(),
        *,
        name: str | None = None,
        context: int | None = None,
        sha256: str | None = None,
        preferred_tool_mode: str | None = None,
        default_think: bool | None = None,
    ):
        """`context`: the model's trained context (catalog or GGUF header), capped by
        hardware.capped_context unless `config.n_ctx` says otherwise. `preferred_tool_mode`: the catalog's
        `tool_calling` advice, followed by `auto` where the template allows it.
        `default_think`: the catalog's thinking default, used when `config.think` is None."""
        self.path = Path(path)
        self.name = name or self.path.stem
        self.config = config
        self.sha256 = sha256
        self.n_ctx = config.n_ctx or hardware.capped_context(context)
        self.n_threads = config.n_threads or physical_cores()
        started = time.perf_counter()
        self._llama, self.n_gpu_layers = _load(self.path, self.n_ctx, self.n_threads, config)
        self.load_s = time.perf_counter() - started

        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._is_end = functools.partial(llama_cpp.llama_vocab_is_eog, vocab)  # end of turn or text
        self.chat_template = self._llama.metadata.get("tokenizer.chat_template")
        # the prompt ends with the assistant's turn opening; the history alone (no opening)
        # tells where that opening starts, a checkpoint position (see _stops)
        self._formatter, self._history_formatter = (
            ChatTemplate(
                self.chat_template or CHATML_TEMPLATE,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
                add_generation_prompt=opening,
            )
            for opening in (True, False)
        )
        self.tool_mode = resolve_tool_mode(config.tool_mode, self.chat_template, preferred_tool_mode)
        # json mode's grammar makes the first token a `{`: there is no room to think, and a
        # template that opens a think block by default (Qwen3.5-4B) is told not to
        self.think = (
            False if self.tool_mode == "json" else (config.think if config.think is not None else default_think)
        )
        self.recurrent = bool(llama_cpp.llama_model_is_recurrent(self._llama.model))
        self.hybrid = bool(llama_cpp.llama_model_is_hybrid(self._llama.model))
        self.n_swa = max(0, int(llama_cpp.llama_model_n_swa(self._llama.model)))
        # an attention cache cuts back to any prefix; the others need checkpoints
        self._checkpoints = (
            CheckpointStore(budget_bytes=int(config.checkpoint_mib * 2**20))
            if self.recurrent or self.hybrid or self.n_swa > 0
            else None
        )
        self._boundaries: dict[str, list[int]] = {}  # system prompt + tools -> its tokens
        self._grammar_cache: tuple[str, Any] | None = None
        self._native_grammar: Any = None
        # json mode decodes through llguidance (guided.py) where it compiles the tools' schema;
        # False keeps llama.cpp's GBNF sampler. guided_check_first: check the model's own choice
        # before computing a whole token mask (False: a mask every token). The benchmark
        # (benchmarks/speed.py) compares the three.
        self.guided = True
        self.guided_check_first = True
        self._guide_cache: tuple[str, Any] | None = None  # schema -> its llguidance matcher, or None
        self._choices_held = 0  # argument choices the last matcher holds replies to
        self._lltokenizer: Any = None  # llguidance's view of the vocabulary, built on first use
        self._gbnf_reason: str | None = None  # why json mode last fell back to GBNF
        # native mode: the call format the template teaches (lazy.py), its compiled lazy grammar
        self.call_format = lazy.call_format(self.chat_template) if self.tool_mode == "native" else None
        self._lazy_cache: tuple[str, list[tuple[lazy.Trigger, Any]]] | None = None
        self._lazy_reason: str | None = None  # why native mode's calls were last left free
        self._fold_system = False  # the template has no system role: see _render_chat
        self._calls = 0
        # the last call's prompt and reply, as text and as the tokens in the KV cache
        self._last: tuple[str, list[int], str, list[int]] = ("", [], "", [])

    @classmethod
    def from_resolved(cls, resolved: ResolvedModel, config: EngineConfig, name: str) -> LlamaCppModel:
        """Load a model the store has on disk (modelref.ready found it, fitted and verified),
        with its catalog entry's tool mode and thinking defaults."""
        from localagent import store

        entry = resolved.entry
        return cls(
            resolved.path,
            config,
            name=name,
            context=store.default_context(resolved),
            sha256=resolved.sha256,
            preferred_tool_mode=entry.tool_calling if entry is not None else None,
            default_think=entry.think_default if entry is not None else None,
        )

    # --- ChatModel ---------------------------------------------------------------------------

    def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        seed: int | None = None,
        on_token: Callable[[str], None] | None = None,
        choices: Sequence[ArgumentChoice] = (),
    ) -> Reply:
        started = time.perf_counter()
        self._calls += 1
        prompt = self.render(messages, tools)
        tokens = self._prompt_tokens(prompt)
        if len(tokens) + max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"the conversation needs {len(tokens)} prompt tokens plus up to {max_tokens} for the "
                f"reply, more than the context window of {self.n_ctx} tokens",
                hint="raise the context (EngineConfig.n_ctx), lower max_tokens, or shorten the conversation",
            )
        json_mode = self.tool_mode == "json" and bool(tools)
        # the workspace's paths narrow the grammar, never the prompt: only llguidance takes them
        # (a GBNF grammar would be rebuilt at every step for them, at ~10x its cost)
        matcher = self._guide(tools, choices) if json_mode else None
        grammar = None if matcher is not None else self._grammar(tools) if json_mode else self._reply_grammar()
        lazy_calls = self._lazy(tools) if not json_mode and grammar is None else None
        evaluated = self._prefill(tokens, self._stops(messages, tools, prompt, tokens))
        seed = self.config.seed if seed is None else seed

        # special tokens stay visible in native mode (e.g. Llama's <|python_tag|>, the think
        # and tool-call markers of Qwen3.5, LFM2 and Gemma 4)
        stream = TextStream(self._llama, special=self.tool_mode == "native", on_token=on_token)
        _log_errors.clear()
        try:
            if matcher is not None:
                decoder = guided.GuidedDecoder(
                    self._llama,
                    matcher,
                    is_end=self._is_end,
                    temperature=temperature,
                    seed=seed,
                    check_first=self.guided_check_first,
                    loops=self._loop_detector(),
                )
                decoded = decoder.decode(max_tokens, stream.add)
            elif lazy_calls is not None:
                decoded = self.lazy_decoder(
                    lazy_calls, temperature=temperature, seed=seed, thinking=reasoning.prompt_opens_thinking(prompt)
                ).decode(max_tokens, stream.add)
            else:
                decoded = self._generate(
                    tokens, temperature=temperature, seed=seed, grammar=grammar, max_tokens=max_tokens, emit=stream.add
                )
        except RuntimeError as exc:  # llama_decode failing on a generated token
            raise self._failed("generate the reply", exc, len(tokens)) from exc
        ended = time.perf_counter()
        raw = stream.text()
        generated, first_at = decoded.tokens, decoded.first_at
        finish: FinishReason = decoded.finish
        self._last = (prompt, tokens, raw, generated)
        n_out = len(generated)

        # the template may open the think block itself (Qwen3.5 ends its prompt in `<think>\n`);
        # json mode's grammar leaves no room for one
        thought = (
            reasoning.Thought("", raw)
            if json_mode
            else reasoning.split_reasoning(raw, opened=reasoning.prompt_opens_thinking(prompt))
        )
        if thought.closed:
            text, calls = self._parse(thought.text, tools, truncated=finish == "length")
            if decoded.loop is not None:
                calls = _loop_noted(calls, decoded.loop)
        else:  # a thought that never closed: cut in a loop, or at max_tokens
            text, calls, finish = "", (), "repetition" if decoded.loop is not None else "unfinished_thinking"
        if calls and finish == "stop":
            finish = "tool_calls"
        ttft = (first_at or ended) - started
        timings = Timings(
            total_s=ended - started,
            ttft_s=ttft,
            prompt_tokens_evaluated=evaluated,
            prefill_tokens_per_s=evaluated / ttft if ttft > 0 else None,
            decode_tokens_per_s=(n_out - 1) / (ended - first_at)
            if first_at and n_out > 1 and ended > first_at
            else None,
            forced_tokens=decoded.forced,
            drafted_tokens=decoded.drafted,
            accepted_tokens=decoded.accepted,
        )
        usage = Usage(
            input_tokens=len(tokens),
            cached_input_tokens=len(tokens) - evaluated,
            output_tokens=n_out,
            reasoning_tokens=min(n_out, len(self.tokenize(thought.reasoning))) if thought.reasoning else 0,
        )
        return Reply(
            text=text,
            tool_calls=calls,
            usage=usage,
            timings=timings,
            finish_reason=finish,
            raw=raw,
            reasoning=thought.reasoning,
            choices_held=self._choices_held if matcher is not None else 0,
        )

    def _generate(
        self,
        tokens: list[int],
        *,
        temperature: float,
        seed: int,
        grammar: Any,
        max_tokens: int,
        emit: Callable[[list[int]], None],
    ) -> guided.Decoded:
        """A reply sampled by llama-cpp-python's own loop: free, or under a GBNF grammar (native
        mode's EngineConfig.grammar; json mode where llguidance is not used). A free reply
        goes through prompt-lookup decoding where it is on (lookup.py, `_lookup_on`)."""
        if grammar is None and self._lookup_on():
            decoder = lookup.LookupDecoder(
                self._llama,
                tokens,
                is_end=self._is_end,
                temperature=temperature,
                seed=seed,
                loops=self._loop_detector(),
            )
            return decoder.decode(max_tokens, emit)
        self._llama.set_seed(seed)
        generated: list[int] = []
        first_at: float | None = None
        finish: guided.Finish = "length"
        detector, loop = self._loop_detector(), None
        generator = self._llama.generate(tokens, temp=temperature, grammar=grammar)
        try:
            for token in generator:
                if first_at is None:
                    first_at = time.perf_counter()
                if self._is_end(token):
                    finish = "stop"
                    break
                generated.append(token)
                emit([token])
                loop = detector.add(token) if detector is not None else None
                if loop is not None:
                    finish = "repetition"
                    break
                if len(generated) >= max_tokens:
                    break
        finally:
            generator.close()
        return guided.Decoded(generated, finish, first_at, sampled=len(generated), forced=0, masks=0, loop=loop)

    def _lookup_on(self) -> bool:
        """Whether free replies use prompt-lookup decoding: EngineConfig.lookup, None meaning
        where it wins (lookup.DEFAULT_ON); never for memory that cannot drop rejected drafts."""
        if self.memory_kind != "attention":
            return False
        return self.config.lookup if self.config.lookup is not None else lookup.DEFAULT_ON

    def _loop_detector(self) -> loops.LoopDetector | None:
        return loops.LoopDetector() if self.config.stop_loops else None

    def prefill(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Prefill:
        """Evaluate a conversation's prompt without generating, through the same cache as
        `chat`: warms it (a bench's shared system prompt) and gives the next-token logits."""
        prompt = self.render(messages, tools)
        tokens = self._prompt_tokens(prompt)
        return self.evaluate(tokens, self._stops(messages, tools, prompt, tokens))

    def evaluate(self, tokens: Sequence[int], stops: Sequence[int | None] = ()) -> Prefill:
        """Evaluate prompt tokens through the cache (checkpointing at `stops`, where a prefix
        that later prompts share ends); the same tokens give the same logits whatever the
        memory held before."""
        import llama_cpp
        import numpy as np

        tokens = list(tokens)
        if not 0 < len(tokens) < self.n_ctx:
            raise ContextOverflowError(
                f"the prompt has {len(tokens)} tokens; the context window holds {self.n_ctx}",
                hint="raise the context (EngineConfig.n_ctx) or shorten the conversation",
            )
        evaluated = self._prefill(tokens, stops)
        n_vocab = self._llama.n_vocab()
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._llama.ctx, -1), shape=(n_vocab,)).copy()
        return Prefill(tokens=tuple(tokens), evaluated=evaluated, logits=logits)

    def describe(self) -> EngineInfo:
        import llama_cpp

        return EngineInfo(
            engine="llama.cpp",
            model=self.name,
            path=str(self.path),
            sha256=self.sha256,
            tool_mode=self.tool_mode,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_gpu_layers=self.n_gpu_layers,
            gpu_offload=self.n_gpu_layers != 0,
            load_s=round(self.load_s, 3),
            llama_cpp=llama_cpp.__version__,
            think=self.think,
            grammar=self.grammar_kind,
            stop_loops=self.config.stop_loops,
            memory=self.memory_kind,
            checkpoints=self.checkpoint_stats(),
        )

    @property
    def grammar_kind(self) -> str | None:
        """What constrains the replies: json mode's grammar (llguidance, or llama.cpp's GBNF
        with the reason), native mode's EngineConfig.grammar, or nothing."""
        if self.tool_mode != "json":
            if self.config.grammar is not None:
                return "llama.cpp GBNF"
            if not self.config.constrain_calls or self.call_format is None:
                return None
            reason = self._lazy_reason or guided.unavailable_reason()
            return f"free calls ({reason})" if reason else f"llguidance lazy ({self.call_format})"
        reason = "switched off" if not self.guided else self._gbnf_reason or guided.unavailable_reason()
        return f"llama.cpp GBNF ({reason})" if reason else "llguidance"

    @property
    def memory_kind(self) -> str:
        """How the model remembers the prompt: what decides whether its cache can be cut back."""
        if self.hybrid:
            return "hybrid"
        if self.recurrent:
            return "recurrent"
        return f"sliding-window ({self.n_swa})" if self.n_swa > 0 else "attention"

    def checkpoint_stats(self) -> dict[str, int] | None:
        store = self._checkpoints
        if store is None:
            return None
        return {
            "count": len(store),
            "bytes": store.bytes_used,
            "budget_bytes": store.budget_bytes,
            "saved": store.saved,
            "restored": store.restored,
            "evicted": store.evicted,
        }

    def close(self) -> None:
        self._llama.close()

    # --- rendering ---------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """The prompt text for this conversation, ending with the assistant's turn opening.
        Earlier turns render the same way every time, so each prompt extends the last one."""
        return self._render_chat(*self._chat(messages, tools))

    def _chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> tuple[list[dict[str, Any]], Any]:
        """The messages (and tools) in the shape this model's template is given them."""
        if self.tool_mode == "json" and tools:
            return toolcalls.json_mode_messages(messages, tools), None
        return toolcalls.template_messages(messages), toolcalls.openai_tools(tools) or None

    def _render_chat(self, chat: list[dict[str, Any]], tools: Any, *, opening: bool = True) -> str:
        extra = {"enable_thinking": self.think} if self.think is not None else {}
        if self._fold_system:
            chat = fold_system(chat)
        formatter = self._formatter if opening else self._history_formatter
        try:
            return formatter.render(messages=chat, tools=tools, **extra)
        except Exception as exc:  # jinja2 raises many kinds, and templates call raise_exception
            # Gemma 2's template raises on a system turn; the system prompt then opens the
            # first user turn, as llama.cpp does for templates without a system role. Decided
            # once, so every later prompt renders the same way and extends the last one.
            if not self._fold_system and chat and chat[0]["role"] == "system":
                try:
                    prompt = formatter.render(messages=fold_system(chat), tools=tools, **extra)
                except Exception:
                    pass
                else:
                    self._fold_system = True
                    return prompt
            raise EngineError(
                f"the chat template of {self.name} failed to render the conversation: {type(exc).__name__}: {exc}",
                hint=(
                    "use a GGUF with a fixed template (gguf-new-metadata --chat-template-file FIXED.jinja IN.gguf OUT.gguf)"
                    if self.tool_mode == "json"
                    else "try `--tool-mode json` (plain system/user/assistant turns), or a GGUF with a fixed template"
                ),
            ) from exc

    def _stops(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], prompt: str, tokens: list[int]
    ) -> tuple[int | None, int | None]:
        """Where this prompt is checkpointed when the memory cannot cut back: after the system
        prompt and tools (what every conversation of a bench shares) and before the assistant's
        turn opening (what the next step of this conversation shares: templates such as
        Qwen3.5's write an empty think block into the opening that the history never shows)."""
        if self._checkpoints is None:
            return None, None
        return self._system_boundary(messages, tools, tokens), self._history_end(messages, tools, prompt, tokens)

    def _history_end(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], prompt: str, tokens: list[int]
    ) -> int | None:
        """The token where the assistant's turn opening starts, found by walking back from the
        end over the opening's bytes (the reply tokens may not be the tokenizer's own)."""
        history = self._render_chat(*self._chat(messages, tools), opening=False)
        if not prompt.startswith(history):
            return None
        want, got, n = len(prompt.encode("utf-8")) - len(history.encode("utf-8")), 0, len(tokens)
        while n > 0 and got < want:
            n -= 1
            got += len(self._llama.detokenize([tokens[n]], special=True))
        return n if got == want and 0 < n < len(tokens) else None

    def _system_boundary(self, messages: Sequence[Message], tools: Sequence[ToolSpec], tokens: list[int]) -> int | None:
        """How many tokens of `tokens` hold the system prompt and the tools, the part every
        conversation of a bench shares: where two renders that differ only in the first user
        message part ways. None when there is no system message or the split is unclear."""
        if not messages or messages[0].role != "system":
            return None
        chat, spec = self._chat(messages[:1], tools)
        key = json.dumps([chat[:1], spec], sort_keys=True, default=str)
        if key not in self._boundaries:
            a, b = (self._render_chat([*chat[:1], {"role": "user", "content": c}], spec) for c in ("A", "B"))
            self._boundaries[key] = self.tokenize(os.path.commonprefix([a, b]))
        shared = self._boundaries[key]
        # the last token may merge with what follows it in the real prompt (BPE): then one less
        for n in (len(shared), len(shared) - 1):
            if 0 < n < len(tokens) and tokens[:n] == shared[:n]:
                return n
        return None

    def tokenize(self, text: str) -> list[int]:
        # the template writes BOS itself where the model wants one, as llama-cpp-python's own
        # Jinja chat handler assumes
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    # --- internals ---------------------------------------------------------------------------

    def _prompt_tokens(self, prompt: str) -> list[int]:
        """The prompt's tokens, reusing the last call's: when this prompt continues the last
        prompt and reply, the reply keeps the tokens the model generated. Sampling (and a
        grammar above all) often picks tokens other than the ones the tokenizer would choose
        for the same text, so re-tokenizing the reply would end the cached prefix at its first
        token and re-evaluate the whole assistant turn every step."""
        last_prompt, last_tokens, last_reply, generated = self._last
        for text, tokens in ((last_prompt + last_reply, last_tokens + generated), (last_prompt, last_tokens)):
            if text and prompt.startswith(text):
                rest = self.tokenize(prompt[len(text) :])
                # a tokenizer may read a fragment differently alone (SentencePiece adds a
                # space): then only the whole prompt is tokenized the right way
                if self._llama.detokenize(rest, special=True).decode("utf-8", "replace") == prompt[len(text) :]:
                    return tokens + rest
        return self.tokenize(prompt)

    def _prefill(self, tokens: list[int], stops: Sequence[int | None] = ()) -> int:
        """Evaluate the part of `tokens` not already in the model's memory; return how many
        tokens that was. The last prompt token is always evaluated: its logits start the reply.
        `stops`: (end of the system prompt, end of the history), checkpointed on the way when
        the memory cannot be cut back (see checkpoints.py). Without an end of history, one
        token before the end: a retry of this very prompt (after a cancelled reply) restores it."""
        llama = self._llama
        cached = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        try:
            keep = self._cut_back(tokens, min(cached, len(tokens) - 1))
            system, history = (*stops, None, None)[:2]
            wanted = (
                (system, history if history is not None else len(tokens) - 1) if self._checkpoints is not None else ()
            )
            for stop in sorted({b for b in wanted if b is not None and keep < b < len(tokens)}):
                llama.eval(tokens[llama.n_tokens : stop])
                self._checkpoint(tokens[:stop], pinned=stop == system)
            llama.eval(tokens[llama.n_tokens :])
        except RuntimeError as exc:
            raise self._failed("evaluate the prompt", exc, len(tokens)) from exc
        return len(tokens) - keep

    def _failed(self, doing: str, exc: RuntimeError, n_prompt: int) -> EngineError:
        """An evaluation failure as an EngineError with llama.cpp's own log lines; the memory
        is emptied, since what it holds is unknown now (the next call starts afresh)."""
        self._forget()
        detail = "; ".join(_log_errors)
        _log_errors.clear()
        return EngineError(
            f"llama.cpp failed to {doing} of {self.name}: {exc}" + (f" ({detail})" if detail else ""),
            hint=_eval_hint(exc, n_prompt, self.n_ctx),
        )

    def _cut_back(self, tokens: list[int], keep: int) -> int:
        """Make the memory hold exactly `tokens[:n]` for the largest n <= keep it can; return n.

        An attention cache drops the cells past `keep`. Recurrent state and a sliding window
        cannot go back (llama.cpp's removal fails or, for a window, leaves cells missing): then
        the longest checkpoint within `keep` is restored, or the memory starts empty."""
        import llama_cpp

        llama = self._llama
        if keep >= llama.n_tokens:
            return llama.n_tokens
        memory = llama_cpp.llama_get_memory(llama.ctx)
        if keep > 0 and not self._memory_reaches_back(memory, keep):
            checkpoint = self._checkpoints.best(tokens, keep) if self._checkpoints is not None else None
            keep = checkpoint.n if checkpoint is not None and self._restore(checkpoint) else 0
        # a recurrent memory refuses to drop a suffix that cuts into its state: start afresh
        if keep == 0 or not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
            llama_cpp.llama_memory_clear(memory, True)
            keep = 0
        llama.n_tokens = keep
        return keep

    def _memory_reaches_back(self, memory: Any, keep: int) -> bool:
        """Whether cutting the memory back to `keep` tokens leaves what token `keep` needs.
        The smallest position held is 0 for an attention cache, the last position for
        recurrent state, and past the window's start for a sliding-window cache that moved on
        (the test llama-server makes before it falls back to a checkpoint)."""
        import llama_cpp

        pos_min = llama_cpp.llama_memory_seq_pos_min(memory, 0)
        return pos_min == 0 or pos_min < keep - self.n_swa

    def _checkpoint(self, tokens: list[int], *, pinned: bool) -> None:
        """Save the state that cannot be recomputed by cutting back (recurrent state, the
        sliding window) after `tokens`; the attention cells stay in the cache."""
        import llama_cpp

        store = self._checkpoints
        if store is None or store.has(tokens):
            return
        ctx, flags = self._llama.ctx, llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        size = llama_cpp.llama_state_seq_get_size_ext(ctx, 0, flags)
        if size <= 0 or size > store.budget_bytes:
            return
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data_ext(ctx, buffer, size, 0, flags)
        if 0 < written <= size:
            store.add(tokens, ctypes.string_at(buffer, written), pinned=pinned)

    def _restore(self, checkpoint: Checkpoint) -> bool:
        import llama_cpp

        data = checkpoint.data
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        flags = llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
        if llama_cpp.llama_state_seq_set_data_ext(self._llama.ctx, buffer, len(data), 0, flags) != len(data):
            return False
        self._llama.input_ids[: checkpoint.n] = checkpoint.tokens
        return True

    def _forget(self) -> None:
        import llama_cpp

        self._llama.n_tokens = 0
        memory = llama_cpp.llama_get_memory(self._llama.ctx)
        if memory is not None:
            llama_cpp.llama_memory_clear(memory, True)

    def _grammar(self, tools: Sequence[ToolSpec]) -> Any:
        from llama_cpp import LlamaGrammar

        schema = json.dumps(toolcalls.json_mode_schema(tools))
        if self._grammar_cache is None or self._grammar_cache[0] != schema:
            try:
                grammar = LlamaGrammar.from_string(json_mode_gbnf(schema))
            except Exception as exc:  # the converter raises bare Exceptions for schemas it cannot express
                raise EngineError(
                    f"cannot turn the tools' argument schemas into a grammar: {exc}",
                    hint="simplify the tool schemas, or use the native tool mode",
                ) from exc
            self._grammar_cache = (schema, grammar)
        return self._grammar_cache[1]

    def _guide(self, tools: Sequence[ToolSpec], choices: Sequence[ArgumentChoice] = ()) -> Any:
        """json mode's llguidance matcher for these tools (their arguments narrowed by
        `choices`), reset for a new reply; None where llama.cpp's GBNF grammar decodes instead
        (switched off, llguidance missing, or a schema it cannot compile: `grammar_kind` says
        which). Compiled once per schema: again only when the tools or the choices change (a
        workspace's 1,000 paths compile in ~20 ms)."""
        if not self.guided:
            return None
        schema = json.dumps(toolcalls.json_mode_schema(tools, choices))
        if self._guide_cache is None or self._guide_cache[0] != schema:
            matcher = self._compile_guide(schema)
            if matcher is None and choices and self._gbnf_reason is not None and "compile" in self._gbnf_reason:
                # the choices made a schema llguidance refuses: the tools' own schema still decodes fast
                return self._guide(tools)
            self._guide_cache = (schema, matcher)
        names = {t.name for t in tools}
        self._choices_held = sum(1 for c in choices if c.tool in names)
        matcher = self._guide_cache[1]
        if matcher is not None and (not matcher.reset() or matcher.is_error()):
            matcher = self._compile_guide(schema)  # a matcher left in error: start a new one
            self._guide_cache = (schema, matcher)
        return matcher

    def _compile_guide(self, schema: str) -> Any:
        self._gbnf_reason = guided.unavailable_reason()
        if self._gbnf_reason is not None:
            return None
        from llguidance import LLMatcher

        if self._lltokenizer is None:
            ends = [t for t in range(self._llama.n_vocab()) if self._is_end(t)]
            self._lltokenizer = guided.build_tokenizer(self._llama, ends)
        try:
            grammar = guided.compile_schema(self._lltokenizer, json.loads(schema))
        except ValueError as exc:
            self._gbnf_reason = f"llguidance cannot compile the tools' schema: {exc}"
            return None
        return LLMatcher(self._lltokenizer, grammar, log_level=0)

    def _lazy(self, tools: Sequence[ToolSpec]) -> list[tuple[lazy.Trigger, Any]] | None:
        """Native mode's lazy grammar for these tools: (trigger, llguidance matcher) pairs, or
        None where calls stay free (switched off, no tools, llguidance missing, a format
        lazy.py does not know, or grammars llguidance refuses: `grammar_kind` says which)."""
        if not tools or not self.config.constrain_calls or self.call_format is None:
            return None
        key = json.dumps([[t.name, t.parameters] for t in tools], sort_keys=True, default=str)
        if self._lazy_cache is None or self._lazy_cache[0] != key:
            self._lazy_cache = (key, self._compile_lazy(tools))
        return self._lazy_cache[1] or None

    def _compile_lazy(self, tools: Sequence[ToolSpec]) -> list[tuple[lazy.Trigger, Any]]:
        self._lazy_reason = guided.unavailable_reason()
        if self._lazy_reason is not None or self.call_format is None:
            return []
        from llguidance import LLMatcher

        if self._lltokenizer is None:
            ends = [t for t in range(self._llama.n_vocab()) if self._is_end(t)]
            self._lltokenizer = guided.build_tokenizer(self._llama, ends)
        compiled = []
        for trigger in lazy.triggers(self.call_format, tools, self._special_token):
            grammar = LLMatcher.grammar_from_lark(trigger.grammar)
            is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, self._lltokenizer)
            if is_error:
                self._lazy_reason = (
                    f"llguidance cannot compile the {self.call_format} call grammar: {'; '.join(messages)}"
                )
                continue
            compiled.append((trigger, LLMatcher(self._lltokenizer, grammar, log_level=0)))
        return compiled

    def lazy_decoder(
        self, calls: list[tuple[lazy.Trigger, Any]], *, temperature: float, seed: int, thinking: bool = False
    ) -> lazy.LazyDecoder:
        """A native-mode decoder for the model's memory as it stands (the prompt evaluated)."""
        return lazy.LazyDecoder(
            self._llama,
            [t for t, _ in calls],
            [m for _, m in calls],
            tokenize=lambda data: self._llama.tokenize(data, add_bos=False, special=True),
            token_bytes=lambda tokens: b"".join(self._llama.detokenize([t], special=True) for t in tokens),
            is_end=self._is_end,
            temperature=temperature,
            seed=seed,
            thinking=thinking,
            loops=self._loop_detector(),
        )

    def _special_token(self, text: str) -> int | None:
        """The id of the one token that spells `text` (a marker the vocabulary holds whole,
        often a special token the grammar must name by id), else None."""
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return int(tokens[0]) if len(tokens) == 1 else None

    def _reply_grammar(self) -> Any:
        """The user's GBNF grammar for native-mode replies (EngineConfig.grammar), compiled once."""
        if self.config.grammar is None:
            return None
        if self._native_grammar is None:
            from llama_cpp import LlamaGrammar

            try:
                self._native_grammar = LlamaGrammar.from_string(self.config.grammar, verbose=False)
            except Exception as exc:  # llama.cpp's parser reports through ValueError or bare Exception
                raise EngineError(f"the reply grammar does not parse: {exc}", hint="check the GBNF syntax") from exc
        return self._native_grammar

    def _parse(self, raw: str, tools: Sequence[ToolSpec], *, truncated: bool) -> tuple[str, tuple[ToolCall, ...]]:
        if not tools:
            return raw.strip(), ()
        if self.tool_mode == "json":
            return toolcalls.parse_json_reply(raw.strip(), f"call_{self._calls}", truncated=truncated)
        return native_calls.parse_native(raw, id_prefix=f"call_{self._calls}_", tools=tools)

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", "replace")


class TextStream:
    """Generated tokens -> text pieces as they come, each passed to `on_token` (which may
    raise: the agent's deadline stops a reply that way). A UTF-8 character may span tokens."""

    def __init__(self, llama: Any, *, special: bool, on_token: Callable[[str], None] | None):
        self._llama, self._special, self._on_token = llama, special, on_token
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []

    def add(self, tokens: list[int]) -> None:
        data = b"".join(self._llama.detokenize([token], special=self._special) for token in tokens)
        piece = self._decoder.decode(data)
        if piece:
            self._pieces.append(piece)
            if self._on_token is not None:
                self._on_token(piece)

    def text(self) -> str:
        """Everything so far, the stream ended (an incomplete character becomes U+FFFD)."""
        self._pieces.append(self._decoder.decode(b"", final=True))
        return "".join(self._pieces)


def _loop_noted(calls: tuple[ToolCall, ...], loop: loops.Loop) -> tuple[ToolCall, ...]:
    """A reply stopped in a loop: its unreadable calls say so (the model reads the error)."""
    note = f"the reply was stopped because it kept repeating itself ({loop.describe()})"
    return tuple(dataclasses.replace(c, error=f"{note}; {c.error}") if c.error else c for c in calls)


def resolve_tool_mode(requested: ToolMode, template: str | None, preferred: str | None) -> ResolvedToolMode:
    """`auto` -> `native` when the chat template renders tools (and the catalog does not
    advise json for this model), else `json`."""
    if requested != "auto":
        return requested
    if preferred != "json" and toolcalls.template_handles_tools(template):
        return "native"
    return "json"


def json_mode_gbnf(schema: str) -> str:
    """The GBNF grammar for a JSON schema, with whitespace fixed to json.dumps' style.

    llama-cpp-python's converter lets a space follow every `{`, `,`, `:` and value. Greedy
    decoding then picks `{ "` (space, quote) as one token, and SmolLM2-135M continues with
    "answer" far more often than "tool", although `{"tool"` is the likelier string (measured:
    0 of 5 prompts gave a tool call; with fixed spacing 4 of 5 did). Fixed spacing also
    matches how earlier calls are re-rendered from `json.dumps`.
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = json_schema_to_gbnf(schema)
    if 'space ::= " "?' not in grammar:  # a converter we do not know: keep its grammar
        return grammar
    grammar = grammar.replace('space ::= " "?', 'space ::= ""')
    return grammar.replace('space ":" space', '": "').replace('"," space', '", "')


def fold_system(chat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The system message moved into the first user message, for templates without a system role."""
    if not chat or chat[0]["role"] != "system":
        return chat
    system, rest = chat[0], chat[1:]
    if rest and rest[0]["role"] == "user":
        return [{**rest[0], "content": f"{system['content']}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system["content"]}, *rest]


def _eval_hint(exc: Exception, n_prompt: int, n_ctx: int) -> str:
    """A hint that fits the failure: only a full cache is helped by a smaller prompt."""
    if "returned 1" in str(exc):  # llama_decode: no room in the KV cache for the batch
        return f"the prompt ({n_prompt} tokens) did not fit the cache: raise the context (n_ctx, now {n_ctx}) or shorten the conversation"
    return "the engine's memory was reset and the next call starts afresh; if it happens again, report it with the run's trace (--trace FILE)"


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


_UNKNOWN_ARCH_RE = re.compile(r"unknown model architecture: '([^']{1,100})'")

# The llama-cpp-python release each family of the catalog was first run with by localagent's
# tests (tests/archmodels.py builds one of each). Which release first added an architecture is
# not recorded upstream in one place; this says where it is known to work.
VERIFIED_WITH = "0.3.36"
VERIFIED_ARCHITECTURES = frozenset(
    ("llama", "qwen2", "qwen3", "qwen35", "lfm2", "mamba", "mamba2", "gemma3", "gemma4", "granitehybrid", "smollm3")
)


def _architecture_hint(arch: str) -> str:
    upgrade = "upgrade llama-cpp-python (`pip install -U llama-cpp-python`; set CMAKE_ARGS as for the first install)"
    if arch in VERIFIED_ARCHITECTURES:
        return f"{upgrade}: '{arch}' runs in llama-cpp-python {VERIFIED_WITH} and later"
    return f"{upgrade}, or use a model of a family it knows (`localagent models list`)"


def _check_templates(path: Path) -> None:
    """Refuse a GGUF whose chat templates would blow up while llama-cpp-python compiles them
    (it folds constant expressions: `{{ 'x' * 3000000000 }}` took 3.3 GB at load)."""
    import jinja2

    try:
        found = ggufinfo.chat_templates(path)
    except IntegrityError:
        return  # not a whole GGUF: the load below says so in llama.cpp's words
    for key, source in found.items():
        try:
            templates.check_constants(source)
        except templates.TemplateLimitError as exc:
            raise ModelLoadError(
                f"the chat template in {path.name} ({key}) builds too large a value: {exc}",
                hint="use a GGUF with a fixed template (gguf-new-metadata --chat-template-file FIXED.jinja IN.gguf OUT.gguf)",
            ) from None
        except jinja2.TemplateError:
            pass  # the load below reports a template that does not parse, with its own words


def _load(path: Path, n_ctx: int, n_threads: int, config: EngineConfig) -> tuple[Any, int]:
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file not found: {path}", hint="`localagent models list` shows installed models"
        )
    import jinja2
    import llama_cpp

    _check_templates(path)
    _silence_llama_log()
    n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() and not config.cpu_only else 0
    _log_errors.clear()
    try:
        llama = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            n_gpu_layers=n_gpu_layers,
            seed=config.seed,
            logits_all=False,
            # a sliding-window model keeps only its window (+ one batch) of cells on those
            # layers instead of the whole context, as llama-server does; cutting back past
            # the window restores a checkpoint (see _cut_back)
            swa_full=False,
            verbose=False,
        )
    except jinja2.TemplateError as exc:  # llama-cpp-python compiles the GGUF's chat templates while loading
        raise ModelLoadError(
            f"the chat template in {path.name} does not parse: {type(exc).__name__}: {exc}",
            hint="use a GGUF with a fixed template (gguf-new-metadata --chat-template-file FIXED.jinja IN.gguf OUT.gguf)",
        ) from exc
    except (ValueError, RuntimeError, OSError) as exc:
        detail = "; ".join(_log_errors) or str(exc)
        unknown = _UNKNOWN_ARCH_RE.search(detail)
        if unknown:
            raise ModelLoadError(
                f"cannot load {path.name}: the llama.cpp inside llama-cpp-python {llama_cpp.__version__} "
                f"does not know the architecture '{unknown.group(1)}'",
                hint=_architecture_hint(unknown.group(1)),
            ) from exc
        raise ModelLoadError(
            f"cannot load {path}: {detail}",
            hint="the file may be truncated or not a GGUF model: `localagent models verify` checks it, "
            "`localagent models pull` fetches it again",
        ) from exc
    return llama, n_gpu_layers
