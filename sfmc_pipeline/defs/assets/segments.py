"""Segment assets: who is in each segment now (``segment_memberships``) and how that changed
since the last successful evaluation (``segment_statuses``: realized / existing / exited)."""

import datetime as dt
import json
import os
from typing import Optional

import dagster as dg
from pydantic import Field

from sfmc_pipeline.config.pipeline import PipelineConfig
from sfmc_pipeline.datasets.storage import DatasetStore, read_parquet, write_json
from sfmc_pipeline.defs.assets.segment_checks import status_checks
from sfmc_pipeline.defs.assets.dry_run import is_dry_run
from sfmc_pipeline.defs.assets.failures import api_failures
from sfmc_pipeline.defs.metadata import counts_table, markdown_table
from sfmc_pipeline.defs.resources.sfmc import SfmcResource
from sfmc_pipeline.defs.resources.storage import StorageResource
from sfmc_pipeline.governance.lineage import segment_sources
from sfmc_pipeline.governance.masking import Masker
from sfmc_pipeline.segments.columns import HELD, SEGMENT, STATUS
from sfmc_pipeline.segments.engine import SegmentEngine
from sfmc_pipeline.segments.evaluation_date import resolve_as_of
from sfmc_pipeline.segments.held import quarantined_profile_keys
from sfmc_pipeline.segments.memberships import key_table, present_keys, used_datasets, write_memberships
from sfmc_pipeline.segments.state import SegmentStateStore, refuse_earlier
from sfmc_pipeline.segments.statuses import status_counts, status_plan, with_held
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


def read_held_keys(engine: SegmentEngine, store: DatasetStore, pipeline: PipelineConfig) -> set[str]:
    """Profiles whose own row is in the profile dataset's quarantine and that have no valid row (see
    ``segments.held``)."""
    extension = pipeline.extension(pipeline.profiles.dataset)
    path = store.quarantine_path(extension.asset)
    quarantine = read_parquet(path) if path.exists() else None
    keys = quarantined_profile_keys(quarantine, extension, pipeline.profile_key)
    return keys - present_keys(engine, pipeline, keys)


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
    used = used_datasets(pipeline)
    names = [s.name for s in pipeline.segments]
    masker = Masker.for_pipeline(pipeline)  # profile keys shown are masked when the key column identifies

    def shown_keys(keys) -> list[str]:
        return [str(k) for k in masker.column_values(keys, profile_asset, key)]

    @dg.asset(
        name=MEMBERSHIPS,
        group_name=GROUP,
        kinds={pipeline.evaluation.engine, "parquet"},
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
            with SegmentEngine.open(store, pipeline.evaluation) as engine:
                held = read_held_keys(engine, store, pipeline)
                path = store.dataset_path(MEMBERSHIPS)
                summary = write_memberships(engine, pipeline, as_of, held, path)
            write_json(
                {"as_of": as_of.isoformat(), "as_of_source": as_of_source, "run_id": context.run.run_id,
                 "timezone": timezone, "accepted_earlier_as_of": accepted_earlier},
                membership_meta_path(store),
            )
        sizes, orphans = summary.members, summary.orphans
        context.log.info(
            f"Evaluated {len(names)} segments on {summary.profiles} profiles as of {as_of} ({timezone}) with "
            f"{pipeline.evaluation.engine}: " + ", ".join(f"{name} {n}" for name, n in sizes.items())
        )
        return dg.MaterializeResult(
            metadata={
                "as_of": as_of.isoformat(),
                "as_of_source": as_of_source,
                "accepted_earlier_as_of": accepted_earlier,
                "timezone": timezone,
                "engine": pipeline.evaluation.engine,
                "profiles": summary.profiles,
                "held_profiles": len(held),
                "memberships": summary.total,
                **{f"members.{name}": n for name, n in sizes.items()},
                **{f"orphans.{name}": n for name, n in orphans.items()},
                "summary": dg.MetadataValue.md(
                    counts_table(list(sizes.items()), ["segment", "members"])
                    + "\n\nOrphan related rows (key not a valid profile, ignored): "
                    + (", ".join(f"{k}: {v}" for k, v in orphans.items()) or "none")
                ),
                "dataset_path": dg.MetadataValue.path(str(path)),
                "dagster/row_count": summary.total,
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
                description="Every current membership has exactly one realized or existing row, every previous "
                "one exactly one existing or exited row.",
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
        with api_failures(context.retry_number, mask=masker.text), storage.writing(context) as store, \
                SegmentEngine.open(store, pipeline.evaluation) as engine:
            meta = json.loads(membership_meta_path(store).read_text(encoding="utf-8"))
            as_of = dt.date.fromisoformat(meta["as_of"])
            state = SegmentStateStore(store)
            latest, _ = state.load()
            refusal = refuse_earlier(as_of, meta.get("as_of_source", "segment_memberships"), latest)
            if refusal and not meta.get("accepted_earlier_as_of"):
                raise dg.Failure(description=refusal, allow_retries=False)
            held = read_held_keys(engine, store, pipeline)
            held_table = key_table(held) if held else None
            current = with_held(engine.dataset(MEMBERSHIPS), state.members(engine, latest), held_table)
            baseline, is_repeat = state.baseline_for(engine, as_of, current)
            previous = state.members(engine, baseline)
            path = store.dataset_path(STATUSES)
            pending = store.state_path("segments") / "statuses-pending.parquet"  # the dataset once the checks pass
            engine.write(status_plan(current, previous, held_table, as_of), pending)
            statuses = engine.parquet(pending)
            by_status = engine.to_pandas(statuses.group_by([SEGMENT, STATUS]).aggregate(n=statuses.count()))
            checks = status_checks(engine, by_status, current, previous, engine.dataset(profile_asset), key, held,
                                   shown_keys)
            if not all(c.passed for c in checks):
                pending.unlink(missing_ok=True)
                yield from checks
                raise dg.Failure("Segment statuses failed a consistency check; the evaluation was not committed.")
            counts = status_counts(by_status, names)
            held_memberships = int(engine.value(statuses.filter(statuses[HELD]).count()))
            os.replace(pending, path)
            if dry_run:
                context.log.info("Dry run: the segment baseline was not advanced; the next real run compares with "
                                 "the same evaluation as this one")
            else:  # only now does this evaluation become "previous"
                state.commit(engine, as_of, meta["run_id"], current, is_repeat=is_repeat)
        rows = int(counts[["realized", "existing", "exited"]].to_numpy().sum())
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
                "held_memberships": held_memberships,
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
                "dagster/row_count": rows,
            },
            check_results=checks,
        )

    return [segment_memberships, segment_statuses]
