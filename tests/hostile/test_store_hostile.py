"""The model store against hostile files and a hostile disk: a source swapped or deleted while
it is imported, corrupt manifests, an unreadable user catalog, a full disk, a read-only home,
model files changed after install. Real GGUF files, the real CLI (in a subprocess where the
process boundary matters: audit hooks, resource limits, mounts), the fake hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fakehub import FILE, REPO, bundled_sha256, fake_hub  # noqa: F401 (fixtures)
from test_cli_models import Done, assert_user_error, cli  # noqa: F401 (fixture)
from test_store import store_files, write_tiny_gguf

from localagent import settings, store
from localagent.catalog import PSEUDO_MODELS, load_catalog
from localagent.errors import ConfigError, DownloadError, StoreError

# runs the CLI after installing an audit hook that acts on the source file at the moment it is
# opened for the copy (any open of it outside the GGUF header reader): the race, made exact
SOURCE_RACE = textwrap.dedent(
    """
    import os, sys
    source, action = os.path.realpath(sys.argv[1]), sys.argv[2]
    done = []

    def hook(event, args):
        if done or event != "open" or not isinstance(args[0], (str, os.PathLike)):
            return
        if os.path.realpath(args[0]) != source:
            return
        frame = sys._getframe(1)
        while frame:
            if frame.f_code.co_filename.endswith("ggufinfo.py"):
                return
            frame = frame.f_back
        done.append(action)
        if action == "swap":
            with open(source + ".new", "w") as fh:
                fh.write("hello world\\n")  # 12 bytes of text
            os.replace(source + ".new", source)
        else:
            os.unlink(source)

    sys.addaudithook(hook)
    sys.argv = ["localagent", *sys.argv[3:]]
    from localagent.cli import main
    main()
    """
)

# a file size limit for the child: writes past it fail with EFBIG ("File too large"), as on a
# full disk, without root or a small filesystem
FSIZE_LIMIT = 8 * 1024 * 1024


def run_cli(
    *args: str,
    home: Path,
    endpoint: str | None = None,
    fsize: int | None = None,
    read_only: Path | None = None,
    script: str | None = None,
    timeout: float = 120,
) -> Done:
    """`localagent ARGS` in a child process; `script` runs instead of `-m localagent` (its
    argv after the script's own arguments are the CLI's); `read_only`: that folder is
    read-only for the child."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "LOCALAGENT_OFFLINE", "HF_ENDPOINT")}
    env["LOCALAGENT_HOME"] = str(home)
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    command = [sys.executable, *(["-c", script] if script else ["-m", "localagent"]), *args]
    if read_only is not None:
        command = _read_only_prefix(read_only) + command

    def limit() -> None:
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limit if fsize else None
    )
    return Done(done.returncode, done.stdout, done.stderr)


def _read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which `folder` is read-only: a read-only bind mount in a private
    mount namespace for root (whom file modes do not stop), else the folder's modes."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: no way to make a folder read-only")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("root without mount namespaces: no way to make a folder read-only")
    mount = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
    return ["unshare", "-m", "sh", "-c", mount, str(folder)]


@pytest.fixture(autouse=True)
def _writable_again(localagent_home):
    yield
    for path in [localagent_home, *localagent_home.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)  # so pytest can clean the folder up after a chmod-read-only test


def import_racing(src: Path, action: str, home: Path) -> Done:
    """`models import SRC --name mine` with the source swapped or deleted as it is copied."""
    return run_cli(str(src), action, "models", "import", str(src), "--name", "mine", home=home, script=SOURCE_RACE)


def gguf_files() -> list[str]:
    return [f for f in store_files() if f.endswith(".gguf") or f.endswith(".tmp") or f.endswith(".part")]


# ---------------------------------------------------------------- 1, 2: import races


