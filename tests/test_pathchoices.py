"""Path arguments held to the workspace's paths (pathchoices.py): the bounded listing on
hostile workspaces, the narrowed json-mode schema, the grammar on the bundled SmolLM2-135M
(a call it starts can only name what is there), and the agent's trace saying so."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema  # a dependency of mcp, so installed with localagent
import pytest

from localagent import pathchoices
from localagent.agent import Agent, AgentConfig
from localagent.engines import guided, toolcalls
from localagent.engines.base import EngineConfig
from localagent.engines.llamacpp import LlamaCppModel
from localagent.records import ArgumentChoice, FinalStep, Message, ModelStep, ToolSpec
from localagent.sandbox import Workspace
from localagent.tools import TOOLS
from localagent.trace import step_record


def _tree(root: Path) -> Path:
    (root / "src" / "deep").mkdir(parents=True)
    (root / "notes.txt").write_text("hello\n")
    (root / "src" / "main.py").write_text("print(1)\n")
    (root / "src" / "deep" / "x.md").write_text("x\n")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref\n")
    return root


def test_the_listing_holds_files_and_folders_sorted_without_git(tmp_path):
    listing = pathchoices.list_paths(Workspace(_tree(tmp_path)))
    assert listing.complete
    assert listing.files == ("notes.txt", "src/deep/x.md", "src/main.py")
    assert listing.folders == (".", "src", "src/deep")
    assert listing.summary() == "paths held to 3 files, 3 folders"


def test_hostile_entries_are_never_offered(tmp_path):
    root = _tree(tmp_path)
    os.mkfifo(root / "pipe")  # opening it would block: it is only named by the listing, never opened
    (root / "escape").symlink_to("/etc/passwd")
    (root / "up").symlink_to("..")
    (root / "loop").symlink_to("loop")
    (root / "broken").symlink_to("missing.txt")
    (root / "alias.txt").symlink_to("notes.txt")
    (root / "srclink").symlink_to("src")
    os.mkdir(os.fsencode(root) + b"/caf\xe9")  # a name that is not UTF-8 cannot be spelled in a JSON string
    (root / "line\nbreak.txt").write_text("")
    listing = pathchoices.list_paths(Workspace(root))
    assert listing.files == ("alias.txt", "notes.txt", "src/deep/x.md", "src/main.py")
    # a linked folder is offered but not descended: no loops, no second copy of the tree
    assert listing.folders == (".", "src", "src/deep", "srclink")


def test_past_the_limit_nothing_is_held(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i:02}.txt").write_text("")
    assert pathchoices.list_paths(Workspace(tmp_path), limit=30).complete
    over = pathchoices.list_paths(Workspace(tmp_path), limit=29)
    assert not over.complete and over.files == over.folders == ()
    assert over.summary() == f"paths not held: the workspace has more than {pathchoices.MAX_PATHS} entries"
    assert pathchoices.choices((("read_file", "path", "file"),), over) == ()


def test_each_kind_gets_its_paths(tmp_path):
    listing = pathchoices.list_paths(Workspace(_tree(tmp_path)))
    kinds = tuple((t.name, arg, kind) for t in TOOLS for arg, kind in t.paths)
    by_tool = {c.tool: c for c in pathchoices.choices(kinds, listing)}
    assert set(by_tool) == {"read_file", "edit_file", "list_directory", "get_file_info", "search_files", "write_file"}
    assert by_tool["read_file"].values == by_tool["edit_file"].values == listing.files
    assert by_tool["list_directory"].values == listing.folders
    assert len(by_tool["get_file_info"].values) == 6 and by_tool["get_file_info"].pattern is None
    assert by_tool["write_file"].values == listing.files and by_tool["write_file"].pattern is not None


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("new.txt", True),
        ("docs/a b/notes.md", True),
        (".gitignore", True),
        ("caf\u00e9/\u65e5\u672c.txt", True),
        ("../x.txt", False),
        ("a/../../x", False),
        ("/etc/passwd", False),
        (".", False),
        ("a//b", False),
        ("dir/", False),
        ("", False),
        ('quote".txt', False),
    ],
)
def test_a_new_path_stays_inside(path, ok):
    schema = {
        "type": "string",
        "pattern": pathchoices.NEW_PATH_PATTERN.replace(r"\x{80}-\x{10FFFF}", "\u0080-\U0010ffff"),
    }
    valid = True
    try:
        jsonschema.validate(path, schema)
    except jsonschema.ValidationError:
        valid = False
    assert valid is ok


# --- the schema -------------------------------------------------------------------------------

READ = ToolSpec(
    "read_file",
    "Read a file.",
    {"type": "object", "properties": {"path": {"type": "string", "description": "the file"}}, "required": ["path"]},
)
LIST = ToolSpec(
    "list_directory",
    "List a folder.",
    {"type": "object", "properties": {"path": {"type": "string"}, "recursive": {"type": "boolean"}}},
)


def test_the_schema_narrows_held_arguments_and_keeps_their_description():
    schema = toolcalls.json_mode_schema([READ, LIST], [ArgumentChoice("read_file", "path", ("a.txt", "b.txt"))])
    read = schema["anyOf"][0]["properties"]["arguments"]["properties"]["path"]
    assert read == {"description": "the file", "type": "string", "enum": ["a.txt", "b.txt"]}
    jsonschema.validate({"tool": "read_file", "arguments": {"path": "a.txt"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"tool": "read_file", "arguments": {"path": "c.txt"}}, guided.closed_objects(schema))
    # unchanged without choices: the same schema as before they existed
    assert toolcalls.json_mode_schema([READ, LIST], []) == toolcalls.json_mode_schema([READ, LIST])


def test_a_tool_that_can_name_nothing_is_not_offered():
    nothing = [ArgumentChoice("read_file", "path", ()), ArgumentChoice("list_directory", "path", ())]
    schema = toolcalls.json_mode_schema([READ, LIST], nothing)
    tools = [o["properties"].get("tool", {}).get("const") for o in schema["anyOf"]]
    assert tools == ["list_directory", None]  # read_file needs a path; list_directory's is optional
    assert set(schema["anyOf"][0]["properties"]["arguments"]["properties"]) == {"recursive"}


# --- the grammar, on the bundled model ---------------------------------------------------------


@pytest.fixture(scope="module")
def model(bundled_gguf) -> LlamaCppModel:
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=2048, tool_mode="json"), name="smollm2-135m")
    yield m
    m.close()


def _accepts(model: LlamaCppModel, tools, choices, text: str) -> bool:
    matcher = model._guide(tools, choices)
    tokens = model._llama.tokenize(text.encode(), add_bos=False, special=False)
    return matcher.try_consume_tokens(tokens) == len(tokens) and not matcher.is_error()


def test_the_grammar_refuses_a_path_that_is_not_there(model):
    choices = [ArgumentChoice("read_file", "path", ("notes.txt", "src/main.py"))]
    assert _accepts(model, [READ], choices, '{"tool": "read_file", "arguments": {"path": "src/main.py"}}')
    assert not _accepts(model, [READ], choices, '{"tool": "read_file", "arguments": {"path": "README.md"}}')
    assert not _accepts(model, [READ], choices, '{"tool": "read_file", "arguments": {"path": "../etc"}}')
    assert _accepts(model, [READ], (), '{"tool": "read_file", "arguments": {"path": "README.md"}}')


def test_every_call_names_a_listed_path_and_the_prompt_stays_cached(model):
    history = [Message("system", "You work on files."), Message("user", "What does the README say?")]
    first = model.chat(history, [READ], max_tokens=40, choices=[ArgumentChoice("read_file", "path", ("notes.txt",))])
    assert first.choices_held == 1
    assert [c.arguments for c in first.tool_calls] == [{"path": "notes.txt"}]
    # other choices change the grammar only: the same prompt is evaluated again from the cache
    again = model.chat(history, [READ], max_tokens=40, choices=[ArgumentChoice("read_file", "path", ("a/b.txt",))])
    assert again.timings.prompt_tokens_evaluated == 1
    assert [c.arguments for c in again.tool_calls] == [{"path": "a/b.txt"}]
    free = model.chat(history, [READ], max_tokens=40)
    assert free.choices_held == 0 and free.timings.prompt_tokens_evaluated == 1


def test_native_mode_holds_nothing(bundled_gguf):
    m = LlamaCppModel(bundled_gguf, EngineConfig(n_ctx=1024, tool_mode="native"), name="smollm2-135m")
    try:
        reply = m.chat(
            [Message("user", "Read notes.txt")],
            [READ],
            max_tokens=8,
            choices=[ArgumentChoice("read_file", "path", ("x",))],
        )
        assert reply.choices_held == 0
    finally:
        m.close()


# --- the agent --------------------------------------------------------------------------------


def _steps(model, root: Path, on: bool) -> list:
    agent = Agent(model, root, AgentConfig(max_steps=2, max_tokens=48, path_constraints=on))
    return list(agent.run("What does notes.txt say?"))


def test_the_agent_holds_paths_and_the_trace_says_so(model, tmp_path):
    root = _tree(tmp_path)
    held = [s for s in _steps(model, root, True) if isinstance(s, ModelStep)]
    assert held and all(s.paths == "paths held to 3 files, 3 folders" for s in held)
    assert all(s.reply.choices_held == 6 for s in held)
    listed = set(pathchoices.list_paths(Workspace(root)).files) | {".", "src", "src/deep"}
    for step in held:
        for call in step.reply.tool_calls:
            assert call.arguments.get("path", ".") in listed or call.name == "write_file"
    record = json.loads(json.dumps(step_record(held[0])))  # as the trace writes it
    assert record["paths"] == held[0].paths and record["reply"]["choices_held"] == 6
    off = [s for s in _steps(model, root, False) if isinstance(s, ModelStep)]
    assert off and all(s.paths == "" and s.reply.choices_held == 0 for s in off)


def test_a_workspace_past_the_limit_runs_unheld_and_says_why(model, tmp_path):
    for i in range(pathchoices.MAX_PATHS + 1):
        (tmp_path / f"f{i}.txt").touch()
    steps = _steps(model, tmp_path, True)
    first = next(s for s in steps if isinstance(s, ModelStep))
    assert first.reply.choices_held == 0 and first.paths.startswith("paths not held")
    assert isinstance(steps[-1], FinalStep)


# --- the bench --------------------------------------------------------------------------------


def test_the_bench_records_the_setting_and_a_resume_keeps_it(tmp_path, monkeypatch, capsys):
    from localagent.bench.runner import BenchConfig, run_bench
    from localagent.bench.tasks import load_tasks
    from localagent.cli import main

    task = load_tasks(tier=1)[0].id
    off = run_bench(BenchConfig(models=("oracle",), task_ids=(task,), path_constraints=False, out=tmp_path / "off"))
    on = run_bench(BenchConfig(models=("oracle",), task_ids=(task,), out=tmp_path / "on"))
    assert (off.info.path_constraints, on.info.path_constraints) == (False, True)
    for outcome, expected in ((off, False), (on, True)):
        header = json.loads((outcome.run_dir / outcome.trials[0].trace_path).read_text().splitlines()[0])
        assert header["path_constraints"] is expected
    again = run_bench(BenchConfig(resume=str(tmp_path / "off")))
    assert again.info.path_constraints is False

    monkeypatch.setattr("sys.argv", ["localagent", "bench", "--resume", str(tmp_path / "off"), "--path-constraints"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    assert "--path-constraints cannot change them" in capsys.readouterr().err


def test_a_run_without_path_constraints_is_its_own_variant():
    from factories import make_run_info, make_trial

    from localagent.bench.capability import variant_of
    from localagent.bench.schema import RunInfo

    def variant(mode: str, on: bool | None):
        info = make_run_info(path_constraints=bool(on))
        if on is None:  # a run stored before the setting existed
            data = info.model_dump()
            del data["path_constraints"]
            info = RunInfo.model_validate(data)
        trial = make_trial(model="smollm2-135m", model_kind="local", engine={"tool_mode": mode})
        return variant_of(trial, info)

    held, free = variant("json", True), variant("json", False)
    assert held != free and held.path_constraints is True
    assert (held.label, free.label) == ("smollm2-135m json", "smollm2-135m json free-paths")
    assert free.bench_args() == ["--model", "smollm2-135m", "--tool-mode", "json", "--no-path-constraints"]
    # runs stored before the setting existed held nothing; native mode never holds paths
    assert variant("json", None) == free
    assert {variant("native", True).path_constraints, variant("native", False).path_constraints} == {None}
