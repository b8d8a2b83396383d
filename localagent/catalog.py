"""The catalog: models.toml (shipped) extended by $LOCALAGENT_HOME/models.toml (the user's).

Local models are GGUF files on Hugging Face; hosted models are OpenAI-compatible endpoints
with a price table. `cost_usd` is the one place that turns token counts into dollars.
"""

from __future__ import annotations

import difflib
import re
import sys
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, ValidationError

from localagent import settings
from localagent.errors import ConfigError, ModelNotFoundError
from localagent.records import Usage
from localagent.strict import Strict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PSEUDO_MODELS = ("oracle", "noop")


def _sha256_hex(value: str) -> str:
    # a sha256 names files in the store (the .partial/<sha256>.part of a pull): only the one
    # spelling of a digest, never a path
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError("must be 64 lowercase hex characters")
    return value


def _repo_path(value: str) -> str:
    # a hub path becomes a path in the store (hub/<repo>/<file>): folders the hub can hold, no
    # '..', '.', empty, absolute or backslashed part that would lead out of it, no NUL
    parts = value.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise ValueError("must be a relative path inside the repository (no '..', '.', empty parts, '\\' or NUL)")
    return value


def _repo_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", value) or ".." in value:
        raise ValueError("must be a Hugging Face repository id, OWNER/NAME")
    return value


Sha256 = Annotated[str, AfterValidator(_sha256_hex)]
RepoPath = Annotated[str, AfterValidator(_repo_path)]
RepoId = Annotated[str, AfterValidator(_repo_id)]


class Bundled(Strict):
    """A model file shipped inside a Python distribution (a package extra)."""

    distribution: str
    path: str  # the file inside site-packages, or the package folder when `chunks` is set
    extra: str
    chunks: tuple[str, ...] = ()  # files (inside site-packages) to concatenate, in order


class LocalModel(Strict):
    alias: str
    description: str = ""
    repo: RepoId
    file: RepoPath
    quant: str
    quants: dict[str, RepoPath] = Field(default_factory=dict)  # other quant -> file
    revision: str = "main"
    sha256: Sha256 | None = None
    size_mb: float | None = None
    params: str = ""
    context: int = Field(gt=0)
    license: str = ""
    tool_calling: Literal["native", "json"] = "json"
    architecture: str = ""  # the GGUF's general.architecture, llama.cpp's name for the family
    # "none": the model does not think; "on" / "off": it thinks by default or not, and the
    # template's `enable_thinking` switches it; "always": it cannot be switched off
    thinking: Literal["none", "on", "off", "always"] = "none"
    bundled: Bundled | None = None

    @property
    def think_default(self) -> bool | None:
        """What the engine passes as `enable_thinking` unless the user says (None: nothing)."""
        return {"none": None, "on": True, "off": False, "always": True}[self.thinking]

    @property
    def kind(self) -> str:
        return "local"

    def file_for(self, quant: str | None) -> str:
        """The file name for a quant (default: the entry's own quant)."""
        if quant is None or quant.upper() == self.quant.upper():
            return self.file
        for name, file in self.quants.items():
            if name.upper() == quant.upper():
                return file
        known = ", ".join([self.quant, *self.quants])
        raise ModelNotFoundError(f"{self.alias} has no quant '{quant}'", hint=f"known quants: {known}")


class Price(Strict):
    """USD per 1M tokens."""

    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)
    source: str
    as_of: str


class HostedModel(Strict):
    alias: str
    provider: str
    model: str
    base_url: str
    api_key_env: str | None = None  # None: the endpoint needs no key (local servers)
    context: int | None = None
    price: Price | None = None

    @property
    def kind(self) -> str:
        return "hosted"


CatalogEntry = Union[LocalModel, HostedModel]


def cost_usd(usage: Usage, price: Price | None) -> float:
    """Dollars for `usage` at `price`. Cached input is billed at the cached rate and the rest
    of the input at the full rate; reasoning tokens are already inside output tokens."""
    if price is None:
        return 0.0
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    fresh = usage.input_tokens - cached
    return (fresh * price.input + cached * price.cached_input + usage.output_tokens * price.output) / 1e6


class Catalog:
    def __init__(
        self,
        local: dict[str, LocalModel],
        hosted: dict[str, HostedModel],
        default: str,
        sources: list[Path],
        pointers: dict[str, str] | None = None,
    ):
        self.local = local
        self.hosted = hosted
        self.default = default
        self.sources = sources
        # [aliases]: a short name that follows the current generation (qwen-small -> qwen3.5-4b)
        self.pointers = pointers or {}

    @cached_property
    def aliases(self) -> list[str]:
        return [*self.local, *self.hosted, *self.pointers]

    def canonical(self, alias: str) -> str:
        """The entry an [aliases] name points at; any other name unchanged."""
        return self.pointers.get(alias, alias)

    def get(self, alias: str) -> CatalogEntry:
        alias = self.canonical(alias)
        if alias in self.local:
            return self.local[alias]
        if alias in self.hosted:
            return self.hosted[alias]
        raise ModelNotFoundError(f"unknown model '{alias}'", hint=suggest(alias, [*self.aliases, *PSEUDO_MODELS]))

    def local_model(self, alias: str) -> LocalModel:
        entry = self.get(alias)
        if not isinstance(entry, LocalModel):
            raise ModelNotFoundError(
                f"'{alias}' is a hosted model, not a local GGUF",
                hint=f"local models: {', '.join(self.local)}",
            )
        return entry


def suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if not close:
        close = [k for k in known if name.lower() in k.lower()][:3]
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "? (`localagent models list` shows all)"
    return "`localagent models list` shows the models you can use"


def shipped_catalog_path() -> Path:
    """models.toml inside an installed wheel, else at the root of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "data" / "models.toml", here.parent / "models.toml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("the shipped catalog models.toml is missing", hint="reinstall localagent")


def _line_of(text: str, section: str, alias: str) -> int | None:
    # [ \t]* not \s*: \s would swallow the blank lines above and report the wrong line
    pattern = re.compile(rf'^[ \t]*\[\s*{section}\s*\.\s*"?{re.escape(alias)}"?\s*[\].]', re.M)
    m = pattern.search(text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def _parse(path: Path) -> tuple[dict[str, LocalModel], dict[str, HostedModel], str | None, dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", hint="fix the file or move it away") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x})",
            hint="save it as UTF-8, or move it away",
        ) from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: nested too deeply to read", hint="fix the file or move it away") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}", hint="make it readable, or move it away") from exc
    unknown = set(data) - {"local", "hosted", "default", "aliases"}
    if unknown:
        raise ConfigError(
            f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}",
            hint="entries go under [local.ALIAS] or [hosted.ALIAS]",
        )
    out: dict[str, dict] = {"local": {}, "hosted": {}}
    for section, cls in (("local", LocalModel), ("hosted", HostedModel)):
        entries = data.get(section, {})
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: '{section}' must be a table of entries", hint=f"write [{section}.ALIAS] tables")
        for alias, fields in entries.items():
            where = f"{path}"
            entry_line = _line_of(text, section, alias)
            if entry_line:
                where += f":{entry_line}"
            if not isinstance(fields, dict):
                raise ConfigError(f"{where}: [{section}.{alias}] must be a table")
            if "alias" in fields:
                raise ConfigError(
                    f"{where}: entry [{section}.{alias}], field 'alias': not allowed",
                    hint="the table's name is the alias",
                )
            try:
                out[section][alias] = cls(alias=alias, **fields)
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"])
                raise ConfigError(
                    f"{where}: entry [{section}.{alias}], field '{field}': {err['msg']}",
                    hint=f"fix the entry in {path}",
                ) from exc
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise ConfigError(f"{path}: 'default' must be a model alias (a string)")
    pointers = data.get("aliases", {})
    if not isinstance(pointers, dict) or not all(isinstance(v, str) for v in pointers.values()):
        raise ConfigError(
            f"{path}: [aliases] must map names to model aliases", hint='write e.g. qwen-small = "qwen3.5-4b"'
        )
    return out["local"], out["hosted"], default, pointers


def load_catalog(user_file: Path | None = None) -> Catalog:
    """The shipped catalog, then the user's file (entries with the same alias replace)."""
    sources = [shipped_catalog_path()]
    user = user_file or settings.user_catalog()
    if user.is_file():
        sources.append(user)
    local: dict[str, LocalModel] = {}
    hosted: dict[str, HostedModel] = {}
    pointers: dict[str, str] = {}
    pointer_from: dict[str, Path] = {}
    default, default_from = "smollm2-135m", sources[0]
    for source in sources:
        more_local, more_hosted, more_default, more_pointers = _parse(source)
        for alias in [*more_local, *more_hosted]:
            hosted.pop(alias, None)
            local.pop(alias, None)
            pointers.pop(alias, None)  # a user's own entry of that name wins over a shipped alias
        for name in more_pointers:
            local.pop(name, None)
            hosted.pop(name, None)
        local.update(more_local)
        hosted.update(more_hosted)
        pointers.update(more_pointers)
        pointer_from.update(dict.fromkeys(more_pointers, source))
        if more_default:
            default, default_from = more_default, source
    for name, target in pointers.items():
        if target not in local and target not in hosted:
            raise ConfigError(
                f"{pointer_from[name]}: [aliases] {name} points at '{target}', which no entry defines",
                hint=suggest(target, [*local, *hosted]),
            )
    if default not in local and default not in hosted:
        raise ConfigError(
            f"{default_from}: 'default' names '{default}', which no catalog entry defines",
            hint=suggest(default, [*local, *hosted]),
        )
    return Catalog(local, hosted, default, sources, pointers)
