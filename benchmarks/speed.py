"""Engine speed against raw llama-cpp-python, and prefix reuse over a scripted agent run.

    python benchmarks/speed.py [--model ALIAS_OR_GGUF] [--threads N] [--repeats 5] [--json]
                               [--only-constrained | --only-lookup]

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
4. Constrained decoding: json mode's replies decoded free (no grammar, the reference), under
   llama.cpp's GBNF grammar, and through llguidance (guided.py: checking the model's own
   choice first, and computing the whole mask every token), same prompt and memory, medians
   over repeats in rotating order. A 200-token write_file call with a poem as content gives
   decode tokens/s (target: guided >= 0.9x free); a read_file call gives a whole tool call's
   wall time against free generation of as many tokens as the call's text (target: below 1x),
   and the sampled and forced tokens of each.
5. Prompt-lookup decoding (engines/lookup.py): free greedy replies with and without it, medians
   over repeats in rotating order: a copy-heavy reply (a 40-line file rewritten with one
   change) and free prose (where drafts mostly miss: what lookup costs), decode tokens/s, the
   ratio, drafted and accepted tokens, and in how many rounds both sides wrote the same
   tokens. Run by `--only-lookup` only (it takes as long as the other four together on 2 cores).

Timings are noisy on shared machines: compare the ratios of one run, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from localagent.agent import Agent, AgentConfig
from localagent.engines import open_model
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel, common_prefix
from localagent.records import FinalStep, Message, Reply, ToolSpec

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
WRITE = ToolSpec(
    "write_file",
    "Write a text file in the workspace.",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
        "required": ["path", "content"],
    },
)
POEM_ASK = "Write a long poem about the sea, at least twenty lines, into poem.txt."
CALL_ASK = "What does README.md say?"
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


# --- constrained decoding ---------------------------------------------------------------------

CONSTRAINED_SIDES = ("free", "gbnf", "guided", "guided, mask every token")


@dataclass(frozen=True)
class Decode:
    output_tokens: int
    forced_tokens: int
    ttft_s: float
    total_s: float
    finish: str
    overhead_ms: float = 0.0  # main-thread CPU per output token outside llama_decode (sampling, grammar, text)

    @property
    def decode_tps(self) -> float | None:
        decode_s = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode_s if self.output_tokens > 1 and decode_s > 0 else None


def _free_decode(model: LlamaCppModel, tokens: list[int], n: int) -> Decode:
    """n tokens decoded without a grammar from the same prompt and memory, end tokens ignored
    (the length is what is compared), each detokenized as the engine does."""
    llama = model._llama  # the engine's own instance: the same memory and threads as the other sides
    started = time.perf_counter()
    first_at, k = None, 0
    generator = llama.generate(tokens, temp=0.0)
    for token in generator:
        if first_at is None:
            first_at = time.perf_counter()
        llama.detokenize([token])
        k += 1
        if k >= n:
            break
    generator.close()
    ended = time.perf_counter()
    return Decode(k, 0, (first_at or ended) - started, ended - started, "length")


def _constrained_run(
    model: LlamaCppModel, side: str, messages: list[Message], tools: list[ToolSpec], max_tokens: int
) -> tuple[Decode, Reply | None]:
    """One reply; every side starts with the prompt in memory but its last token (evaluated
    in the timed part: its logits start the reply)."""
    tokens = model.tokenize(model.render(messages, tools))
    model.evaluate(tokens[:-1])
    with _cpu_outside_eval(model) as cpu:
        if side == "free":
            run = _free_decode(model, tokens, max_tokens)
            reply = None
        else:
            model.guided = side != "gbnf"
            model.guided_check_first = side == "guided"
            try:
                reply = model.chat(messages, tools, max_tokens=max_tokens)
            finally:
                model.guided, model.guided_check_first = True, True
            t = reply.timings
            run = Decode(reply.usage.output_tokens, t.forced_tokens, t.ttft_s or 0.0, t.total_s, reply.finish_reason)
    return replace(run, overhead_ms=cpu[0] * 1000 / max(1, run.output_tokens)), reply


@contextmanager
def _cpu_outside_eval(model: LlamaCppModel) -> Iterator[list[float]]:
    """The main thread's CPU seconds spent outside `eval` (llama_decode) while the block runs:
    what sampling, the grammar and detokenizing cost. Wall-clock figures move with whatever
    else runs on the cores; this one hardly does."""
    llama = model._llama
    inside, result = [0.0], [0.0]

    def timed_eval(tokens: Any) -> None:
        started = time.thread_time()
        try:
            type(llama).eval(llama, tokens)
        finally:
            inside[0] += time.thread_time() - started

    llama.eval = timed_eval  # generate() and the engine call self.eval: the instance attribute wins
    started = time.thread_time()
    try:
        yield result
    finally:
        del llama.eval
        result[0] = time.thread_time() - started - inside[0]


def constrained(model: LlamaCppModel, repeats: int, poem_tokens: int = 200) -> dict[str, Any]:
    """Free vs GBNF vs llguidance on two json-mode replies, medians in rotating order."""
    poem = [Message("system", SYSTEM), Message("user", POEM_ASK)]
    call = [Message("system", SYSTEM), Message("user", CALL_ASK)]
    # the free side of the tool call generates as many tokens as the guided call's text
    model.chat(call, TOOLS, max_tokens=64)
    warm = model.chat(call, TOOLS, max_tokens=64)
    call_text_tokens = len(model.tokenize(warm.raw))
    runs: dict[str, dict[str, list[Decode]]] = {
        "poem": {s: [] for s in CONSTRAINED_SIDES},
        "call": {s: [] for s in CONSTRAINED_SIDES},
    }
    replies: dict[tuple[str, str], Reply | None] = {}
    for i in range(repeats + 1):  # the first round warms up
        order = CONSTRAINED_SIDES[i % 4 :] + CONSTRAINED_SIDES[: i % 4]
        for side in order:
            for name, messages, tools, n in (("poem", poem, [WRITE], poem_tokens), ("call", call, TOOLS, 64)):
                n = call_text_tokens if side == "free" and name == "call" else n
                run, reply = _constrained_run(model, side, messages, tools, n)
                replies[(name, side)] = reply
                if i > 0:
                    runs[name][side].append(run)
    out: dict[str, Any] = {"call_text_tokens": call_text_tokens}
    for name, sides in runs.items():
        out[name] = {
            side: {
                "output_tokens": statistics.median(r.output_tokens for r in rs),
                "forced_tokens": statistics.median(r.forced_tokens for r in rs),
                "decode_tps": _median([r.decode_tps for r in rs]),
                "wall_s": statistics.median(r.total_s for r in rs),
                # the least disturbed repeat: other work on the cores only ever slows a run down
                "best_decode_tps": max((r.decode_tps or 0.0 for r in rs), default=None),
                "best_wall_s": min(r.total_s for r in rs),
                "overhead_ms": statistics.median(r.overhead_ms for r in rs),
                "finish": rs[-1].finish,
                "text": replies[(name, side)].raw[:80] if replies[(name, side)] else None,
            }
            for side, rs in sides.items()
        }
    return out


# --- prompt-lookup decoding -------------------------------------------------------------------

# ~40 lines of code the reply is asked to copy with one change (the copy-heavy case), and a
# story (free prose: drafts mostly miss, so it shows what lookup costs where it does not help)
LOOKUP_FILE = "\n".join(
    line
    for i in range(1, 11)
    for line in (
        f"def load_{i}(path):",
        f'    """Read record {i} from the file at path."""',
        "    with open(path) as f:",
        f"        return parse(f.read(), kind={i})",
    )
)
LOOKUP_CASES = {
    "copy": "Here is loader.py:\n\n{file}\n\nRewrite the whole file with load_6 using kind=60. Output the complete file.",
    "prose": "Write a long, detailed story about the lighthouse keeper who wrote this code:\n\n{file}",
}
LOOKUP_SIDES = ("off", "on")


@dataclass(frozen=True)
class LookupRun:
    output_tokens: int
    drafted: int
    accepted: int
    decode_tps: float | None
    tokens: tuple[int, ...]


def _lookup_run(model: LlamaCppModel, case: str, side: str, i: int, max_tokens: int) -> LookupRun:
    # the round number first, so no round shares a cached prefix with the one before; both
    # sides of a round decode after the same prompt (the second finds it cached, which moves
    # only the time to the first token, not the decode rate compared)
    messages = [Message("system", f"Round {i}. {SYSTEM}"), Message("user", LOOKUP_CASES[case].format(file=LOOKUP_FILE))]
    model.config = replace(model.config, lookup=side == "on")
    reply = model.chat(messages, [], max_tokens=max_tokens)
    t = reply.timings
    return LookupRun(
        reply.usage.output_tokens, t.drafted_tokens, t.accepted_tokens, t.decode_tokens_per_s, tuple(model._last[3])
    )


def prompt_lookup(model: LlamaCppModel, repeats: int, max_tokens: int) -> dict[str, Any]:
    """Free greedy replies decoded with and without prompt-lookup decoding, medians over
    repeats in rotating order: decode tokens/s, the ratio, drafted and accepted tokens."""
    keep = model.config
    runs: dict[str, dict[str, list[LookupRun]]] = {case: {s: [] for s in LOOKUP_SIDES} for case in LOOKUP_CASES}
    try:
        for i in range(repeats + 1):  # the first round warms up
            order = LOOKUP_SIDES[i % 2 :] + LOOKUP_SIDES[: i % 2]
            for case in LOOKUP_CASES:
                for side in order:
                    run = _lookup_run(model, case, side, i, max_tokens)
                    print(
                        f"  round {i}, {case}, lookup {side}: {run.output_tokens} tokens, {run.decode_tps or 0:.1f} tok/s, "
                        f"{run.accepted}/{run.drafted} drafts kept",
                        file=sys.stderr,
                        flush=True,
                    )
                    if i > 0:
                        runs[case][side].append(run)
    finally:
        model.config = keep
    out: dict[str, Any] = {}
    for case, sides in runs.items():
        figures = {
            side: {
                "output_tokens": statistics.median(r.output_tokens for r in rs),
                "drafted": statistics.median(r.drafted for r in rs),
                "accepted": statistics.median(r.accepted for r in rs),
                "decode_tps": _median([r.decode_tps for r in rs]),
                "all_decode_tps": [round(r.decode_tps or 0.0, 1) for r in rs],
            }
            for side, rs in sides.items()
        }
        # rounds whose two sides wrote the same tokens (they may part at a near-tie: lookup.py)
        same = sum(a.tokens == b.tokens for a, b in zip(sides["off"], sides["on"], strict=True))
        out[case] = figures | {"ratio": _ratio(figures["on"]["decode_tps"], figures["off"]["decode_tps"]), "same": same}
    return out


def print_lookup(figures: dict[str, Any], repeats: int) -> None:
    print(f"prompt-lookup decoding, free greedy replies: medians of {repeats} repeats in rotating order")
    print(f"{'':18}{'decode tok/s':>13}{'x off':>8}{'tokens':>8}{'drafted':>9}{'accepted':>10}  every repeat")
    for case, f in figures.items():
        for side in LOOKUP_SIDES:
            s = f[side]
            tps = f"{s['decode_tps']:.1f}" if s["decode_tps"] else "n/a"
            ratio = f["ratio"] if side == "on" else ""
            print(
                f"  {case + ', ' + side:16}{tps:>13}{ratio:>8}{s['output_tokens']:>8.0f}{s['drafted']:>9.0f}"
                f"{s['accepted']:>10.0f}  {s['all_decode_tps']}"
            )
        print(f"  {case}: the same tokens with and without lookup in {f['same']} of {repeats} rounds")


# --- report -----------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}x" if a and b else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a catalog alias or a .gguf path (default: the bundled SmolLM2-135M)")
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument(
        "--repeats", type=int, default=6, help="a multiple of 3 (4 for section 4) rotates the order evenly"
    )
    parser.add_argument("--decode-tokens", type=int, default=128)
    parser.add_argument("--poem-tokens", type=int, default=200, help="length of the constrained-decoding reply")
    parser.add_argument("--only-constrained", action="store_true", help="run section 4 alone")
    parser.add_argument("--only-lookup", action="store_true", help="run section 5 (prompt-lookup decoding) alone")
    parser.add_argument("--lookup-tokens", type=int, default=256, help="length of the prompt-lookup replies")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    config = EngineConfig(n_ctx=args.n_ctx, n_threads=args.threads, tool_mode="json")
    if args.model and Path(args.model).suffix == ".gguf":
        model = LlamaCppModel(args.model, config)
    else:
        opened = open_model(args.model or "smollm2-135m", config)  # the fit check, then the store
        assert isinstance(opened, LlamaCppModel), "a local model: the benchmark drives llama.cpp itself"
        model = opened
    if args.only_lookup:
        try:
            figures = prompt_lookup(model, args.repeats, args.lookup_tokens)
            settings = model.describe().as_dict()
        finally:
            model.close()
        if args.json:
            json.dump({"engine": settings, "lookup": figures}, sys.stdout, indent=2)
            print()
        else:
            print(f"model {settings['model']}  threads {settings['n_threads']}  memory {settings['memory']}")
            print_lookup(figures, args.repeats)
        return 0
    try:
        if args.only_constrained:
            guided_figures = constrained(model, args.repeats, args.poem_tokens)
            settings = model.describe().as_dict()
        else:
            speeds = throughput(model, args.repeats, args.decode_tokens)
            steps = conversation_reuse(model)
            run = harness_overhead(model)
            guided_figures = constrained(model, args.repeats, args.poem_tokens)
            settings = model.describe().as_dict()
    finally:
        model.close()

    header = (
        f"model {settings['model']}  threads {settings['n_threads']}  n_ctx {settings['n_ctx']}  gpu layers "
        f"{settings['n_gpu_layers']}  llama-cpp-python {settings['llama_cpp']}  json grammar {settings['grammar']}"
    )
    if args.only_constrained:
        if args.json:
            json.dump({"engine": settings, "constrained": guided_figures}, sys.stdout, indent=2)
            print()
        else:
            print(header)
            print_constrained(guided_figures, args.repeats)
        return 0
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
                "constrained": guided_figures,
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0

    print(header)
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
    print()
    print_constrained(guided_figures, args.repeats)
    return 0


def print_constrained(figures: dict[str, Any], repeats: int) -> None:
    poem, call = figures["poem"], figures["call"]
    free_tps, free_wall = poem["free"]["decode_tps"], call["free"]["wall_s"]
    print(f"constrained decoding, json mode: medians of {repeats} repeats in rotating order, same prompt and memory")
    best_tps, best_wall = poem["free"]["best_decode_tps"], call["free"]["best_wall_s"]
    columns = f"{'x free':>8}{'best':>8}{'x free':>8}{'tokens':>8}{'sampled':>9}{'forced':>8}{'cpu ms/tok':>12}  finish"
    print(f"{'':26}{'decode tok/s':>13}{columns}")
    print("write_file with a poem:")
    for side, f in poem.items():
        tps = f"{f['decode_tps']:.1f}" if f["decode_tps"] else "n/a"
        sampled = f["output_tokens"] - f["forced_tokens"]
        print(
            f"  {side:24}{tps:>13}{_ratio(f['decode_tps'], free_tps):>8}{f['best_decode_tps']:>8.1f}{_ratio(f['best_decode_tps'], best_tps):>8}"
            f"{f['output_tokens']:>8.0f}{sampled:>9.0f}{f['forced_tokens']:>8.0f}{f['overhead_ms']:>12.3f}  {f['finish']}"
        )
    print(f"{'':26}{'wall ms':>13}{columns}")
    print(f"read_file call (free: {figures['call_text_tokens']} tokens, the call's text):")
    for side, f in call.items():
        sampled = f["output_tokens"] - f["forced_tokens"]
        print(
            f"  {side:24}{f['wall_s'] * 1000:>13.1f}{_ratio(f['wall_s'], free_wall):>8}{f['best_wall_s'] * 1000:>8.1f}{_ratio(f['best_wall_s'], best_wall):>8}"
            f"{f['output_tokens']:>8.0f}{sampled:>9.0f}{f['forced_tokens']:>8.0f}{f['overhead_ms']:>12.3f}  {f['finish']}"
        )
    print("  best: the least disturbed repeat (fastest), since other work on the cores only slows a run down")
    print("  cpu ms/tok: the main thread's CPU time outside llama_decode per output token (sampling, grammar, text),")
    print("  a figure that other load on the cores hardly moves")
    print(f"  the call: {call['guided']['text']}")
    print(f"  the poem: {poem['guided']['text']}...")
    print("targets: guided decode >= 0.9x free on the poem; the guided call's wall time below 1x free")


if __name__ == "__main__":
    sys.exit(main())
