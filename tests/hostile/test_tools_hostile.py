"""The file tools against hostile workspaces: special files, huge files, catastrophic
regexes. Real FIFOs, sockets, symlinks and sparse files; each hostile call runs in a worker
thread under a generous watchdog that only turns a hang into a failure."""

from __future__ import annotations

import gc
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from localagent.errors import ConfigError, ToolError
from localagent.records import ToolCall
from localagent.tools import (
    EDIT_MAX_BYTES,
    READ_MAX_CHARS,
    READ_MAX_LINES,
    READ_SCAN_MAX_BYTES,
    SEARCH_MAX_FILE_BYTES,
    Workspace,
    run_tool,
)

WATCHDOG_S = 60  # far above any honest run; only a hang reaches it
GIB = 1024**3


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("# Demo\nhello world\n")
    return Workspace(root)


def call(ws: Workspace, name: str, **arguments) -> str:
    return run_tool(ws, ToolCall(name=name, arguments=arguments))


def within_watchdog(fn: Callable[[], str]) -> str:
    """fn's result or its exception; a failure (not a hang) if it has not returned in
    WATCHDOG_S. A blocked thread is a daemon, so a hang cannot hold up the test run."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(WATCHDOG_S)
    if worker.is_alive():
        pytest.fail(f"the call was still running after {WATCHDOG_S} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def hostile(ws: Workspace, name: str, **arguments) -> str:
    return within_watchdog(lambda: call(ws, name, **arguments))


def unblock_fifo(path: Path) -> None:
    """Open the FIFO's other end so a reader stuck in open() or read() returns: run after a
    test so a bug cannot leave a thread blocked forever."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


# --- special files ---


@pytest.fixture
def fifo(ws: Workspace):
    path = ws.root / "pipe"
    os.mkfifo(path)
    yield path
    unblock_fifo(path)


@pytest.fixture
def sock(ws: Workspace):
    path = ws.root / "sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
    except OSError as exc:  # a path too long for AF_UNIX
        pytest.skip(f"cannot bind a unix socket here: {exc}")
    server.listen(1)
    yield path
    server.close()


DIRECT_CALLS = [
    ("read_file", {}),
    ("get_file_info", {}),
    ("edit_file", {"old_text": "a", "new_text": "b"}),
    ("search_files", {"pattern": "x"}),
    ("list_directory", {}),
]


@pytest.mark.parametrize("name,extra", DIRECT_CALLS, ids=[c[0] for c in DIRECT_CALLS])
def test_a_fifo_is_refused_by_name_without_blocking(ws: Workspace, fifo: Path, name: str, extra: dict) -> None:
    with pytest.raises(ToolError, match="pipe is a FIFO, not a regular file"):
        hostile(ws, name, path="pipe", **extra)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still there, untouched


@pytest.mark.parametrize("name,extra", DIRECT_CALLS, ids=[c[0] for c in DIRECT_CALLS])
def test_a_socket_is_refused_by_name(ws: Workspace, sock: Path, name: str, extra: dict) -> None:
    with pytest.raises(ToolError, match="sock is a socket, not a regular file"):
        hostile(ws, name, path="sock", **extra)


def test_a_symlink_to_a_fifo_inside_the_workspace_is_refused(ws: Workspace, fifo: Path) -> None:
    (ws.root / "alias").symlink_to(fifo)
    for name, extra in DIRECT_CALLS:
        with pytest.raises(ToolError, match="alias is a FIFO"):
            hostile(ws, name, path="alias", **extra)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null", "/dev/urandom", "/dev/stdin", "/proc/self/fd/0"])
def test_a_symlink_to_a_device_is_refused_by_the_sandbox(ws: Workspace, device: str) -> None:
    (ws.root / "dev").symlink_to(device)
    for name, extra in DIRECT_CALLS:
        with pytest.raises(ToolError, match="outside the workspace"):
            hostile(ws, name, path="dev", **extra)
    # and a search over the root passes it by
    assert "no matches" in hostile(ws, "search_files", pattern="zzz")


def test_a_device_node_inside_the_workspace_is_refused(ws: Workspace) -> None:
    node = ws.root / "zero"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 5))  # the same device as /dev/zero
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    for name, extra in DIRECT_CALLS:
        with pytest.raises(ToolError, match="zero is a character device, not a regular file"):
            hostile(ws, name, path="zero", **extra)
    assert "zero (character device, not a regular file)" in hostile(ws, "list_directory")


