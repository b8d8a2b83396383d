"""Chat templates written to hurt: a GGUF's template is code from whoever made the file.
Each is refused at once, or cut off at the render's time limit, within bounded memory."""

from __future__ import annotations

import resource
import time

import pytest

from localagent.engines.templates import ChatTemplate, TemplateLimitError, check_constants

SIZE = [
    "{{ 'x' * 3000000000 }}",
    "{{ ('x' * 3000) * 3000000 }}",
    "{{ ['x'] * 3000000000 }}",
    "{{ 2 ** 100000000 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%999999999d'|format(1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '{0:>999999999}'.format_map({}) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999) }}",
    "{{ lipsum(999999999) }}",
    "{% set s = 'x' * 1000000 %}{{ s|replace('x', s) }}",
    "{% set s = 'x' * 1000000 %}{{ s.replace('x', s) }}",
    "{% set s = 'x' * 10000000 %}{{ s + s }}",
    "{% set s = 'x' * 10000000 %}{{ s ~ s ~ s }}{{ s ~ s ~ s }}",
]


@pytest.mark.parametrize("source", SIZE)
def test_templates_that_build_huge_values_are_refused_before_they_do(source: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TemplateLimitError):
        ChatTemplate(source, bos_token="", eos_token="", add_generation_prompt=True).render(messages=[])
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 200 * 1024  # the refused value was never built


@pytest.mark.parametrize("source", ["{{ 'x' * 3000000000 }}", "{% if true %}{{ [1, 2] * 2000000000 }}{% endif %}"])
def test_constant_expressions_are_checked_before_a_compiler_folds_them(source: str) -> None:
    # llama-cpp-python compiles every template of a GGUF while loading it, folding constants
    with pytest.raises(TemplateLimitError):
        check_constants(source)


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}",
    ],
)
def test_endless_loops_are_cut_off_at_the_time_limit(source: str) -> None:
    template = ChatTemplate(source, bos_token="", eos_token="", add_generation_prompt=True, render_s=0.5)
    started = time.perf_counter()
    with pytest.raises(TemplateLimitError, match="rendering took over 0.5 s"):
        template.render(messages=[])
    assert time.perf_counter() - started < 5
    # the interruption is spent: nothing fires later in whatever runs next
    time.sleep(0.7)
    assert ChatTemplate("ok", bos_token="", eos_token="", add_generation_prompt=True).render() == "ok"


def test_a_template_that_fails_otherwise_leaves_no_interruption_armed() -> None:
    recursive = ChatTemplate(
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        bos_token="",
        eos_token="",
        add_generation_prompt=True,
        render_s=0.3,
    )
    with pytest.raises(RecursionError):
        recursive.render()
    time.sleep(0.5)  # past its time limit: had it stayed armed, this sleep would be interrupted
    assert sum(range(10)) == 45


def test_unsafe_attributes_stay_refused() -> None:
    from jinja2.exceptions import SecurityError

    with pytest.raises(SecurityError):
        ChatTemplate(
            "{{ ''.__class__.__mro__[1].__subclasses__() }}", bos_token="", eos_token="", add_generation_prompt=True
        ).render()


# --- through the engine: a GGUF carrying such a template -------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile-templates")


def _gguf_with(folder, name: str, template: str):
    import archmodels
    from test_engine_bad_input import _with_template

    return _with_template(archmodels.build("gemma3"), folder, name, template)


def test_a_gguf_whose_template_folds_to_gigabytes_is_refused_before_llama_cpp_compiles_it(folder, tmp_path) -> None:
    from test_cli_run import localagent

    gguf = _gguf_with(folder, "bigstr", "{{ 'x' * 3000000000 }}")
    started = time.perf_counter()
    done = localagent("run", "hello", "--model", str(gguf), "-w", str(tmp_path), "--offline", timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "error: the chat template in bigstr.gguf (tokenizer.chat_template) builds too large a value" in done.stderr
    assert "hint: use a GGUF with a fixed template" in done.stderr
    assert time.perf_counter() - started < 60  # was: 3.3 GB, then a MemoryError traceback


def test_a_gguf_whose_template_never_ends_stops_the_run_with_an_engine_error(folder, tmp_path) -> None:
    from test_cli_run import localagent

    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x"
    gguf = _gguf_with(folder, "loop", loop)
    started = time.perf_counter()
    done = localagent(
        "run", "hello", "--model", str(gguf), "-w", str(tmp_path), "--offline", "--time-limit", "5", timeout=120
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "rendering took over 10 s" in done.stderr and "engine_error" in done.stderr
    assert time.perf_counter() - started < 60  # was: killed at 90 s, the run's time limit never checked
