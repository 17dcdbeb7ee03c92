"""The README's commands that turn on the schedule and the sensors start them for the code location the
UI shows: the test runs exactly the documented lines against a temporary ``DAGSTER_HOME`` and reads
the instigator state back from that instance."""

import os
import re
import shlex
import shutil
import subprocess
import sys

import dagster as dg

from sfmc_pipeline.defs.automation.change_sensor import CHANGE_SENSOR_NAME
from sfmc_pipeline.defs.automation.downstream import AUTOMATION_SENSOR_NAME
from sfmc_pipeline.defs.automation.schedule import SCHEDULE_NAME
from sfmc_pipeline.settings import REPO_ROOT
from sfmc_pipeline_tests.ui_location import ui_location_name

START = re.compile(r"^dagster (schedule|sensor) start (\S+)")


def documented_start_commands() -> list[str]:
    """The command lines of the README's *Running unattended* section that start a schedule or a sensor."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Running unattended\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if START.match(line.strip())]


def test_the_documented_commands_start_the_schedule_and_sensors_the_ui_shows(tmp_path):
    commands = documented_start_commands()
    assert {START.match(line).group(2) for line in commands} == {
        SCHEDULE_NAME, CHANGE_SENSOR_NAME, AUTOMATION_SENSOR_NAME}
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / ".dagster_home" / "dagster.yaml", home / "dagster.yaml")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("SFMC_", "SALESFORCE_"))}
    env.update(DAGSTER_HOME=str(home), PATH=os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]))
    for line in commands:  # in a shell at the repository root with DAGSTER_HOME set, as the README says
        done = subprocess.run(shlex.split(line), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"

    location = ui_location_name()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = instance.all_instigator_state()
    running = {(state.name, state.origin.repository_origin.code_location_origin.location_name)
               for state in states if state.status.value == "RUNNING"}
    for name in (SCHEDULE_NAME, CHANGE_SENSOR_NAME, AUTOMATION_SENSOR_NAME):
        assert (name, location) in running, f"{name} is not running for the location {location!r}: {running}"
    assert {loc for _, loc in running} == {location}  # nothing started for a location the UI does not show
