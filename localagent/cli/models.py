"""`localagent models list|pull|info|import|rm|verify|scan` and `localagent doctor`: parse, call
the store, render (a rich table, or --json)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from localagent.cli.app import app, models_app
from localagent.units import format_bytes

if TYPE_CHECKING:
    from localagent.store.overview import HostedStatus

JSON_HELP = "Print JSON instead of a table."


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _plain(obj: Any) -> Any:
    # is_dataclass is also true of a dataclass's class, which asdict refuses
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) and not isinstance(obj, type) else obj


def _table(title: str | None, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: don't fold rows to 80 columns
        console = Console(width=200)
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for col in columns[:-1]:
        table.add_column(col, no_wrap=True)
    table.add_column(columns[-1], overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _fits(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


@models_app.command("list")
def list_models(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Catalog and installed models: size, installed or not, and whether each fits in free RAM;
    hosted models: provider, API model id, prices and whether the API key is set."""
    from localagent import hardware, store
    from localagent.catalog import load_catalog

    available = hardware.available_ram()
    rows = store.overview(available)
    hosted = store.hosted_overview()
    pointers = load_catalog().pointers
    if json_out:
        _print_json(
            {
                "available_ram": available,
                "models": [_plain(r) for r in rows],
                "hosted": [_plain(h) for h in hosted],
                "aliases": pointers,
            }
        )
        return
    _table(
        None,
        ["MODEL", "QUANT", "PARAMS", "SIZE", "STATUS", "CONTEXT", "RAM NEEDED", "FITS"],
        [
            [
                r.alias,
                r.quant,
                r.params,
                format_bytes(r.size_bytes),
                r.status,
                f"{r.n_ctx}/{r.context}" if r.context else str(r.n_ctx),
                ("~" if r.kv_estimated else "") + format_bytes(r.required_bytes),
                _fits(r.fits),
            ]
            for r in rows
        ],
    )
    typer.echo(
        f"\nRAM available now: {format_bytes(available)}. RAM NEEDED = file + KV cache at the default context "
        f"(CONTEXT = default/trained) + headroom; ~ = KV cache estimated (exact once installed)."
    )
    for r in rows:
        if r.status == "broken":
            typer.echo(f"broken: {r.alias} ({r.quant}): {r.problem}; remove it with `localagent models rm {r.alias}`")
    if pointers:
        typer.echo("Aliases: " + ", ".join(f"{name} = {target}" for name, target in pointers.items()))
    if hosted:
        typer.echo("")
        _hosted_table(hosted)


def _usd(value: float | None) -> str:
    return "?" if value is None else f"${value:g}"


def _hosted_table(hosted: list[HostedStatus]) -> None:
    rows = []
    for h in hosted:
        key = {None: "not needed", True: f"{h.api_key_env} set", False: f"{h.api_key_env} NOT set"}[h.key_set]
        price = (
            f"{_usd(h.input_usd_per_mtok)} / {_usd(h.cached_input_usd_per_mtok)} / {_usd(h.output_usd_per_mtok)}"
            if h.price_as_of
            else "-"
        )
        rows.append([h.alias, h.provider, h.model, price, h.price_as_of or "-", key])
    _table(
        "Hosted models (prices in USD per 1M tokens: input / cached input / output)",
        ["MODEL", "PROVIDER", "API MODEL", "PRICE", "PRICE AS OF", "API KEY"],
        rows,
    )


@models_app.command("pull")
def pull(
    alias: str = typer.Argument(
        ...,
        help="A model alias from `localagent models list` (ALIAS or ALIAS:QUANT), or any GGUF on the hub: "
        "hf.co/USER/REPO[:QUANT] or hf://USER/REPO/FILE.gguf.",
    ),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Another quant of the model, e.g. Q8_0."),
) -> None:
    """Download a model into the store and verify its sha256 (an interrupted pull continues)."""
    from localagent import store

    resolved = store.pull(alias, quant=quant, progress=True)
    if resolved.note:
        typer.echo(f"note: {resolved.note}")
    typer.echo(f"{resolved.alias} ({resolved.quant}) ready: {resolved.path}")
    typer.echo(f"sha256 {resolved.sha256}  {format_bytes(resolved.size_bytes)}")


