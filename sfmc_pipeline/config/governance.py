"""The ``governance`` section: data-usage labels, marketing actions and the policies between them,
masking of personal data, and the exceptions a destination may hold to a policy."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from sfmc_pipeline.config.field_rules import (
    IDENTIFIER,
    StrictModel,
    has_visible_text,
    snake_case_field,
)

DEFAULT_ACTION = "crm_export"
DEFAULT_ACTIONS = {DEFAULT_ACTION: "Write the data to a CRM (Salesforce Contacts or Leads)."}


class LabelConfig(StrictModel):
    """A data-usage label: what the data is, and whether it identifies a person."""

    description: str = Field(min_length=1, description="What the label means, e.g. 'no export to third parties'.")
    identifying: bool = Field(
        default=False,
        description="Values of columns with this label directly identify a person: they are masked in Dagster "
        "metadata and logs (unless governance > masking > show_personal_data).",
    )


class PolicyConfig(StrictModel):
    """Labels that must not be used for some marketing actions."""

    name: str
    description: str = ""
    labels: list[str] = Field(min_length=1, description="Labels this policy restricts.")
    forbidden_actions: list[str] = Field(min_length=1, description="Marketing actions the labels may not be used for.")

    _name_is_snake_case = snake_case_field("name", "policy name", "no_sensitive_export")


class MaskingConfig(StrictModel):
    show_personal_data: bool = Field(
        default=False,
        description="Show identifying values (email, names, phone, columns with an identifying label) in full in "
        "Dagster metadata and logs: for local debugging only. Datasets and quarantines always keep full values.",
    )


class GovernanceConfig(StrictModel):
    """Data-usage labels, marketing actions and the policies between them; masking of personal data."""

    labels: dict[str, LabelConfig] = Field(default_factory=dict, description="Label id -> its meaning.")
    actions: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_ACTIONS), description="Marketing action id -> what it means."
    )
    policies: list[PolicyConfig] = Field(default_factory=list)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)

    @field_validator("labels", "actions")
    @classmethod
    def _identifiers(cls, value: dict) -> dict:
        for name in value:
            if not IDENTIFIER.match(name):
                raise ValueError(f"{name!r} is not an identifier (letters, digits and '_', e.g. C2 or crm_export)")
        return value

    @property
    def known_labels(self) -> str:
        return (f"declared labels: {', '.join(self.labels)} (governance > labels)" if self.labels
                else "no labels are declared: add it under governance > labels")

    @property
    def known_actions(self) -> str:
        return f"declared actions: {', '.join(self.actions)} (governance > actions)"

    def policy(self, name: str) -> PolicyConfig:
        for policy in self.policies:
            if policy.name == name:
                return policy
        raise KeyError(f"no policy named {name!r}")


class PolicyExceptionConfig(StrictModel):
    """An administrator's decision to let one field or segment of a destination through one policy."""

    policy: str = Field(description="The policy (governance > policies > name) this exception sets aside.")
    field: str | None = Field(default=None, description="The Salesforce field it allows (as mapped in attributes).")
    segment: str | None = Field(default=None, description="The segment whose status field it allows.")
    reason: str = Field(description="Why this pairing is allowed: who decided, on what basis (shown in metadata).")

    @model_validator(mode="after")
    def _one_item(self) -> PolicyExceptionConfig:
        if (self.field is None) == (self.segment is None):
            raise ValueError(f"an exception to policy {self.policy!r} names exactly one of 'field' or 'segment'")
        if not has_visible_text(self.reason):
            raise ValueError(f"the exception to policy {self.policy!r} needs a 'reason' in words (who decided, on "
                             "what basis); spaces and invisible characters alone are not a reason")
        return self

    @property
    def item(self) -> str:
        return f"field {self.field}" if self.field is not None else f"segment {self.segment}"