def test_a_source_swapped_for_text_after_the_check_is_refused(tmp_path, localagent_home):
    # before: the source was checked, then copied: the 12-byte text file swapped in between
    # was registered as an F32 model
    src = write_tiny_gguf(tmp_path / "t.gguf")
    done = import_racing(src, "swap", localagent_home)
    assert_user_error(done, str(src), "not a GGUF")
    assert gguf_files() == [] and store_files() == []
    assert "mine" not in {m.alias for m in store.installed()}


@pytest.mark.parametrize("how", ["deleted", "unreadable"])
def test_a_source_gone_or_unreadable_is_named_not_the_store(tmp_path, localagent_home, how):
    # before: the copy's OSError was read as the store's: "cannot write to the model store
    # .../models: No such file or directory"
    src = write_tiny_gguf(tmp_path / "t.gguf")
    if how == "deleted":
        done = import_racing(src, "delete", localagent_home)
        words = "No such file"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode")
        src.chmod(0)
        done = run_cli("models", "import", str(src), "--name", "mine", home=localagent_home)
        words = "Permission denied"
    assert_user_error(done, f"cannot read {src}", words)
    assert "model store" not in done.stderr
    assert gguf_files() == []


# ---------------------------------------------------------------- 3: corrupt manifests

CORRUPTIONS = {  # None: the manifest's own JSON without its sha256 (it still names its file)
    "garbage": (b"{garbage", "not valid JSON"),
    "wrong fields": (None, "field 'sha256'"),
    "not an object": (b"[]", "not a JSON object"),
    "non-UTF-8": (b'{"alias": "\xff\xfe"}', "not UTF-8"),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_one_corrupt_manifest_breaks_only_its_model(tmp_path, cli, kind):
    # before: every `models list`, `models rm` and run (its RAM check reads all manifests)
    # failed with "unreadable model manifest", and the hint said to delete the file by hand
    src = write_tiny_gguf(tmp_path / "t.gguf")
    store.import_file(src, "good")
    bad = store.import_file(src, "bad")
    manifest = settings.models_dir() / "manifests" / "bad" / "F32.json"
    data, words = CORRUPTIONS[kind]
    fields = json.loads(manifest.read_text())
    del fields["sha256"]
    manifest.write_bytes(data if data is not None else json.dumps(fields).encode())

    listed = cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["alias"]: r for r in json.loads(listed.stdout)["models"]}
    assert rows["good"]["status"] == "installed"
    assert rows["bad"]["status"] == "broken"
    assert str(manifest) in rows["bad"]["problem"] and words in rows["bad"]["problem"]
    table = cli("models", "list")
    assert table.returncode == 0 and "broken" in table.stdout and "localagent models rm bad" in table.stdout

    store.check_fits("good")  # what a run does first, then resolve
    assert store.resolve("good", offline=True).sha256 == store.sha256_file(src)
    assert cli("models", "info", "good", "--json").returncode == 0
    assert_user_error(cli("models", "info", "bad"), str(manifest), words, "localagent models rm bad")

    removed = cli("models", "rm", "bad")
    assert removed.returncode == 0, removed.stderr
    assert "removed the broken manifest of bad" in removed.stdout and not manifest.exists()
    assert bad.path.exists() == (data is not None)  # its file goes when the manifest still names it
    assert [m.alias for m in store.installed()] == ["good"]
    assert "bad" not in {r.alias for r in store.overview()}


def test_importing_again_replaces_a_corrupt_registration(tmp_path):
    first = store.import_file(write_tiny_gguf(tmp_path / "a.gguf"), "mine")
    second = store.import_file(write_tiny_gguf(tmp_path / "b.gguf", tools=False), "mine")
    assert not first.path.exists() and gguf_files() == ["imported/mine/b.gguf"]
    (settings.models_dir() / "manifests" / "mine" / "F32.json").write_bytes(b"{garbage")
    with pytest.raises(StoreError) as err:
        store.resolve("mine")
    assert "broken" in err.value.message and "models rm mine" in err.value.hint
    again = store.import_file(tmp_path / "a.gguf", "mine")
    assert store.resolve("mine").sha256 == again.sha256 != second.sha256
    assert [r.status for r in store.overview() if r.alias == "mine"] == ["installed"]


