"""Engine speed against raw llama-cpp-python, and prefix reuse over a scripted agent run.

    python benchmarks/speed.py [--model ALIAS_OR_GGUF] [--threads N] [--repeats 5] [--json]

One process, one model file, the same prompt tokens and threads for every side:

1. Throughput: decode and prompt-processing tokens/s through `LlamaCppModel.chat` versus raw
   `llama_cpp.Llama` (its `create_completion(stream=True)`, and its bare `generate` loop, the
   least a caller can do), medians over repeats in rotating order, printed as ratios. Target: the
   engine at >= 0.95x raw.
2. Prefix reuse: prompt tokens evaluated per step of a scripted 6-step agent conversation
   (the model's calls and a tool result appended each step) versus the prompt length.
   Target: under 25% from step 2 on.
3. Harness overhead: a real agent run (the loop, the real tools, a temp workspace) and the
   share of its wall time spent outside model calls. Target: under 2%.

Timings are noisy on shared machines: compare the ratios of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localagent.agent import Agent, AgentConfig
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel, common_prefix
from localagent.records import FinalStep, Message, ToolSpec

TOOLS = [
    ToolSpec(
        "read_file",
        "Read a text file in the workspace.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "start_line": {"type": "integer"},
                "end_line": {"type": "integer"},
            },
            "required": ["path"],
        },
    ),
    ToolSpec(
        "list_directory",
        "List the files in a directory.",
        {"type": "object", "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}}},
    ),
    ToolSpec(
        "search_files",
        "Search the files for a regular expression.",
        {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    ),
]
SYSTEM = "You are an agent that works on the files in a workspace. Use the tools to look at files before you answer."
# ~600 tokens of file-like text: the prompt-processing measurement needs a long prompt
CONTEXT = "\n".join(
    f"{i:03d} | def handler_{i}(request):  # returns the record for request {i} from the store" for i in range(1, 31)
)
TOOL_RESULT = "\n".join(f"line {i}: the configuration sets option_{i} = {i * 7} for the service" for i in range(1, 9))


@dataclass(frozen=True)
class Run:
    prompt_tokens: int
    evaluated: int
    output_tokens: int
    ttft_s: float
    total_s: float

    @property
    def prefill_tps(self) -> float:
        return self.evaluated / self.ttft_s

    @property
    def decode_tps(self) -> float | None:
        decode_s = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode_s if self.output_tokens > 1 and decode_s > 0 else None


@dataclass(frozen=True)
class ConversationStep:
    step: int
    prompt_tokens: int
    evaluated: int
    ttft_s: float

    @property
    def evaluated_share(self) -> float:
        return self.evaluated / self.prompt_tokens


# --- throughput -------------------------------------------------------------------------------


def _messages(i: int) -> list[Message]:
    # the repeat number comes first, so no repeat shares a cached prefix with the one before
    return [
        Message("system", f"Session {i}. {SYSTEM}\n\nThe file handlers.py:\n{CONTEXT}"),
        Message("user", "Write a long, detailed story about the lighthouse keeper who wrote this code."),
    ]


def _engine_run(model: LlamaCppModel, i: int, max_tokens: int) -> Run:
    reply = model.chat(_messages(i), [], max_tokens=max_tokens)
    t = reply.timings
    return Run(
        reply.usage.input_tokens, t.prompt_tokens_evaluated, reply.usage.output_tokens, t.ttft_s or 0.0, t.total_s
    )


def _raw_completion_run(raw: Any, tokens: list[int], previous: list[int], max_tokens: int) -> Run:
    started = time.perf_counter()
    first_at, n = None, 0
    for chunk in raw.create_completion(prompt=tokens, max_tokens=max_tokens, temperature=0.0, stream=True):
        if first_at is None:
            first_at = time.perf_counter()
        n += 1 if chunk["choices"][0]["text"] or chunk["choices"][0]["finish_reason"] is None else 0
    ended = time.perf_counter()
    return Run(len(tokens), _evaluated(previous, tokens), n, (first_at or ended) - started, ended - started)


def _raw_generate_run(raw: Any, tokens: list[int], previous: list[int], max_tokens: int) -> Run:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(raw.model)
    started = time.perf_counter()
    first_at, n = None, 0
    generator = raw.generate(tokens, temp=0.0)
    for token in generator:
        if first_at is None:
            first_at = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        n += 1
        if n >= max_tokens:
            break
    generator.close()
    ended = time.perf_counter()
    return Run(len(tokens), _evaluated(previous, tokens), n, (first_at or ended) - started, ended - started)


def _evaluated(previous: list[int], tokens: list[int]) -> int:
    """What llama-cpp-python evaluates: all but the prefix it keeps from the last prompt."""
    return len(tokens) - min(common_prefix(previous, tokens), len(tokens) - 1)


def throughput(model: LlamaCppModel, repeats: int, max_tokens: int) -> dict[str, dict[str, float | None]]:
    """Medians of prefill and decode tokens/s for the engine and two raw paths, in rotating order."""
    import llama_cpp

    raws = {
        name: llama_cpp.Llama(
            model_path=str(model.path),
            n_ctx=model.n_ctx,
            n_threads=model.n_threads,
            n_threads_batch=model.n_threads,
            n_gpu_layers=model.n_gpu_layers,
            logits_all=False,
            verbose=False,
        )
        for name in ("raw create_completion", "raw generate")
    }
    runs: dict[str, list[Run]] = {"engine": [], **{name: [] for name in raws}}
    previous: dict[str, list[int]] = {name: [] for name in raws}
    for i in range(repeats + 1):  # the first round warms up caches and pages in the weights
        tokens = model.tokenize(model.render(_messages(i), []))
        names = ["engine", *raws]
        # each side takes each position in turn: a run is a little slower right after another
        # instance's, which would otherwise favour whichever side goes first
        for name in names[i % 3 :] + names[: i % 3]:
            if name == "engine":
                run = _engine_run(model, i, max_tokens)
            elif name == "raw create_completion":
                run = _raw_completion_run(raws[name], tokens, previous[name], max_tokens)
            else:
                run = _raw_generate_run(raws[name], tokens, previous[name], max_tokens)
            if name in previous:
                previous[name] = tokens
            if i > 0:
                runs[name].append(run)
    for raw in raws.values():
        raw.close()
    return {
        name: {
            "prompt_tokens": statistics.median(r.prompt_tokens for r in rs),
            "evaluated": statistics.median(r.evaluated for r in rs),
            "output_tokens": statistics.median(r.output_tokens for r in rs),
            "prefill_tps": statistics.median(r.prefill_tps for r in rs),
            "decode_tps": _median([r.decode_tps for r in rs]),
        }
        for name, rs in runs.items()
    }


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --- prefix reuse over an agent conversation --------------------------------------------------


def conversation_reuse(model: LlamaCppModel, steps: int = 6, max_tokens: int = 48) -> list[ConversationStep]:
    """A scripted agent run: each step the model's reply (its tool calls) and a tool result
    are appended, as the agent loop does. Returns the prompt tokens evaluated per step."""
    history = [Message("system", SYSTEM), Message("user", "Find where option_5 is configured and tell me its value.")]
    out: list[ConversationStep] = []
    for step in range(1, steps + 1):
        reply = model.chat(history, TOOLS, max_tokens=max_tokens)
        out.append(
            ConversationStep(
                step, reply.usage.input_tokens, reply.timings.prompt_tokens_evaluated, reply.timings.ttft_s or 0.0
            )
        )
        history.append(Message("assistant", reply.text, reply.tool_calls))
        if reply.tool_calls:
            for call in reply.tool_calls:
                result = TOOL_RESULT if call.valid else f"error: {call.error}"
                history.append(Message("tool", f"[step {step}]\n{result}", tool_call_id=call.id, name=call.name))
        else:
            history.append(Message("user", "Keep going: look at another file first."))
    return out


# --- harness overhead ------------------------------------------------------------------------


def harness_overhead(model: LlamaCppModel, max_steps: int = 6) -> FinalStep:
    """A real agent run on a small workspace; its FinalStep says where the wall time went."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "config").mkdir()
        (root / "config" / "service.ini").write_text(TOOL_RESULT + "\n")
        (root / "README.md").write_text("The service's settings live in config/service.ini.\n")
        agent = Agent(model, root, AgentConfig(max_steps=max_steps, max_tokens=64))
        *_, final = agent.run("Find where option_5 is configured and tell me its value.")
    assert isinstance(final, FinalStep)
    return final


