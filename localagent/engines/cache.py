"""The model's memory of the prompt inside llama.cpp, moved to a new prompt's shared prefix.

An attention KV cache is cut back to any earlier token; recurrent state and a sliding-window
cache are not (checkpoints.py keeps the book of their saved states): these functions cut back
where the memory allows, save and restore checkpoints through llama.cpp's state API, and
empty the memory when what it holds is unknown. LlamaCppModel._prefill decides when.
"""

from __future__ import annotations

import ctypes
from typing import Any

from localagent.engines.checkpoints import Checkpoint, CheckpointStore


def cut_back(llama: Any, tokens: list[int], keep: int, checkpoints: CheckpointStore | None, n_swa: int) -> int:
    """Make the memory hold exactly `tokens[:n]` for the largest n <= keep it can; return n.

    An attention cache drops the cells past `keep`. Recurrent state and a sliding window
    cannot go back (llama.cpp's removal fails or, for a window, leaves cells missing): then
    the longest checkpoint within `keep` is restored, or the memory starts empty."""
    import llama_cpp

    if keep >= llama.n_tokens:
        return llama.n_tokens
    memory = llama_cpp.llama_get_memory(llama.ctx)
    if keep > 0 and not _memory_reaches_back(memory, keep, n_swa):
        checkpoint = checkpoints.best(tokens, keep) if checkpoints is not None else None
        keep = checkpoint.n if checkpoint is not None and _restore(llama, checkpoint) else 0
    # a recurrent memory refuses to drop a suffix that cuts into its state: start afresh
    if keep == 0 or not llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
        llama_cpp.llama_memory_clear(memory, True)
        keep = 0
    llama.n_tokens = keep
    return keep


def _memory_reaches_back(memory: Any, keep: int, n_swa: int) -> bool:
    """Whether cutting the memory back to `keep` tokens leaves what token `keep` needs.
    The smallest position held is 0 for an attention cache, the last position for
    recurrent state, and past the window's start for a sliding-window cache that moved on
    (the test llama-server makes before it falls back to a checkpoint)."""
    import llama_cpp

    pos_min = llama_cpp.llama_memory_seq_pos_min(memory, 0)
    return pos_min == 0 or pos_min < keep - n_swa


def save_checkpoint(llama: Any, store: CheckpointStore | None, tokens: list[int], *, pinned: bool) -> None:
    """Save the state that cannot be recomputed by cutting back (recurrent state, the
    sliding window) after `tokens`; the attention cells stay in the cache."""
    import llama_cpp

    if store is None or store.has(tokens):
        return
    ctx, flags = llama.ctx, llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
    size = llama_cpp.llama_state_seq_get_size_ext(ctx, 0, flags)
    if size <= 0 or size > store.budget_bytes:
        return
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data_ext(ctx, buffer, size, 0, flags)
    if 0 < written <= size:
        store.add(tokens, ctypes.string_at(buffer, written), pinned=pinned)


def _restore(llama: Any, checkpoint: Checkpoint) -> bool:
    import llama_cpp

    data = checkpoint.data
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    flags = llama_cpp.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
    if llama_cpp.llama_state_seq_set_data_ext(llama.ctx, buffer, len(data), 0, flags) != len(data):
        return False
    llama.input_ids[: checkpoint.n] = checkpoint.tokens
    return True


def forget(llama: Any) -> None:
    """Empty the memory, whose contents are unknown after a failed evaluation."""
    import llama_cpp

    llama.n_tokens = 0
    memory = llama_cpp.llama_get_memory(llama.ctx)
    if memory is not None:
        llama_cpp.llama_memory_clear(memory, True)