def test_a_search_over_a_folder_with_special_files_passes_them_by_and_says_so(
    ws: Workspace, fifo: Path, sock: Path
) -> None:
    (ws.root / "alias").symlink_to(fifo)
    out = hostile(ws, "search_files", pattern="hello")
    assert out.startswith("README.md:2:hello world")
    assert "not searched: 3 special files (FIFO, socket or device:" in out and "pipe" in out and "sock" in out
    assert "not searched: 3 special files" in hostile(ws, "search_files", pattern="nothing-here")


def test_listings_name_special_files_without_opening_them(ws: Workspace, fifo: Path, sock: Path) -> None:
    listing = hostile(ws, "list_directory").splitlines()
    assert "pipe (FIFO, not a regular file)" in listing
    assert "sock (socket, not a regular file)" in listing
    assert "pipe (FIFO, not a regular file)" in hostile(ws, "list_directory", recursive=True)


def test_write_file_replaces_a_fifo_without_blocking(ws: Workspace, fifo: Path) -> None:
    assert hostile(ws, "write_file", path="pipe", content="now a file\n").startswith("replaced")
    assert fifo.read_text() == "now a file\n"


# --- huge files ---


def _rchar() -> int:
    """Bytes this process has passed through read() calls (page cache and sparse holes
    included, which read_bytes would miss)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io")


def sparse(path: Path, head: bytes, size: int) -> Path:
    assert len(head) > 8192, "the binary sniff would see the hole's NUL bytes"
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)  # the rest is a hole: NUL bytes that take no disk
    return path


@needs_proc_io
def test_read_file_of_a_1_gib_file_reads_its_first_lines_and_stops(ws: Workspace) -> None:
    lines = "".join(f"row {i}\n" for i in range(1, 2001)).encode()  # more than the binary sniff reads
    sparse(ws.root / "huge.log", lines, GIB)
    before = _rchar()
    text = hostile(ws, "read_file", path="huge.log")
    read = _rchar() - before
    assert text.startswith("row 1\nrow 2\n") and f"row {READ_MAX_LINES}\n" in text
    assert f"row {READ_MAX_LINES + 1}\n" not in text
    assert f"start_line={READ_MAX_LINES + 1}" in text and "more than" in text
    assert read <= READ_SCAN_MAX_BYTES + (1 << 20) and read < GIB // 8


@needs_proc_io
def test_one_endless_line_is_cut_at_a_byte_limit_and_said_so(ws: Workspace) -> None:
    sparse(ws.root / "one.txt", b"x" * 20_000, GIB)  # text head, then 1 GiB without a newline
    before = _rchar()
    text = hostile(ws, "read_file", path="one.txt")
    read = _rchar() - before
    assert text.startswith("x" * READ_MAX_CHARS) and "x" * (READ_MAX_CHARS + 1) not in text
    assert f"longer than the {READ_SCAN_MAX_BYTES // 2**20} MiB read_file reads" in text
    assert len(text) < READ_MAX_CHARS + 1000
    assert read <= READ_SCAN_MAX_BYTES + (1 << 20)


def test_a_line_after_an_endless_line_says_how_to_read_on(ws: Workspace) -> None:
    (ws.root / "two.txt").write_text("y" * 50_000 + "\nsecond\n")
    text = hostile(ws, "read_file", path="two.txt")
    assert "line 1 has 50000 characters" in text and "start_line=2" in text
    assert hostile(ws, "read_file", path="two.txt", start_line=2) == "second\n"


def test_peak_memory_of_reading_a_1_gib_file_stays_small(ws: Workspace) -> None:
    """In a fresh interpreter, so the growth of its peak RSS is this call's alone."""
    sparse(ws.root / "one.txt", b"x" * 20_000, GIB)
    sparse(ws.root / "huge.log", b"row\n" * 3000, GIB)
    script = (
        "import resource, sys\n"
        "from localagent.records import ToolCall\n"
        "from localagent.tools import Workspace, run_tool\n"
        "ws = Workspace(sys.argv[1])\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for name in ('one.txt', 'huge.log'):\n"
        "    run_tool(ws, ToolCall(name='read_file', arguments={'path': name}))\n"
        "    run_tool(ws, ToolCall(name='get_file_info', arguments={'path': name}))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(ws.root)], capture_output=True, text=True, timeout=WATCHDOG_S
    )
    assert done.returncode == 0, done.stderr
    growth_kib = int(done.stdout.strip())
    assert growth_kib < 64 * 1024, f"peak RSS grew by {growth_kib} KiB reading a 1 GiB file"


