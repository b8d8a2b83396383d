"""The grammars a reply is decoded under, compiled once per set of tools and kept.

json mode: an llguidance matcher for the tools' schema (guided.py), its arguments narrowed by
the workspace's paths, or llama.cpp's GBNF grammar where llguidance is off or cannot take the
schema (`json_mode_gbnf`). Native mode: the lazy grammar of the call format the template
teaches (lazy.py), or the user's GBNF grammar (EngineConfig.grammar). Compiling takes
milliseconds to seconds, a step of a reply far less, so each grammar is kept until the tools
(or the choices) change; `kind` says which one decodes and why a faster one does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from localagent.engines import guided, lazy, toolcalls
from localagent.engines.base import EngineConfig
from localagent.errors import EngineError
from localagent.records import ArgumentChoice, ToolSpec


class Grammars:
    """One loaded model's grammars (LlamaCppModel holds one). Not thread-safe, like the model."""

    def __init__(
        self,
        llama: Any,
        config: EngineConfig,
        *,
        tool_mode: str,
        call_format: str | None,
        is_end: Callable[[int], bool],
    ):
        """`call_format`: native mode's call format (lazy.call_format), None in json mode or for
        a template lazy.py does not know."""
        self._llama, self._config, self._tool_mode, self._is_end = llama, config, tool_mode, is_end
        self.call_format = call_format
        self._grammar_cache: tuple[str, Any] | None = None
        self._native_grammar: Any = None
        # json mode decodes through llguidance where it compiles the tools' schema; False keeps
        # llama.cpp's GBNF sampler (benchmarks/speed.py compares them)
        self.guided = True
        self._guide_cache: tuple[str, Any] | None = None  # schema -> its llguidance matcher, or None
        self.choices_held = 0  # argument choices the last matcher holds replies to
        self._lltokenizer: Any = None  # llguidance's view of the vocabulary, built on first use
        self._gbnf_reason: str | None = None  # why json mode last fell back to GBNF
        self._lazy_cache: tuple[str, list[tuple[lazy.Trigger, Any]]] | None = None
        self._lazy_reason: str | None = None  # why native mode's calls were last left free

    @property
    def kind(self) -> str | None:
        """What constrains the replies: json mode's grammar (llguidance, or llama.cpp's GBNF
        with the reason), native mode's EngineConfig.grammar, or nothing."""
        if self._tool_mode != "json":
            if self._config.grammar is not None:
                return "llama.cpp GBNF"
            if not self._config.constrain_calls or self.call_format is None:
                return None
            reason = self._lazy_reason or guided.unavailable_reason()
            return f"free calls ({reason})" if reason else f"llguidance lazy ({self.call_format})"
        reason = "switched off" if not self.guided else self._gbnf_reason or guided.unavailable_reason()
        return f"llama.cpp GBNF ({reason})" if reason else "llguidance"

    def json_grammar(self, tools: Sequence[ToolSpec]) -> Any:
        """json mode's GBNF grammar for these tools, where no llguidance matcher decodes;
        compiled once per schema."""
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

    def guide(self, tools: Sequence[ToolSpec], choices: Sequence[ArgumentChoice] = ()) -> Any:
        """json mode's llguidance matcher for these tools (their arguments narrowed by
        `choices`), reset for a new reply; None where llama.cpp's GBNF grammar decodes instead
        (switched off, llguidance missing, or a schema it cannot compile: `kind` says
        which). Compiled once per schema: again only when the tools or the choices change (a
        workspace's 1,000 paths compile in ~20 ms)."""
        if not self.guided:
            return None
        schema = json.dumps(toolcalls.json_mode_schema(tools, choices))
        if self._guide_cache is None or self._guide_cache[0] != schema:
            matcher = self._compile_guide(schema)
            if matcher is None and choices:
                # llguidance refused the narrowed schema (or is missing): the tools' own schema
                # decides, unnarrowed, and sets the reason `kind` reports
                return self.guide(tools)
            self._guide_cache = (schema, matcher)
        names = {t.name for t in tools}
        self.choices_held = sum(1 for c in choices if c.tool in names)
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

    def lazy_calls(self, tools: Sequence[ToolSpec]) -> list[tuple[lazy.Trigger, Any]] | None:
        """Native mode's lazy grammar for these tools: (trigger, llguidance matcher) pairs, or
        None where calls stay free (switched off, no tools, llguidance missing, a format
        lazy.py does not know, or grammars llguidance refuses: `kind` says which)."""
        if not tools or not self._config.constrain_calls or self.call_format is None:
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

    def _special_token(self, text: str) -> int | None:
        """The id of the one token that spells `text` (a marker the vocabulary holds whole,
        often a special token the grammar must name by id), else None."""
        tokens = self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return int(tokens[0]) if len(tokens) == 1 else None

    def reply_grammar(self) -> Any:
        """The user's GBNF grammar for native-mode replies (EngineConfig.grammar), compiled once."""
        if self._config.grammar is None:
            return None
        if self._native_grammar is None:
            from llama_cpp import LlamaGrammar

            try:
                self._native_grammar = LlamaGrammar.from_string(self._config.grammar, verbose=False)
            except Exception as exc:  # llama.cpp's parser reports through ValueError or bare Exception
                raise EngineError(f"the reply grammar does not parse: {exc}", hint="check the GBNF syntax") from exc
        return self._native_grammar


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
