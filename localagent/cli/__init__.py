"""The CLI: parse, call, render. The one place that turns LocalAgentError into
`error: ...` / `hint: ...` and exit status 1."""

from __future__ import annotations

import sys

# each command module registers its commands on `app` when imported
from localagent.cli import bench, map, mcp, models, report, run  # noqa: F401
from localagent.cli.app import app, state
from localagent.errors import LocalAgentError


def main() -> None:
    try:
        # without standalone mode typer returns the exit code of typer.Exit, and turns Ctrl-C
        # into Exit(130): pass both on instead of exiting 0
        code = app(standalone_mode=False)
        if code == 130:
            print("interrupted", file=sys.stderr)
        if isinstance(code, int) and code:
            sys.exit(code)
    except LocalAgentError as exc:
        if state["debug"]:
            raise
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        try:  # typer >= 0.23 bundles its own copy of click, whose errors are not click's
            from typer._click.exceptions import ClickException as TyperClickException
        except ImportError:  # an older typer raises click's own, handled above
            pass
        else:
            if isinstance(exc, TyperClickException):
                exc.show()
                sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            print("aborted", file=sys.stderr)
            sys.exit(130)
        raise
