"""The llama.cpp engine: a GGUF model loaded in-process through llama-cpp-python.

It renders the conversation with the model's own chat template, append-only, so llama.cpp
keeps the longest common token prefix in its KV cache and evaluates only the new tokens of
each step; it counts those tokens itself (the part of the prompt it sends through `eval`).
Tool calls are either grammar-constrained JSON (`json`, any GGUF; decoded through llguidance in
guided.py, llama.cpp's GBNF sampler where llguidance cannot take the schema) or the model's own
format rendered by its template and parsed from the output (`native`). The file is loaded in
loading.py, the replies' grammars are kept in grammars.py, and the memory is moved to a new
prompt's shared prefix by cache.py.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from localagent import hardware
from localagent.engines import cache, guided, lazy, lookup, loops, native_calls, reasoning, toolcalls
from localagent.engines.base import EngineConfig, EngineInfo, ToolMode
from localagent.engines.checkpoints import CheckpointStore
from localagent.engines.grammars import Grammars
from localagent.engines.loading import load, log_errors, physical_cores
from localagent.engines.templates import ChatTemplate
from localagent.errors import ContextOverflowError, EngineError
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
        self._llama, self.n_gpu_layers = load(self.path, self.n_ctx, self.n_threads, config)
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
        # native mode: the call format the template teaches (lazy.py), which its lazy grammar follows
        self.call_format = lazy.call_format(self.chat_template) if self.tool_mode == "native" else None
        self._grammars = Grammars(
            self._llama, config, tool_mode=self.tool_mode, call_format=self.call_format, is_end=self._is_end
        )
        # json mode's llguidance matcher checks the model's own choice before computing a whole
        # token mask (False: a mask every token). The benchmark (benchmarks/speed.py) compares
        # this, a mask every token, and llama.cpp's GBNF sampler (`guided` off).
        self.guided_check_first = True
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
        grammars = self._grammars
        matcher = grammars.guide(tools, choices) if json_mode else None
        grammar = (
            None if matcher is not None else grammars.json_grammar(tools) if json_mode else grammars.reply_grammar()
        )
        lazy_calls = grammars.lazy_calls(tools) if not json_mode and grammar is None else None
        evaluated = self._prefill(tokens, self._stops(messages, tools, prompt, tokens))
        seed = self.config.seed if seed is None else seed

        # special tokens stay visible in native mode (e.g. Llama's <|python_tag|>, the think
        # and tool-call markers of Qwen3.5, LFM2 and Gemma 4)
        stream = TextStream(self._llama, special=self.tool_mode == "native", on_token=on_token)
        log_errors.clear()
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
            choices_held=grammars.choices_held if matcher is not None else 0,
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
        """What constrains the replies (Grammars.kind)."""
        return self._grammars.kind

    @property
    def guided(self) -> bool:
        """Whether json mode decodes through llguidance (False: llama.cpp's GBNF sampler)."""
        return self._grammars.guided

    @guided.setter
    def guided(self, on: bool) -> None:
        self._grammars.guided = on

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
            keep = cache.cut_back(llama, tokens, min(cached, len(tokens) - 1), self._checkpoints, self.n_swa)
            system, history = (*stops, None, None)[:2]
            wanted = (
                (system, history if history is not None else len(tokens) - 1) if self._checkpoints is not None else ()
            )
            for stop in sorted({b for b in wanted if b is not None and keep < b < len(tokens)}):
                llama.eval(tokens[llama.n_tokens : stop])
                cache.save_checkpoint(llama, self._checkpoints, tokens[:stop], pinned=stop == system)
            llama.eval(tokens[llama.n_tokens :])
        except RuntimeError as exc:
            raise self._failed("evaluate the prompt", exc, len(tokens)) from exc
        return len(tokens) - keep

    def _failed(self, doing: str, exc: RuntimeError, n_prompt: int) -> EngineError:
        """An evaluation failure as an EngineError with llama.cpp's own log lines; the memory
        is emptied, since what it holds is unknown now (the next call starts afresh)."""
        self._forget()
        detail = "; ".join(log_errors)
        log_errors.clear()
        return EngineError(
            f"llama.cpp failed to {doing} of {self.name}: {exc}" + (f" ({detail})" if detail else ""),
            hint=_eval_hint(exc, n_prompt, self.n_ctx),
        )

    def _forget(self) -> None:
        cache.forget(self._llama)

    # the grammars' entries the tests reach through the model
    def _guide(self, tools: Sequence[ToolSpec], choices: Sequence[ArgumentChoice] = ()) -> Any:
        return self._grammars.guide(tools, choices)

    def _lazy(self, tools: Sequence[ToolSpec]) -> list[tuple[lazy.Trigger, Any]] | None:
        return self._grammars.lazy_calls(tools)

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
