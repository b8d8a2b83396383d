"""`models import`: a GGUF the user already has, copied into imported/<name>/, checked, and
registered under a name of their own in place of any earlier import of that name."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import suppress
from pathlib import Path

from localagent import ggufinfo, settings
from localagent.catalog import PSEUDO_MODELS, load_catalog
from localagent.errors import ConfigError, IntegrityError
from localagent.store.disk import CHUNK, prune_empty, sha256_file, writing
from localagent.store.installed import drop
from localagent.store.manifests import manifest_path, manifests_of, register
from localagent.store.resolve import ResolvedModel, resolved

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def import_file(path: str | Path, name: str) -> ResolvedModel:
    """Copy a GGUF the user already has into the store under `name`, and check that the copy
    is a whole GGUF. On any failure nothing is registered and no partial file is left."""
    _check_name(name)
    src = Path(path).expanduser()
    if not src.is_file():
        raise ConfigError(f"no such file: {src}", hint="give the path of a .gguf file")
    models = settings.models_dir()
    # the copy's name is recorded in JSON, which holds only UTF-8: a Latin-1 name gets U+FFFD
    file = os.fsencode(src.name).decode("utf-8", "replace")
    target = models / "imported" / name / file
    tmp = _copy_in(src, target)
    try:
        # the copy is what gets registered, so the copy is what is checked: the source may
        # have been swapped since it was named
        try:
            info = ggufinfo.read(tmp)
        except IntegrityError as exc:
            raise IntegrityError(exc.message.replace(str(tmp), str(src)) + "; nothing was kept", exc.hint) from exc
        with writing(target):
            sha = sha256_file(tmp)
            os.replace(tmp, target)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
            prune_empty(target.parent, models.resolve())
        raise
    previous, broken = manifests_of(name)
    manifest = register(target, sha, info, alias=name, quant=info.quant or "unknown", source="import", file=file)
    # the earlier registrations of `name` go once the new one is written: a failure keeps them
    earlier: list[tuple[Path, Path | None]] = [(manifest_path(m.alias, m.quant), Path(m.path)) for m in previous]
    earlier += [(b.manifest, b.path) for b in broken]
    new = manifest_path(name, manifest.quant)  # rewritten in place: only its old file goes
    drop([(None if m == new else m, file) for m, file in earlier])
    return resolved(manifest, None)


def _check_name(name: str) -> None:
    """ConfigError unless `name` can be used as a model name for an import."""
    # a name ending in .gguf would be read as a path wherever a model is named (resolve, MCP)
    if not NAME_RE.fullmatch(name) or name.lower().endswith(".gguf"):
        raise ConfigError(
            f"'{name}' is not a usable model name",
            hint="use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit, not ending in .gguf)",
        )
    catalog = load_catalog()
    if name in PSEUDO_MODELS or name in catalog.hosted:
        # these names never reach the store: `--model noop` is the built-in model whatever is
        # installed under that name, so an import of it could never be used
        kind = "a built-in pseudo model" if name in PSEUDO_MODELS else "a hosted model"
        raise ConfigError(f"'{name}' is {kind}", hint="choose another name for the import")
    if name in catalog.local or name in catalog.pointers:
        raise ConfigError(
            f"'{name}' is a catalog model", hint=f"choose another name, or `localagent models pull {name}`"
        )


def _copy_in(src: Path, target: Path) -> Path:
    """A copy of `src` beside `target` (a hidden .tmp file), read through one open file: a
    failure to read names the source, one to write names the target, and a source that
    changes size while it is read is refused. Nothing is left behind on failure."""
    try:
        fin = src.open("rb")
    except OSError as exc:
        raise _unreadable(src, exc) from exc
    folder = target.parent
    with fin:
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            copied = 0
            with writing(target), os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        block = fin.read(CHUNK)
                    except OSError as exc:
                        raise _unreadable(src, exc) from exc
                    if not block:
                        break
                    out.write(block)
                    copied += len(block)
            if os.fstat(fin.fileno()).st_size != copied:
                raise IntegrityError(
                    f"{src} changed while it was copied; nothing was kept",
                    hint="import it again once nothing is writing it",
                )
        except BaseException:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
                prune_empty(folder, settings.models_dir().resolve())
            raise
    return tmp


def _unreadable(src: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot read {src}: {exc.strerror or exc}",
        hint="check that the file is there and readable, then import it again; nothing was kept",
    )