def _info_data(alias: str) -> dict[str, Any]:
    from localagent import store
    from localagent.catalog import load_catalog
    from localagent.errors import ModelNotFoundError, OfflineError

    try:
        resolved = store.resolve(alias, offline=True)
    except OfflineError:
        name = store.split_quant(alias)[0]
        if name not in load_catalog().aliases:  # a hub name: nothing to show before a pull
            raise ModelNotFoundError(
                f"'{alias}' is not installed", hint=f"`localagent models pull {alias}` downloads it"
            ) from None
        entry = load_catalog().local_model(name)
        return {"alias": entry.alias, "installed": False, "catalog": entry.model_dump()}
    info = resolved.gguf
    need = store.footprint(resolved)  # the figures `models list` shows for it
    # info reports what the header says: an estimate (the header lacks the cache's shape)
    # is left to `models list`, which marks it with ~
    exact = not need.kv_estimated
    data: dict[str, Any] = {
        "alias": resolved.alias,
        "installed": True,
        "quant": resolved.quant,
        "source": resolved.source,
        "path": str(resolved.path),
        "sha256": resolved.sha256,
        "size_bytes": resolved.size_bytes,
        "parts": [str(resolved.path), *map(str, resolved.parts)] if resolved.parts else None,
        "context": resolved.context,
        "default_n_ctx": need.n_ctx,
        "kv_bytes_at_default_n_ctx": need.kv_bytes if exact else None,
        "ram_needed": need.required_bytes if exact else None,
        "gguf": _plain(info) if info else None,
    }
    if resolved.entry:
        data["catalog"] = resolved.entry.model_dump()
    return data


