"""One pagination contract for every list route: `offset` (>= 0) and `limit` (1..200, default 50)."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int


def page_params(
    offset: Annotated[int, Query(ge=0, description="How many items to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many items.")] = 50,
) -> Page:
    return Page(offset=offset, limit=limit)


PageDep = Annotated[Page, Depends(page_params)]
