"""Replies stuck in a loop are stopped early (engines/loops.py), in both decode paths, and the
agent ends the run with its own stop reason. Counts only: tokens before the stop."""

from __future__ import annotations

import json
import random
from pathlib import Path

import archmodels
import pytest

from localagent.agent import Agent, AgentConfig
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.engines.loops import MAX_PERIOD, MIN_REPEATS, MIN_SPAN, LoopDetector, find_loop
from localagent.records import FinalStep, Message, ModelStep, ToolSpec
from localagent.tools import TOOLS
from localagent.trace import TraceWriter

REPO = Path(__file__).resolve().parents[1]


def _brute(tokens: list[int]) -> tuple[int, int] | None:
    """(at, period) of the first prefix that ends in a loop, by the definition, no state."""
    for n in range(1, len(tokens) + 1):
        for p in range(1, min(MAX_PERIOD, n - 1) + 1):
            run = 0
            while run < n - p and tokens[n - 1 - run] == tokens[n - 1 - run - p]:
                run += 1
            span = run + p
            if span >= MIN_SPAN and span >= MIN_REPEATS * p:
                return n, p
    return None


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ([7] * 100, (MIN_SPAN, 1)),  # one token: the 48th copy
        ([1, 2, 3] + [5, 6] * 40, (3 + MIN_SPAN, 2)),
        (list(range(20)) * 5, (4 * 20, 20)),  # a 20-token line, its 4th copy
        (list(range(60)) * 4, (4 * 60, 60)),
        (list(range(65)) * 6, None),  # a unit longer than MAX_PERIOD
        (list(range(20)) * 3 + list(range(19)), None),  # a copy short of the 4th
        ([3] * (MIN_SPAN - 1) + [4] + [3] * (MIN_SPAN - 1), None),  # broken runs
        (list(range(500)), None),
    ],
)
def test_find_loop(tokens, expected):
    loop = find_loop(tokens)
    assert (None if loop is None else (loop.at, loop.period)) == expected
    assert _brute(tokens) == expected


def test_the_incremental_detector_agrees_with_the_definition():
    rng = random.Random(7)
    found = 0
    for _ in range(60):
        # a small alphabet with planted repeats: loops of many periods, and near misses
        tokens: list[int] = []
        while len(tokens) < 300:
            if rng.random() < 0.05:
                unit = [rng.randrange(3) for _ in range(rng.randrange(1, 30))]
                tokens += unit * rng.randrange(1, 8)
            else:
                tokens.append(rng.randrange(50))
        loop = find_loop(tokens)
        expected = _brute(tokens)
        assert (None if loop is None else (loop.at, loop.period)) == expected
        found += loop is not None
    assert 0 < found < 60


def test_extend_reports_the_first_loop_in_a_batch():
    detector = LoopDetector()
    assert detector.extend([9] * (MIN_SPAN - 1)) is None
    loop = detector.extend([9, 9, 9])
    assert loop is not None and loop.at == MIN_SPAN and loop.period == 1


def test_real_text_is_not_a_loop(bundled_gguf):
    """This repository's Python, tests, benchmarks and README, tokenized by the bundled model:
    normal prose and code never trip the thresholds (measured when they were chosen: 316
    files, 1.6M tokens including the first 200 stdlib modules, none tripped them; a span of
    32 tokens would have cut ipaddress.py's `0.0.0.0...` and uuid.py's digits)."""
    import llama_cpp

    llama = llama_cpp.Llama(str(bundled_gguf), vocab_only=True, verbose=False)
    files = [*sorted((REPO / "localagent").rglob("*.py")), *sorted((REPO / "tests").glob("*.py")), REPO / "README.md"]
    files += sorted((REPO / "benchmarks").rglob("*.py")) + sorted((REPO / "benchmarks").rglob("*.toml"))
    total = 0
    for path in files:
        tokens = llama.tokenize(path.read_bytes(), add_bos=False)
        total += len(tokens)
        assert find_loop(tokens) is None, path
    assert total > 100_000


# --- the engine, both decode paths ----------------------------------------------------------

