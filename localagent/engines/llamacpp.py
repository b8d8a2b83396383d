"""The llama.cpp engine: a GGUF model loaded in-process through llama-cpp-python.

It renders the conversation with the model's own chat template, append-only, so llama.cpp
keeps the longest common token prefix in its KV cache and evaluates only the new tokens of
each step; it counts those tokens itself (the part of the prompt it sends through `eval`).
Tool calls are either grammar-constrained JSON (`json`, any GGUF) or the model's own format
rendered by its template and parsed from the output (`native`).
"""

from __future__ import annotations

import codecs
import collections
import ctypes
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import psutil

from localagent import hardware
from localagent.engines import toolcalls
from localagent.engines.base import EngineConfig
from localagent.errors import ContextOverflowError, EngineError, ModelLoadError, ModelNotFoundError
from localagent.records import Message, Reply, ToolCall, ToolSpec, Timings, Usage

# The ChatML template, for a GGUF that carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llama.cpp's C log goes through one process-wide callback. Ours prints nothing (stdout may be
# an MCP server's JSON-RPC channel) and keeps the last errors for ModelLoadError messages.
_log_errors: collections.deque[str] = collections.deque(maxlen=8)
_log_callback: Any = None
_GGML_LOG_LEVEL_ERROR = 3


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
    ):
        """`context`: the model's trained context (catalog or GGUF header), capped by
        hardware.capped_context unless `config.n_ctx` says otherwise. `preferred_tool_mode`: the catalog's
        `tool_calling` advice, followed by `auto` where the template allows it."""
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
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = llama_cpp.llama_model_get_vocab(self._llama.model)
        self._is_end = functools.partial(llama_cpp.llama_vocab_is_eog, vocab)  # end of turn or text
        self.chat_template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = Jinja2ChatFormatter(
            template=self.chat_template or CHATML_TEMPLATE,
            eos_token=self._token_text(self._llama.token_eos()),
            bos_token=self._token_text(self._llama.token_bos()),
        )
        self.tool_mode = resolve_tool_mode(config.tool_mode, self.chat_template, preferred_tool_mode)
        self._grammar_cache: tuple[str, Any] | None = None
        self._calls = 0
        # the last call's prompt and reply, as text and as the tokens in the KV cache
        self._last: tuple[str, list[int], str, list[int]] = ("", [], "", [])

    @classmethod
    def from_alias(cls, alias: str, config: EngineConfig = EngineConfig()) -> LlamaCppModel:
        """Resolve a catalog alias (or an installed model) through the store, then load it."""
        from localagent import store

        store.check_fits(alias)  # before a download of a model this machine cannot hold
        resolved = store.resolve(alias, offline=True if config.offline else None)
        entry = resolved.entry
        return cls(
            resolved.path,
            config,
            name=alias,
            context=store.default_context(resolved),
            sha256=resolved.sha256,
            preferred_tool_mode=entry.tool_calling if entry is not None else None,
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
        grammar = self._grammar(tools) if json_mode else None
        evaluated = self._prefill(tokens)
        self._llama.set_seed(self.config.seed if seed is None else seed)

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        generated: list[int] = []
        first_at, finish = None, "length"
        # special tokens stay visible in native mode (e.g. Llama's <|python_tag|>)
        special = self.tool_mode == "native"
        generator = self._llama.generate(tokens, temp=temperature, grammar=grammar)
        try:
            for token in generator:
                if first_at is None:
                    first_at = time.perf_counter()
                if self._is_end(token):
                    finish = "stop"
                    break
                generated.append(token)
                piece = decoder.decode(self._llama.detokenize([token], special=special))
                if piece:
                    pieces.append(piece)
                    if on_token is not None:
                        on_token(piece)
                if len(generated) >= max_tokens:
                    break
        finally:
            generator.close()
        ended = time.perf_counter()
        pieces.append(decoder.decode(b"", final=True))
        raw = "".join(pieces)
        self._last = (prompt, tokens, raw, generated)
        n_out = len(generated)

        text, calls = self._parse(raw, tools, truncated=finish == "length")
        if calls and finish == "stop":
            finish = "tool_calls"
        ttft = (first_at or ended) - started
        timings = Timings(
            total_s=ended - started,
            ttft_s=ttft,
            prompt_tokens_evaluated=evaluated,
            prefill_tokens_per_s=evaluated / ttft if ttft > 0 else None,
            decode_tokens_per_s=(n_out - 1) / (ended - first_at) if first_at and n_out > 1 and ended > first_at else None,
        )
        usage = Usage(input_tokens=len(tokens), cached_input_tokens=len(tokens) - evaluated, output_tokens=n_out)
        return Reply(text=text, tool_calls=calls, usage=usage, timings=timings, finish_reason=finish, raw=raw)

    def describe(self) -> dict[str, Any]:
        import llama_cpp

        return {
            "engine": "llama.cpp",
            "model": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "tool_mode": self.tool_mode,
            "n_ctx": self.n_ctx,
            "n_threads": self.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "gpu_offload": self.n_gpu_layers != 0,
            "load_s": round(self.load_s, 3),
            "llama_cpp": llama_cpp.__version__,
        }

    def close(self) -> None:
        self._llama.close()

    # --- rendering ---------------------------------------------------------------------------

    def render(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> str:
        """The prompt text for this conversation, ending with the assistant's turn opening.
        Earlier turns render the same way every time, so each prompt extends the last one."""
        if self.tool_mode == "json" and tools:
            chat = toolcalls.json_mode_messages(messages, tools)
            return self._formatter(messages=chat).prompt
        chat = toolcalls.template_messages(messages)
        return self._formatter(messages=chat, tools=toolcalls.openai_tools(tools) or None).prompt

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

    def _prefill(self, tokens: list[int]) -> int:
        """Evaluate the part of `tokens` not already in the KV cache; return how many that was.
        The last prompt token is always evaluated: its logits start the reply."""
        llama = self._llama
        cached = common_prefix(llama.input_ids[: llama.n_tokens].tolist(), tokens)
        keep = min(cached, len(tokens) - 1)
        llama.n_tokens = keep  # eval() drops the KV cells past n_tokens before decoding
        try:
            llama.eval(tokens[keep:])
        except RuntimeError as exc:
            llama.n_tokens = 0  # what the KV cache holds is unknown now: start afresh next time
            raise EngineError(f"llama.cpp failed to evaluate the prompt: {exc}", hint="try a smaller context (n_ctx)") from exc
        return len(tokens) - keep

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

    def _parse(self, raw: str, tools: Sequence[ToolSpec], *, truncated: bool) -> tuple[str, tuple[ToolCall, ...]]:
        if not tools:
            return raw.strip(), ()
        if self.tool_mode == "json":
            return toolcalls.parse_json_reply(raw.strip(), f"call_{self._calls}", truncated=truncated)
        return toolcalls.parse_native(raw, id_prefix=f"call_{self._calls}_")

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._llama.detokenize([token], special=True).decode("utf-8", "replace")


def resolve_tool_mode(requested: str, template: str | None, preferred: str | None) -> str:
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


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _load(path: Path, n_ctx: int, n_threads: int, config: EngineConfig) -> tuple[Any, int]:
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}", hint="`localagent models list` shows installed models")
    import llama_cpp

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
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        detail = "; ".join(_log_errors) or str(exc)
        raise ModelLoadError(
            f"cannot load {path}: {detail}",
            hint="the file may be truncated or not a GGUF model: `localagent models verify` checks it, "
            "`localagent models pull` fetches it again",
        ) from exc
    return llama, n_gpu_layers
