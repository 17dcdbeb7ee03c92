"""Typed records at the CRM boundary, shared by the Salesforce client and the local target.

Both targets implement ``CrmTarget``: say which CRM they are, describe an object, update records by
Id, upsert by an external id, and read current values back by Id. Results come back in request
order, one per record or id (Salesforce's contract).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

MAX_RECORDS_PER_REQUEST = 200  # sObject Collections limit
MAX_RETRIEVE_IDS_PER_REQUEST = 2000  # sObject Collections retrieve limit


@dataclass(frozen=True)
class FieldInfo:
    """One field of a describe result."""

    name: str
    type: str  # "string", "email", "textarea", "id", ...
    length: int = 0
    label: str = ""
    updateable: bool = False
    createable: bool = False
    nillable: bool = True
    custom: bool = False
    external_id: bool = False
    id_lookup: bool = False
    extra_type_info: str | None = None

    @classmethod
    def from_describe(cls, data: Mapping[str, Any]) -> FieldInfo:
        return cls(
            name=data["name"],
            type=data.get("type") or "",
            length=int(data.get("length") or 0),
            label=data.get("label") or data["name"],
            updateable=bool(data.get("updateable")),
            createable=bool(data.get("createable")),
            nillable=bool(data.get("nillable", True)),
            custom=bool(data.get("custom")),
            external_id=bool(data.get("externalId")),
            id_lookup=bool(data.get("idLookup")),
            extra_type_info=data.get("extraTypeInfo"),
        )


@dataclass(frozen=True)
class RecordError:
    status_code: str  # Salesforce StatusCode, e.g. "MALFORMED_ID", "UNABLE_TO_LOCK_ROW"
    message: str
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordResult:
    success: bool
    id: str | None = None
    errors: tuple[RecordError, ...] = ()
    created: bool | None = None  # upsert only

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RecordResult:
        return cls(
            success=bool(data.get("success")),
            id=data.get("id") or None,
            errors=tuple(
                RecordError(
                    status_code=e.get("statusCode") or "UNKNOWN",
                    message=e.get("message") or "",
                    fields=tuple(e.get("fields") or ()),
                )
                for e in data.get("errors") or ()
            ),
            created=data.get("created"),
        )

    @property
    def error_code(self) -> str | None:
        return self.errors[0].status_code if self.errors else None


@dataclass(frozen=True)
class ApiUsage:
    """Daily API requests used / allowed, from the ``Sforce-Limit-Info`` header."""

    used: int
    limit: int

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit else 0.0


@dataclass
class Describe:
    sobject: str
    fields: dict[str, FieldInfo] = field(default_factory=dict)  # keyed by exact API name

    def find(self, name: str) -> FieldInfo | None:
        """Case-insensitive lookup of a field by API name."""
        lowered = name.lower()
        for info in self.fields.values():
            if info.name.lower() == lowered:
                return info
        return None


class CrmTarget(Protocol):
    mode: str  # "salesforce" or "local"

    @property
    def target_id(self) -> str:
        """Stable identity of the CRM, e.g. to key a sync ledger: ``"salesforce:<18-char org id>"`` or
        ``"local:<uuid>"`` (persisted in the SQLite file). The Salesforce client logs in to learn it."""

    @property
    def target_label(self) -> str:
        """Human-readable description of the CRM (org id and host, or file path); never a secret."""

    def describe(self, sobject: str) -> Describe: ...

    def update(self, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """``records``: ``{"attributes": {"type": "Contact"}, "id": "003...", "<Field>": value, ...}``,
        at most 200; ``allOrNone`` false. One result per record, in order. Values are JSON scalars (str, int,
        float, bool, None) or ``decimal.Decimal``, which is written exactly (as a JSON number with the same digits)."""

    def upsert(self, sobject: str, external_id_field: str, records: Sequence[Mapping[str, Any]]) -> list[RecordResult]:
        """Same, keyed by ``external_id_field`` (present in every record); results carry ``created``."""

    def retrieve(self, sobject: str, ids: Sequence[str], fields: Sequence[str]) -> list[dict[str, Any] | None]:
        """Current values of ``fields`` for the ``ids`` records (any number; sent in requests of at most 2,000
        ids), in the order of ``ids``: ``{"Id": <18-char id>, <field as requested>: value, ...}``, or None
        where the id does not exist, is deleted or is not accessible. Field names match case-insensitively;
        an unknown field is an error for the whole call."""

    @property
    def api_usage(self) -> ApiUsage | None: ...

    @property
    def api_requests(self) -> int:
        """API requests sent so far (retries included)."""
