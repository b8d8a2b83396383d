"""Model names that point outside the catalog, and the choice of a repository's GGUF file.

The spellings other tools accept for a GGUF on the hub: `hf.co/USER/REPO[:QUANT]` (Ollama's
`ollama run hf.co/...`, llama.cpp's `-hf USER/REPO[:QUANT]`; `huggingface.co/` too) and
`hf://USER/REPO[/FILE]` (RamaLama). Models found in other tools' stores are named
`ollama:MODEL[:TAG]` and `lmstudio:PUBLISHER/REPO[:QUANT]`, and those in llama.cpp's own
cache `llamacpp:FILE`. Pure functions only: no disk, no network.

The quant is read from the file name, as Ollama's `hf.co/` names do (https://huggingface.co/docs/hub/ollama,
"Custom Quantization", read 2026-11-30: `hf.co/{username}/{repository}:{quantization}`,
Q4_K_M by default; hf.co and huggingface.co both accepted).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from localagent.errors import ConfigError, ModelNotFoundError
from localagent.hub import RepoFile

DEFAULT_QUANT = "Q4_K_M"
HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/")
HF_SCHEME = "hf://"
OLLAMA = "ollama:"
LMSTUDIO = "lmstudio:"
LLAMACPP = "llamacpp:"
EXTERNAL_PREFIXES = (OLLAMA, LMSTUDIO, LLAMACPP)

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REPO = re.compile(rf"{_REPO_PART}/{_REPO_PART}")
# the quant inside a file name: `Qwen3-4B-Q4_K_M.gguf`, `model.q8_0.gguf`, `UD-Q4_K_XL`
_QUANT = re.compile(
    r"(?<![A-Za-z0-9])(IQ[1-4]_(?:XXS|XS|S|M|NL)|TQ[12]_0|Q[2-8]_K(?:_(?:XXL|XL|S|M|L))?|Q[4-8]_[01]"
    r"|Q8_K|MXFP4(?:_MOE)?|BF16|F16|FP16|F32)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# llama.cpp's split naming (llama_split_path): PREFIX-00001-of-00003.gguf
_SPLIT = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf", re.IGNORECASE)
# rough bits per weight of llama.cpp's quant types (the figures its quantize tool prints for
# 7-8B models, rounded): only their order matters, to find the quant nearest the one asked for
BITS = {
    "IQ1_S": 1.56, "IQ1_M": 1.75, "TQ1_0": 1.69, "IQ2_XXS": 2.06, "TQ2_0": 2.06, "IQ2_XS": 2.31, "IQ2_S": 2.5,
    "IQ2_M": 2.7, "Q2_K": 2.96, "Q2_K_S": 2.96, "Q2_K_L": 3.1, "IQ3_XXS": 3.06, "IQ3_XS": 3.3, "Q3_K_S": 3.41,
    "IQ3_S": 3.44, "IQ3_M": 3.66, "Q3_K_M": 3.74, "Q3_K_L": 4.03, "Q3_K_XL": 4.1, "IQ4_XS": 4.25, "Q4_0": 4.34,
    "Q4_K_S": 4.37, "IQ4_NL": 4.5, "Q4_K_M": 4.58, "Q4_K_L": 4.7, "Q4_K_XL": 4.75, "MXFP4": 4.25,
    "MXFP4_MOE": 4.25, "Q4_1": 4.78, "Q5_0": 5.21, "Q5_K_S": 5.21, "Q5_K_M": 5.33, "Q5_K_L": 5.45,
    "Q5_K_XL": 5.5, "Q5_1": 5.65, "Q6_K": 6.56, "Q6_K_L": 6.7, "Q6_K_XL": 6.75, "Q8_0": 8.5, "Q8_K_XL": 8.6,
    "BF16": 16.0, "F16": 16.0, "F32": 32.0,
}  # fmt: skip


@dataclass(frozen=True)
class HubName:
    """`hf.co/USER/REPO[:QUANT]` or `hf://USER/REPO[/FILE]`, parsed."""

    repo: str
    quant: str | None  # asked for; None: Q4_K_M, else the nearest
    file: str | None  # a file named outright (hf://USER/REPO/FILE)

    @property
    def alias(self) -> str:
        """The name the model is kept under in the store and shown by `models list`."""
        return f"hf.co/{self.repo}"


@dataclass(frozen=True)
class Candidate:
    """One model in a repository: a single GGUF, or the parts of a split one in order."""

    files: tuple[RepoFile, ...]
    quant: str | None

    @property
    def first(self) -> str:
        return self.files[0].path

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    quant: str  # the quant it is installed under
    note: str | None  # said to the user when it is not the quant asked for


def is_hub_name(name: str) -> bool:
    return name.startswith(HF_SCHEME) or name.lower().startswith(HUB_PREFIXES)


def parse_hub_name(name: str) -> HubName | None:
    """The hub name in `name`; None when it is not one; ConfigError when it is one, badly
    written (the repository must be USER/REPO)."""
    if name.startswith(HF_SCHEME):
        rest = name[len(HF_SCHEME) :]
        user, _, tail = rest.partition("/")
        repo_name, _, file = tail.partition("/")
        repo, quant = f"{user}/{repo_name}", None
        file_or_none = file or None
        if file_or_none is not None:
            _check_file(name, file_or_none)
            quant = quant_of(file_or_none)
    else:
        lowered = name.lower()
        prefix = next((p for p in HUB_PREFIXES if lowered.startswith(p)), None)
        if prefix is None:
            return None
        rest = name[len(prefix) :]
        repo, sep, tag = rest.partition(":")
        quant = tag.upper() if sep and tag and tag.lower() != "latest" else None
        file_or_none = None
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ConfigError(
            f"'{name}' does not name a Hugging Face repository",
            hint="write hf.co/USER/REPO, hf.co/USER/REPO:QUANT or hf://USER/REPO/FILE.gguf",
        )
    return HubName(repo, quant, file_or_none)


def _check_file(name: str, file: str) -> None:
    parts = file.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts) or not file.lower().endswith(".gguf"):
        raise ConfigError(
            f"'{name}' does not name a GGUF file in the repository",
            hint="write hf://USER/REPO/FILE.gguf with the file's path as the repository lists it",
        )


def quant_of(filename: str) -> str | None:
    """The quant in a file name (`Qwen3-4B-Q4_K_M.gguf` -> 'Q4_K_M'); None when it has none."""
    base = filename.rsplit("/", 1)[-1]
    found = _QUANT.findall(base)
    if not found:
        return None
    quant = found[-1].upper()
    return "F16" if quant == "FP16" else quant


def split_part(filename: str) -> tuple[str, int, int] | None:
    """(prefix, part number, part count) of a split GGUF's part; None for a whole file."""
    m = _SPLIT.fullmatch(filename)
    if not m:
        return None
    no, count = int(m["no"]), int(m["count"])
    return (m["prefix"], no, count) if 1 <= no <= count else None


