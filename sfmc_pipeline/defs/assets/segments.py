"""Segment assets: who is in each segment now (``segment_memberships``) and how that changed
since the last successful evaluation (``segment_statuses``: realized / existing / exited)."""

import datetime as dt
import json
from typing import Optional

import dagster as dg
import pandas as pd
from pydantic import Field

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.datasets.storage import DatasetStore, read_parquet, write_json
from sfmc_pipeline.defs.assets.dry_run import is_dry_run
from sfmc_pipeline.defs.assets.failures import api_failures
from sfmc_pipeline.defs.metadata import counts_table, markdown_table
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.lineage import segment_sources
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.segments.evaluate import (
    MEMBERSHIP_COLUMNS,
    PROFILE_KEY,
    SegmentEvaluator,
)
from sfmc_pipeline.segments.evaluation_date import resolve_as_of
from sfmc_pipeline.segments.held import held_profile_keys, hold
from sfmc_pipeline.segments.rules import related_datasets
from sfmc_pipeline.segments.state import SegmentStateStore, refuse_earlier
from sfmc_pipeline.segments.statuses import compute_statuses, status_counts
from sfmc_pipeline.sfmc.embedded_source import EmbeddedSampleSource

GROUP = "segments"
MEMBERSHIPS = "segment_memberships"
STATUSES = "segment_statuses"


class SegmentRunConfig(dg.Config):
    as_of: Optional[str] = Field(
        default=None, description="Evaluation date YYYY-MM-DD (overrides SFMC_PIPELINE_AS_OF and the config)."
    )
    accept_earlier_as_of: bool = Field(
        default=False,
        description="Evaluate a date earlier than the last successful evaluation's on purpose (it becomes the new "
        "baseline); without it such a run is refused before anything is written.",
    )


def membership_meta_path(store: DatasetStore):
    return store.dataset_path(MEMBERSHIPS).with_suffix(".json")


def read_held_keys(store: DatasetStore, pipeline: PipelineConfig, profiles: pd.DataFrame) -> set[str]:
    """Profiles whose own row is in the profile dataset's quarantine (see ``segments.held``)."""
    extension = pipeline.extension(pipeline.profiles.dataset)
    path = store.quarantine_path(extension.asset)
    quarantine = read_parquet(path) if path.exists() else None
    return held_profile_keys(quarantine, profiles, extension, pipeline.profile_key)


def segment_labels_metadata(pipeline: PipelineConfig) -> dict:
    """The data-usage labels each segment carries: those of the columns its rule reads."""
    rows = []
    for segment in pipeline.segments:
        sources = segment_sources(pipeline, segment.name)
        rows.append((segment.name, ", ".join(sorted({s.describe() for s in sources})) or "-",
                     ", ".join(sorted({s.label for s in sources})) or "-"))
    return {"segment_labels": dg.MetadataValue.md(counts_table(rows, ["segment", "labelled columns read", "labels"]))}


