"""Canaries for the F8 / F4 scans: a unique string in every free-text personal field of intake,
and the helpers that look for them in every row of a database."""

import uuid
from typing import Any

from sqlalchemy import MetaData, select

# canary -> the category of the field it goes into: every free-text personal field of the intake
# contract (birth_year, nationality and languages are numbers and codes; they carry no canary).
FIELDS = {
    "display_name": "identity",
    "municipality": "contact",
    "phone": "contact",
    "relation": "household",
    "migration": "migration_history",
    "need": "needs",
    "health": "health",
    "vulnerability": "vulnerabilities",
    "plans": "intentions",
    "barriers": "intentions",
    "case_notes": "case_notes",
}


def make_canaries(prefix: str = "cnry") -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {field: f"{prefix}{field.replace('_', '')}{tag}" for field in FIELDS}


def client_body(c: dict[str, str]) -> dict[str, Any]:
    """A full intake record whose every personal field holds its own canary."""
    return {
        "display_name": c["display_name"],
        "birth_year": 1990,
        "nationality": "GN",
        "languages": ["fr"],
        "municipality": c["municipality"],
        "phone": c["phone"],
        "household": [{"relation": c["relation"], "birth_year": 2016}],
        "migration_history": {"route": c["migration"], "years_in_country": 3},
        "needs": [c["need"]],
        "health": {"condition": c["health"]},
        "vulnerabilities": [c["vulnerability"]],
        "intentions": {"plans": c["plans"], "barriers": [c["barriers"]]},
        "case_notes": c["case_notes"],
    }


def canaries_of(c: dict[str, str], categories: list[str]) -> set[str]:
    """The canaries of the fields in `categories`."""
    return {value for field, value in c.items() if FIELDS[field] in categories}


def rows_of(engine: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table of a database: (table, {column: value as stored})."""
    metadata = MetaData()
    metadata.reflect(engine)
    rows: list[tuple[str, dict[str, Any]]] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                rows.append((table.name, dict(row._mapping)))
    return rows


def as_text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")  # every byte, so nothing hides from the scan
    return str(value)


def database_text(engine: Any) -> str:
    """Every value of every row of every table, as text."""
    return "\n".join(as_text(v) for _, row in rows_of(engine) for v in row.values())
