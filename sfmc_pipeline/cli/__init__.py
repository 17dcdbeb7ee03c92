"""The ``sfmc-pipeline`` command line (console script in pyproject.toml); every command reads the same
environment variables and pipeline config as the Dagster code location.

    sfmc-pipeline check            # is every connection the pipeline needs working? (exit 0 only if all OK)
    sfmc-pipeline test-segments    # do the segment rules give the memberships in segment_examples.yaml?
    sfmc-pipeline sample next_day  # the embedded default's sample day, written to the project's .env
    sfmc-pipeline ledger standing  # records the sync holds back: deleted in the CRM, or values Salesforce rejects
    sfmc-pipeline ledger reset     # let the next sync send such records again
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def _check(args: argparse.Namespace) -> int:
    from sfmc_pipeline.cli import (
        connection_check,  # imported when used: `--help` stays instant
    )

    return connection_check.run(config_path=args.config)


def _test_segments(args: argparse.Namespace) -> int:
    from sfmc_pipeline.cli import segment_examples

    return segment_examples.run(config_path=args.config, examples_path=args.examples)


def _sample(args: argparse.Namespace) -> int:
    from sfmc_pipeline import settings
    from sfmc_pipeline.errors import ConfigurationError

    try:
        if args.day is not None:
            path = settings.write_sample_day(args.day)
            print(f"{settings.SAMPLE_ENV}={args.day} written to {path}: `dg launch`, `dg dev` and the daemon now read "
                  f"{settings.SAMPLE_DAYS[args.day]} (restart a running `dg dev` so its code location picks it up).")
            return 0
        day = settings.sample_day()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{day}: {settings.SAMPLE_DAYS[day]} (from {settings.project_env_file()}; days: {', '.join(settings.SAMPLE_DAYS)})")
    return 0


def _ledger_standing(args: argparse.Namespace) -> int:
    from sfmc_pipeline.cli import ledger_commands

    return ledger_commands.run_standing(config_path=args.config, destination=args.destination)


def _ledger_reset(args: argparse.Namespace) -> int:
    from sfmc_pipeline.cli import ledger_commands
    from sfmc_pipeline.salesforce.rules import RECORD_GONE, VALUE_REJECTED

    kind = RECORD_GONE if args.gone else VALUE_REJECTED if args.rejected else None
    return ledger_commands.run_reset(config_path=args.config, destination=args.destination,
                                     record_ids=args.record or [], kind=kind)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="PATH",
                        help="pipeline config (default: $SFMC_PIPELINE_CONFIG, else pipeline.yaml in the repository)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sfmc-pipeline",
        description="SFMC Data Extensions -> segments -> Salesforce: checks for a terminal and CI.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="check the connections: SFMC, each Data Extension, Salesforce, preflight, API usage",
        description=(
            "With the current environment (SFMC_*, SALESFORCE_*, SFMC_PIPELINE_* variables) and the pipeline "
            "config: authenticate to SFMC and read one row of each configured Data Extension (embedded mode: name "
            "the sample files), authenticate to Salesforce and name the org (local mode: name the local target), "
            "run the sync's own preflight for each destination (local mode: on a copy of the local target) and read "
            "the daily API usage. One line per check, 'OK', 'WARN <what>: <reason> -> <what to do>' (e.g. the "
            "retiring username-password flow) or 'FAILED <what>: <reason> -> <fix>'; exit status 0 only when no "
            "check FAILED. Secrets are never printed."
        ),
    )
    _config_option(check)
    check.set_defaults(run=_check)

    test = commands.add_parser(
        "test-segments",
        help="run the segment examples (segment_examples.yaml) against the segment rules",
        description=(
            "Evaluate each example of the examples file with the pipeline's own conversion, validation and "
            "segment evaluation, and compare with its expected memberships. One PASS/FAIL line per example; "
            "exit status 0 when all pass, 1 when one fails, 2 when the examples file or the config is invalid."
        ),
    )
    _config_option(test)
    test.add_argument("--examples", type=Path, metavar="PATH",
                      help="examples file (default: segment_examples.yaml next to the pipeline config)")
    test.set_defaults(run=_test_segments)

    sample = commands.add_parser(
        "sample",
        help="show or choose the embedded default's sample day (first_day, next_day)",
        description=(
            "Without DAY, print the sample day the embedded default reads. With DAY, write SFMC_PIPELINE_SAMPLE=DAY "
            "to the project's .env, the one place `dg launch`, `dg dev` and the daemon all read it from."
        ),
    )
    sample.add_argument("day", nargs="?", metavar="DAY",
                        help="first_day (data/sample) or next_day (data/sample/next_day)")
    sample.set_defaults(run=_sample)

    ledger = commands.add_parser(
        "ledger",
        help="the sync ledger's standing failures: list them, or let the next sync send them again",
        description=(
            "A record deleted in the CRM (ENTITY_IS_DELETED, INVALID_CROSS_REFERENCE_KEY), or whose values Salesforce "
            "rejects (STRING_TOO_LONG, a validation rule, ...), is held back by every sync until its values change. "
            "Works on the ledger of the storage directory ($SFMC_PIPELINE_STORAGE, default data/storage)."
        ),
    )
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="ACTION")
    standing = ledger_commands.add_parser("standing", help="list the records held back, per destination",
                                          description="One line per record held back: destination, record Id, why "
                                          "(gone or values rejected), Salesforce's code, since when.")
    standing.add_argument("--destination", metavar="NAME", help="only this destination of the pipeline config")
    _config_option(standing)
    standing.set_defaults(run=_ledger_standing)
    reset = ledger_commands.add_parser(
        "reset", help="let the next sync send held-back records again (e.g. after restoring them in the CRM)",
        description="Remove standing-failure marks of one destination, for every CRM the ledger knows; the next sync "
        "sends those records again, and marks them again if they fail the same way. (For one run only: run config "
        "retry_standing_failures: true on the sync asset.)")
    reset.add_argument("--destination", metavar="NAME", required=True, help="a destination of the pipeline config")
    which = reset.add_mutually_exclusive_group(required=True)
    which.add_argument("--record", metavar="ID", action="append", help="a record Id (15 or 18 characters; upsert: the "
                       "external id value); repeat for several")
    which.add_argument("--gone", action="store_true", help="every record marked gone from the CRM")
    which.add_argument("--rejected", action="store_true", help="every record whose values were rejected")
    which.add_argument("--all", action="store_true", help="every record held back")
    _config_option(reset)
    reset.set_defaults(run=_ledger_reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; returns the exit status (the console script exits with it)."""
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # python -m sfmc_pipeline.cli
    sys.exit(main())