def candidates(files: list[RepoFile]) -> list[Candidate]:
    """The models among a repository's files: each whole .gguf, and each split GGUF whose parts
    are all there, grouped in order. Projectors for images (mmproj) and incomplete splits are
    left out."""
    whole: list[Candidate] = []
    splits: dict[tuple[str, int], dict[int, RepoFile]] = {}
    for f in files:
        base = f.path.rsplit("/", 1)[-1]
        if not base.lower().endswith(".gguf") or "mmproj" in base.lower():
            continue
        part = split_part(f.path)
        if part is None:
            whole.append(Candidate((f,), quant_of(f.path)))
        else:
            splits.setdefault((part[0], part[2]), {})[part[1]] = f
    for (prefix, count), parts in splits.items():
        if sorted(parts) == list(range(1, count + 1)):
            ordered = tuple(parts[i] for i in range(1, count + 1))
            whole.append(Candidate(ordered, quant_of(prefix)))
    return sorted(whole, key=lambda c: c.first)


def choose(repo: str, files: list[RepoFile], quant: str | None, file: str | None = None) -> Choice:
    """The model to pull from `repo`'s file list: the named file; else the asked quant; else
    Q4_K_M; else the quant nearest it (in bits per weight, the larger on a tie), with a note
    saying so. ModelNotFoundError naming what the repository has when nothing fits, and
    when several files carry the asked quant (which one is meant cannot be told)."""
    found = candidates(files)
    if not found:
        raise ModelNotFoundError(
            f"the hub repository {repo} has no GGUF files",
            hint="hf.co/ names need a repository of .gguf files (their names often end in -GGUF); "
            "search the hub for one of this model",
        )
    if file is not None:
        for c in found:
            if file in (f.path for f in c.files):
                return Choice(c, c.quant or _stem(c.first), None)
        raise ModelNotFoundError(
            f"the hub repository {repo} has no GGUF file '{file}'",
            hint=f"its GGUF files: {_listing(found)}",
        )
    wanted = quant or DEFAULT_QUANT
    matching = [c for c in found if c.quant is not None and c.quant == wanted.upper()]
    note = None
    if not matching and quant is not None:
        raise ModelNotFoundError(f"the hub repository {repo} has no {quant} GGUF", hint=f"its quants: {_quants(found)}")
    if not matching:
        if len(found) == 1:
            only = found[0]
            return Choice(only, only.quant or _stem(only.first), f"{repo} has one GGUF: {only.first}")
        near = _nearest(found, wanted)
        matching = [c for c in found if c.quant == near]
        note = f"{repo} has no {wanted}; using {near}, the nearest (its quants: {_quants(found)})"
    if len(matching) > 1:
        some = ", ".join(c.first for c in matching[:4])
        raise ModelNotFoundError(
            f"{len(matching)} GGUF models in {repo} are {matching[0].quant}: {some}",
            hint=f"name one: hf://{repo}/{matching[0].first}",
        )
    chosen = matching[0]
    assert chosen.quant is not None
    return Choice(chosen, chosen.quant, note)


