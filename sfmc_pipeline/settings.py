"""Where things live: the pipeline config file, the shipped sample data and the storage directory.

The one place that reads the location environment variables, and that names the credential
variables of each resource. Credential values are not read here: they reach the resources through
``dagster.EnvVar`` (see ``definitions.py``); the command line reads them from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dotenv import dotenv_values, set_key

from sfmc_pipeline.errors import ConfigurationError
from sfmc_pipeline.http import Redactor

REPO_ROOT = Path(__file__).resolve().parent.parent

CONFIG_ENV = "SFMC_PIPELINE_CONFIG"
STORAGE_ENV = "SFMC_PIPELINE_STORAGE"
SAMPLE_ENV = "SFMC_PIPELINE_SAMPLE"
AS_OF_ENV = "SFMC_PIPELINE_AS_OF"  # the evaluation date (segments/evaluation_date.py)
ALERT_WEBHOOK_ENV = "SFMC_PIPELINE_ALERT_WEBHOOK"  # where failure alerts are posted (defs/automation/alert_webhook.py)
EXTRACT_DIR_ENV = "SFMC_PIPELINE_EXTRACT_DIR"  # a folder of extract CSVs the embedded default reads instead

DEFAULT_CONFIG_PATH = REPO_ROOT / "pipeline.yaml"
DEFAULT_STORAGE_DIR = REPO_ROOT / "data" / "storage"
SAMPLE_DATA_DIR = REPO_ROOT / "data" / "sample"
# SFMC_PIPELINE_SAMPLE in the project's .env -> the sample day the embedded default reads
# (scripts/generate_sample_data.py writes both): the first day, and the next day's changes to it.
SAMPLE_DAYS = {"first_day": SAMPLE_DATA_DIR, "next_day": SAMPLE_DATA_DIR / "next_day"}
DEFAULT_SAMPLE_DAY = "first_day"


def config_path() -> Path:
    """The pipeline config file: ``$SFMC_PIPELINE_CONFIG`` or ``pipeline.yaml`` at the repo root."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


# Resource setting -> the environment variable that sets it.
SFMC_ENV = {
    "client_id": "SFMC_CLIENT_ID",
    "client_secret": "SFMC_CLIENT_SECRET",
    "auth_base_uri": "SFMC_AUTH_BASE_URI",
    "account_id": "SFMC_ACCOUNT_ID",
}
# The three that select sfmc mode: all set, or none (the embedded default); the business unit is optional.
SFMC_CREDENTIAL_ENV = {name: SFMC_ENV[name] for name in ("client_id", "client_secret", "auth_base_uri")}
SALESFORCE_ENV = {
    "domain": "SALESFORCE_DOMAIN",
    "login_url": "SALESFORCE_LOGIN_URL",
    "client_id": "SALESFORCE_CLIENT_ID",
    "client_secret": "SALESFORCE_CLIENT_SECRET",
    "username": "SALESFORCE_USERNAME",  # the JWT assertion's subject, or the password flow's user
    "private_key_file": "SALESFORCE_PRIVATE_KEY_FILE",  # JWT bearer flow: the PEM key of the app's certificate
    "private_key": "SALESFORCE_PRIVATE_KEY",  # ... or the PEM text itself (a secret)
    "jwt_audience": "SALESFORCE_JWT_AUDIENCE",  # optional: the assertion's audience
    "password": "SALESFORCE_PASSWORD",
    "security_token": "SALESFORCE_SECURITY_TOKEN",
}
# The JWT bearer flow's key and audience variables, as its messages name them.
SALESFORCE_PRIVATE_KEY_FILE_ENV = SALESFORCE_ENV["private_key_file"]
SALESFORCE_PRIVATE_KEY_ENV = SALESFORCE_ENV["private_key"]
SALESFORCE_JWT_AUDIENCE_ENV = SALESFORCE_ENV["jwt_audience"]
SECRET_ENV = (SFMC_ENV["client_secret"], *(SALESFORCE_ENV[name] for name in
                                          ("client_secret", "password", "security_token", "private_key")))


def env_settings(names: dict[str, str], *, as_env_var: bool) -> dict:
    """``{setting: value}`` for the variables of ``names`` that are set and not empty: ``dg.EnvVar``s for
    the code location (resolved by Dagster at run launch), plain values for the command line."""
    if as_env_var:
        return {setting: env_if_set(env) for setting, env in names.items()}
    return {setting: os.environ.get(env) or None for setting, env in names.items()}


def secret_redactor(*extra: str | None) -> Redactor:
    """Redacts the secret variables' values (the password with its security token appended too) and ``extra``."""
    values = [os.environ.get(name) for name in SECRET_ENV]
    password, token = os.environ.get("SALESFORCE_PASSWORD"), os.environ.get("SALESFORCE_SECURITY_TOKEN")
    if password and token:
        values.append(password + token)
    return Redactor([*values, *extra])


