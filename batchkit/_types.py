"""From the dicts a function returns to typed Polars columns — without silent corruption.

Polars' own inference truncates (``[1, True]`` becomes ``Int64``; dicts with other
keys lose fields), so batchkit infers each result column itself:

* int, float, str, bool, bytes, date, datetime, time and Decimal map to their
  Polars types; lists to ``List``; dicts to ``Struct`` (the union of keys).
  A ``timedelta`` fails its row with ``ResultTypeError`` (DuckDB stores it as an
  INTERVAL that Polars cannot read back): return ``td.total_seconds()`` instead.
* **Widening** (documented): int and float in one column become ``Float64``;
  structs with different keys become one struct with every key; ``None`` is null
  in any column.
* Any other mix (say str in one row, int in another, or bool and int) is
  *drift*: the column keeps the type of its first non-null value and each row
  whose value does not fit fails alone with a ``TypeDriftError`` naming the
  column, the row and both types.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

import polars as pl
from polars.datatypes import DataTypeClass

__all__ = [
    "RESERVED_PREFIX",
    "ResultError",
    "build_values",
    "dtype_name",
    "merge_dtypes",
    "normalize_result",
]

RESERVED_PREFIX = "_"

#: a Polars dtype, as an instance (``pl.Int64()``) or a class (``pl.Int64``)
DType = pl.DataType | DataTypeClass

_SCALAR_DTYPES: dict[type, DType] = {
    bool: pl.Boolean(),
    int: pl.Int64(),
    float: pl.Float64(),
    str: pl.String(),
    bytes: pl.Binary(),
    dt.date: pl.Date(),
    dt.time: pl.Time(),
}
_NULL = pl.Null()


class ResultError(Exception):
    """A row's result cannot be stored (internal: becomes that row's error)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def dtype_name(dtype: DType) -> str:
    """A short readable name of a Polars dtype (``Int64``, ``List(String)``)."""
    return str(dtype)


def normalize_result(out: Any, fn_name: str) -> dict[str, Any]:
    """Turn what the function returned into a dict of new columns.

    A dict is kept; ``None`` means no new columns; a scalar is stored under the
    function's name. Anything else is a row error telling what to return.
    """
    if type(out) is dict:
        return out
    if out is None:
        return {}
    if isinstance(out, dict):
        return dict(out)
    if type(out) in _SCALAR_DTYPES or isinstance(out, (dt.datetime, decimal.Decimal)):
        return {fn_name: out}
    raise ResultError(
        "ResultTypeError",
        f"{fn_name} returned {type(out).__name__}; return a dict of new columns "
        f"(e.g. {{'{fn_name}': value}}) or a scalar",
    )


