"""A copy of a workspace taken before a run, put back before a fallback model tries again.

Nothing is followed through a symlink, in taking or in restoring: a link is copied as a link
and removed as a link, so a workspace that links to a folder outside never has that folder
copied, emptied or written. The copy is bounded in size, and refused, before anything is
copied, for a workspace that holds what cannot be copied back as it was (a FIFO, a socket, a
device), which a copy would block on or turn into something else.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import TracebackType

from localagent.errors import ConfigError
from localagent.units import format_bytes

# a fallback copies the workspace once and writes it back once per model that follows: a
# source tree is far below this; a folder of datasets or model files is not what it is for
MAX_SNAPSHOT_BYTES = 512 * 2**20


def tree_size(root: Path, limit: int) -> int:
    """The bytes of the regular files under `root` (links not followed). ConfigError past
    `limit`, or on a file that is neither a regular file, a folder nor a link."""
    total = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                total += os.lstat(path).st_size
            elif not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                raise ConfigError(
                    f"the workspace holds {path}, which is not a file, folder or link: a fallback cannot snapshot it",
                    hint="remove it from the workspace, or drop --fallback",
                )
            if total > limit:
                raise ConfigError(
                    f"the workspace {root} holds more than {format_bytes(limit)}: too much to snapshot for --fallback",
                    hint="run in a smaller workspace (only what the task needs), or drop --fallback",
                )
    return total


def _clear(root: Path) -> None:
    """Remove everything inside `root`, never following a link."""
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _copy_into(src: Path, dst: Path) -> None:
    """Copy the contents of `src` into the existing folder `dst`: links as links."""
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)


class Snapshot:
    """`with Snapshot(root) as snap: ...; snap.restore()`: the copy lives in a temporary
    folder removed when the block ends."""

    def __init__(self, root: Path, limit: int = MAX_SNAPSHOT_BYTES):
        self.root = Path(root)
        self.limit = limit
        self.bytes = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Snapshot:
        self.bytes = tree_size(self.root, self.limit)
        self._tmp = tempfile.TemporaryDirectory(prefix="localagent-snapshot-")
        try:
            _copy_into(self.root, self._copy)
        except OSError as exc:
            self._tmp.cleanup()
            raise ConfigError(f"could not snapshot the workspace {self.root}: {exc}", hint="drop --fallback") from exc
        return self

    @property
    def _copy(self) -> Path:
        assert self._tmp is not None, "Snapshot used outside its `with` block"
        return Path(self._tmp.name) / "workspace"

    def restore(self) -> None:
        """Put the workspace back as it was when the snapshot was taken."""
        try:
            _clear(self.root)
            _copy_into(self._copy, self.root)
        except OSError as exc:
            raise ConfigError(
                f"could not restore the workspace {self.root} from its snapshot: {exc}",
                hint="check the workspace's permissions; the next model did not run",
            ) from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
