"""Chat templates rendered within bounds of time and memory.

A GGUF's chat template is Jinja code written by whoever made the file, run on every model
call. Jinja's sandbox keeps it away from Python's internals but not from the machine: nested
`range(100000)` loops run for hours, `'x' * 3000000000` takes 3 GB (at compile time even:
Jinja folds constant expressions), and `'%999999999d' % 1` a gigabyte in one call. Here the
operators and calls that can build large values are checked before they run, constant
expressions are checked before any compiler folds them, and a render that runs past its time
is interrupted where it is (an asynchronous exception in the rendering thread, delivered
between two bytecodes of the template's own loop).

Everything a template does for a real model stays allowed: the templates of the families in
tests/archmodels.py render unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import operator
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

# the largest string, list or number of repetitions a template may build: a prompt is at most
# the context (a few million characters for 1M tokens), so this leaves room for any real one
MAX_SIZE = 16 * 2**20
# the largest integer argument a call or filter may take (ljust, center, indent, lipsum n...)
MAX_ARGUMENT = 2**20
MAX_POWER_BITS = 4096  # 2 ** 4096 is already absurd in a chat template
# a real template renders a long conversation in milliseconds (Gemma 4's: 19 ms for 22 turns)
RENDER_S = 10.0

_WIDTH = re.compile(r"(\d{7,})")  # a width or precision of a million or more in a format string


class TemplateLimitError(Exception):
    """The template tried to build something too large or ran out of time."""


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else None


def _check_format(spec: Any) -> None:
    if isinstance(spec, str) and _WIDTH.search(spec):
        raise TemplateLimitError(f"a format width over {MAX_ARGUMENT} characters")


def check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse an operation whose result would be too large, before it runs."""
    if op == "*":
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        size = _sized(seq)
        if size is not None and isinstance(times, int) and size * max(times, 0) > MAX_SIZE:
            raise TemplateLimitError(f"a value of {size * times:,} items (the limit is {MAX_SIZE:,})")
    elif op == "+":
        a, b = _sized(left), _sized(right)
        if a is not None and b is not None and a + b > MAX_SIZE:
            raise TemplateLimitError(f"a value of {a + b:,} items (the limit is {MAX_SIZE:,})")
    elif op == "**":
        if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * abs(left).bit_length() > MAX_POWER_BITS:
                raise TemplateLimitError(f"a power of over {MAX_POWER_BITS} bits")
    elif op == "%":
        _check_format(left)


def check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Refuse a call that would build something too large: any integer argument over the
    limit (str.ljust, center, zfill, lipsum...), a format string with a huge width, a
    replacement that multiplies a string past the limit."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_ARGUMENT:
            raise TemplateLimitError(f"an argument of {value:,} (the limit is {MAX_ARGUMENT:,})")
    target = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if name in ("replace", "do_replace") and len(args) >= 2:
        subject, old, new = (
            (target, args[0], args[1])
            if isinstance(target, str)
            else (args[0], args[1], args[2] if len(args) > 2 else "")
        )
        if all(isinstance(s, str) for s in (subject, old, new)):
            grows = (len(subject) + 1 if not old else subject.count(old)) * len(new)
            if len(subject) + grows > MAX_SIZE:
                raise TemplateLimitError(f"a replacement of {grows:,} characters (the limit is {MAX_SIZE:,})")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox of llama-cpp-python's Jinja2ChatFormatter (and Transformers'), with every
    operator and call that can build a large value checked first."""

    # intercepted operators are never folded at compile time, and run through call_binop
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        check_binop(op, left, right)
        return super().call_binop(context, op, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's signature)
        check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        # `'{:>999999999}'.format(1)`: the sandbox hands out its own str.format at attribute
        # access; the format string is checked there
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_format(value.__self__)
        return wrapped


def _bounded_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    # compiled templates call filters directly, past the environment's call(): each is wrapped
    skip = 1 if hasattr(fn, "jinja_pass_arg") else 0  # the context/environment comes first

    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_call(fn, args[skip:], kwargs)
        if fn.__name__ == "do_format" and args:
            _check_format(args[0])  # `'%999999999d'|format(1)`: the value is the format string
        return fn(*args, **kwargs)

    for attr in ("jinja_pass_arg",):  # @pass_context / @pass_environment markers
        if hasattr(fn, attr):
            setattr(bounded, attr, getattr(fn, attr))
    bounded.__name__ = getattr(fn, "__name__", "filter")
    return bounded


class _IgnoreGeneration(jinja2.ext.Extension):
    """Transformers' `{% generation %}` tag, passed through (as llama-cpp-python does)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def environment() -> BoundedEnvironment:
    """The environment chat templates run in: llama-cpp-python's settings (trim_blocks,
    lstrip_blocks, loop controls, the generation tag, tojson as Transformers writes it)."""
    env = BoundedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_IgnoreGeneration, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
    return env  # range() is the sandbox's own: at most 100,000 items a call


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    import json

    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def check_constants(source: str) -> None:
    """Refuse a template whose constant expressions are too large, before any compiler folds
    them: llama-cpp-python compiles every template in a GGUF while loading it, with constant
    folding (`{{ 'x' * 3000000000 }}` is 3 GB at load). Raises TemplateLimitError, or
    jinja2.TemplateSyntaxError for a template that does not parse."""
    tree = environment().parse(source)

    def value(node: nodes.Node) -> Any:
        if isinstance(node, nodes.Const):
            return node.value
        if isinstance(node, nodes.BinExpr) and node.operator in BoundedEnvironment.intercepted_binops:
            left, right = value(node.left), value(node.right)
            check_binop(node.operator, left, right)
            return _OPERATORS[node.operator](left, right)
        if isinstance(node, (nodes.List, nodes.Tuple)):
            return [value(item) for item in node.items]
        raise _NotConstant

    for node in tree.find_all(nodes.BinExpr):
        try:
            value(node)
        except (_NotConstant, TypeError, ValueError, ArithmeticError):
            continue