def test_read_file_past_the_scan_limit_says_so(ws: Workspace) -> None:
    sparse(ws.root / "huge.log", b"row\n" * 3000, GIB)
    with pytest.raises(ToolError, match=f"past the first {READ_SCAN_MAX_BYTES // 2**20} MiB of huge.log"):
        hostile(ws, "read_file", path="huge.log", start_line=5000)


def test_get_file_info_of_a_1_gib_file_counts_lines_only_so_far(ws: Workspace) -> None:
    sparse(ws.root / "huge.log", b"row\n" * 3000, GIB)
    info = hostile(ws, "get_file_info", path="huge.log")
    assert f"size: {GIB} bytes" in info and "lines: more than" in info


def test_edit_file_refuses_a_file_over_its_limit_and_names_it(ws: Workspace) -> None:
    sparse(ws.root / "huge.log", b"needle\n" + b"." * 9000 + b"\n", GIB)
    with pytest.raises(ToolError, match=f"larger than {EDIT_MAX_BYTES} bytes, the most edit_file edits"):
        hostile(ws, "edit_file", path="huge.log", old_text="needle", new_text="pin")
    assert (ws.root / "huge.log").stat().st_size == GIB
    just_under = ws.root / "ok.txt"
    just_under.write_bytes(b"needle\n" + b"." * (EDIT_MAX_BYTES - 8) + b"\n")
    assert "replaced 1 occurrence" in hostile(ws, "edit_file", path="ok.txt", old_text="needle", new_text="pin")


def test_search_files_passes_over_a_file_over_its_limit_and_says_so(ws: Workspace) -> None:
    sparse(ws.root / "huge.log", b"hello huge\n" * 1000, SEARCH_MAX_FILE_BYTES + 1)
    out = hostile(ws, "search_files", pattern="hello")
    assert out.splitlines()[0] == "README.md:2:hello world"
    assert f"not searched: 1 file over {SEARCH_MAX_FILE_BYTES} bytes (huge.log)" in out
    assert "not searched: 1 file over" in hostile(ws, "search_files", pattern="hello", path="huge.log")


def test_edit_file_keeps_invalid_utf8_bytes_outside_the_edit(ws: Workspace) -> None:
    # past the binary sniff's first 8 KiB, as in a long file with one Latin-1 line
    data = b"# pad\n" * 2000 + b"name = 'caf\xe9'\nvalue = 1\n\xff\xfe tail\n"
    (ws.root / "latin.py").write_bytes(data)
    hostile(ws, "edit_file", path="latin.py", old_text="value = 1", new_text="value = 2")
    assert (ws.root / "latin.py").read_bytes() == data.replace(b"value = 1", b"value = 2")


def test_a_lone_surrogate_in_content_is_a_tool_error(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="lone surrogate"):
        hostile(ws, "write_file", path="s.txt", content="bad \ud800 text")
    with pytest.raises(ToolError, match="lone surrogate"):
        hostile(ws, "edit_file", path="README.md", old_text="hello", new_text="\ud800")
    assert (ws.root / "README.md").read_text() == "# Demo\nhello world\n"


# --- hostile regular expressions ---


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(a|a)*$", r"(a|aa)+$", r"(.*a){20}$", r"^(a?){40}a{40}$"])
def test_catastrophic_patterns_finish(ws: Workspace, pattern: str) -> None:
    (ws.root / "as.txt").write_text("a" * 100_000 + "b\n" + "a" * 40 + "\n")
    out = hostile(ws, "search_files", pattern=pattern, path="as.txt")
    assert "as.txt:2:" + "a" * 40 in out.splitlines()


def test_a_catastrophic_pattern_still_finds_what_matches(ws: Workspace) -> None:
    (ws.root / "as.txt").write_text("a" * 5_000 + "b\n" + "aaaa\n")
    assert hostile(ws, "search_files", pattern=r"(a+)+$", path="as.txt") == "as.txt:2:aaaa"


@pytest.mark.parametrize(
    "pattern,feature",
    [(r"(a)\1", r"\\1"), (r"foo(?=bar)", r"\(\?="), (r"(?<=x)y", r"\(\?<="), (r"(?!x)y", r"\(\?!"), (r"end\Z", r"\\Z")],
)
def test_features_re2_lacks_are_a_clear_tool_error(ws: Workspace, pattern: str, feature: str) -> None:
    with pytest.raises(ToolError, match=f"does not support.*{feature}.*backreferences, lookahead or lookbehind"):
        hostile(ws, "search_files", pattern=pattern)