def _dtype_of(value: Any) -> DType:
    """The Polars dtype of one Python value (raises ResultError on a mix inside it)."""
    if value is None:
        return _NULL
    kind = type(value)
    found = _SCALAR_DTYPES.get(kind)
    if found is not None:
        return found
    if isinstance(value, dt.datetime):
        tz = value.tzinfo
        return pl.Datetime("us", str(tz) if tz is not None else None)
    if isinstance(value, decimal.Decimal):
        return pl.Decimal(38, max(0, -value.as_tuple().exponent))  # type: ignore[operator]
    if isinstance(value, bool):
        return pl.Boolean()
    if isinstance(value, int):
        return pl.Int64()
    if isinstance(value, float):
        return pl.Float64()
    if isinstance(value, str):
        return pl.String()
    if isinstance(value, dict):
        if not value:
            return _NULL
        return pl.Struct({str(k): _dtype_of(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        inner: DType = _NULL
        for item in value:
            merged = merge_dtypes(inner, _dtype_of(item))
            if merged is None:
                raise ResultError(
                    "TypeDriftError",
                    f"a list mixes {dtype_name(inner)} and {dtype_name(_dtype_of(item))}",
                )
            inner = merged
        return pl.List(inner)
    raise ResultError(
        "ResultTypeError",
        f"values of type {kind.__name__} cannot be stored; convert them to str, "
        "numbers, dates, lists or dicts",
    )


def merge_dtypes(a: DType, b: DType) -> DType | None:
    """The dtype that holds values of both ``a`` and ``b``, or None if they conflict.

    Example:
        >>> merge_dtypes(pl.Int64(), pl.Float64())
        Float64
        >>> merge_dtypes(pl.String(), pl.Int64()) is None
        True
    """
    if a == b:
        return a
    if a == _NULL:
        return b
    if b == _NULL:
        return a
    numeric = {pl.Int64(), pl.Float64()}
    if a in numeric and b in numeric:
        return pl.Float64()
    if isinstance(a, pl.List) and isinstance(b, pl.List):
        inner = merge_dtypes(a.inner, b.inner)
        return None if inner is None else pl.List(inner)
    if isinstance(a, pl.Struct) and isinstance(b, pl.Struct):
        fields = {f.name: f.dtype for f in a.fields}
        for f in b.fields:
            if f.name in fields:
                merged = merge_dtypes(fields[f.name], f.dtype)
                if merged is None:
                    return None
                fields[f.name] = merged
            else:
                fields[f.name] = f.dtype
        return pl.Struct(fields)
    if isinstance(a, pl.Decimal) and isinstance(b, pl.Decimal):
        return pl.Decimal(38, max(a.scale or 0, b.scale or 0))
    return None


def has_null_leaf(dtype: DType) -> bool:
    """Whether a dtype still has an unknown (Null) part, like ``List(Null)``."""
    if dtype == _NULL:
        return True
    if isinstance(dtype, pl.List):
        return has_null_leaf(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(has_null_leaf(f.dtype) for f in dtype.fields)
    return False


def fill_null_leaves(dtype: DType) -> DType:
    """Replace unknown parts by String (a list that was always empty: ``List(String)``)."""
    if dtype == _NULL:
        return pl.String()
    if isinstance(dtype, pl.List):
        return pl.List(fill_null_leaves(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: fill_null_leaves(f.dtype) for f in dtype.fields})
    return dtype


def _column_dtype(
    name: str, values: Sequence[Any], keys: Sequence[str], errors: dict[int, ResultError]
) -> DType:
    """Infer one column's dtype; rows whose value drifts go into ``errors``."""
    kinds = set(map(type, values))
    kinds.discard(type(None))
    if not kinds:
        return _NULL
    if len(kinds) == 1:
        only = next(iter(kinds))
        if only in _SCALAR_DTYPES:
            return _SCALAR_DTYPES[only]
    elif kinds == {int, float}:
        return pl.Float64()
    column: DType = _NULL
    for i, value in enumerate(values):
        if value is None or i in errors:
            continue
        try:
            this = _dtype_of(value)
        except ResultError as exc:
            errors[i] = ResultError(exc.type_name, f"column {name!r}: {exc}")
            continue
        merged = merge_dtypes(column, this)
        if merged is None:
            errors[i] = ResultError(
                "TypeDriftError",
                f"column {name!r} changed type at row {keys[i]!r}: earlier rows gave "
                f"{dtype_name(column)}, this row gave {dtype_name(this)} ({value!r:.80}). "
                "Return one type per column (convert in your function), or return None.",
            )
            continue
        column = merged
    return column


def build_values(
    results: Sequence[dict[str, Any]], keys: Sequence[str]
) -> tuple[dict[str, pl.Series], dict[int, ResultError]]:
    """Build typed result columns from per-row dicts.

    Returns the columns (same length as ``results``; rows that fail are null) and
    the rows that fail because of their values (bad keys, drifting types).
    """
    names: dict[str, None] = {}
    last: Any = None
    for out in results:
        if out and out.keys() != last:
            names.update(dict.fromkeys(out))
            last = out.keys()
    errors: dict[int, ResultError] = {}
    bad_names = [k for k in names if not isinstance(k, str) or k.startswith(RESERVED_PREFIX)]
    for bad in bad_names:
        del names[bad]
        for i, out in enumerate(results):
            if bad in out and i not in errors:
                errors[i] = ResultError(
                    "ResultKeyError",
                    f"result keys must be strings not starting with {RESERVED_PREFIX!r} "
                    f"(batchkit's own columns); got {bad!r}. Rename that key.")
    dtypes: dict[str, DType] = {}
    columns: dict[str, list[Any]] = {}
    for name in names:
        values = [out.get(name) for out in results]
        columns[name] = values
        dtypes[name] = _column_dtype(name, values, keys, errors)
    series: dict[str, pl.Series] = {}
    for name, values in columns.items():
        if errors:
            values = [None if i in errors else v for i, v in enumerate(values)]
        series[name] = pl.Series(name, values, dtype=dtypes[name], strict=True)
    return series, errors