def _nearest(found: list[Candidate], wanted: str) -> str:
    target = BITS.get(wanted.upper(), BITS[DEFAULT_QUANT])
    known = sorted({c.quant for c in found if c.quant in BITS})
    if not known:
        some = ", ".join(c.first for c in found[:4])
        raise ModelNotFoundError(
            f"cannot tell the quants of the GGUF files in this repository: {some}",
            hint=f"name one: hf://REPO/{found[0].first}",
        )
    return min(known, key=lambda q: (abs(BITS[q] - target), -BITS[q]))


def _stem(path: str) -> str:
    return path.rsplit("/", 1)[-1][: -len(".gguf")]


def _quants(found: list[Candidate]) -> str:
    return ", ".join(sorted({c.quant or _stem(c.first) for c in found}))


def _listing(found: list[Candidate]) -> str:
    shown = ", ".join(c.first for c in found[:8])
    return shown + (f" and {len(found) - 8} more" if len(found) > 8 else "")


def ollama_alias(name: str) -> str | None:
    """`ollama:qwen3` -> 'ollama:qwen3:latest', `ollama:qwen3:4b` as is, `ollama:user/m:tag` as
    is; None when `name` is not an Ollama name or names nothing."""
    if not name.startswith(OLLAMA):
        return None
    rest = name[len(OLLAMA) :]
    model, sep, tag = rest.rpartition(":")
    if not sep or "/" in tag:
        model, tag = rest, "latest"
    if not model or not tag:
        return None
    return f"{OLLAMA}{model}:{tag}"


def split_name(name: str) -> tuple[str, str | None]:
    """A model name as (the alias it is kept under, the quant asked for or None), for every
    spelling: `qwen-small:Q8_0` -> ('qwen-small', 'Q8_0') as `ollama run model:tag`;
    `hf.co/u/r:q8_0` -> ('hf.co/u/r', 'Q8_0'); `ollama:qwen3:4b` -> ('ollama:qwen3:4b', None)
    (the tag is part of an Ollama name); a badly written hub name is left whole."""
    if name.startswith(OLLAMA):
        return ollama_alias(name) or name, None
    if is_hub_name(name):
        try:
            hub = parse_hub_name(name)
        except ConfigError:
            return name, None
        if hub is not None:
            return hub.alias, hub.quant
    if name.startswith(LLAMACPP):
        return name, None
    alias, sep, quant = name.rpartition(":")
    if sep and alias and quant and "/" not in quant and "\\" not in quant:
        return alias, quant
    return name, None
