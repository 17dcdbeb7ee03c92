"""The two errors every layer raises: an API call that failed, and a setting the user must fix."""

from __future__ import annotations


class ApiError(RuntimeError):
    """A call failed. ``retryable`` says whether running again later may help; ``status`` and
    ``code`` carry the HTTP status and the API's own error code when there was one."""

    def __init__(self, message: str, *, retryable: bool = False, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code


class ConfigurationError(ValueError):
    """A setting (base URL, credentials) is unusable; the message names the setting and the fix."""
