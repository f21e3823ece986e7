"""Field helpers and types the API schemas share.

A partial update (`XUpdate`) says per field what `null` means, and its schema says the same: a
field whose column may be empty is nullable there, and `null` clears it; any other field may be
left out but never sent as `null` (a list is cleared with `[]`), which is a 422 instead of a row
the service cannot read back.

Dates and times are ISO 8601 text, as the schema says (`format: date`, `date-time`): pydantic
alone would also take a number as a Unix timestamp (`"to": 0` as 1970-01-01), which the schema
does not allow and no client means.
"""

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator, Field

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _no_default(schema: dict[str, Any]) -> None:
    # The placeholder None is not a value a caller may send: the schema shows no default.
    schema.pop("default", None)


def omittable(**constraints: Any) -> Any:
    """A field of a partial update that may be left out but is never `null`."""
    return Field(default=None, json_schema_extra=_no_default, **constraints)


def _iso_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.fullmatch(value):
        return value
    raise ValueError("must be a date as YYYY-MM-DD")


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE.match(value) and len(value) > 10:
        return value
    raise ValueError("must be a date and time as in RFC 3339, e.g. 2026-01-31T23:00:00Z")


# A calendar day, `YYYY-MM-DD`.
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
# A moment with its UTC offset, RFC 3339.
IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime)]
