"""The typer app objects. Command modules import these and register themselves."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="localagent",
    help="Run AI agents on your own machine with local GGUF models, and benchmark them against hosted APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Download, verify, list and remove local models.", no_args_is_help=True)
results_app = typer.Typer(help="Export and import stored bench results.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(results_app, name="results")

state = {"debug": False}


def _print_version(value: bool) -> None:
    # eager, so it runs while the arguments are parsed: a plain option's callback runs only
    # after click has already refused the missing command
    if value:
        from localagent import __version__

        typer.echo(f"localagent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
    ),
) -> None:
    state["debug"] = debug
