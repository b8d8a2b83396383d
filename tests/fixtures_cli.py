"""The CLI run in-process, as a user runs it: argv set, `main()` called, its exit code and
what it printed returned."""

from __future__ import annotations

import sys


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """`localagent ARGS...`: (exit code, stdout, stderr)."""
    from localagent.cli import main

    monkeypatch.setattr(sys, "argv", ["localagent", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