def test_a_corrupt_path_record_is_verified_afresh(tmp_path):
    # a .paths record only saves re-hashing: a corrupt one is replaced, never fatal
    path = write_tiny_gguf(tmp_path / "direct.gguf")
    store.resolve(str(path))
    (record,) = (settings.models_dir() / ".paths").glob("*.json")
    record.write_bytes(b"\xff{")
    assert store.resolve(str(path)).sha256 == store.sha256_file(path)
    assert json.loads(record.read_text())["path"] == str(path)


# ---------------------------------------------------------------- 4: the user's models.toml


@pytest.mark.parametrize(
    "content, words",
    [
        (b'[local.x]\ndescription = "caf\xe9"\n', "not UTF-8"),
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
        (b"a = " + b"{b = " * 5000 + b"1" + b"}" * 5000 + b"\n", "nested too deeply"),
    ],
    ids=["latin-1", "deep-arrays", "deep-tables"],
)
def test_an_unreadable_user_catalog_is_named(localagent_home, content, words):
    # before: UnicodeDecodeError and RecursionError tracebacks from every command
    user = localagent_home / "models.toml"
    user.write_bytes(content)
    done = run_cli("models", "list", home=localagent_home)
    assert_user_error(done, str(user), words)


# ---------------------------------------------------------------- 5: a full disk


def test_a_full_disk_while_importing_keeps_what_was_there(tmp_path, localagent_home, bundled_gguf):
    # before: "cannot write to the model store .../models: File too large" (the store, not the
    # file) with the hint to make it writable
    store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "keep")
    kept = {p: p.read_bytes() for p in (settings.models_dir() / "manifests").rglob("*.json")}
    before = store_files()

    done = run_cli("models", "import", str(bundled_gguf), "--name", "big", home=localagent_home, fsize=FSIZE_LIMIT)
    assert_user_error(done, "File too large", str(settings.models_dir() / "imported" / "big"), "free space")
    assert done.stderr.count("error:") == 1
    assert store_files() == before
    assert {p: p.read_bytes() for p in kept} == kept
    assert store.resolve("keep").alias == "keep"


@pytest.mark.parametrize("how", ["full", "read-only"])
def test_a_full_or_read_only_disk_while_pulling(fake_hub, tmp_path, localagent_home, how):
    # before (full): the same store-level message, and the 8 MB part file stayed on the full disk
    store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "keep")
    kept = {p: p.read_bytes() for p in (settings.models_dir() / "manifests").rglob("*.json")}
    if how == "full":
        done = run_cli("models", "pull", "fake-smol", home=localagent_home, endpoint=fake_hub.url, fsize=FSIZE_LIMIT)
        assert_user_error(done, "File too large", str(settings.models_dir() / ".partial"), "free space")
    else:
        ro = settings.models_dir()
        done = run_cli("models", "pull", "fake-smol", home=localagent_home, endpoint=fake_hub.url, read_only=ro)
        assert_user_error(done, str(ro), "LOCALAGENT_HOME")
        assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    assert done.stderr.count("error:") == 1
    assert gguf_files() == ["imported/keep/t.gguf"]
    assert {p: p.read_bytes() for p in kept} == kept
    assert [m.alias for m in store.installed()] == ["keep"]


# ---------------------------------------------------------------- 6: models verify


