"""The base of every params block: unknown keys are an error, values are frozen, and no field has a default.

The values live in `params.yaml` alone; the classes built on `Strict` say only what is allowed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """A params block read from `params.yaml`: every key required, no unknown key, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