@pytest.mark.parametrize("pattern", ["(unclosed", "[z-a]", "*x", "a{2,1}"])
def test_invalid_patterns_say_invalid(ws: Workspace, pattern: str) -> None:
    with pytest.raises(ToolError, match="invalid regular expression"):
        hostile(ws, "search_files", pattern=pattern)


def test_dollar_matches_at_the_end_of_each_line_as_before(ws: Workspace) -> None:
    (ws.root / "e.txt").write_text("one end\nend two\r\nthree end\n")
    assert hostile(ws, "search_files", pattern="end$", path="e.txt") == "e.txt:1:one end\ne.txt:3:three end"
    assert hostile(ws, "search_files", pattern="^end", path="e.txt") == "e.txt:2:end two"


def test_a_huge_pattern_is_refused_not_run(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="regular expression"):
        hostile(ws, "search_files", pattern="((((a{100}){100}){100}){100})")


# --- races: a folder swapped for a link between the sandbox's check and the tool's use ---

RACE_CALLS = 2000  # enough for each test below to catch 3 to 118 escapes from path-based tools


@contextmanager
def swapping(ws: Workspace, outside: Path) -> Iterator[None]:
    """While the block runs, a thread keeps swapping `sub` between a real folder and a link
    to `outside`, each time by renaming a prepared entry onto the free name. A write that
    recreates `sub` in the instant it is free only costs a retry: that folder is moved aside."""
    sub, parked, link = ws.root / "sub", ws.root / "parked", ws.root / "link"
    link.symlink_to(outside, target_is_directory=True)
    stop = threading.Event()
    strays = iter(range(sys.maxsize))
    failed: list[BaseException] = []

    def put(src: Path, dst: Path) -> None:
        while True:
            try:
                os.rename(src, dst)
                return
            except OSError:
                os.rename(dst, ws.root / f"stray{next(strays)}")

    def swap() -> None:
        try:
            while not stop.is_set():
                os.rename(sub, parked)
                put(link, sub)
                os.rename(sub, link)
                put(parked, sub)
        except BaseException as exc:  # handed to the test below, so a broken swapper is not a passed race
            failed.append(exc)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        yield
    finally:
        stop.set()
        swapper.join(WATCHDOG_S)
    if failed:
        raise failed[0]
    assert not swapper.is_alive() and sub.is_dir() and not sub.is_symlink()


@pytest.fixture
def outside(tmp_path: Path, ws: Workspace) -> Path:
    """A folder beside the workspace, and `sub`, the workspace folder that is swapped for a link to it."""
    (ws.root / "sub").mkdir()
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def racing(ws: Workspace, name: str, **arguments) -> str | None:
    """The call's result, or None when the race made it fail with a tool error (allowed: the
    folder can be missing, or a link, at the moment the call looks)."""
    try:
        return call(ws, name, **arguments)
    except ToolError:
        return None


