"""One paging contract for every list route, and the bounded integers every position takes.

Every integer a caller sends towards a query is bounded here, once: a list route's `offset` and
`limit`, and the audit log's entry indexes and tree sizes. Unbounded, a huge value passes
validation and fails in the database as a 500 (SQLite holds 64 bits; a Postgres INTEGER column,
such as the audit log's index, 32); bounded, it is a 422 like any other bad input. The bound is
the largest value of a database INTEGER, far past the end of any list, where a page is simply
empty.
"""

from dataclasses import dataclass
from typing import Annotated

import annotated_types
from fastapi import Depends, Query
from pydantic import Field

# 2**31 - 1: what a database INTEGER column holds, on SQLite and Postgres alike (positions are
# compared with such columns: the audit log's `index`).
MAX_POSITION = 2**31 - 1
MAX_PAGE = 200

# A position in a list or log: 0 is the first item.
Position = Annotated[int, annotated_types.Ge(0), annotated_types.Le(MAX_POSITION)]
# How many items there are (a Merkle tree's size): at least one.
Size = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_POSITION)]


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int


def page_params(
    offset: Annotated[
        Position, Query(description="How many items to skip; past the end, the page is empty.")
    ] = 0,
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description=f"At most this many items (1 to {MAX_PAGE}).")
    ] = 50,
) -> Page:
    return Page(offset=offset, limit=limit)


PageDep = Annotated[Page, Depends(page_params)]

# The `count` of every page response (`XsPublic{data, count}`).
PageCount = Annotated[
    int,
    Field(ge=0, description="How many items match in all, across every page, not only this one."),
]

# Audit log pages are longer: its entries are small, and verifiers read the log in bulk.
MAX_LOG_PAGE = 1000
LogPageSize = Annotated[int, annotated_types.Ge(1), annotated_types.Le(MAX_LOG_PAGE)]