def env_if_set(name: str) -> dg.EnvVar | None:
    """``dg.EnvVar(name)`` when the variable is set and not empty, else ``None``.

    Dagster refuses to start a run when an ``EnvVar`` points at an unset variable, so optional
    settings (credentials absent = embedded default) are only wired to the variable when it is
    set. The value itself is still resolved by Dagster at run launch and never shown in the UI.
    """
    return dg.EnvVar(name) if os.environ.get(name) else None


def env_or_default(name: str, default: str) -> str:
    """``dg.EnvVar(name)`` when set, else ``default`` (for non-secret locations)."""
    return env_if_set(name) or default


def sample_data_dir() -> Path:
    """The folder of the sample day the embedded default reads (``sample_day``)."""
    return SAMPLE_DAYS[sample_day()]


def sample_day() -> str:
    """The embedded default's sample day: ``first_day`` (``data/sample``, the default) or ``next_day``
    (``data/sample/next_day``, the same extracts one day later).

    It is chosen in one place, the project's ``.env`` (``SFMC_PIPELINE_SAMPLE=next_day``, written by
    ``sfmc-pipeline sample next_day``), read afresh on every call: ``dg launch``, ``dg dev`` and the daemon
    all read that file, so the command line and the UI evaluate the same day. A value in the process
    environment that the file does not hold (set in one shell only, or loaded by a ``dg dev`` started before
    the file changed) is a ``ConfigurationError`` naming both, never silently another day; so is a value
    that is not a sample day."""
    path = project_env_file()
    in_file = (read_env_file(path).get(SAMPLE_ENV) or "").strip() or None
    in_env = (os.environ.get(SAMPLE_ENV) or "").strip() or None
    value = in_file or DEFAULT_SAMPLE_DAY
    if in_env is not None and in_env != value:
        where = f"{path} sets {in_file!r}" if in_file else f"{path} does not set it (so {DEFAULT_SAMPLE_DAY})"
        raise ConfigurationError(
            f"{SAMPLE_ENV}={in_env!r} in this process's environment, but {where}. The sample day is chosen in the "
            f"project's .env, which `dg launch`, `dg dev` and the daemon all read, so that every run evaluates the "
            f"same day: choose it with `sfmc-pipeline sample {in_env}` and unset {SAMPLE_ENV} in your shell; "
            "restart `dg dev` if it was started before .env changed."
        )
    if value not in SAMPLE_DAYS:
        allowed = ", ".join(f"{day} ({folder.relative_to(REPO_ROOT)})" for day, folder in SAMPLE_DAYS.items())
        raise ConfigurationError(
            f"{SAMPLE_ENV}={value!r} in {path} is not a sample day. Use one of: {allowed} "
            f"(`sfmc-pipeline sample {DEFAULT_SAMPLE_DAY}`); unset or empty means {DEFAULT_SAMPLE_DAY}."
        )
    return value


def extract_dir() -> Path | None:
    """The folder of extract CSVs (``<external key>.csv``) the embedded default reads instead of a sample
    day: ``SFMC_PIPELINE_EXTRACT_DIR`` in the project's ``.env`` or the environment (relative to the project
    root), ``None`` when unset. Set in both to different folders, or a folder that does not exist, is a
    ``ConfigurationError`` naming the setting, the folder and the fix."""
    path = project_env_file()
    in_file = (read_env_file(path).get(EXTRACT_DIR_ENV) or "").strip() or None
    in_env = (os.environ.get(EXTRACT_DIR_ENV) or "").strip() or None
    if in_file and in_env and in_file != in_env:
        raise ConfigurationError(
            f"{EXTRACT_DIR_ENV}={in_env!r} in this process's environment, but {path} sets {in_file!r}. Keep it in "
            f"one place: set it in {path} (which `dg dev`, `dg launch` and the daemon read) and unset it in your "
            "shell; restart `dg dev` if it was started before .env changed."
        )
    value = in_file or in_env
    if value is None:
        return None
    folder = REPO_ROOT / Path(value).expanduser()  # an absolute path stays as it is
    if not folder.is_dir():
        raise ConfigurationError(
            f"{EXTRACT_DIR_ENV}={value!r} names {folder}, which is not a folder. Point it at the folder holding "
            "one <external key>.csv per configured Data Extension, or unset it to read the shipped sample data."
        )
    return folder


def project_env_file() -> Path:
    """The project's ``.env`` (git-ignored): what ``dg`` loads into the code location."""
    return REPO_ROOT / ".env"


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a ``.env`` file sets (``{}`` when there is none); unreadable is a ``ConfigurationError``."""
    if not path.is_file():
        return {}
    try:
        return {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path} cannot be read ({type(exc).__name__}: {exc}); fix or delete it.") from None


def write_sample_day(day: str) -> Path:
    """Set ``SFMC_PIPELINE_SAMPLE`` in the project's ``.env`` (created when missing, other lines kept)."""
    if day not in SAMPLE_DAYS:
        raise ConfigurationError(f"{day!r} is not a sample day; use one of: {', '.join(SAMPLE_DAYS)}.")
    path = project_env_file()
    path.touch(exist_ok=True)
    set_key(str(path), SAMPLE_ENV, day, quote_mode="never")
    return path
