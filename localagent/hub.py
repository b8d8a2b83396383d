"""One file from a Hugging Face hub: where it is at which commit, its LFS sha256, and a ranged
download into a `.part` file that the next process resumes.

huggingface_hub builds the URLs, headers and HTTP session and reads the metadata; the body is
fetched here because huggingface_hub (>= 1.18) does not resume a download begun by an earlier
process. The endpoint and token are read at call time: huggingface_hub reads HF_ENDPOINT only
once, at import.

The hub is not trusted: HF_ENDPOINT may name any server. Its sha256 names the `.part` file and
its size bounds the download, so both are validated here (pydantic, at the edge) before any
filesystem use, and a body longer than the advertised size is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from localagent import settings
from localagent.catalog import Sha256
from localagent.errors import DownloadError, ModelNotFoundError, OfflineError

CHUNK = 1024 * 1024
# the paths-info answer for one file is about 300 bytes; a hub sending more is not answering
METADATA_LIMIT = 1024 * 1024
UNREACHABLE_HINT = (
    "check the network (and HF_ENDPOINT if you set it); without it, use an installed model "
    "(`localagent models list`), the bundled smollm2-135m, or `localagent models import PATH --name NAME`"
)


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    file: str
    revision: str
    commit: str | None
    url: str
    size: int | None
    sha256: str | None  # the hub's LFS sha256; None when the hub gives none

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.file}"


@dataclass(frozen=True)
class RepoFile:
    """A file of a hub repository as its tree listing gives it."""

    path: str
    size: int
    sha256: str | None  # the LFS sha256; None for a file kept in git itself


def _commit_hex(value: str) -> str:
    # a git commit id, sha1 or sha256: it is put in the download URL and the manifest
    if not (len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)):
        raise ValueError("must be a commit id (40 or 64 lowercase hex characters)")
    return value


class _FileMeta(BaseModel):
    """What the hub's HEAD on the file says (headers X-Repo-Commit and the linked size)."""

    model_config = ConfigDict(frozen=True)

    commit: Annotated[str, AfterValidator(_commit_hex)] | None
    size: Annotated[int, Field(ge=0)] | None


