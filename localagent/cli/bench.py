"""`localagent bench` and `localagent results export|import`: parse, call the runner or the
results store, render."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from localagent.cli.app import app, results_app
from localagent.errors import ConfigError

if TYPE_CHECKING:  # the runner loads only when a bench starts
    from localagent.bench.runner import BenchEvent, BenchOutcome, TrialDone

# flags that choose what a run does: a resumed run keeps its own
RUN_SETTINGS = (
    "model",
    "baseline",
    "tasks",
    "task",
    "tier",
    "trials",
    "tool_mode",
    "think",
    "temperature",
    "path_constraints",
    "max_steps",
    "max_tokens",
    "ctx_tokens",
    "out",
    "quick",
    "watts",
    "energy_price",
)


class BenchProgress:
    """One line per finished trial on stderr, only when stderr is a terminal; notices (a
    baseline not run, a run resumed) always, since they change what the table means."""

    def __init__(self, enabled: bool):
        self.console = Console(stderr=True, highlight=False)
        self.enabled = enabled
        self.run_id: str | None = None
        self.run_dir: Path | None = None
        self.done = 0
        self.per_node: dict[str, int] = {}  # trials finished on each cluster node

    def __call__(self, event: BenchEvent) -> None:
        from localagent.bench import runner

        if isinstance(event, runner.RunStarted):
            self.run_id, self.run_dir = event.info.run_id, event.run_dir
            self._note(
                f"run {event.info.run_id}: {len(event.info.task_ids)} task(s) x {event.info.trials} trial(s), results in {event.run_dir}"
            )
        elif isinstance(event, runner.Notice):
            self.console.print(f"[yellow]{escape(event.text)}[/yellow]")
        elif isinstance(event, runner.ModelLoading):
            self._note(f"loading {event.model} ...")
        elif isinstance(event, runner.ModelLoaded):
            self._note(f"loaded {event.model} in {event.load_s:.1f} s")
        elif isinstance(event, runner.TrialDone):
            self.done += 1
            self._trial(event)

    def _note(self, text: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]{escape(text)}[/dim]")

    def _trial(self, event: TrialDone) -> None:
        if not self.enabled:
            return
        r = event.result
        verdict = "[green]pass[/green]" if r.success else f"[red]fail[/red] ({escape(r.failure_mode or '')})"
        where = ""
        if r.node:  # a cluster run: where it ran, and each node's count so far
            self.per_node[r.node] = self.per_node.get(r.node, 0) + 1
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.per_node.items()))
            where = f" [dim]on {escape(r.node)} ({escape(counts)})[/dim]"
        self.console.print(
            f"[dim][{event.done}/{event.total}][/dim] {escape(r.model)} {escape(r.task_id)} #{r.trial} {verdict} [dim]{r.wall_s:.1f} s[/dim]{where}"
        )


def _reject_settings_on_resume(ctx: typer.Context) -> None:
    # by name: typer bundles its own click, whose ParameterSource is not click's
    given = [name for name in RUN_SETTINGS if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"]
    if given:
        flag = "--" + ("ctx" if given[0] == "ctx_tokens" else given[0].replace("_", "-"))
        raise ConfigError(
            f"--resume continues a run with the settings it started with; {flag} cannot change them",
            hint=f"drop {flag}",
        )


@app.command()
def bench(
    ctx: typer.Context,
    model: Optional[list[str]] = typer.Option(
        None,
        "--model",
        "-m",
        help="Local model alias, or oracle / noop; repeat for several. Default: the catalog's default model.",
    ),
    baseline: Optional[list[str]] = typer.Option(
        None, "--baseline", "-b", help="Hosted model to compare with; repeatable."
    ),
    tasks: Optional[Path] = typer.Option(None, "--tasks", help="Folder of task files. Default: the shipped suite."),
    task: Optional[list[str]] = typer.Option(None, "--task", help="Only this task id; repeatable."),
    tier: Optional[int] = typer.Option(None, "--tier", min=1, max=4, help="Only tasks of this tier."),
    trials: int = typer.Option(1, "--trials", "-k", min=1, help="Trials per task (pass^k needs K > 1)."),
    tool_mode: str = typer.Option(
        "auto",
        "--tool-mode",
        help="How local models call tools: auto, json or native; several (json,native) run each with every local model.",
    ),
    think: Optional[bool] = typer.Option(
        None,
        "--think/--no-think",
        help="Let local models think before they answer (templates that take enable_thinking). Default: each model's own.",
    ),
    temperature: float = typer.Option(
        0.0, "--temperature", min=0.0, max=2.0, help="At 0 a local model repeats itself: raise it with --trials."
    ),
    path_constraints: bool = typer.Option(
        True,
        "--path-constraints/--no-path-constraints",
        help="In json mode, let path arguments name only the workspace's paths (write_file: any path inside).",
    ),
    max_steps: int = typer.Option(20, "--max-steps", min=1, help="Model calls per trial, for tasks that set none."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Tokens per model call."),
    ctx_tokens: Optional[int] = typer.Option(
        None, "--ctx", min=256, help="Context window of local models. Default: the engine's."
    ),
    jobs: int = typer.Option(4, "--jobs", "-j", min=1, help="Concurrent trials of a hosted baseline."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder. Default: $LOCALAGENT_HOME/runs/RUN_ID."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue an interrupted run (id or folder); finished trials are kept."
    ),
    quick: bool = typer.Option(False, "--quick", help="Only the tasks tagged 'quick'."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    allow_unconfined_checks: bool = typer.Option(
        False,
        "--allow-unconfined-checks",
        help="Run task files' command checks even where they cannot be confined (no user namespaces): only for suites you have reviewed.",
    ),
    watts: Optional[float] = typer.Option(
        None,
        "--watts",
        help="Power draw assumed for local trials where RAPL cannot be read. Default: $LOCALAGENT_WATTS.",
    ),
    energy_price: Optional[float] = typer.Option(
        None,
        "--energy-price",
        help="$ per kWh for the energy estimate, shown apart from API dollars. Default: $LOCALAGENT_ENERGY_PRICE.",
    ),
    cluster: Optional[str] = typer.Option(
        None,
        "--cluster",
        help="Run the trials on the Ray cluster at this address (needs the 'cluster' extra). Default: $LOCALAGENT_CLUSTER, else this machine.",
    ),
    hosts: Optional[str] = typer.Option(
        None, "--hosts", help="Cluster nodes (by their localagent-host label) that run local models, comma-separated."
    ),
    pin: Optional[list[str]] = typer.Option(
        None, "--pin", help="MODEL=HOST[,HOST]: run this local model only on these cluster nodes; repeatable."
    ),
) -> None:
    """Run tasks on local models (and hosted baselines), grade them, and compare."""
    from localagent import settings
    from localagent.bench.cluster import parse_pins
    from localagent.bench.matrix import parse_tool_modes, variant_matrix
    from localagent.bench.runner import BenchConfig, run_bench
    from localagent.catalog import load_catalog

    if resume:
        _reject_settings_on_resume(ctx)
    modes = parse_tool_modes(tool_mode)
    config = BenchConfig(
        models=tuple(model or ()),
        baselines=tuple(baseline or ()),
        tasks_dir=tasks,
        task_ids=tuple(task or ()),
        tier=tier,
        quick=quick,
        trials=trials,
        tool_mode=modes[0],
        think=think,
        temperature=temperature,
        path_constraints=path_constraints,
        jobs=jobs,
        out=out,
        resume=resume,
        max_steps=max_steps,
        max_tokens=max_tokens,
        n_ctx=ctx_tokens,
        download_progress=sys.stderr.isatty(),
        allow_unconfined_checks=allow_unconfined_checks,
        watts=watts,
        energy_price_per_kwh=energy_price,
        cluster=cluster or settings.cluster_address(),
        hosts=tuple(h.strip() for h in (hosts or "").split(",") if h.strip()),
        pins=parse_pins(pin or ()),
        argv=tuple(sys.argv[1:]),
    )
    configs = variant_matrix(config, modes, load_catalog())  # a matrix at odds with itself fails here
    progress = BenchProgress(enabled=sys.stderr.isatty())
    outcomes = []
    try:
        for one in configs:
            outcomes.append(run_bench(one, on_event=progress))
    except KeyboardInterrupt:
        if progress.run_id:
            progress.console.print(
                f"interrupted: finished trials are saved in {progress.run_dir}\n"
                f"continue with: localagent bench --resume {progress.run_id}"
            )
        # sys.exit, not typer.Exit(130): main() would print a second, vaguer "interrupted"
        sys.exit(130)
    if json_output and len(outcomes) > 1:  # a --tool-mode matrix: one document per run
        print(json.dumps({"runs": [_json_doc(o) for o in outcomes]}, indent=2))
        return
    for outcome in outcomes:
        _show(outcome, json_output)


def _json_doc(outcome: BenchOutcome) -> dict[str, Any]:
    from localagent.bench.render import to_json
    from localagent.bench.summary import summarize

    summary = summarize(outcome.info, outcome.trials, outcome.baseline_trials)
    return {
        "run": outcome.info.model_dump(mode="json"),
        "run_dir": str(outcome.run_dir),
        "notices": outcome.notices,
        "summary": json.loads(to_json(summary)),
        "trials": [t.model_dump(mode="json") for t in outcome.trials],
        "baseline_trials": [t.model_dump(mode="json") for t in outcome.baseline_trials],
    }


def _show(outcome: BenchOutcome, json_output: bool) -> None:
    from localagent.bench.render import render_terminal
    from localagent.bench.summary import summarize

    if json_output:
        print(json.dumps(_json_doc(outcome), indent=2))
        return
    summary = summarize(outcome.info, outcome.trials, outcome.baseline_trials)
    console = Console(highlight=False)
    render_terminal(summary, console)
    console.print(
        f"[dim]run {outcome.info.run_id} in {escape(str(outcome.run_dir))}; `localagent report {outcome.info.run_id} --html FILE` for the page[/dim]",
        soft_wrap=True,
    )


# --- results export / import ---


@results_app.command("export")
def export(
    file: Path = typer.Argument(..., help="Destination: .json, .jsonl, or .tar.gz (with traces)."),
    run: Optional[str] = typer.Option(None, "--run", help="Only this run."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this model's trials."),
    json_output: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Write stored results to a file another machine can import."""
    from localagent.bench.database import ResultsDB
    from localagent.bench.exchange import export_results

    with ResultsDB() as db:
        summary = export_results(db, file, run_id=run, model=model)
    for notice in summary.notices:
        print(f"warning: {notice}", file=sys.stderr)
    if json_output:
        print(json.dumps({"file": str(file), "runs": summary.runs, "trials": summary.trials, "traces": summary.traces}))
    else:
        print(f"exported {summary.runs} run(s), {summary.trials} trial(s), {summary.traces} trace(s) to {file}")


@results_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A file made by `localagent results export`."),
    json_output: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
) -> None:
    """Add exported results to this machine's store; importing twice changes nothing."""
    from localagent.bench.database import ResultsDB
    from localagent.bench.exchange import import_results

    with ResultsDB() as db:
        summary = import_results(db, file)
    if json_output:
        print(
            json.dumps(
                {
                    "file": str(file),
                    "runs_added": summary.runs_added,
                    "trials_added": summary.trials_added,
                    "trials_skipped": summary.trials_skipped,
                    "traces": summary.traces,
                }
            )
        )
    else:
        print(
            f"imported {summary.runs_added} run(s), {summary.trials_added} trial(s)"
            f" ({summary.trials_skipped} already stored), {summary.traces} trace(s) from {file}"
        )
