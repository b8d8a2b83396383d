"""A fake Hugging Face hub: a real HTTP server on 127.0.0.1 that answers what huggingface_hub
asks (DESIGN.md): HEAD/GET /{repo}/resolve/{revision}/{file} with X-Repo-Commit, ETag and
Content-Length (206 for Range), GET /api/models/{repo}[/revision/{rev}], GET
/api/models/{repo}/tree/{rev} and POST /api/models/{repo}/paths-info/{rev}, with lfs.oid.
Unknown repos, revisions and files answer 404 with X-Error-Code as the hub does.

Switches for the failure tests: `corrupt` (serve one flipped byte, the advertised sha256 stays
right), `drop_at` + `drops` (close the connection after sending up to that byte offset, for
the next `drops` GETs), `block_delay` (a slow link), `ranges` (the Range header of every GET received), `requests` (every
request line), and `stop()`.

Hostile switches (a hub that lies): `lfs_oid` (the LFS sha256 paths-info reports, any
string), `paths_info_body` (raw bytes instead of the paths-info JSON), `overlong` (GET bodies
carry that many bytes past the file, without Content-Length; `sent` counts the body bytes
the client took) and `redirect_loop` (the methods whose /resolve/ answers 302 to itself).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
BLOCK = 1024 * 1024


@dataclass
class HubFile:
    path: Path  # where the bytes come from
    sha256: str
    size: int


@dataclass
class FakeHub:
    repos: dict[str, dict[str, HubFile]]
    corrupt: bool = False
    drop_at: int | None = None
    drops: int = 0
    block_delay: float = 0.0  # seconds to wait after each 1 MiB block: a slow link
    ranges: list[str | None] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lfs_oid: str | None = None
    paths_info_body: bytes | None = None
    overlong: int = 0
    sent: int = 0
    redirect_loop: tuple[str, ...] = ()
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

            def do_POST(self) -> None:
                hub._handle(self, head=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def gets(self) -> int:
        return sum(r.startswith("GET ") and "/resolve/" in r for r in self.requests)

    # ------------------------------------------------------------ routing

    def _handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self.requests.append(f"{h.command} {h.path}")
        parts = urlsplit(h.path)
        path = unquote(parts.path)
        if h.command == "POST":
            length = int(h.headers.get("Content-Length") or 0)
            body = h.rfile.read(length).decode()
        m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
        if m and h.command in ("GET", "HEAD"):
            return self._resolve(h, m["repo"], m["rev"], m["file"], head)
        m = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", path)
        if m and h.command == "GET":
            return self._model_info(h, m["repo"], m["rev"] or "main")
        m = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/.*)?", path)
        if m and h.command == "GET":
            return self._tree(h, m["repo"], m["rev"])
        m = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", path)
        if m and h.command == "POST":
            wanted = parse_qs(body).get("paths", [])
            return self._paths_info(h, m["repo"], m["rev"], wanted)
        self._error(h, 404, "RepoNotFound", "no such route")

    def _error(self, h, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(body)

    def _json(self, h, data) -> None:
        body = json.dumps(data).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _repo(self, h, repo: str, rev: str) -> dict[str, HubFile] | None:
        if repo not in self.repos:
            self._error(h, 404, "RepoNotFound", f"Repository {repo} not found")
            return None
        if rev not in ("main", COMMIT):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return self.repos[repo]

    def _entry(self, name: str, f: HubFile) -> dict:
        sha = f.sha256 if self.lfs_oid is None else self.lfs_oid
        return {
            "type": "file",
            "path": name,
            "oid": f.sha256[:40],
            "size": f.size,
            "lfs": {"oid": sha, "size": f.size, "pointerSize": 134},
        }

    # ------------------------------------------------------------ endpoints

    def _model_info(self, h, repo: str, rev: str) -> None:
        files = self._repo(h, repo, rev)
        if files is None:
            return
        siblings = [
            {"rfilename": n, "size": f.size, "lfs": {"sha256": f.sha256, "size": f.size, "pointerSize": 134}}
            for n, f in files.items()
        ]
        self._json(h, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "siblings": siblings})

    def _tree(self, h, repo: str, rev: str) -> None:
        files = self._repo(h, repo, rev)
        if files is not None:
            self._json(h, [self._entry(n, f) for n, f in files.items()])

    def _paths_info(self, h, repo: str, rev: str, wanted: list[str]) -> None:
        files = self._repo(h, repo, rev)
        if files is not None and self.paths_info_body is not None:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(self.paths_info_body)))
            h.end_headers()
            h.wfile.write(self.paths_info_body)
        elif files is not None:
            self._json(h, [self._entry(n, files[n]) for n in wanted if n in files])

    def _resolve(self, h, repo: str, rev: str, name: str, head: bool) -> None:
        files = self._repo(h, repo, rev)
        if files is None:
            return
        f = files.get(name)
        if f is None:
            return self._error(h, 404, "EntryNotFound", f"{name} does not exist on {rev}")
        if h.command in self.redirect_loop:
            h.send_response(302)
            h.send_header("Location", h.path)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if self.overlong and not head:
            return self._send_overlong(h, f)
        start = 0
        rng = h.headers.get("Range")
        if not head:
            self.ranges.append(rng)
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            start = int(m.group(1)) if m else 0
        if start >= f.size and start:
            return self._error(h, 416, "RangeNotSatisfiable", "range not satisfiable")
        h.send_response(206 if start else 200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{f.sha256}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(f.size - start))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        h.end_headers()
        if head:
            return
        stop = f.size
        dropping = self.drop_at is not None and self.drops > 0
        if dropping:
            self.drops -= 1
            stop = max(start, min(self.drop_at, f.size))
        self._send(h, f, start, stop)
        if dropping:
            h.close_connection = True
            h.wfile.flush()
            h.connection.shutdown(2)  # the client sees the body end short: a dropped connection

    def _send_overlong(self, h, f: HubFile) -> None:
        """The whole file, then `overlong` zero bytes; no Content-Length, so the body ends
        only when the connection closes."""
        h.send_response(200)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{f.sha256}"')
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        self._send(h, f, 0, f.size)
        zeros = bytes(BLOCK)
        for _ in range(-(-self.overlong // BLOCK)):
            try:
                h.wfile.write(zeros)
            except (BrokenPipeError, ConnectionResetError):
                return
            self.sent += BLOCK

    def _send(self, h, f: HubFile, start: int, stop: int) -> None:
        flip = f.size // 2 if self.corrupt else -1
        with f.path.open("rb") as fh:
            fh.seek(start)
            pos = start
            while pos < stop:
                block = fh.read(min(BLOCK, stop - pos))
                if not block:
                    break
                if pos <= flip < pos + len(block):
                    b = bytearray(block)
                    b[flip - pos] ^= 0xFF
                    block = bytes(b)
                try:
                    h.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                pos += len(block)
                self.sent += len(block)
                if self.block_delay:
                    time.sleep(self.block_delay)


# ---------------------------------------------------------------- fixtures (import them)

REPO = "fakeorg/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_Q8 = "SmolLM2-135M-Instruct.Q8_0.gguf"

# aliases in the user's models.toml that point at the fake hub
USER_CATALOG = f"""
[local.fake-smol]
description = "the bundled SmolLM2 served by the fake hub"
repo = "{REPO}"
file = "{FILE}"
quant = "Q4_1"
quants = {{ Q8_0 = "SmolLM2-135M-Instruct.Q8_0.gguf", Q5_K_M = "SmolLM2-135M-Instruct.Q5_K_M.gguf" }}
params = "135M"
size_mb = 98
context = 8192