class _Lfs(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    oid: Sha256  # the file's sha256: it names the download's .part file
    size: Annotated[int, Field(ge=0)]


class _PathInfo(BaseModel):
    """One entry of the hub's paths-info answer: the fields every entry of the hub's API has.
    Its `path` never reaches the filesystem: only the entry whose path equals the asked
    file (a catalog value, validated there) is used."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    path: str
    oid: str
    size: Annotated[int, Field(ge=0)]
    lfs: _Lfs | None = None


_PATHS_INFO = TypeAdapter(list[_PathInfo])


def _malformed(what: str, exc: ValidationError) -> DownloadError:
    """A hub answer of the wrong shape -> DownloadError naming the hub, the answer and the field."""
    err = exc.errors()[0]
    if err["type"] == "json_invalid":  # pydantic's parser also stops JSON nested too deeply
        problem = f"not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})"
    else:
        field = ".".join(str(p) for p in err["loc"]) or "the answer"
        problem = f"field '{field}': {err['msg']}"
    return DownloadError(
        f"the hub at {settings.hf_endpoint()} sent a malformed {what}: {problem}",
        hint="check HF_ENDPOINT: it must name a Hugging Face hub (or a faithful mirror)",
    )


def _transport_error() -> type[BaseException]:
    """What the hub's transport raises for refused, dropped and timed-out connections."""
    return _httpx_error("TransportError")


def _request_error() -> type[BaseException]:
    """The transport's base of every request failure: besides TransportError, a redirect
    loop (TooManyRedirects) and a body it cannot decode."""
    return _httpx_error("RequestError")


def _httpx_error(name: str) -> type[BaseException]:
    """huggingface_hub 2.x talks through httpx2, 1.x through httpx: the exception class `name`
    of whichever is installed (ConnectionError when neither is)."""
    for module in ("httpx2", "httpx"):
        try:
            return getattr(importlib.import_module(module), name)
        except ImportError:
            continue
    return ConnectionError


@contextmanager
def _hub_errors(repo: str, file: str, revision: str, url: str) -> Iterator[None]:
    """huggingface_hub's and the transport's exceptions, as one-line LocalAgentErrors; `url`
    is the request's, named when the hub's answers cannot be followed."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = settings.hf_endpoint()
    try:
        yield
    except OfflineModeIsEnabled as exc:
        raise OfflineError(
            f"cannot fetch {repo}/{file}: huggingface_hub is in offline mode", hint=UNREACHABLE_HINT
        ) from exc
    except GatedRepoError as exc:
        raise DownloadError(
            f"{repo} is gated on the hub",
            hint="accept its license on the model page, then set HF_TOKEN to a token of that account",
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"the hub at {endpoint} has no repository '{repo}' (or it is private)",
            hint="check `repo` in the catalog entry; private repositories need HF_TOKEN",
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo} has no revision '{revision}'", hint="check `revision` in the catalog entry"
        ) from exc
    except RemoteEntryNotFoundError as exc:
        raise ModelNotFoundError(
            f"{repo} has no file '{file}' at revision '{revision}'",
            hint="check `file` (or the quant's file) in the catalog entry against the repository's file list",
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise DownloadError(
            f"the hub at {endpoint} answered {status} for {repo}/{file}", hint=UNREACHABLE_HINT
        ) from exc
    except _transport_error() as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(f"cannot reach the hub at {endpoint} ({reason})", hint=UNREACHABLE_HINT) from exc
    except _request_error() as exc:  # TooManyRedirects: a redirect loop
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(
            f"the hub at {endpoint} gave no usable answer for {url} ({type(exc).__name__}: {reason})",
            hint="check HF_ENDPOINT (and any proxy in between): it must name a Hugging Face hub or a faithful mirror",
        ) from exc


def locate(repo: str, file: str, revision: str = "main") -> RemoteFile:
    """The file's commit, size and LFS sha256 on the hub (two small requests, no body), each
    value checked before it is used (DownloadError naming the hub and the field)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    endpoint, token = settings.hf_endpoint(), settings.hf_token()
    url = hf_hub_url(repo, file, revision=revision, endpoint=endpoint)
    with _hub_errors(repo, file, revision, url):
        raw = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    try:
        meta = _FileMeta(commit=raw.commit_hash, size=raw.size)
    except ValidationError as exc:
        raise _malformed(f"answer for {url} (headers X-Repo-Commit / size)", exc) from exc
    # pin the download and the sha256 to the commit the metadata came from
    pinned = meta.commit or revision
    if meta.commit:
        url = hf_hub_url(repo, file, revision=meta.commit, endpoint=endpoint)
    infos = _paths_info(repo, file, pinned)
    sha = next((i.lfs.oid for i in infos if i.path == file and i.type == "file" and i.lfs), None)
    return RemoteFile(repo, file, revision, meta.commit, url, meta.size, sha)


def _paths_info(repo: str, file: str, revision: str) -> list[_PathInfo]:
    """The hub's paths-info entries for `file`: the request HfApi.get_paths_info makes, read
    here so that the answer is bounded in size and depth and validated as a whole."""
    url = f"{settings.hf_endpoint()}/api/models/{repo}/paths-info/{quote(revision, safe='')}"
    body, _ = _bounded(
        "POST", url, (repo, file, revision), f"the paths-info of {repo}/{file}", data={"paths": [file], "expand": False}
    )
    try:
        return _PATHS_INFO.validate_json(body)
    except ValidationError as exc:
        raise _malformed(f"paths-info answer for {repo}/{file}", exc) from exc


def _bounded(
    method: str, url: str, where: tuple[str, str, str], what: str, limit: int = METADATA_LIMIT, **kwargs: object
) -> tuple[bytes, str | None]:
    """The body of one metadata request, refused past `limit` bytes, and the URL of its next
    page (the Link header the hub's listings paginate with), if any. `where`: (repo, file,
    revision) for the error messages."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = build_hf_headers(token=settings.hf_token())
    body = bytearray()
    with (
        _hub_errors(*where, url),
        get_session().stream(method, url, headers=headers, timeout=30, **kwargs) as resp,  # type: ignore[arg-type]
    ):
        if resp.status_code >= 400:
            resp.read()  # the error parser reads the body
            hf_raise_for_status(resp)
        for chunk in resp.iter_bytes(CHUNK):
            body += chunk
            if len(body) > limit:
                raise DownloadError(
                    f"the hub at {settings.hf_endpoint()} sent more than {limit} bytes for {what}",
                    hint="check HF_ENDPOINT: it must name a Hugging Face hub (or a faithful mirror)",
                )
        next_page = resp.links.get("next", {}).get("url")
    return bytes(body), next_page


# a repository's file listing: pages of up to 1,000 entries (about 300 bytes each) on the hub;
# 50 pages is more files than any GGUF repository holds
TREE_LIMIT = 8 * 1024 * 1024
TREE_PAGES = 50


def list_files(repo: str, revision: str = "main") -> list[RepoFile]:
    """Every file of `repo` at `revision` with its size and LFS sha256: the hub's tree listing
    (what HfApi.list_repo_tree asks for), read here page by page, each page bounded in size
    and validated, and at most TREE_PAGES pages, all from the same hub."""
    endpoint = settings.hf_endpoint()
    url: str | None = f"{endpoint}/api/models/{repo}/tree/{quote(revision, safe='')}?recursive=true&expand=false"
    files: list[RepoFile] = []
    for _ in range(TREE_PAGES):
        if url is None:
            return files
        if not url.startswith(endpoint + "/"):
            raise DownloadError(
                f"the hub at {endpoint} sent the next page of {repo}'s file list on another server ({url})",
                hint="check HF_ENDPOINT: it must name a Hugging Face hub (or a faithful mirror)",
            )
        body, url = _bounded("GET", url, (repo, "", revision), f"the file list of {repo}", TREE_LIMIT)
        try:
            entries = _PATHS_INFO.validate_json(body)
        except ValidationError as exc:
            raise _malformed(f"file list of {repo}", exc) from exc
        files += [RepoFile(e.path, e.size, e.lfs.oid if e.lfs else None) for e in entries if e.type == "file"]
    if url is None:
        return files
    raise DownloadError(
        f"the hub at {endpoint} sent more than {TREE_PAGES} pages of files for {repo}",
        hint="name the file outright: hf://USER/REPO/FILE.gguf",
    )


# called with (bytes done, bytes total) as a download advances: the MCP server's progress
Progress = Callable[[int, int | None], None]


@contextmanager
def _progress_bar(
    label: str, total: int | None, done: int, enabled: bool | Progress
) -> Iterator[Callable[[int], None]]:
    """Yields advance(n); a rich bar on stderr when enabled and stderr is a terminal, or a
    call of `enabled(done, total)` when it is a callback."""
    if callable(enabled):
        so_far = [done]

        def report(n: int) -> None:
            so_far[0] = so_far[0] + n if n >= 0 else 0  # n < 0: the server ignored Range
            enabled(so_far[0], total)

        yield report
        return
    if not (enabled and sys.stderr.isatty()):
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, TimeRemainingColumn, TransferSpeedColumn
    from rich.progress import Progress as Bar

    columns = ("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Bar(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total, completed=done)

        def advance(n: int) -> None:
            if n < 0:  # the server ignored Range: start over
                bar.reset(task, total=total)
            else:
                bar.advance(task, n)

        yield advance


def _hash_prefix(part: Path, size: int | None) -> tuple[int, hashlib._Hash]:
    """Bytes already in `part` and their running sha256; a part longer than the file is reset."""
    digest = hashlib.sha256()
    if not part.exists():
        return 0, digest
    done = part.stat().st_size
    if size is not None and done > size:
        part.unlink()
        return 0, digest
    with part.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return done, digest


def download(remote: RemoteFile, part: Path, *, progress: bool | Progress = True) -> str:
    """Fetch `remote` into `part`, continuing after the bytes already there; the sha256 of
    the whole part file. A dropped connection is resumed at once while bytes keep coming;
    when none come, DownloadError, and the part stays for the next call to continue. A body
    longer than the advertised size is a failed download: DownloadError, and no part stays."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    done, digest = _hash_prefix(part, remote.size)
    session = get_session()
    overlong = False
    with (
        _hub_errors(remote.repo, remote.file, remote.revision, remote.url),
        _progress_bar(remote.file, remote.size, done, progress) as advance,
        part.open("ab") as out,
    ):
        while not overlong and (remote.size is None or done < remote.size):
            headers = build_hf_headers(token=settings.hf_token())
            headers["Accept-Encoding"] = "identity"
            if done:
                headers["Range"] = f"bytes={done}-"
            before = done
            try:
                with session.stream("GET", remote.url, headers=headers, follow_redirects=True, timeout=30) as resp:
                    if resp.status_code >= 400:
                        resp.read()  # the error parser reads the body
                        hf_raise_for_status(resp)
                    if done and resp.status_code == 200:  # Range ignored: the body starts at 0
                        out.truncate(0)
                        advance(-done)
                        done, digest = 0, hashlib.sha256()
                    for chunk in resp.iter_bytes(CHUNK):
                        # not one byte past the size the hub advertised: a hub that keeps
                        # sending would otherwise fill the disk (400 MB for a 98 MB file)
                        if remote.size is not None and done + len(chunk) > remote.size:
                            overlong = True
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        advance(len(chunk))
                if remote.size is None:
                    break
            except _transport_error() as exc:
                out.flush()
                if done == before:
                    total = f" of {remote.size}" if remote.size else ""
                    raise DownloadError(
                        f"download of {remote.label} stopped at {done}{total} bytes ({exc or type(exc).__name__})",
                        hint="run the same pull again: it continues from there",
                    ) from exc
            if done == before:  # a clean but empty answer: the server has nothing more to give
                break
    if overlong:
        # the bytes so far cannot be trusted to be the start of the file either
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"the hub at {settings.hf_endpoint()} sent more than the {remote.size} bytes it advertised for "
            f"{remote.label} ({remote.url}); nothing was kept",
            hint="pull again later; if it happens again, check HF_ENDPOINT and any proxy in between",
        )
    if remote.size is not None and done != remote.size:
        raise DownloadError(
            f"download of {remote.label} ended at {done} of {remote.size} bytes",
            hint="run the same pull again: it continues from there",
        )
    return digest.hexdigest()