# --- report -----------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}x" if a and b else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a catalog alias or a .gguf path (default: the bundled SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=6, help="a multiple of 3 rotates the order evenly")
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    config = EngineConfig(n_ctx=args.n_ctx, n_threads=args.threads, tool_mode="json")
    if args.model and Path(args.model).suffix == ".gguf":
        model = LlamaCppModel(args.model, config)
    else:
        model = LlamaCppModel.from_alias(args.model or "smollm2-135m", config)
    try:
        speeds = throughput(model, args.repeats, args.decode_tokens)
        steps = conversation_reuse(model)
        run = harness_overhead(model)
        settings = model.describe()
    finally:
        model.close()

    engine = speeds["engine"]
    ratios = {
        raw: {
            "decode": _ratio(engine["decode_tps"], speeds[raw]["decode_tps"]),
            "prefill": _ratio(engine["prefill_tps"], speeds[raw]["prefill_tps"]),
        }
        for raw in speeds
        if raw != "engine"
    }
    outside_s = run.wall_s - run.model_s
    overhead = {
        "steps": run.step,
        "tool_calls": run.tool_calls,
        "wall_s": run.wall_s,
        "model_s": run.model_s,
        "tool_s": run.tool_s,
        "outside_model_s": outside_s,
        "outside_share": outside_s / run.wall_s,
    }
    if args.json:
        json.dump(
            {
                "engine": settings,
                "throughput": speeds,
                "ratios": ratios,
                "conversation": [asdict(s) | {"evaluated_share": s.evaluated_share} for s in steps],
                "harness": overhead,
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0

    print(
        f"model {settings['model']}  threads {settings['n_threads']}  n_ctx {settings['n_ctx']}  gpu layers {settings['n_gpu_layers']}  llama-cpp-python {settings['llama_cpp']}"
    )
    print(
        f"medians of {args.repeats} repeats in rotating order, prompt {engine['prompt_tokens']:.0f} tokens, up to {args.decode_tokens} generated\n"
    )
    print(f"{'':24}{'prefill tok/s':>14}{'decode tok/s':>14}")
    for name, s in speeds.items():
        decode = f"{s['decode_tps']:.1f}" if s["decode_tps"] else "n/a"
        print(f"{name:24}{s['prefill_tps']:>14.1f}{decode:>14}")
    print()
    for raw, r in ratios.items():
        print(f"engine / {raw}: decode {r['decode']}, prefill {r['prefill']}  (target >= 0.95x)")
    print("\nscripted agent conversation: prompt tokens evaluated per step (target < 25% from step 2)")
    print(f"{'step':>4}{'prompt':>8}{'evaluated':>11}{'share':>8}{'ttft s':>8}")
    for s in steps:
        print(f"{s.step:>4}{s.prompt_tokens:>8}{s.evaluated:>11}{s.evaluated_share:>8.1%}{s.ttft_s:>8.2f}")
    print(
        f"\nagent run ({run.step} steps, {run.tool_calls} tool calls, {run.stop_reason}): "
        f"{run.wall_s:.2f} s wall, {run.model_s:.2f} s in model calls, {run.tool_s * 1000:.1f} ms in tools; "
        f"outside model calls {outside_s * 1000:.1f} ms = {overhead['outside_share']:.2%} of wall time (target < 2%)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
