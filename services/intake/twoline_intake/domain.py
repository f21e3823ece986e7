"""Intake rules without I/O: which field belongs to which data category."""

from twoline_shared.codes import DataCategory

FIELD_CATEGORY: dict[str, DataCategory] = {
    "display_name": DataCategory.IDENTITY,
    "birth_year": DataCategory.IDENTITY,
    "nationality": DataCategory.IDENTITY,
    "languages": DataCategory.NEEDS,
    "municipality": DataCategory.CONTACT,
    "phone": DataCategory.CONTACT,
    "household": DataCategory.HOUSEHOLD,
    "migration_history": DataCategory.MIGRATION_HISTORY,
    "needs": DataCategory.NEEDS,
    "health": DataCategory.HEALTH,
    "vulnerabilities": DataCategory.VULNERABILITIES,
    "intentions": DataCategory.INTENTIONS,
    "case_notes": DataCategory.CASE_NOTES,
}


def categories_present(fields: dict[str, object]) -> list[str]:
    """The categories for which a record holds data (for id-only events and audit)."""
    present = {
        FIELD_CATEGORY[name] for name, value in fields.items() if name in FIELD_CATEGORY and value
    }
    return sorted(c.value for c in present)


def categories_of(fields: dict[str, object]) -> list[str]:
    """The categories the named fields belong to, whatever their values (for updates)."""
    return sorted({FIELD_CATEGORY[name].value for name in fields if name in FIELD_CATEGORY})