def build_segment_assets(pipeline: PipelineConfig) -> list[dg.AssetsDefinition]:
    profile_asset = pipeline.profiles.dataset
    key = pipeline.profile_key
    timezone = pipeline.evaluation.timezone
    used = sorted(set().union(*(related_datasets(s.rule) for s in pipeline.segments)) if pipeline.segments else set())
    names = [s.name for s in pipeline.segments]
    masker = Masker.for_pipeline(pipeline)  # profile keys shown are masked when the key column identifies

    def shown_keys(keys) -> list[str]:
        return [str(k) for k in masker.column_values(keys, profile_asset, key)]

    @dg.asset(
        name=MEMBERSHIPS,
        group_name=GROUP,
        kinds={"pandas", "parquet"},
        deps=[dg.AssetKey(profile_asset), *(dg.AssetKey(d) for d in used)],
        description=(
            "One row per (profile, segment) that qualifies at this evaluation: the declarative rules "
            "in the pipeline config evaluated on the valid rows of the datasets."
        ),
        metadata={"segments": ", ".join(names) or "(none)", **segment_labels_metadata(pipeline)},
    )
    def segment_memberships(
        context: dg.AssetExecutionContext, config: SegmentRunConfig, sfmc: SfmcResource, storage: StorageResource
    ) -> dg.MaterializeResult:
        with api_failures(context.retry_number, mask=masker.text):
            mode = sfmc.mode
            anchor = EmbeddedSampleSource(sfmc.sample_folder()).anchor_date() if mode == "embedded" else None
        try:
            as_of, as_of_source = resolve_as_of(
                run_config=config.as_of, configured=pipeline.evaluation.as_of, sample_anchor=anchor, timezone=timezone
            )
        except ValueError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store:
            refusal = refuse_earlier(as_of, as_of_source, SegmentStateStore(store).load()[0])
            if refusal and not config.accept_earlier_as_of:
                raise dg.Failure(description=refusal, allow_retries=False)
            accepted_earlier = refusal is not None
            if accepted_earlier:
                context.log.warning(f"Evaluating an earlier date on purpose (accept_earlier_as_of): {refusal}")
            profiles = store.read_dataset(profile_asset)
            held = read_held_keys(store, pipeline, profiles)
            evaluator = SegmentEvaluator(
                profiles,
                {name: store.read_dataset(name) for name in used},
                key=key,
                as_of=as_of,
                timezone=timezone,
                held_keys=held,
            )
            members = evaluator.members((s.name, s.rule) for s in pipeline.segments)
            path = store.write_dataset(MEMBERSHIPS, members)
            write_json(
                {"as_of": as_of.isoformat(), "as_of_source": as_of_source, "run_id": context.run.run_id,
                 "timezone": timezone, "accepted_earlier_as_of": accepted_earlier},
                membership_meta_path(store),
            )
        sizes = members.groupby("segment").size().reindex(names, fill_value=0)
        orphans = {name: evaluator.orphans(name) for name in used}
        context.log.info(
            f"Evaluated {len(names)} segments on {evaluator.profile_count} profiles as of {as_of} ({timezone}): "
            + ", ".join(f"{name} {int(n)}" for name, n in sizes.items())
        )
        return dg.MaterializeResult(
            metadata={
                "as_of": as_of.isoformat(),
                "as_of_source": as_of_source,
                "accepted_earlier_as_of": accepted_earlier,
                "timezone": timezone,
                "profiles": evaluator.profile_count,
                "held_profiles": len(held),
                "memberships": len(members),
                **{f"members.{name}": int(n) for name, n in sizes.items()},
                **{f"orphans.{name}": n for name, n in orphans.items()},
                "summary": dg.MetadataValue.md(
                    markdown_table(sizes.rename("members").rename_axis("segment").reset_index(), max_rows=50)
                    + "\n\nOrphan related rows (key not a valid profile, ignored): "
                    + (", ".join(f"{k}: {v}" for k, v in orphans.items()) or "none")
                ),
                "dataset_path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": len(members),
            }
        )

    @dg.asset(
        name=STATUSES,
        group_name=GROUP,
        kinds={"pandas", "parquet"},
        deps=[dg.AssetKey(MEMBERSHIPS)],
        description=(
            "One row per (profile, segment) with its status against the last successful evaluation: "
            "realized (entered), existing (still in), exited (left since). `held` marks profiles whose row is "
            "quarantined: they keep their previous memberships and the CRM sync leaves them as they are. "
            "This is what the CRM sync writes."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                "statuses_consistent",
                asset=STATUSES,
                blocking=True,
                description="One status per (profile, segment); exited only for previous members; "
                "realized/existing exactly the current members.",
            ),
            dg.AssetCheckSpec(
                "members_are_valid_profiles",
                asset=STATUSES,
                blocking=True,
                description=f"Every current member is a valid row of {profile_asset!r}, or a held profile "
                "(its row quarantined: it keeps its previous memberships).",
            ),
        ],
    )
    def segment_statuses(context: dg.AssetExecutionContext, storage: StorageResource):
        dry_run = is_dry_run(context)
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store:
            members = store.read_dataset(MEMBERSHIPS)
            meta = json.loads(membership_meta_path(store).read_text(encoding="utf-8"))
            as_of = dt.date.fromisoformat(meta["as_of"])
            profiles = store.read_dataset(profile_asset)
            held = read_held_keys(store, pipeline, profiles)
            state = SegmentStateStore(store)
            refusal = refuse_earlier(as_of, meta.get("as_of_source", "segment_memberships"), state.load()[0])
            if refusal and not meta.get("accepted_earlier_as_of"):
                raise dg.Failure(description=refusal, allow_retries=False)
            current = hold(members, state.members(state.load()[0]), held)
            baseline, is_repeat = state.baseline_for(as_of, current)
            previous = state.members(baseline)
            statuses = compute_statuses(current, previous)
            statuses = statuses.assign(held=statuses[PROFILE_KEY].isin(held), as_of=pd.Timestamp(as_of))
            checks = [
                _consistency_check(statuses, current, previous),
                _valid_profiles_check(current, profiles[key], held, shown_keys),
            ]
            if not all(c.passed for c in checks):
                yield from checks
                raise dg.Failure("Segment statuses failed a consistency check; the evaluation was not committed.")
            path = store.write_dataset(STATUSES, statuses)
            if dry_run:
                context.log.info("Dry run: the segment baseline was not advanced; the next real run compares with "
                                 "the same evaluation as this one")
            else:
                state.commit(as_of, meta["run_id"], current)  # only now does this evaluation become "previous"
        counts = status_counts(statuses, names)
        held_sample = shown_keys(sorted(held)[:10])
        context.log.info(
            f"Statuses as of {as_of}: " + ", ".join(f"{s} {int(counts[s].sum())}" for s in counts.columns)
            + f"; {len(held)} held profile(s)" + (" (repeat of the latest evaluation)" if is_repeat else "")
        )
        yield dg.MaterializeResult(
            metadata={
                "as_of": as_of.isoformat(),
                "baseline_as_of": baseline.as_of if baseline else "(none: first evaluation)",
                "baseline_run_id": baseline.run_id if baseline else "",
                "repeat_of_latest_evaluation": is_repeat,
                "baseline_advanced": not dry_run,
                "held_profiles": len(held),
                "held_profiles_sample": ", ".join(held_sample) or "none",
                "held_memberships": int(statuses["held"].sum()),
                **{f"{status}.total": int(counts[status].sum()) for status in counts.columns},
                **{
                    f"{status}.{segment}": int(counts.loc[segment, status])
                    for segment in counts.index
                    for status in counts.columns
                },
                "summary": dg.MetadataValue.md(
                    markdown_table(counts.rename_axis("segment").reset_index(), max_rows=50)
                    + (f"\n\nHeld (row quarantined; statuses kept as they were): {len(held)} profile(s)"
                       f", e.g. {', '.join(held_sample[:5])}" if held else "")
                ),
                "dataset_path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": len(statuses),
            },
            check_results=checks,
        )

    return [segment_memberships, segment_statuses]


