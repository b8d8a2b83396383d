"""The one exception tree. Messages are written for the user; `hint` says what to do next.

The CLI boundary prints `error: <message>` and `hint: <hint>` and exits 1, without a
traceback unless --debug. `ToolError` stands apart: the agent loop turns it into the tool
result the model reads, and the run goes on.
"""

from __future__ import annotations


class LocalAgentError(Exception):
    """Something the user can act on."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(LocalAgentError):
    """A configuration or catalog file, a flag or an environment variable is wrong."""


class MissingExtraError(ConfigError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed",
            hint=f"pip install 'localagent[{extra}]'",
        )


class ModelNotFoundError(LocalAgentError):
    """An alias that is neither in the catalog nor installed, or a model not on disk."""


class DownloadError(LocalAgentError):
    """The hub could not be reached, or a file could not be fetched."""


class OfflineError(DownloadError):
    """A download was needed while offline mode is on."""


class IntegrityError(LocalAgentError):
    """A file is not what it should be (sha256 mismatch, truncated or not a GGUF)."""


class StoreError(LocalAgentError):
    """The model store cannot be read or written."""


class TaskFileError(LocalAgentError):
    """A benchmark task file is malformed; the message names file, task, field and line."""


class ResultsError(LocalAgentError):
    """Stored results cannot be read, resumed, imported or exported."""


class ResultsWriteError(ResultsError):
    """A run folder, an export or the results database cannot be written (disk full, a file
    size limit, read-only): the bench stops at the first such write, and that one is reported."""


class ResultsWarning(UserWarning):
    """A problem in stored results that does not stop a read: a line of a run's results.jsonl
    that is skipped, a trial recorded twice. The CLI prints it as `warning: ...`."""


class EngineError(LocalAgentError):
    """A model engine failed."""


class ModelLoadError(EngineError):
    """A model file could not be loaded."""


class ContextOverflowError(EngineError):
    """The conversation no longer fits the model's context window."""


class HostedAPIError(EngineError):
    """A hosted API refused or failed a request (after retries)."""


class ToolError(Exception):
    """A tool call failed; the message goes back to the model as the tool's result."""