class _NotConstant(Exception):
    pass


_OPERATORS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}


class ChatTemplate:
    """One compiled chat template; `render(**variables)` the prompt text, within bounds.
    Raises TemplateLimitError past a bound and whatever the template raises otherwise
    (jinja2 errors, raise_exception's ValueError)."""

    def __init__(
        self, source: str, *, bos_token: str, eos_token: str, add_generation_prompt: bool, render_s: float = RENDER_S
    ):
        check_constants(source)
        self.template = environment().from_string(source)
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_generation_prompt = add_generation_prompt
        self.render_s = render_s

    def render(self, **variables: Any) -> str:
        def raise_exception(message: str) -> None:
            raise ValueError(message)

        context = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "add_generation_prompt": self.add_generation_prompt,
            "raise_exception": raise_exception,
            "strftime_now": _strftime_now,
            **variables,
        }
        parts: list[str] = []
        size = 0
        with _time_limit(self.render_s):
            for part in self.template.generate(context):
                size += len(part)
                if size > MAX_SIZE:
                    raise TemplateLimitError(f"a prompt of over {MAX_SIZE:,} characters")
                parts.append(part)
        return "".join(parts)


def _strftime_now(fmt: str) -> str:
    from datetime import datetime

    return datetime.now().strftime(fmt)


class _TimeUp(TemplateLimitError):
    pass


class _Watchdog:
    """One thread for every render's time limit (a Timer per render cost more than the checks
    themselves): it sets an asynchronous exception in a rendering thread past its deadline
    (CPython's PyThreadState_SetAsyncExc), raised at that thread's next bytecode boundary, so
    a loop in the template stops where it is. A C call already running (one huge str
    operation) finishes first; the checks above keep those small."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, thread)
        self.fired: set[int] = set()
        self.next_token = 0
        self.thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        with self.cond:
            self.next_token += 1
            self.armed[self.next_token] = (time.monotonic() + seconds, threading.get_ident())
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="localagent-template-watchdog", daemon=True)
                self.thread.start()
            self.cond.notify()
            return self.next_token

    def disarm(self, token: int) -> bool:
        """Whether it fired; an exception set but not yet raised is taken back."""
        with self.cond:
            deadline, thread = self.armed.pop(token)
            if token not in self.fired:
                return False
            self.fired.discard(token)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), None)
            return True

    def _watch(self) -> None:
        with self.cond:
            while True:
                now = time.monotonic()
                for token, (deadline, thread) in self.armed.items():
                    if deadline <= now and token not in self.fired:
                        self.fired.add(token)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread), ctypes.py_object(_TimeUp))
                waiting = [d for t, (d, _) in self.armed.items() if t not in self.fired]
                self.cond.wait(min(waiting) - now if waiting else None)


_WATCHDOG = _Watchdog()


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    token = _WATCHDOG.arm(seconds)
    fired = False
    try:
        yield
    except _TimeUp:
        fired = True
    finally:  # on every way out, or the watchdog would interrupt whatever runs next
        fired = _WATCHDOG.disarm(token) or fired  # fired as the render ended: taken back
    if fired:
        raise _TimeUp(f"rendering took over {seconds:g} s")