def landed(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_writes_through_a_folder_swapped_for_a_link_never_land_outside(ws: Workspace, outside: Path) -> None:
    with swapping(ws, outside):
        done = [racing(ws, "write_file", path=f"sub/f{i}.txt", content=f"{i}\n") for i in range(RACE_CALLS)]
    escaped = landed(outside)
    assert not escaped, f"{len(escaped)} of {RACE_CALLS} writes landed outside the workspace: {escaped[:5]}"
    assert any(done) and not all(done)  # the race ran: some calls met the folder, some the link


def test_parents_made_through_a_folder_swapped_for_a_link_never_land_outside(ws: Workspace, outside: Path) -> None:
    with swapping(ws, outside):
        done = [racing(ws, "write_file", path=f"sub/d{i}/deep/f.txt", content="x") for i in range(RACE_CALLS)]
    escaped = landed(outside)
    assert not escaped, f"{len(escaped)} folders and files of {RACE_CALLS} writes landed outside: {escaped[:5]}"
    assert any(done) and not all(done)


def test_reads_through_a_folder_swapped_for_a_link_never_return_what_is_outside(ws: Workspace, outside: Path) -> None:
    (outside / "secret.txt").write_text("top secret\n")
    (ws.root / "sub" / "secret.txt").write_text("harmless\n")
    with swapping(ws, outside):
        read = [racing(ws, "read_file", path="sub/secret.txt") for _ in range(RACE_CALLS)]
    leaked = sum(1 for text in read if text and "top secret" in text)
    assert leaked == 0, f"{leaked} of {RACE_CALLS} reads returned the secret from outside the workspace"
    assert "harmless\n" in read and None in read


def test_edits_through_a_folder_swapped_for_a_link_never_change_a_file_outside(ws: Workspace, outside: Path) -> None:
    for i in range(RACE_CALLS):
        (outside / f"e{i}.txt").write_text("before\n")
        (ws.root / "sub" / f"e{i}.txt").write_text("before\n")
    with swapping(ws, outside):
        done = [
            racing(ws, "edit_file", path=f"sub/e{i}.txt", old_text="before", new_text="after")
            for i in range(RACE_CALLS)
        ]
    changed = [n for n in landed(outside) if not n.startswith("e") or (outside / n).read_text() != "before\n"]
    assert not changed, f"{len(changed)} of {RACE_CALLS} edits changed or added files outside: {changed[:5]}"
    assert any(done) and not all(done)


# --- links and descriptors: what the walk from the root's descriptor keeps and refuses ---


def test_links_inside_the_workspace_are_followed_by_every_tool(ws: Workspace) -> None:
    (ws.root / "docs").mkdir()
    (ws.root / "docs" / "guide.md").write_text("hello guide\n")
    (ws.root / "rel").symlink_to("docs", target_is_directory=True)
    (ws.root / "abs").symlink_to(ws.root / "docs", target_is_directory=True)
    (ws.root / "docs" / "up").symlink_to("../README.md")
    for folder in ("rel", "abs"):
        assert hostile(ws, "read_file", path=f"{folder}/guide.md") == "hello guide\n"
        assert hostile(ws, "list_directory", path=folder).splitlines() == ["docs/guide.md", "docs/up"]
        assert "docs/guide.md:1:hello guide" in hostile(ws, "search_files", pattern="guide", path=folder)
    assert "symlink: yes" in hostile(ws, "get_file_info", path="docs/up")
    assert hostile(ws, "write_file", path="rel/new/n.txt", content="n") == "created docs/new/n.txt (1 bytes)"
    assert "edited docs/guide.md" in hostile(ws, "edit_file", path="abs/guide.md", old_text="hello", new_text="hi")
    assert hostile(ws, "edit_file", path="docs/up", old_text="hello", new_text="hey").startswith("edited README.md")
    assert (ws.root / "docs" / "up").is_symlink() and (ws.root / "README.md").read_text() == "# Demo\nhey world\n"


def test_a_path_that_leaves_the_root_is_refused_even_if_it_comes_back(ws: Workspace) -> None:
    """The walk never opens a folder above the root, so it cannot vouch for the way back."""
    back = f"../{ws.root.name}/README.md"
    (ws.root / "back").symlink_to(back)
    for path in (back, "back"):
        with pytest.raises(ToolError, match="outside the workspace"):
            hostile(ws, "read_file", path=path)
    assert "back (link to outside the workspace)" in hostile(ws, "list_directory")


def test_a_link_loop_is_a_clear_error_not_a_hang(ws: Workspace) -> None:
    (ws.root / "a").symlink_to("b")
    (ws.root / "b").symlink_to("a")
    for name, extra in [*DIRECT_CALLS, ("write_file", {"content": "x"})]:
        with pytest.raises(ToolError, match="more than 40 symbolic links"):
            hostile(ws, name, path="a/x" if name == "write_file" else "a", **extra)
    assert "a (broken link)" in hostile(ws, "list_directory").splitlines()
    assert hostile(ws, "search_files", pattern="hello") == "README.md:2:hello world"


def test_a_missing_folder_followed_by_dotdot_is_resolved_as_text_and_not_made(ws: Workspace) -> None:
    assert hostile(ws, "read_file", path="nope/../README.md").startswith("# Demo")
    assert hostile(ws, "write_file", path="new/../made.txt", content="m") == "created made.txt (1 bytes)"
    assert not (ws.root / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file, and the tools refuse only what open() would")
def test_a_read_only_file_is_not_replaced(ws: Workspace) -> None:
    locked = ws.root / "locked.txt"
    locked.write_text("keep\n")
    locked.chmod(0o444)
    with pytest.raises(ToolError, match="locked.txt is read-only"):
        hostile(ws, "write_file", path="locked.txt", content="gone\n")
    with pytest.raises(ToolError, match="locked.txt is read-only"):
        hostile(ws, "edit_file", path="locked.txt", old_text="keep", new_text="gone")
    assert locked.read_text() == "keep\n" and not [p for p in ws.root.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc/self/fd")
def test_every_descriptor_is_closed_after_success_and_refusal(ws: Workspace, fifo: Path) -> None:
    (ws.root / "d" / "e").mkdir(parents=True)
    (ws.root / "d" / "e" / "f.txt").write_text("hello\n")
    (ws.root / "loop").symlink_to("loop")
    (ws.root / "out").symlink_to(ws.root.parent, target_is_directory=True)
    calls = [
        (name, {"path": path, **extra})
        for name, extra in [*DIRECT_CALLS, ("write_file", {"content": "x"}), ("list_directory", {"recursive": True})]
        for path in ("d/e/f.txt", "d", "d/../d/e/../e", "pipe", "loop", "out/x", "d/missing/x", "../x")
    ]
    gc.collect()  # earlier tests' workspaces close their root descriptors now, not during the count
    gc.disable()  # and nothing collected meanwhile could hide a leak
    try:
        before = len(os.listdir("/proc/self/fd"))
        for name, arguments in calls:
            try:
                hostile(ws, name, **arguments)
            except ToolError:
                pass
        assert len(os.listdir("/proc/self/fd")) == before
    finally:
        gc.enable()


# --- paths the walk must refuse before touching anything (red-team pass 2) ---


@pytest.mark.parametrize("path", ["\ud800", "\ud800.txt", "caf\udce9.txt", "d/\udcff/x"])
@pytest.mark.parametrize("name", ["read_file", "write_file", "list_directory", "get_file_info"])
def test_a_path_that_is_not_valid_text_is_a_tool_error(ws: Workspace, name: str, path: str) -> None:
    # F02: a JSON "\ud800" escape made the path check raise UnicodeEncodeError and end the run;
    # a "\udce9" (surrogateescape) would create a name that is not UTF-8
    extra = {"content": "x"} if name == "write_file" else {}
    with pytest.raises(ToolError, match="is not valid text"):
        hostile(ws, name, path=path, **extra)
    assert sorted(os.listdir(ws.root)) == ["README.md"]


def test_a_tilde_is_a_name_character_never_the_home_folder(ws: Workspace) -> None:
    # F32: `~nosuchuser/x` went through expanduser, whose RuntimeError ended the run
    with pytest.raises(ToolError, match="~nosuchuser/x does not exist"):
        hostile(ws, "read_file", path="~nosuchuser/x")
    assert hostile(ws, "write_file", path="~/notes.txt", content="n") == "created ~/notes.txt (1 bytes)"
    assert (ws.root / "~" / "notes.txt").read_text() == "n"
    (ws.root / "~$report.txt").write_text("word lock\n")  # the names Office leaves beside a file
    assert hostile(ws, "read_file", path="~$report.txt") == "word lock\n"


def test_a_workspace_naming_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a directory"):
        Workspace("~nosuchuser-localagent/ws")


@pytest.mark.parametrize("path", ["README.md/.", "README.md/", "newdir/", "newdir/.", "d/e/"])
@pytest.mark.parametrize("name", ["write_file", "edit_file"])
def test_a_path_ending_in_a_slash_names_a_folder_and_is_refused(ws: Workspace, name: str, path: str) -> None:
    # F33: the walk drops the ending, so `README.md/.` replaced README.md and `newdir/` made a file
    extra = {"content": "gone"} if name == "write_file" else {"old_text": "hello", "new_text": "gone"}
    with pytest.raises(ToolError, match="names a folder"):
        hostile(ws, name, path=path, **extra)
    assert sorted(os.listdir(ws.root)) == ["README.md"]
    assert (ws.root / "README.md").read_text() == "# Demo\nhello world\n"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("a/" * 3000 + "f", "is 6001 bytes long; a path may have at most 4095 bytes"),
        ("a/" + "é" * 128 + "/f", "is 256 bytes long; a file or folder name may have at most 255 bytes"),
        ("a/b/" + "x" * 256, "is 256 bytes long; a file or folder name may have at most 255 bytes"),
    ],
)
def test_a_path_too_long_to_exist_is_refused_before_any_folder_is_made(ws: Workspace, path: str, message: str) -> None:
    # F36: the error was clean, but only after mkdir had left the a/a/a/... chain behind
    with pytest.raises(ToolError, match=message):
        hostile(ws, "write_file", path=path, content="x")
    assert sorted(os.listdir(ws.root)) == ["README.md"]
