"""The report of ``sfmc-pipeline check``, and what every check shares (a quick retry policy, the "run it
again" hint). One line per check: ``OK     <what>: <detail>``, ``WARN   <what>: <detail> -> <what to do>``
(works today, needs action) or ``FAILED <what>: <reason> -> <fix>`` (a preflight with several problems
gives one line per problem). Every line goes through the redaction of the secret environment values and
of the clients' own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sfmc_pipeline.errors import ApiError, ConfigurationError

# A check should answer quickly: one retry of a transient failure, not the pipeline's five.
TIMEOUT_SECONDS = 20.0
MAX_RETRIES = 1
BACKOFF_SECONDS = 1.0

AGAIN = "then run `sfmc-pipeline check` again"


@dataclass(frozen=True)
class CheckLine:
    what: str
    detail: str  # OK: what was found; WARN / FAILED: the reason
    fix: str | None = None  # None for OK
    warning: bool = False  # WARN: works today, but needs action (not a failure)

    @property
    def ok(self) -> bool:
        return self.fix is None or self.warning

    def render(self) -> str:
        if self.fix is None:
            return f"OK     {self.what}: {self.detail}"
        if self.warning:
            return f"WARN   {self.what}: {self.detail} -> {self.fix}"
        return f"FAILED {self.what}: {self.detail} -> {self.fix}"


class Report:
    """Collects the lines and prints each one, redacted, as soon as it is known."""

    def __init__(self, out: Callable[[str], None], redact: Callable[[str], str]):
        self.lines: list[CheckLine] = []
        self._out = out
        self._redactors = [redact]

    def add_redactor(self, redact: Callable[[str], str] | None) -> None:
        if redact is not None:
            self._redactors.append(redact)

    def redact(self, text: str) -> str:
        for redact in self._redactors:
            text = redact(text)
        return text

    def add(self, line: CheckLine) -> None:
        self.lines.append(line)
        self._out(self.redact(line.render()))

    def ok(self, what: str, detail: str) -> None:
        self.add(CheckLine(what, detail))

    def failed(self, what: str, reason: str, fix: str) -> None:
        self.add(CheckLine(what, reason, fix))

    def warn(self, what: str, reason: str, action: str) -> None:
        self.add(CheckLine(what, reason, action, warning=True))

    def error(self, what: str, exc: BaseException, fix: str, *, unreachable: str | None = None) -> None:
        """A FAILED line from an exception: its message up to the first sentence of advice is the reason, the
        advice the fix (``fix`` when it gives none). ``unreachable``: the fix when the service did not answer."""
        message = flatten(str(exc)) if isinstance(exc, (ApiError, ConfigurationError)) else (
            f"{type(exc).__name__}: {flatten(str(exc))}")
        reason, advice = split_advice(message)
        if unreachable and isinstance(exc, ApiError) and exc.retryable and (exc.status is None or exc.status >= 429):
            advice = unreachable
        self.failed(what, reason, advice or fix)

    def skipped(self, what: str, because: str, fix: str) -> None:
        self.failed(what, f"skipped, {because}", fix)

    @property
    def all_ok(self) -> bool:
        return all(line.ok for line in self.lines)


def flatten(text: str) -> str:
    """A multi-line message (``Title:\\n  - problem\\n  - problem``) on one line: ``Title: problem; problem``."""
    lines = [line.strip().removeprefix("- ").strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    out = lines[0]
    for line in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + line
    return out


def split_advice(message: str) -> tuple[str, str | None]:
    """``(reason, advice)``: the message up to its first sentence boundary outside brackets (``". "`` before a
    capital letter, or ``"; "``), and what follows it; ``(message, None)`` when there is no such boundary."""
    depth = 0
    for i, ch in enumerate(message):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0 and ch in ".;" and message[i + 1 : i + 2] == " ":
            rest = message[i + 2 :].strip()
            if rest and (ch == ";" or rest[0].isupper()):
                return message[:i].strip(), rest.rstrip(".")
    return message.strip().rstrip("."), None
