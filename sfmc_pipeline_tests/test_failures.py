"""Contract: API-calling steps retry only what retrying can fix: a transient API failure asks
Dagster for a bounded step retry; wrong credentials, bad settings and preflight findings fail
at once with their message."""

import dagster as dg
import pytest

from sfmc_pipeline.crm.preflight import PreflightError
from sfmc_pipeline.defs.assets.failures import (
    TRANSIENT_RETRIES,
    TRANSIENT_RETRY_WAIT,
    api_failures,
)
from sfmc_pipeline.errors import ApiError, ConfigurationError
from sfmc_pipeline.governance.masking import mask_emails_in_text


def test_transient_api_failure_requests_a_bounded_step_retry():
    with pytest.raises(dg.RetryRequested) as info:
        with api_failures():
            raise ApiError("SFMC GET /rowset failed after 6 attempt(s): HTTP 503", retryable=True, status=503)
    assert info.value.max_retries == TRANSIENT_RETRIES == 2
    assert info.value.seconds_to_wait == TRANSIENT_RETRY_WAIT
    assert "HTTP 503" in str(info.value.__cause__)  # the event log shows why the step is retried


def test_a_retried_error_is_shown_masked():
    with pytest.raises(dg.RetryRequested) as info:
        with api_failures(mask=mask_emails_in_text):
            raise ApiError("Salesforce: HTTP 503 while updating jane.doe@example.com", retryable=True, status=503)
    assert "jane.doe@example.com" not in str(info.value.__cause__) and "j***@example.com" in str(info.value.__cause__)


def test_the_last_retry_fails_with_the_errors_own_message():
    with pytest.raises(dg.Failure) as info:
        with api_failures(retry_number=TRANSIENT_RETRIES):
            raise ApiError("SFMC rowset for 'Contacts' stopped at 2,500 of 3,000 rows", retryable=True)
    assert "stopped at 2,500 of 3,000 rows" in info.value.description and "after 3 attempts" in info.value.description


@pytest.mark.parametrize(
    "error",
    [
        ApiError("SFMC refused the client credentials (HTTP 401, invalid_client)", status=401),
        ConfigurationError("SFMC credentials are incomplete: SFMC_AUTH_BASE_URI not set"),
        PreflightError(["Contact.new_customer__c: no such field"]),
    ],
)
def test_permanent_problems_fail_at_once_with_their_message(error):
    with pytest.raises(dg.Failure) as info:
        with api_failures():
            raise error
    assert info.value.allow_retries is False
    assert str(error).splitlines()[0] in info.value.description


def test_other_exceptions_are_not_retried_or_rewritten():
    with pytest.raises(KeyError):
        with api_failures():
            raise KeyError("a bug")
