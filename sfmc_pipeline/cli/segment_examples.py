"""``sfmc-pipeline test-segments``: run the segment examples and print one PASS/FAIL line per example."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from sfmc_pipeline.cli.config_file import load_or_report
from sfmc_pipeline.segments.examples import (
    ExamplesError,
    coverage,
    default_examples_path,
    load_examples,
    run_example,
)

EXIT_FAILED = 1
EXIT_INVALID = 2


def run(
    *,
    config_path: Path | None = None,
    examples_path: Path | None = None,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> int:
    config_path, pipeline = load_or_report(config_path, err)
    if pipeline is None:
        return EXIT_INVALID
    path = Path(examples_path) if examples_path else default_examples_path(config_path)
    try:
        examples = load_examples(path, pipeline)
    except ExamplesError as exc:
        err(f"error: {exc}")
        err("Fix each entry listed (the header comment of segment_examples.yaml, shipped next to pipeline.yaml, "
            "documents the format), then run `sfmc-pipeline test-segments` again.")
        return EXIT_INVALID
    failed = 0
    for example in examples:
        outcome = run_example(example, pipeline)
        failed += not outcome.passed
        out(outcome.line())
    out(f"{len(examples)} example(s): {len(examples) - failed} passed, {failed} failed ({path} against {config_path})")
    cover = coverage(examples, pipeline)
    never_in = [name for name, (has_in, _) in cover.items() if not has_in]
    never_out = [name for name, (_, has_out) in cover.items() if not has_out]
    if never_in:
        out(f"note: no example expects a profile in {', '.join(never_in)}")
    if never_out:
        out(f"note: no example expects a profile out of {', '.join(never_out)} (not_in)")
    return EXIT_FAILED if failed else 0
