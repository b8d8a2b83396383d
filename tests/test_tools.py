"""The file tools and their sandbox, on real files in a temp workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localagent.errors import ConfigError, ToolError
from localagent.records import ToolCall
from localagent.tools import (
    LIST_MAX_ENTRIES,
    READ_MAX_LINES,
    SEARCH_MAX_MATCHES,
    TOOLS,
    InvalidToolCall,
    Workspace,
    run_tool,
)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("# Demo\nhello world\n")
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("def main():\n    return 'hello'\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("hello from git\n")
    (tmp_path / "secret.txt").write_text("top secret\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "x.txt").write_text("outside hello\n")
    return Workspace(root)


def call(ws: Workspace, name: str, **arguments) -> str:
    return run_tool(ws, ToolCall(name=name, arguments=arguments))


# --- sandbox ---


@pytest.mark.parametrize(
    "path",
    ["../secret.txt", "src/../../secret.txt", "..", "../outside/x.txt", "./../secret.txt"],
)
def test_traversal_is_refused(ws: Workspace, path: str) -> None:
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "read_file", path=path)


def test_absolute_path_elsewhere_is_refused_with_a_relative_hint(ws: Workspace) -> None:
    secret = ws.root.parent / "secret.txt"
    with pytest.raises(ToolError, match="outside the workspace.*'secret.txt'"):
        call(ws, "read_file", path=str(secret))
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "read_file", path="/etc/passwd")


def test_absolute_path_inside_the_workspace_is_allowed(ws: Workspace) -> None:
    assert "hello world" in call(ws, "read_file", path=str(ws.root / "README.md"))


def test_dotdot_that_stays_inside_is_allowed(ws: Workspace) -> None:
    assert "hello world" in call(ws, "read_file", path="src/../README.md")


def test_symlinked_file_leaving_the_workspace_is_refused(ws: Workspace) -> None:
    (ws.root / "link.txt").symlink_to(ws.root.parent / "secret.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "read_file", path="link.txt")
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "write_file", path="link.txt", content="overwritten")
    assert (ws.root.parent / "secret.txt").read_text() == "top secret\n"


def test_symlinked_dir_leaving_the_workspace_is_refused(ws: Workspace) -> None:
    (ws.root / "out").symlink_to(ws.root.parent / "outside", target_is_directory=True)
    for name, args in [
        ("read_file", {"path": "out/x.txt"}),
        ("list_directory", {"path": "out"}),
        ("search_files", {"pattern": "hello", "path": "out"}),
        ("get_file_info", {"path": "out/x.txt"}),
        ("edit_file", {"path": "out/x.txt", "old_text": "outside", "new_text": "pwned"}),
    ]:
        with pytest.raises(ToolError, match="outside the workspace"):
            call(ws, name, **args)
    # a write target whose parent folder is a symlink to elsewhere, file not existing yet
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "write_file", path="out/new/deep.txt", content="x")
    assert not (ws.root.parent / "outside" / "new").exists()
    # searching the root never follows the link out
    assert "outside hello" not in call(ws, "search_files", pattern="hello")
    listing = call(ws, "list_directory", recursive=True)
    assert "out (link to outside the workspace)" in listing
    assert "x.txt" not in listing


def test_dangling_symlink_pointing_outside_is_refused_for_writes(ws: Workspace) -> None:
    target = ws.root.parent / "created-by-agent.txt"
    (ws.root / "dangling").symlink_to(target)
    with pytest.raises(ToolError, match="outside the workspace"):
        call(ws, "write_file", path="dangling", content="x")
    assert not target.exists()


def test_symlink_inside_the_workspace_is_followed(ws: Workspace) -> None:
    (ws.root / "readme-link").symlink_to(ws.root / "README.md")
    assert "hello world" in call(ws, "read_file", path="readme-link")


def test_workspace_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        Workspace(tmp_path / "missing")


def test_writes_into_git_are_refused(ws: Workspace) -> None:
    with pytest.raises(ToolError, match=".git"):
        call(ws, "write_file", path=".git/hooks/pre-commit", content="#!/bin/sh\n")


# --- read_file ---


def test_read_file_whole_and_range(ws: Workspace) -> None:
    (ws.root / "n.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    assert call(ws, "read_file", path="n.txt").startswith("line 1\nline 2\n")
    assert call(ws, "read_file", path="n.txt", start_line=3, end_line=4) == "line 3\nline 4\n"
    with pytest.raises(ToolError, match="past the end.*10 lines"):
        call(ws, "read_file", path="n.txt", start_line=11)
    with pytest.raises(ToolError, match="before start_line"):
        call(ws, "read_file", path="n.txt", start_line=5, end_line=2)


def test_large_file_is_truncated_with_a_note_on_how_to_read_on(ws: Workspace) -> None:
    total = READ_MAX_LINES + 50
    (ws.root / "big.txt").write_text("".join(f"row {i}\n" for i in range(1, total + 1)))
    text = call(ws, "read_file", path="big.txt")
    assert f"row {READ_MAX_LINES}\n" in text and f"row {READ_MAX_LINES + 1}\n" not in text
    assert f"showing lines 1-{READ_MAX_LINES} of {total}" in text
    assert f"start_line={READ_MAX_LINES + 1}" in text
    rest = call(ws, "read_file", path="big.txt", start_line=READ_MAX_LINES + 1)
    assert rest.startswith(f"row {READ_MAX_LINES + 1}\n") and f"row {total}\n" in rest
    assert "truncated" not in rest


def test_one_huge_line_is_cut_and_said_so(ws: Workspace) -> None:
    (ws.root / "min.json").write_text("x" * 50_000)
    text = call(ws, "read_file", path="min.json")
    assert "line 1 has 50000 characters" in text
    assert len(text) < 20_000


def test_binary_file_is_detected(ws: Workspace) -> None:
    (ws.root / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256)))
    with pytest.raises(ToolError, match="binary"):
        call(ws, "read_file", path="img.png")
    assert "binary: yes" in call(ws, "get_file_info", path="img.png")
    assert "no matches" in call(ws, "search_files", pattern="IHDR")


def test_utf8_text_is_not_binary(ws: Workspace) -> None:
    (ws.root / "u.txt").write_text("héllo wörld ✓\n", encoding="utf-8")
    assert call(ws, "read_file", path="u.txt") == "héllo wörld ✓\n"


def test_missing_file_suggests_close_names(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="does not exist; did you mean 'README.md'"):
        call(ws, "read_file", path="READMe.md")
    with pytest.raises(ToolError, match="did you mean 'src/app.py'"):
        call(ws, "read_file", path="src/ap.py")
    with pytest.raises(ToolError, match="is a directory"):
        call(ws, "read_file", path="src")


def test_empty_file(ws: Workspace) -> None:
    (ws.root / "e.txt").write_text("")
    assert "is empty" in call(ws, "read_file", path="e.txt")


# --- list_directory / search_files / get_file_info ---


def test_list_directory_ignores_git_and_marks_folders(ws: Workspace) -> None:
    assert call(ws, "list_directory").splitlines() == ["README.md", "src/"]
    assert call(ws, "list_directory", path="src") == "src/app.py"
    assert call(ws, "list_directory", recursive=True).splitlines() == ["README.md", "src/", "src/app.py"]
    with pytest.raises(ToolError, match="is a file"):
        call(ws, "list_directory", path="README.md")


def test_long_listing_is_capped_with_a_count(ws: Workspace) -> None:
    many = ws.root / "many"
    many.mkdir()
    for i in range(LIST_MAX_ENTRIES + 7):
        (many / f"f{i:04d}.txt").write_text("")
    text = call(ws, "list_directory", path="many")
    assert len(text.splitlines()) == LIST_MAX_ENTRIES + 1
    assert "[7 more entries not shown" in text


def test_search_files_answers_file_line_text_and_skips_git(ws: Workspace) -> None:
    out = call(ws, "search_files", pattern="hel+o")
    assert out.splitlines() == ["README.md:2:hello world", "src/app.py:2:    return 'hello'"]
    assert call(ws, "search_files", pattern="hello", glob="*.py") == "src/app.py:2:    return 'hello'"
    assert call(ws, "search_files", pattern="hello", path="src/app.py") == "src/app.py:2:    return 'hello'"
    assert "no matches" in call(ws, "search_files", pattern="nothing-like-this")
    with pytest.raises(ToolError, match="invalid regular expression"):
        call(ws, "search_files", pattern="(unclosed")


def test_search_results_are_capped_with_a_count(ws: Workspace) -> None:
    (ws.root / "rep.txt").write_text("needle\n" * (SEARCH_MAX_MATCHES + 5))
    text = call(ws, "search_files", pattern="needle")
    assert len(text.splitlines()) == SEARCH_MAX_MATCHES + 1
    assert "[5 more matches not shown" in text


def test_get_file_info(ws: Workspace) -> None:
    info = call(ws, "get_file_info", path="README.md")
    assert "type: file" in info and "size: 19 bytes" in info and "lines: 2" in info and "binary: no" in info
    assert "type: directory" in call(ws, "get_file_info", path="src")
    assert "entries: 2" in call(ws, "get_file_info", path=".")


# --- write_file / edit_file ---


def test_write_file_creates_parents_and_replaces(ws: Workspace) -> None:
    assert call(ws, "write_file", path="out/deep/total.txt", content="42") == "created out/deep/total.txt (2 bytes)"
    assert (ws.root / "out/deep/total.txt").read_text() == "42"
    assert call(ws, "write_file", path="out/deep/total.txt", content="43\n").startswith("replaced")
    assert (ws.root / "out/deep/total.txt").read_text() == "43\n"
    assert not [p for p in (ws.root / "out/deep").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ToolError, match="is a directory"):
        call(ws, "write_file", path="src", content="x")


def test_write_keeps_the_mode_of_a_replaced_file(ws: Workspace) -> None:
    script = ws.root / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    call(ws, "write_file", path="run.sh", content="#!/bin/sh\necho hi\n")
    assert os.stat(script).st_mode & 0o777 == 0o755


def test_edit_file_replaces_exactly_one_match(ws: Workspace) -> None:
    out = call(ws, "edit_file", path="src/app.py", old_text="'hello'", new_text="'bye'")
    assert out == "edited src/app.py: replaced 1 occurrence at line 2"
    assert (ws.root / "src/app.py").read_text() == "def main():\n    return 'bye'\n"


def test_edit_file_zero_matches_says_so(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="old_text was not found in src/app.py"):
        call(ws, "edit_file", path="src/app.py", old_text="goodbye", new_text="x")


def test_edit_file_several_matches_says_how_many_and_where(ws: Workspace) -> None:
    (ws.root / "dup.txt").write_text("a = 1\nb = 2\na = 1\nc\na = 1\n")
    with pytest.raises(ToolError, match=r"matches 3 times in dup.txt \(at lines 1, 3, 5\)"):
        call(ws, "edit_file", path="dup.txt", old_text="a = 1", new_text="a = 9")
    assert (ws.root / "dup.txt").read_text() == "a = 1\nb = 2\na = 1\nc\na = 1\n"


def test_edit_file_missing_file(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="does not exist"):
        call(ws, "edit_file", path="nope.txt", old_text="a", new_text="b")


# --- calls, arguments and schemas ---


def test_invalid_calls_are_told_apart(ws: Workspace) -> None:
    with pytest.raises(InvalidToolCall, match="unknown tool 'delete_file'.*read_file"):
        call(ws, "delete_file", path="README.md")
    with pytest.raises(InvalidToolCall, match="missing required argument 'path'.*read_file\\(path: string"):
        call(ws, "read_file")
    with pytest.raises(InvalidToolCall, match="unknown argument 'file'"):
        call(ws, "read_file", path="README.md", file="x")
    with pytest.raises(InvalidToolCall, match="'start_line'"):
        call(ws, "read_file", path="README.md", start_line="first")
    with pytest.raises(InvalidToolCall, match="bad json"):
        run_tool(ws, ToolCall(name="read_file", error="bad json"))


def test_tool_failures_are_not_invalid_calls(ws: Workspace) -> None:
    with pytest.raises(ToolError) as info:
        call(ws, "read_file", path="missing.txt")
    assert not isinstance(info.value, InvalidToolCall)


def test_specs_are_flat_simple_schemas() -> None:
    names = [t.name for t in TOOLS]
    assert names == ["read_file", "list_directory", "search_files", "get_file_info", "write_file", "edit_file"]
    for tool in TOOLS:
        schema = tool.spec().parameters
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        text = str(schema)
        assert "$defs" not in text and "anyOf" not in text and "title" not in text and "null" not in text
        for prop in schema["properties"].values():
            assert prop["type"] in {"string", "integer", "boolean"}
    read = TOOLS[0].spec().parameters
    assert read["required"] == ["path"]
    assert set(read["properties"]) == {"path", "start_line", "end_line"}
    listing = TOOLS[1].spec().parameters
    assert listing["required"] == [] and listing["properties"]["path"]["default"] == "."