def _consistency_check(statuses: pd.DataFrame, members: pd.DataFrame, previous: pd.DataFrame | None) -> dg.AssetCheckResult:
    pairs = MEMBERSHIP_COLUMNS
    duplicated = int(statuses.duplicated(pairs).sum())
    current = set(map(tuple, members[pairs].itertuples(index=False)))
    before = set(map(tuple, previous[pairs].itertuples(index=False))) if previous is not None else set()
    by_status = {s: set(map(tuple, g[pairs].itertuples(index=False))) for s, g in statuses.groupby("status")}
    in_now = by_status.get("realized", set()) | by_status.get("existing", set())
    exited = by_status.get("exited", set())
    problems = {
        "duplicate (profile, segment) rows": duplicated,
        "current members without realized/existing": len(current - in_now),
        "realized/existing that are not current members": len(in_now - current),
        "exited that were not previous members": len(exited - before),
        "exited that are still members": len(exited & current),
    }
    return dg.AssetCheckResult(
        check_name="statuses_consistent",
        passed=not any(problems.values()),
        metadata={name: count for name, count in problems.items()},
    )


def _valid_profiles_check(members: pd.DataFrame, profile_keys: pd.Series, held: set[str],
                          shown_keys=lambda keys: list(keys)) -> dg.AssetCheckResult:
    """Every current member is a valid profile, or a held one (its row quarantined, its statuses kept)."""
    keys = members[PROFILE_KEY]
    unknown = keys[~keys.isin(profile_keys) & ~keys.isin(held)]
    return dg.AssetCheckResult(
        check_name="members_are_valid_profiles",
        passed=unknown.empty,
        metadata={"unknown_members": len(unknown), "sample": ", ".join(shown_keys(unknown.head(5)))},
    )
