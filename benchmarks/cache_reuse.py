"""Prompt tokens evaluated with the engine's cache (and checkpoints) against evaluating every
prompt from its first token, per architecture family, over a bench-like conversation.

    python benchmarks/cache_reuse.py [--families qwen35,mamba,...] [--steps 4] [--trials 2] [--json]

The models are the tiny random-weight GGUFs of tests/archmodels.py (real tokenizers and chat
templates, built on first use). Each trial is a conversation of STEPS model calls sharing one
system prompt, as a bench's trials of one model do; at every step the model replies (a few
tokens) and the history keeps a different call than it wrote, so the template re-renders the
reply: the case that broke recurrent models before checkpoints. Side by side in one process:
the cached engine, and a second engine whose memory is emptied before every prompt.

It prints, per family: tokens in all prompts, tokens the cached engine evaluated (and the
share), the checkpoints it holds at the end (count, bytes), and prefill seconds of both sides.
With random weights the seconds are small; the token share is the figure that carries over to
real models of the family, whose prompt processing costs per token.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import archmodels  # noqa: E402

from localagent.engines.base import EngineConfig  # noqa: E402
from localagent.engines.llamacpp import LlamaCppModel  # noqa: E402
from localagent.records import Message, ToolCall, ToolSpec  # noqa: E402

READ = ToolSpec(
    "read_file",
    "Read a text file in the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
SYSTEM = Message("system", "You are an agent that works on the files in a workspace. " * 6 + "Use the tools.")
RESULT = "".join(f"line {i}: build {i * 7 % 13} passed on node {i % 5}\n" for i in range(25))


def conversation(trial: int, steps: int) -> list[list[Message]]:
    """The prompts of one trial: each step appends a call (not the one the model wrote) and a result."""
    messages = [SYSTEM, Message("user", f"Task {trial}: read the files and report what failed.")]
    prompts = [list(messages)]
    for step in range(1, steps):
        call = ToolCall("read_file", {"path": f"log{trial}-{step}.txt"}, f"call_{step}_1")
        messages += [Message("assistant", "", (call,)), Message("tool", RESULT, tool_call_id=call.id, name="read_file")]
        prompts.append(list(messages))
    return prompts


def measure(family: str, steps: int, trials: int) -> dict:
    path = archmodels.build(family)
    config = EngineConfig(tool_mode="json", n_ctx=4096, n_threads=2)
    cached, fresh = LlamaCppModel(path, config), LlamaCppModel(path, config)
    total = evaluated = 0
    cached_s = fresh_s = 0.0
    for trial in range(trials):
        for messages in conversation(trial, steps):
            started = time.perf_counter()
            done = cached.prefill(messages, [READ])
            cached_s += time.perf_counter() - started
            cached.chat(messages, [READ], max_tokens=4)  # the reply the history will not keep
            fresh.evaluate([0])  # an empty start: one unrelated token
            started = time.perf_counter()
            full = fresh.evaluate(done.tokens)
            fresh_s += time.perf_counter() - started
            assert full.evaluated == len(done.tokens)
            total += len(done.tokens)
            evaluated += done.evaluated
    stats = cached.checkpoint_stats() or {}
    row = {
        "family": family,
        "memory": cached.memory_kind,
        "prompt_tokens": total,
        "evaluated": evaluated,
        "share": evaluated / total,
        "checkpoints": stats.get("count", 0),
        "checkpoint_bytes": stats.get("bytes", 0),
        "restored": stats.get("restored", 0),
        "prefill_s_cached": cached_s,
        "prefill_s_fresh": fresh_s,
    }
    cached.close()
    fresh.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(archmodels.FAMILIES))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(f, args.steps, args.trials) for f in args.families.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{args.trials} trials x {args.steps} steps, json mode, replies re-rendered; cached engine vs memory emptied per prompt"
    )
    print(
        f"{'family':14} {'memory':18} {'prompt tok':>10} {'evaluated':>9} {'share':>6} {'ckpts':>5} {'ckpt bytes':>10} {'restored':>8} {'cached s':>8} {'fresh s':>8} {'ratio':>6}"
    )
    for r in rows:
        print(
            f"{r['family']:14} {r['memory']:18} {r['prompt_tokens']:10d} {r['evaluated']:9d} {r['share']:6.1%} "
            f"{r['checkpoints']:5d} {r['checkpoint_bytes']:10d} {r['restored']:8d} {r['prefill_s_cached']:8.3f} "
            f"{r['prefill_s_fresh']:8.3f} {r['prefill_s_cached'] / r['prefill_s_fresh']:6.2f}"
        )


if __name__ == "__main__":
    main()
