"""A repository's file list (hub.list_files) from a hub that pages it, and from hubs that lie:
every answer bounded, validated, and refused in one line."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from fakehub import COMMIT, FakeHub, HubFile

from localagent import hub
from localagent.errors import DownloadError, ModelNotFoundError

REPO = "fakeorg/Paged-GGUF"


class PagedHub(FakeHub):
    """The fake hub, its tree listing answered by `tree` (status, headers, body) instead."""

    tree_answer: tuple[int, dict[str, str], bytes] | None = None

    def _tree(self, h, repo: str, rev: str) -> None:
        if self.tree_answer is None:
            return super()._tree(h, repo, rev)
        status, headers, body = self.tree_answer
        if "cursor=2" in urlsplit(h.path).query:  # the second page of a paged answer
            status, headers, body = 200, {}, json.dumps([self._entry("b-Q8_0.gguf", self.repos[repo]["x"])]).encode()
        h.send_response(status)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **headers}.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)


@pytest.fixture
def paged(tmp_path, monkeypatch):
    f = tmp_path / "x"
    f.write_bytes(b"GGUF")
    served = PagedHub({REPO: {"x": HubFile(f, "a" * 64, 4)}}).start()
    monkeypatch.setenv("HF_ENDPOINT", served.url)
    try:
        yield served
    finally:
        served.stop()


def test_pages_are_followed_on_the_same_hub(paged):
    first = json.dumps([paged._entry("a-Q4_K_M.gguf", paged.repos[REPO]["x"])]).encode()
    next_url = f"{paged.url}/api/models/{REPO}/tree/main?recursive=true&cursor=2"
    paged.tree_answer = (200, {"Link": f'<{next_url}>; rel="next"'}, first)
    files = hub.list_files(REPO)
    assert [(f.path, f.sha256) for f in files] == [("a-Q4_K_M.gguf", "a" * 64), ("b-Q8_0.gguf", "a" * 64)]


@pytest.mark.parametrize(
    "answer, fragments",
    [
        ((200, {}, b"<html>not json"), ("malformed file list", "not valid JSON")),
        ((200, {}, json.dumps([{"type": "file", "path": "a.gguf"}]).encode()), ("malformed file list", "field")),
        (
            (
                200,
                {},
                json.dumps(
                    [{"type": "file", "path": "a.gguf", "oid": "x", "size": 1, "lfs": {"oid": "../../x", "size": 1}}]
                ).encode(),
            ),
            ("malformed file list", "lfs.oid"),
        ),
        ((200, {"Link": '<http://elsewhere.example/next>; rel="next"'}, b"[]"), ("another server",)),
        ((200, {}, b"[" + b" " * (hub.TREE_LIMIT + 10) + b"]"), ("more than", "bytes for the file list")),
    ],
)
def test_a_lying_hub_is_refused_in_one_line(paged, answer, fragments):
    paged.tree_answer = answer
    with pytest.raises(DownloadError) as err:
        hub.list_files(REPO)
    assert "\n" not in err.value.message and err.value.hint and "HF_ENDPOINT" in err.value.hint
    for fragment in fragments:
        assert fragment in err.value.message


def test_unknown_repo_and_revision(paged):
    with pytest.raises(ModelNotFoundError, match="no repository 'fakeorg/none'"):
        hub.list_files("fakeorg/none")
    with pytest.raises(ModelNotFoundError, match="no revision"):
        hub.list_files(REPO, "v9")
    assert hub.list_files(REPO, COMMIT)[0].path == "x"