def test_verify_reports_changed_and_missing_files(tmp_path, cli, bundled_gguf):
    # before: `localagent models verify`, named by two hints, did not exist
    real = store.import_file(bundled_gguf, "smol")
    tiny = store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "tiny")
    fine = cli("models", "verify", "--json")
    assert fine.returncode == 0, fine.stderr
    assert {m["alias"]: m["status"] for m in json.loads(fine.stdout)["models"]} == {"smol": "ok", "tiny": "ok"}

    # one byte in the middle of the real model, with its size and mtime kept: resolve's fast
    # path trusts it, verify re-hashes it
    st = real.path.stat()
    with real.path.open("r+b") as fh:
        fh.seek(st.st_size // 2)
        byte = fh.read(1)
        fh.seek(st.st_size // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(real.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    tiny.path.rename(tmp_path / "moved.gguf")

    done = cli("models", "verify", "--json")
    assert done.returncode == 1
    rows = {m["alias"]: m for m in json.loads(done.stdout)["models"]}
    assert rows["smol"]["status"] == "changed" and rows["smol"]["expected"] == real.sha256
    assert rows["smol"]["actual"] != real.sha256 and rows["tiny"]["status"] == "missing"

    table = cli("models", "verify")
    assert table.returncode == 1 and "changed" in table.stdout and "missing" in table.stdout
    assert "localagent models rm smol" in table.stdout + table.stderr

    one = cli("models", "verify", "smol")
    assert one.returncode == 1 and "smol" in one.stdout and "tiny" not in one.stdout
    assert_user_error(cli("models", "verify", "nope"), "'nope' is not installed")


def test_verify_of_nothing_installed_is_ok(cli):
    done = cli("models", "verify", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["models"] == []


# ---------------------------------------------------------------- 7: a read-only home


def test_a_read_only_home_serves_the_bundled_model_by_alias_and_by_path(localagent_home, bundled_gguf, bundled_sha256):
    # before: by path it worked (the hash record is optional), by alias it failed with
    # "cannot write to the model store ...: Read-only file system"
    (localagent_home / "models").mkdir()
    for name in ("smollm2-135m", str(bundled_gguf)):
        done = run_cli("models", "info", name, "--json", home=localagent_home, read_only=localagent_home)
        assert done.returncode == 0, done.stderr
        info = json.loads(done.stdout)
        assert info["sha256"] == bundled_sha256 and info["path"] == str(bundled_gguf)
    assert store_files() == []  # nothing was written


def test_a_store_that_cannot_be_written_still_resolves_the_bundled_model(localagent_home, bundled_gguf):
    # the same without a mount: a file where the store's folder should be
    (localagent_home / "models").write_text("not a folder")
    assert store.resolve("smollm2-135m", offline=True).path == bundled_gguf
    with pytest.raises(StoreError) as err:
        store.import_file(bundled_gguf, "smol")
    assert str(localagent_home / "models") in err.value.message


# ---------------------------------------------------------------- 8: a hostile hub (HF_ENDPOINT)


@pytest.mark.parametrize("kind", ["traversal", "upper-case", "nul"])
def test_a_hub_sha256_that_is_not_a_digest_touches_no_file(fake_hub, tmp_path, kind):
    # before (F31): the part file was models/.partial/<the hub's sha256>.part, so "../../PWNED"
    # appended the 98 MB body to a file outside the store, deleted it on the sha mismatch
    # (a file planted there was lost) and left PWNED.part.lock beside it
    planted = tmp_path / "PWNED.part"
    planted.write_bytes(b"precious")
    traversal = os.path.relpath(tmp_path / "PWNED", settings.models_dir() / ".partial")
    fake_hub.lfs_oid = {"traversal": traversal, "upper-case": "AB" * 32, "nul": "a" * 63 + "\0"}[kind]
    with pytest.raises(DownloadError) as err:
        store.pull("fake-smol", progress=False)
    assert fake_hub.url in err.value.message and "lfs.oid" in err.value.message
    assert "64 lowercase hex" in err.value.message and "HF_ENDPOINT" in err.value.hint
    assert planted.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["PWNED.part"]
    assert fake_hub.gets == 0 and gguf_files() == []


def test_a_hub_body_longer_than_advertised_is_cut_off_and_not_kept(fake_hub):
    # before (F28): 400 MB written for a 98 MB file, the part kept, "run again: it continues"
    fake_hub.overlong = 256 * 1024 * 1024
    size = fake_hub.repos[REPO][FILE].size
    with pytest.raises(DownloadError) as err:
        store.pull("fake-smol", progress=False)
    assert f"more than the {size} bytes it advertised" in err.value.message and fake_hub.url in err.value.message
    assert "continues" not in err.value.hint
    assert store_files() == []  # the part is gone
    # the client stopped reading at the advertised size: the server could not send the rest
    assert fake_hub.sent < size + fake_hub.overlong // 2


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_a_hub_redirect_loop_is_an_error_naming_the_url(fake_hub, localagent_home, method):
    # before (F29): an httpx2.TooManyRedirects traceback (not a TransportError, so not mapped)
    fake_hub.redirect_loop = (method,)
    done = run_cli("models", "pull", "fake-smol", home=localagent_home, endpoint=fake_hub.url)
    assert_user_error(done, fake_hub.url, "TooManyRedirects", "/resolve/", "HF_ENDPOINT")
    assert gguf_files() == []


ENTRY = {"type": "file", "path": FILE, "oid": "0" * 40, "size": 1, "lfs": {"oid": "0" * 64, "size": 1}}


@pytest.mark.parametrize(
    "body, words",
    [
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON (recursion limit exceeded"),
        (json.dumps([{k: v for k, v in ENTRY.items() if k != "oid"}]).encode(), "field '0.oid': Field required"),
        (json.dumps([{k: v for k, v in ENTRY.items() if k != "size"}]).encode(), "field '0.size': Field required"),
        (json.dumps([{**ENTRY, "lfs": {"oid": "0" * 64}}]).encode(), "field '0.lfs.size': Field required"),
        (json.dumps([{**ENTRY, "size": -5}]).encode(), "field '0.size'"),
        (b'{"error": "no"}', "Input should be a valid array"),
        (b"[" + b",".join([json.dumps(ENTRY).encode()] * 20_000) + b"]", "more than 1048576 bytes"),
    ],
    ids=["deep", "no-oid", "no-size", "no-lfs-size", "negative-size", "not-a-list", "huge"],
)
def test_malformed_hub_metadata_names_the_hub_and_what_is_wrong(fake_hub, body, words):
    # before (F30): RecursionError and KeyError: 'oid' tracebacks out of hub.locate
    fake_hub.paths_info_body = body
    with pytest.raises(DownloadError) as err:
        store.pull("fake-smol", progress=False)
    assert fake_hub.url in err.value.message and "paths-info" in err.value.message
    assert words in err.value.message
    assert fake_hub.gets == 0 and gguf_files() == []


# ---------------------------------------------------------------- 9: a hostile GGUF header


def _gguf(kvs: list[bytes], tensors: int = 0, pad_to: int = 0) -> bytes:
    """A GGUF v3 header with these key-value records (and a tensor count), zero-padded to
    `pad_to` bytes."""
    data = b"GGUF" + struct.pack("<IQQ", 3, tensors, len(kvs)) + b"".join(kvs)
    return data + bytes(max(0, pad_to - len(data)))


def _text(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


ARCH = _text(b"general.architecture") + struct.pack("<I", 8) + _text(b"llama")
BIG = 64 * 1024 * 1024

HOSTILE_HEADERS = {
    # the red team's 133-byte file: a uint8 array of 2**40 elements (type 9 = array, 0 = uint8)
    "uint8-array-2e40": (_gguf([_text(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 0, 2**40) + bytes(64)]), 133),
    "string-array-2e40": (
        _gguf([_text(b"tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**40) + _text(b"a") * 4]),
        105,
    ),
    "kv-count-2e63": (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**63) + ARCH, 69),
    "tensor-count-2e40": (_gguf([ARCH], tensors=2**40), 69),
}


@pytest.mark.parametrize("kind", HOSTILE_HEADERS)
def test_a_gguf_declaring_more_than_the_file_holds_fails_at_once(tmp_path, localagent_home, kind):
    # before (F13): gguf.GGUFReader looped once per declared element: the 133-byte file kept
    # `models import` (and run --model PATH, models info, every pull) busy for minutes, its
    # memory growing by 1 GB a minute
    data, size = HOSTILE_HEADERS[kind]
    assert len(data) == size
    path = tmp_path / f"{kind}.gguf"
    path.write_bytes(data)
    done = run_cli("models", "import", str(path), "--name", "x", home=localagent_home, timeout=30)
    assert_user_error(done, str(path), "not a whole GGUF file", "declare")
    assert store_files() == []


def test_a_big_numeric_array_is_skipped_not_walked(tmp_path, localagent_home):
    # a whole file whose header holds a 64 MiB uint8 array (real vocabularies hold 150k-element
    # score and type arrays): skipped in one step. before: GGUFReader built 67M numpy views
    array = _text(b"tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 0, BIG) + bytes(BIG)
    header = _gguf([ARCH, array])
    path = tmp_path / "big.gguf"
    path.write_bytes(header + bytes(-len(header) % 32))  # the data section starts aligned
    done = run_cli("models", "import", str(path), "--name", "big", home=localagent_home, timeout=30)
    assert done.returncode == 0, done.stderr
    assert store.resolve("big", offline=True).gguf.architecture == "llama"


# ---------------------------------------------------------------- 10: names the store cannot hold


def test_import_refuses_the_names_of_built_in_and_hosted_models(tmp_path):
    # before (F34): `models import --name noop` was accepted and listed, but `--model noop`
    # always ran the built-in pseudo model: the import was never usable
    src = write_tiny_gguf(tmp_path / "t.gguf")
    hosted = next(iter(load_catalog().hosted))
    for name in [*PSEUDO_MODELS, hosted]:
        with pytest.raises(ConfigError) as err:
            store.import_file(src, name)
        assert f"'{name}'" in err.value.message and "another name" in err.value.hint
    assert store.installed() == [] and store_files() == []


LONG_NAMES = {"300-chars": "a" * 300, "non-UTF-8": "x\udcff", "quoted-past-255": "é" * 50}


@pytest.mark.parametrize("name", LONG_NAMES.values(), ids=LONG_NAMES.keys())
def test_a_model_name_no_file_can_have_is_an_unknown_model(tmp_path, localagent_home, name):
    # before: F35 "OSError: [Errno 36] File name too long" and F06 UnicodeEncodeError (a
    # non-UTF-8 --model from argv) tracebacks from the manifest lookup. Something is installed
    # first: without a manifests folder the lookup met "No such file" before the long name
    store.import_file(write_tiny_gguf(tmp_path / "t.gguf"), "mine")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    commands = [
        ("run", "hi", "--model", name, "--workspace", str(workspace)),
        ("bench", "--model", name),
        ("models", "info", name),
        ("models", "verify", name),
    ]
    for args in commands:
        done = run_cli(*args, home=localagent_home)
        assert_user_error(done, "is not installed" if args[1] == "verify" else "unknown model")
    done = run_cli("models", "rm", name, home=localagent_home)
    assert_user_error(done, "is not installed")
    assert [m.alias for m in store.installed()] == ["mine"]


@pytest.mark.parametrize(
    "fields, words",
    [
        ('repo = "../x"\nfile = "m.gguf"', "field 'repo'"),
        ('repo = "a/b"\nfile = "../../../evil.gguf"', "field 'file'"),
        ('repo = "a/b"\nfile = "/etc/evil.gguf"', "field 'file'"),
        ('repo = "a/b"\nfile = "m.gguf"\nquants = { Q8_0 = "sub/../../evil.gguf" }', "field 'quants.Q8_0'"),
        ('repo = "a/b"\nfile = "m\\u0000.gguf"', "field 'file'"),
    ],
    ids=["repo", "file-up", "file-absolute", "quant-file", "nul"],
)
def test_catalog_repo_and_file_cannot_lead_out_of_the_store(localagent_home, fields, words):
    # a pull writes hub/<repo>/<file> in the store: a user's (or a shared) models.toml with
    # '..' in them wrote outside it
    user = localagent_home / "models.toml"
    user.write_text(f'[local.x]\n{fields}\nquant = "Q4_K_M"\ncontext = 4096\n')
    with pytest.raises(ConfigError) as err:
        load_catalog()
    assert str(user) in err.value.message and words in err.value.message
