"""Intake rules without I/O: which field belongs to which data category, and what a disclosure
package of a client record holds."""

from collections.abc import Iterable, Mapping
from typing import Any

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

# The fields of each category in a disclosure package (docs/events.md), in the order of the table.
CATEGORY_FIELDS: dict[DataCategory, tuple[str, ...]] = {
    DataCategory.IDENTITY: ("display_name", "birth_year", "nationality"),
    DataCategory.CONTACT: ("municipality", "phone"),
    DataCategory.HOUSEHOLD: ("household",),
    DataCategory.MIGRATION_HISTORY: ("migration_history",),
    DataCategory.NEEDS: ("languages", "needs"),
    DataCategory.HEALTH: ("health",),
    DataCategory.VULNERABILITIES: ("vulnerabilities",),
    DataCategory.INTENTIONS: ("intentions",),
    DataCategory.CASE_NOTES: ("case_notes",),
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


def disclosure_package(
    record: Mapping[str, Any], categories: Iterable[DataCategory]
) -> dict[str, dict[str, Any]]:
    """One object per asked category with that category's fields, and nothing else (F2).

    `health` is special-category data: it is in a package only when asked for by name, never
    implied by another category.
    """
    return {
        category.value: {name: record.get(name) for name in CATEGORY_FIELDS[category]}
        for category in sorted(set(categories))
    }
