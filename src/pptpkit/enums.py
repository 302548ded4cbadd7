"""Helpers for the open enumerations used for protocol numbers and codes."""

from __future__ import annotations

from enum import IntEnum
from typing import TypeVar

E = TypeVar("E", bound=IntEnum)


def open_enum(cls: type[E], value: int) -> E | int:
    """The member of ``cls`` for ``value``, or ``value`` itself when the enum does not know it.

    Peers send codes newer than our tables; they must survive decoding so that they can be
    logged, re-encoded unchanged or rejected with their raw value.
    """
    try:
        return cls(value)
    except ValueError:
        return value


def enum_name(value: int) -> str:
    """A readable name for an open-enum value: the member name or the bare number."""
    return value.name if isinstance(value, IntEnum) else str(value)
