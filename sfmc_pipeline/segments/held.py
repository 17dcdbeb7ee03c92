"""Held profiles: profiles whose own row is quarantined in this extract.

A quarantined row (a malformed email, say) says nothing about whether the profile left its
segments, so the profile is *held*: it keeps its memberships of the last successful evaluation,
neither exiting nor entering anything, and the CRM keeps its last confirmed values, until its row
is valid again. A key that also has a valid row is not held (see ``memberships.present_keys``).
"""

from __future__ import annotations

import pandas as pd

from sfmc_pipeline.config.data_extensions import DataExtensionConfig
from sfmc_pipeline.datasets.conversion import convert_frame
from sfmc_pipeline.salesforce.ids import valid_id_mask


def quarantined_profile_keys(quarantine: pd.DataFrame | None, extension: DataExtensionConfig, key: str) -> set[str]:
    """Keys (typed as the dataset holds them, e.g. 18-character Ids) of the quarantined profile rows. A
    key that is itself malformed (not a Salesforce Id where the column holds Ids) names no profile, so
    nothing is held for it."""
    if quarantine is None or quarantine.empty or key not in quarantine:
        return set()
    # Only the key is typed (e.g. a 15-character Id becomes its 18-character form): the other values are
    # the ones that failed, and a quarantine written before a column was added to the config lacks it.
    key_only = extension.model_copy(update={"columns": [c for c in extension.columns if c.name == key]})
    keys = convert_frame(quarantine[[key]], key_only).frame[key].dropna()
    if extension.column(key).format == "salesforce_id":
        keys = keys[valid_id_mask(keys)]
    return set(keys.astype(str))