[local.fake-pinned]
description = "a catalog sha256 the hub's file does not have"
repo = "{REPO}"
file = "{FILE}"
quant = "Q4_1"
sha256 = "{"0" * 64}"
context = 8192

[local.fake-norepo]
repo = "fakeorg/no-such-repo"
file = "{FILE}"
quant = "Q4_1"
context = 8192
"""


def sha256_of(path: Path) -> str:
    """A file's sha256, as the hub gives an LFS file's (its `lfs.oid`)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="session")
def bundled_sha256(bundled_gguf: Path) -> str:
    """Hashed once per session: the file is 98 MB."""
    return sha256_of(bundled_gguf)


@pytest.fixture
def fake_hub(bundled_gguf: Path, bundled_sha256: str, localagent_home: Path, monkeypatch) -> Iterator[FakeHub]:
    """The fake hub serving the bundled GGUF as REPO/FILE, HF_ENDPOINT pointing at it, and the
    fake-* aliases in the user's models.toml."""
    served = HubFile(bundled_gguf, bundled_sha256, bundled_gguf.stat().st_size)
    # the Q8_0 "quant" is the same bytes under another name; Q5_K_M is missing (404)
    hub = FakeHub({REPO: {FILE: served, FILE_Q8: served}}).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    (localagent_home / "models.toml").write_text(USER_CATALOG)
    try:
        yield hub
    finally:
        hub.stop()
