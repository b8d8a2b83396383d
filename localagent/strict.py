"""The pydantic base for data that comes from outside: a catalog entry, a task file's table,
a tool call's arguments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Unknown fields are refused, so a typo fails loudly, naming the field, instead of being
    ignored; values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