@models_app.command("info")
def info(
    alias: str = typer.Argument(..., help="An alias, ALIAS:QUANT, or a path to a .gguf file."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Path, sha256, size, and what the GGUF header says (read without loading the model)."""
    data = _info_data(alias)
    if json_out:
        _print_json(data)
        return
    if not data["installed"]:
        c = data["catalog"]
        rows = [
            ["repo", f"{c['repo']} ({c['revision']})"],
            ["file", f"{c['file']} ({c['quant']})"],
            ["other quants", ", ".join(c["quants"]) or "-"],
            ["params", c["params"] or "?"],
            ["context", str(c["context"])],
            ["license", c["license"] or "?"],
            ["tool calling", c["tool_calling"]],
        ]
        _table(f"{data['alias']}: not installed (`localagent models pull {data['alias']}`)", ["", ""], rows)
        return
    g = data["gguf"] or {}
    rows = [
        ["path", data["path"] + (f" (+{len(data['parts']) - 1} parts beside it)" if data.get("parts") else "")],
        ["source", data["source"]],
        ["sha256", data["sha256"]],
        ["size", f"{format_bytes(data['size_bytes'])} ({data['size_bytes']} bytes)"],
        ["architecture", str(g.get("architecture", "?"))],
        ["name", str(g.get("name") or "-")],
        ["parameters", f"{g['parameters']:,}" if g.get("parameters") else "?"],
        ["quant", str(g.get("quant") or data["quant"])],
        ["context length", f"{g.get('context_length') or '?'} (opened at {data['default_n_ctx']} by default)"],
        ["layers", str(g.get("block_count") or "?")],
        ["KV cache", format_bytes(data["kv_bytes_at_default_n_ctx"]) + f" at {data['default_n_ctx']} tokens (f16)"],
        ["RAM needed", format_bytes(data["ram_needed"])],
        ["chat template", "yes" if g.get("has_chat_template") else "no"],
        ["template knows tools", "yes" if g.get("template_knows_tools") else "no"],
    ]
    _table(data["alias"], ["", ""], rows)


@models_app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A .gguf file you already have."),
    name: str = typer.Option(..., "--name", "-n", help="The alias to register it under."),
) -> None:
    """Register a GGUF you already have (it is checked and copied into the store)."""
    from localagent import store

    resolved = store.import_file(path, name)
    typer.echo(f"imported {resolved.alias} ({resolved.quant}): {resolved.path}")
    typer.echo(f"sha256 {resolved.sha256}  {format_bytes(resolved.size_bytes)}")


@models_app.command("rm")
def rm(
    alias: str = typer.Argument(..., help="An installed model (ALIAS or ALIAS:QUANT)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Remove only this quant."),
) -> None:
    """Remove an installed model from the store."""
    from localagent import store

    for m in store.remove(alias, quant=quant):
        if isinstance(m, store.BrokenManifest):
            kept = "" if m.path else " (it names no model file: any file it had stays in the store)"
            typer.echo(f"removed the broken manifest of {m.alias} ({m.quant}): {m.manifest}{kept}")
        elif m.path.exists():  # a bundled file in site-packages, or a file another alias uses
            typer.echo(f"unregistered {m.alias} ({m.quant}); its file stays: {m.path}")
        else:
            typer.echo(f"removed {m.alias} ({m.quant}), {format_bytes(m.size_bytes)}")


@models_app.command("verify")
def verify(
    alias: Optional[str] = typer.Argument(None, help="One installed model (ALIAS or ALIAS:QUANT); default: all."),
    json_out: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Hash installed model files again and compare them with the sha256 recorded at install
    (exit status 1 if any is changed, missing or broken)."""
    from localagent import store

    rows = store.verify(alias)
    bad = [r for r in rows if r.status != "ok"]
    if json_out:
        _print_json({"ok": not bad, "models": [_plain(r) for r in rows]})
    elif not rows:
        typer.echo("nothing is installed")
    else:
        table = [[r.alias, r.quant, r.status, str(r.path or "-")] for r in rows]
        _table(None, ["MODEL", "QUANT", "STATUS", "FILE"], table)
        for r in bad:
            way_out = f"`localagent models rm {r.alias}`, then pull or import it again"
            typer.echo(f"{r.status}: {r.alias} ({r.quant}): {r.problem}; {way_out}")
    if bad:
        raise typer.Exit(1)


@models_app.command("scan")
def scan(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Find GGUFs that Ollama, LM Studio, the Hugging Face cache and llama.cpp already hold and
    register them where they are (nothing is copied; each file is hashed once). `models rm`
    unregisters one and never deletes another tool's files."""
    from localagent import store
    from localagent.store.scan import places

    rows = store.scan_all()
    if json_out:
        _print_json({"places": [str(p) for _, p in places()], "models": [_plain(r) for r in rows]})
        return
    if not rows:
        where = ", ".join(str(p) for _, p in places())
        typer.echo(f"no GGUF models found in {where}")
        return
    table = [[r.alias, r.quant or "?", r.source, r.status, str(r.path)] for r in rows]
    _table(None, ["MODEL", "QUANT", "FOUND IN", "STATUS", "FILE"], table)
    for r in rows:
        if r.problem and r.status != "known":
            typer.echo(f"{r.status}: {r.alias}: {r.problem}" + (f" (hint: {r.hint})" if r.hint else ""))
    registered = sum(r.status in ("registered", "known") for r in rows)
    typer.echo(
        f"\n{registered} usable by name (e.g. `localagent run --model NAME`); `localagent models list` shows them"
    )


@app.command()
def doctor(json_out: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """This machine: CPU, RAM, llama.cpp build, GPU offload, model store, which models fit."""
    from localagent import hardware, settings, store

    host = hardware.host(settings.models_dir())
    rows = store.overview(host.ram_available)
    if json_out:
        others = [_plain(f) for f in store.discover()]
        _print_json({"host": _plain(host), "models": [_plain(r) for r in rows], "other_tools": others})
        return
    offload = {True: "yes", False: "no", None: "unknown"}[host.gpu_offload]
    _table(
        "localagent doctor",
        ["", ""],
        [
            ["os", host.os],
            ["python", host.python],
            ["cpu", host.cpu],
            ["cores", f"{host.physical_cores} physical, {host.logical_cores} logical"],
            ["ram", f"{format_bytes(host.ram_available)} available of {format_bytes(host.ram_total)}"],
            ["llama-cpp-python", host.llama_cpp_version or "not loadable"],
            ["backend", f"{host.backend} (GPU offload: {offload})"],
            ["llama.cpp system info", host.system_info],
            ["model store", host.store],
            ["free disk", format_bytes(host.disk_free)],
        ],
    )
    fit = [r.alias + (f":{r.quant}" if r.status == "installed" else "") for r in rows if r.fits]
    too_big = [r.alias for r in rows if r.fits is False]
    typer.echo(f"\nfit in available RAM at the default context: {', '.join(fit) or 'none'}")
    if too_big:
        typer.echo(f"too big for available RAM now: {', '.join(too_big)}")
    typer.echo(_other_tools_line())


def _other_tools_line() -> str:
    """doctor's line on the models other tools keep: how many, where, how many not yet
    registered (found without hashing anything)."""
    from collections import Counter

    from localagent import store
    from localagent.store.scan import SOURCE_NAMES

    found = [f for f in store.discover() if not f.problem]
    if not found:
        return "models of other tools (Ollama, LM Studio, HF cache, llama.cpp): none found"
    known = {str(m.path) for m in store.installed()}
    new = sum(str(f.path) not in known for f in found)
    where = ", ".join(f"{n} in {SOURCE_NAMES[s]}" for s, n in Counter(f.source for f in found).items())
    todo = f"; {new} not registered: `localagent models scan`" if new else "; all registered"
    return f"models of other tools: {where}{todo}"
