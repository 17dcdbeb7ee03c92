"""The documented commands work as the documentation says.

- The README's main command prints each step's one-line summary and no DEBUG event, while the run's
  event log (the UI) keeps every event; the documented run config prints the DEBUG events too.
- The commands of docs/operations.md that turn on the schedule and the sensors start them for the
  code location the UI shows.

Each runs exactly the documented line against a temporary ``DAGSTER_HOME`` (and storage directory).
"""

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from sfmc_pipeline.defs.automation.change_sensor import CHANGE_SENSOR_NAME
from sfmc_pipeline.defs.automation.downstream import AUTOMATION_SENSOR_NAME
from sfmc_pipeline.defs.automation.schedule import SCHEDULE_NAME
from sfmc_pipeline.defs.jobs import PIPELINE_JOB_NAME
from sfmc_pipeline.settings import REPO_ROOT
from sfmc_pipeline_tests.ui_location import ui_location_name

START = re.compile(r"^dagster (schedule|sensor) start (\S+)")
MAIN_COMMAND = f"dg launch --job {PIPELINE_JOB_NAME}"
DEBUG_LINE = re.compile(r" - DEBUG - ")


def bash_lines(path: Path, section: str | None = None) -> list[str]:
    """The lines of the ```bash blocks of ``path`` (of its ``## section`` only, when given)."""
    text = path.read_text(encoding="utf-8")
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """No credentials (the embedded default), ``home`` as the instance, the project's virtualenv first on PATH."""
    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("SFMC_", "SALESFORCE_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
               **extra)
    return env


def run(line: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``line`` as a shell at the repository root runs it."""
    done = subprocess.run(shlex.split(line), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done


def test_the_main_command_prints_the_step_summaries_and_no_debug_events(tmp_path):
    readme = REPO_ROOT / "README.md"
    assert any(line.endswith(f"&& {MAIN_COMMAND}") for line in bash_lines(readme))  # the Quickstart's last command
    [show_everything] = [line for line in bash_lines(readme) if line.startswith(f"{MAIN_COMMAND} --config-json")]
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = clean_env(home, SFMC_PIPELINE_STORAGE=str(tmp_path / "storage"))

    done = run(MAIN_COMMAND, env)
    printed = done.stdout + done.stderr
    assert not DEBUG_LINE.search(printed), printed
    for summary in ("Contacts: full read", "Evaluated 9 segments on", "Statuses as of",
                    "contacts (local target", "leads (local target"):
        assert summary in printed, f"{summary!r} not printed:\n{printed}"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [first] = instance.get_runs()
        stored = instance.all_logs(first.run_id)
    assert first.status == dg.DagsterRunStatus.SUCCESS
    step_starts = [e for e in stored
                   if e.is_dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START]
    assert step_starts and all(e.level == logging.DEBUG for e in step_starts)  # DEBUG events are all in the event log

    done = run(show_everything, env)
    printed = done.stdout + done.stderr
    assert DEBUG_LINE.search(printed) and "STEP_START" in printed, printed


def test_the_documented_commands_start_the_schedule_and_sensors_the_ui_shows(tmp_path):
    commands = [line for line in bash_lines(REPO_ROOT / "docs" / "operations.md", "Running unattended")
                if START.match(line)]
    assert {START.match(line).group(2) for line in commands} == {
        SCHEDULE_NAME, CHANGE_SENSOR_NAME, AUTOMATION_SENSOR_NAME}
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = clean_env(home)
    for line in commands:  # in a shell at the repository root with DAGSTER_HOME set, as the docs say
        run(line, env)

    location = ui_location_name()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = instance.all_instigator_state()
    running = {(state.name, state.origin.repository_origin.code_location_origin.location_name)
               for state in states if state.status.value == "RUNNING"}
    for name in (SCHEDULE_NAME, CHANGE_SENSOR_NAME, AUTOMATION_SENSOR_NAME):
        assert (name, location) in running, f"{name} is not running for the location {location!r}: {running}"
    assert {loc for _, loc in running} == {location}  # nothing started for a location the UI does not show