HELLO = [Message("user", "Write the word hello 300 times, separated by spaces.")]


def _engine(path: Path, *, stop_loops: bool, tool_mode: str = "json") -> LlamaCppModel:
    return LlamaCppModel(
        path,
        EngineConfig(tool_mode=tool_mode, n_ctx=2048, n_threads=2, stop_loops=stop_loops),  # type: ignore[arg-type]
    )


def _looped_then_stopped(path: Path, ask: list[Message], tools: list[ToolSpec], max_tokens: int):
    """The call made without the check runs to max_tokens and ends in a loop; made again with
    it, it stops at the token where the loop was first found -> (engine, stopped reply, loop)."""
    free = _engine(path, stop_loops=False)
    full = free.chat(ask, tools, max_tokens=max_tokens)
    tokens = free._last[3]
    free.close()
    assert full.finish_reason == "length" and len(tokens) == max_tokens
    loop = find_loop(tokens)
    assert loop is not None

    model = _engine(path, stop_loops=True)
    stopped = model.chat(ask, tools, max_tokens=max_tokens)
    assert stopped.finish_reason == "repetition"
    assert stopped.usage.output_tokens == loop.at
    assert model._last[3] == tokens[: loop.at]  # greedy: the same tokens, cut
    return model, stopped, loop


def test_free_decoding_stops_a_loop(bundled_gguf):
    """SmolLM2-135M asked for a word 300 times writes `Hello, hello, ...`: without the check it
    runs to max_tokens; with it, it stops at the token where its output first ends in a loop."""
    model, stopped, loop = _looped_then_stopped(bundled_gguf, HELLO, [], 300)
    assert loop.at < 100
    # the engine stays usable, and the next call reuses the stopped reply's cache
    again = model.chat([*HELLO, Message("assistant", stopped.text), Message("user", "Thanks.")], [], max_tokens=8)
    assert again.usage.cached_input_tokens > 0
    model.close()


def test_guided_decoding_stops_a_loop():
    """json mode through llguidance: a random-weight Llama writes a string argument that loops."""
    tools = [t.spec() for t in TOOLS]
    ask = [Message("system", "Use tools."), Message("user", "Edit notes.txt.")]
    model, stopped, loop = _looped_then_stopped(archmodels.build("llama"), ask, tools, 256)
    assert loop.at < 256
    assert model.describe().grammar == "llguidance" and model.describe().stop_loops
    assert 0 < stopped.timings.forced_tokens < loop.at
    # the unfinished JSON is an invalid call that tells the model why it was cut
    (call,) = stopped.tool_calls
    assert not call.valid and "kept repeating itself" in (call.error or "")
    model.close()


def test_the_agent_ends_a_looping_answer_with_its_own_stop_reason(tmp_path):
    """A random-weight Gemma answers in text that loops: one model call, cut short, and the run
    ends with stop reason `repetition`, which the trace records with the reply's finish reason."""
    model = _engine(archmodels.build("gemma3"), stop_loops=True, tool_mode="native")
    (tmp_path / "ws").mkdir()
    agent = Agent(model, tmp_path / "ws", AgentConfig(max_steps=3, max_tokens=300))
    trace = tmp_path / "trace.jsonl"
    with TraceWriter(trace, {"model": model.describe().as_dict()}) as writer:
        steps = []
        for step in agent.run(HELLO[0].content):
            writer.write(step)
            steps.append(step)
    model.close()
    (call,) = [s for s in steps if isinstance(s, ModelStep)]
    final = steps[-1]
    assert call.reply.finish_reason == "repetition" and call.reply.usage.output_tokens < 300
    assert isinstance(final, FinalStep) and final.stop_reason == "repetition"
    assert final.usage.output_tokens == call.reply.usage.output_tokens
    assert "repeating" in (final.error or "") and final.hint
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["model"]["stop_loops"] is True
    assert [r["reply"]["finish_reason"] for r in records if r["kind"] == "model"] == ["repetition"]
    assert records[-1]["kind"] == "final" and records[-1]["stop_reason"] == "repetition"
