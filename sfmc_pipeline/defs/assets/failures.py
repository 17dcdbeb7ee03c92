"""How errors from the clients become Dagster outcomes, the same for every API-calling asset.

- A configuration problem (credentials, base URL, a preflight finding) fails the step at once: retrying
  cannot help.
- A transient API failure that outlasted each request's own retries (``http.RetrySettings``) asks Dagster
  to retry the whole step, at most ``TRANSIENT_RETRIES`` more times, ``TRANSIENT_RETRY_WAIT`` seconds apart.
- Any other API error (wrong credentials, missing scope, unknown key) fails at once, and so do
  programming errors: they surface as they are.
"""

from contextlib import contextmanager
from typing import Callable, Iterator

import dagster as dg

from sfmc_pipeline.errors import ApiError, ConfigurationError

TRANSIENT_RETRIES = 2
TRANSIENT_RETRY_WAIT = 60


class RetriedApiError(Exception):
    """The transient API error a step is retried for, as the event log shows it."""


@contextmanager
def api_failures(retry_number: int = 0, mask: Callable[[str], str] | None = None) -> Iterator[None]:
    """``retry_number``: the step's ``context.retry_number``; the last attempt fails with the error's
    own message (instead of Dagster's bare "Exceeded max_retries"). ``mask``: applied to the message
    (``governance.masking.Masker.text``: an email an API error quotes is masked)."""
    mask = mask or (lambda text: text)
    try:
        yield
    except ConfigurationError as exc:
        raise dg.Failure(description=mask(str(exc)), allow_retries=False) from None
    except ApiError as exc:
        if exc.retryable and retry_number < TRANSIENT_RETRIES:
            # Dagster logs the cause of a retry: the error's own message, masked like a failure's
            raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES,
                                    seconds_to_wait=TRANSIENT_RETRY_WAIT) from RetriedApiError(mask(str(exc)))
        attempts = f" (after {retry_number + 1} attempts of this step)" if exc.retryable else ""
        raise dg.Failure(description=mask(f"{exc}{attempts}"), allow_retries=False) from None
