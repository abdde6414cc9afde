"""Strict numbers for every parameter model: suite fields, technique configs, workload params.

pydantic's lax mode reads ``true`` as 1 for an ``int`` field, and accepts ``.inf`` and
``.nan`` for a ``float``; in a suite both are mistakes that would be measured as if meant.
:class:`StrictNumbers` is the base of every model a suite fills in (``harness.Config`` for
plugins, the suite format's models): a boolean given where a number is expected, at any
depth of lists and mappings, and a non-finite float are validation errors. Numbers written
as strings are still read (YAML 1.1 reads ``1e-4`` as a string).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

_SEQUENCES = (list, tuple, set, frozenset, Sequence)


class StrictNumbers(BaseModel):
    """A model whose numeric fields refuse booleans and non-finite floats."""

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _bool_where_number(value, field.annotation):
            raise PydanticCustomError(
                "bool_is_not_a_number",
                "booleans are not numbers: give a number (true/false are booleans in YAML)",
            )
        return value


def _bool_where_number(value: Any, annotation: Any) -> bool:
    """Whether ``value`` holds a boolean where ``annotation`` wants a number and no bool."""
    if isinstance(value, bool):
        return _takes_number(annotation) and not _takes_bool(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType, typing.Annotated):
        if origin is typing.Annotated:
            args = args[:1]
        return any(_bool_where_number(value, a) for a in args) and not any(
            _admits(value, a) for a in args
        )
    if isinstance(value, Mapping) and origin in (dict, Mapping) and len(args) == 2:
        return any(_bool_where_number(v, args[1]) for v in value.values())
    if isinstance(value, (list, tuple)) and origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return any(_bool_where_number(v, a) for v, a in zip(value, args, strict=False))
        return bool(args) and any(_bool_where_number(v, args[0]) for v in value)
    return False


def _admits(value: Any, annotation: Any) -> bool:
    """Whether a union member takes the container ``value`` with its booleans as they are
    (``list[bool]`` beside ``list[int]``)."""
    if _takes_bool(annotation):
        return True
    origin = typing.get_origin(annotation)
    if isinstance(value, Mapping):
        shaped = origin in (dict, Mapping)
    else:
        shaped = isinstance(value, (list, tuple)) and origin in _SEQUENCES
    return shaped and not _bool_where_number(value, annotation)


def _takes_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(
            isinstance(a, (int, float)) and not isinstance(a, bool) for a in _args(annotation)
        )
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return any(_takes_number(a) for a in _args(annotation))
    return False


def _takes_bool(annotation: Any) -> bool:
    if annotation in (bool, Any, object):
        return True
    if typing.get_origin(annotation) is typing.Literal:
        return any(isinstance(a, bool) for a in _args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, typing.Annotated):
        return any(_takes_bool(a) for a in _args(annotation))
    return False


def _args(annotation: Any) -> tuple[Any, ...]:
    args = typing.get_args(annotation)
    return args[:1] if typing.get_origin(annotation) is typing.Annotated else args
