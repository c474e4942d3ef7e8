"""Types survive: input columns round-trip exactly; result columns get inferred types."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import zoneinfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

import batchkit as bk

# -- input round trip: frame -> store -> items() / results() / the function's rows --------

_I64 = (-(2**63), 2**63 - 1)
_DATETIME_NS = st.integers(-(2**62), 2**62)  # ns since the epoch, years 1823..2116
_DATETIMES = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31))
_TEXT = st.text(max_size=12)

#: (Polars dtype, strategy of Python values, dtype to cast to afterwards or None)
COLUMN_KINDS: dict[str, tuple[pl.DataType, st.SearchStrategy, pl.DataType | None]] = {
    "Int8": (pl.Int8(), st.integers(-(2**7), 2**7 - 1), None),
    "Int16": (pl.Int16(), st.integers(-(2**15), 2**15 - 1), None),
    "Int32": (pl.Int32(), st.integers(-(2**31), 2**31 - 1), None),
    "Int64": (pl.Int64(), st.integers(*_I64), None),
    "UInt8": (pl.UInt8(), st.integers(0, 2**8 - 1), None),
    "UInt16": (pl.UInt16(), st.integers(0, 2**16 - 1), None),
    "UInt32": (pl.UInt32(), st.integers(0, 2**32 - 1), None),
    "UInt64": (pl.UInt64(), st.integers(0, 2**64 - 1), None),
    "Float32": (pl.Float32(), st.floats(width=32), None),
    "Float64": (pl.Float64(), st.floats(), None),
    "String": (pl.String(), _TEXT, None),
    "Boolean": (pl.Boolean(), st.booleans(), None),
    "Date": (pl.Date(), st.dates(), None),
    "Datetime(us)": (pl.Datetime("us"), _DATETIMES, None),
    "Datetime(ms)": (pl.Int64(), st.integers(-(2**40), 2**40), pl.Datetime("ms")),
    "Datetime(ns)": (pl.Int64(), _DATETIME_NS, pl.Datetime("ns")),
    "Datetime(us, UTC)": (pl.Int64(), st.integers(-(2**50), 2**50), pl.Datetime("us", "UTC")),
    "Datetime(ns, Asia/Kolkata)": (pl.Int64(), _DATETIME_NS,
                                   pl.Datetime("ns", "Asia/Kolkata")),
    "Time": (pl.Int64(), st.integers(0, 86_400 * 10**9 - 1), pl.Time()),
    "Duration(us)": (pl.Duration("us"),  # Python timedeltas reach beyond Int64 microseconds
                     st.timedeltas(min_value=dt.timedelta(days=-10**8),
                                   max_value=dt.timedelta(days=10**8)), None),
    "Duration(ns)": (pl.Int64(), st.integers(*_I64), pl.Duration("ns")),
    "Decimal(12, 3)": (pl.Decimal(12, 3),
                       st.decimals(min_value=-(10**9) + 1, max_value=10**9 - 1, places=3,
                                   allow_nan=False, allow_infinity=False), None),
    "Categorical": (pl.Categorical(), st.sampled_from(["red", "green", "blue", ""]), None),
    "Enum": (pl.Enum(["low", "mid", "high"]), st.sampled_from(["low", "mid", "high"]), None),
    "List(Int32)": (pl.List(pl.Int32()),
                    st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=4), None),
    "List(List(String))": (pl.List(pl.List(pl.String())),
                           st.lists(st.lists(_TEXT, max_size=2), max_size=3), None),
    "Struct": (pl.Struct({"a": pl.Int64(), "b": pl.String(), "c": pl.List(pl.Float64())}),
               st.fixed_dictionaries({"a": st.none() | st.integers(*_I64),
                                      "b": st.none() | _TEXT,
                                      "c": st.none() | st.lists(st.floats(), max_size=3)}),
               None),
    "Array(Int16, 2)": (pl.Array(pl.Int16(), 2),
                        st.lists(st.integers(-(2**15), 2**15 - 1), min_size=2, max_size=2),
                        None),
    "Binary": (pl.Binary(), st.binary(max_size=12), None),
}


@st.composite
def frames(draw) -> pl.DataFrame:
    """A frame with an Int64 key column ``k`` and 1-4 columns of random kinds, nulls included."""
    n = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.sampled_from(sorted(COLUMN_KINDS)), min_size=1, max_size=4,
                          unique=True))
    columns = [pl.Series("k", range(n), dtype=pl.Int64)]
    for i, kind in enumerate(kinds):
        dtype, values, cast = COLUMN_KINDS[kind]
        data = draw(st.lists(st.none() | values, min_size=n, max_size=n))
        series = pl.Series(f"c{i}", data, dtype=dtype, strict=True)
        columns.append(series.cast(cast) if cast is not None else series)
    return pl.DataFrame(columns)


def _round_trip(frame: pl.DataFrame) -> None:
    batch = bk.Batch("rt", store=":memory:")
    try:
        assert batch.add(frame, key="k") == frame.height
        assert_frame_equal(batch.items().select(frame.columns), frame)
        seen: list[dict] = []
        report = batch.run(seen.append, backend="sequential", progress=False)
        assert report.succeeded == frame.height
        # the function received the frame's rows as Python values (datetime and
        # timedelta hold microseconds, so compare with the frame's own Python rows)
        assert_frame_equal(pl.DataFrame(seen, schema=frame.schema).sort("k"),
                           pl.DataFrame(frame.to_dicts(), schema=frame.schema))
        assert_frame_equal(batch.results(), frame)
    finally:
        batch.close()


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_input_types_round_trip(frame):
    """Any mix of column types and nulls comes back from the store with equal dtypes and values."""
    _round_trip(frame)


@pytest.mark.parametrize("kind", sorted(COLUMN_KINDS))
def test_each_type_round_trips_with_edge_values(kind):
    """Every column kind round-trips its extreme values and nulls exactly."""
    dtype, _, cast = COLUMN_KINDS[kind]
    edges = {
        "Int8": [-(2**7), 2**7 - 1], "Int16": [-(2**15), 2**15 - 1],
        "Int32": [-(2**31), 2**31 - 1], "Int64": list(_I64),
        "UInt8": [0, 2**8 - 1], "UInt16": [0, 2**16 - 1], "UInt32": [0, 2**32 - 1],
        "UInt64": [0, 2**64 - 1],
        "Float32": [float("nan"), float("-inf")], "Float64": [-0.0, 1e308],
        "String": ["", "ünï\x00cödé"], "Boolean": [True, False],
        "Date": [dt.date(1, 1, 1), dt.date(9999, 12, 31)],
        "Datetime(us)": [dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59, 999999)],
        "Datetime(ms)": [-1, 2**40], "Datetime(ns)": [-1, 2**62 + 7],
        "Datetime(us, UTC)": [-1, 0], "Datetime(ns, Asia/Kolkata)": [1, 2**62],
        "Time": [0, 86_400 * 10**9 - 1],
        "Duration(us)": [dt.timedelta(days=-999, microseconds=1), dt.timedelta(0)],
        "Duration(ns)": [-(2**62), 1],
        "Decimal(12, 3)": [decimal.Decimal("-999999999.999"), decimal.Decimal("0.001")],
        "Categorical": ["blue", ""], "Enum": ["high", "low"],
        "List(Int32)": [[], [None, 2**31 - 1]], "List(List(String))": [[[]], [["a"], []]],
        "Struct": [{"a": None, "b": None, "c": None}, {"a": 1, "b": "x", "c": [math.inf]}],
        "Array(Int16, 2)": [[-(2**15), 2**15 - 1], [0, 0]],
        "Binary": [b"", b"\x00\xff"],
    }[kind]
    series = pl.Series("c0", [*edges, None], dtype=dtype, strict=True)
    frame = pl.DataFrame([pl.Series("k", [1, 2, 3]), series.cast(cast) if cast else series])
    _round_trip(frame)


def test_all_null_column_round_trips():
    """A column of type Null (all values missing) round-trips."""
    _round_trip(pl.DataFrame({"k": [1, 2], "nothing": [None, None]}))


# -- result type inference ---------------------------------------------------------------


def _run(make_batch, outputs, *, chunk_size=100, backend="sequential", name="res"):
    """Run a function returning ``outputs[i]`` for row ``i`` (one chunk by default)."""
    batch = make_batch(name)
    batch.add(pl.DataFrame({"i": list(range(len(outputs)))}), key="i")

    def produce(row):
        value = outputs[row["i"]]
        if isinstance(value, BaseException):
            raise value
        return value

    batch.run(produce, backend=backend, chunk_size=chunk_size, workers=1,
              retries=bk.RetryPolicy(retries=0), progress=False)
    return batch


def _status(batch):
    return batch.items().select("i", "_status", "_error_type", "_error_message").rows()


def test_scalar_result_types_are_inferred(make_batch):
    """int, float, str, bool, bytes, date, datetime, time and Decimal results get their types."""
    out = {"int": 1, "float": 1.5, "str": "x", "bool": True, "bytes": b"\x01",
           "date": dt.date(2024, 2, 29), "datetime": dt.datetime(2024, 1, 1, 12, 30),
           "time": dt.time(8, 15), "dec": decimal.Decimal("3.25")}
    batch = _run(make_batch, [out, dict.fromkeys(out)])
    results = batch.results()
    assert results.schema == pl.Schema({
        "i": pl.Int64, "int": pl.Int64, "float": pl.Float64, "str": pl.String,
        "bool": pl.Boolean, "bytes": pl.Binary, "date": pl.Date,
        "datetime": pl.Datetime("us"), "time": pl.Time, "dec": pl.Decimal(38, 2)})
    assert results.row(0, named=True) == {"i": 0, **out}
    assert results.row(1, named=True) == {"i": 1, **dict.fromkeys(out)}


def test_timezone_aware_datetime_keeps_the_instant(make_batch):
    """A tz-aware datetime result is stored as the same instant."""
    at = dt.datetime(2024, 6, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    batch = _run(make_batch, [{"at": at}])
    got = batch.results()["at"][0]
    assert got.tzinfo is not None
    assert got == at


def test_timedelta_result_fails_the_row_and_batch_stays_readable(make_batch):
    """A timedelta result fails its row with ResultTypeError; the batch stays readable."""
    batch = _run(make_batch, [{"took": dt.timedelta(seconds=90)}, {"took": None},
                              {"took": [dt.timedelta(1)]}, dt.timedelta(2)])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["failed", "done", "failed", "failed"]
    assert {r[2] for r in rows if r[1] == "failed"} == {"ResultTypeError"}
    assert "timedelta" in rows[0][3]
    assert batch.results()["i"].to_list() == [1]


def test_int_and_float_widen_to_float(make_batch):
    """int and float in one column widen to Float64 (documented), in one chunk or across chunks."""
    for chunk_size, name in ((None, "one"), (1, "many")):
        batch = _run(make_batch, [{"v": 1}, {"v": 2.5}, {"v": 3}], chunk_size=chunk_size,
                     name=name)
        assert batch.counts()["done"] == 3
        assert batch.results()["v"].dtype == pl.Float64
        assert batch.results()["v"].to_list() == [1.0, 2.5, 3.0]


def test_int_column_widens_when_a_later_run_returns_floats(make_batch):
    """A stored Int64 column widens to Float64 when a later chunk returns floats."""
    batch = _run(make_batch, [{"v": 1}, {"v": 2}], chunk_size=1)
    batch.run(lambda row: {"v": 0.5}, only=pl.col("i") == 1, backend="sequential",
              progress=False)
    assert batch.results()["v"].to_list() == [1.0, 0.5]


def test_drift_in_one_chunk_fails_only_the_drifting_row(make_batch):
    """str after int in one chunk: that row alone fails, naming column, row and both types."""
    batch = _run(make_batch, [{"v": 1}, {"v": "two"}, {"v": 3}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["done", "failed", "done"]
    assert rows[1][2] == "TypeDriftError"
    message = rows[1][3]
    assert "'v'" in message and "'1'" in message
    assert "Int64" in message and "String" in message
    assert batch.results()["v"].to_list() == [1, 3]


def test_bool_and_int_are_drift_not_widening(make_batch):
    """bool in an int column is drift (not silently 1/0)."""
    batch = _run(make_batch, [{"v": 5}, {"v": True}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["done", "failed"]
    assert rows[1][2] == "TypeDriftError"
    assert "Boolean" in rows[1][3] and "Int64" in rows[1][3]
    assert batch.results()["v"].dtype == pl.Int64


@pytest.mark.parametrize("backend", ["sequential", "threads"])
@pytest.mark.parametrize(("first", "later"), [(1, "x"), ("x", 1), (1, True)],
                         ids=["int-then-str", "str-then-int", "int-then-bool"])
def test_drift_across_chunks_fails_only_the_drifting_row(make_batch, backend, first, later):
    """A value whose type differs from an earlier chunk's fails alone; nothing is coerced."""
    batch = _run(make_batch, [{"v": first}, {"v": later}, {"v": first}], chunk_size=1,
                 backend=backend)
    rows = _status(batch)
    assert [r[1] for r in rows] == ["done", "failed", "done"]
    assert rows[1][2] == "TypeDriftError"
    assert "'v'" in rows[1][3]
    assert batch.results()["v"].to_list() == [first, first]
    assert type(batch.results()["v"][0]) is type(first)


def test_drift_against_the_stored_column_in_a_later_run(make_batch):
    """A later run returning str for a stored Int64 column fails those rows, keeps the column."""
    batch = _run(make_batch, [{"v": 1}, {"v": 2}])
    batch.run(lambda row: {"v": "text"}, only=pl.col("i") == 1, retries=0,
              backend="sequential", progress=False)
    rows = _status(batch)
    assert [r[1] for r in rows] == ["done", "failed"]
    assert rows[1][2] == "TypeDriftError"
    assert "'v'" in rows[1][3] and "Int64" in rows[1][3] and "String" in rows[1][3]
    assert batch.results()["v"].dtype == pl.Int64


def test_nested_dicts_become_structs_with_union_of_keys(make_batch):
    """Dicts become one Struct column holding every key any row returned."""
    batch = _run(make_batch, [{"s": {"x": 1, "inner": {"a": "p"}}},
                              {"s": {"y": "b", "inner": {"b": 2.5}}}, {"s": None}])
    results = batch.results()
    dtype = results["s"].dtype
    assert isinstance(dtype, pl.Struct)
    assert {f.name for f in dtype.fields} == {"x", "y", "inner"}
    assert results["s"].to_list() == [
        {"x": 1, "y": None, "inner": {"a": "p", "b": None}},
        {"x": None, "y": "b", "inner": {"a": None, "b": 2.5}},
        None,
    ]


def test_structs_widen_across_chunks(make_batch):
    """A later chunk with more struct keys widens the stored struct column."""
    batch = _run(make_batch, [{"s": {"x": 1}}, {"s": {"x": 2, "y": "b"}}], chunk_size=1)
    assert batch.counts()["done"] == 2
    assert batch.results()["s"].to_list() == [{"x": 1, "y": None}, {"x": 2, "y": "b"}]


def test_list_results_become_list_columns(make_batch):
    """Lists become List columns; ints and floats inside widen; nulls inside are kept."""
    batch = _run(make_batch, [{"tags": ["a", "b"], "nums": [1, 2.5]},
                              {"tags": [], "nums": [None]}])
    results = batch.results()
    assert results["tags"].dtype == pl.List(pl.String)
    assert results["nums"].dtype == pl.List(pl.Float64)
    assert results["tags"].to_list() == [["a", "b"], []]
    assert results["nums"].to_list() == [[1.0, 2.5], [None]]


def test_list_mixing_types_fails_the_row(make_batch):
    """A list mixing str and int fails its row with TypeDriftError."""
    batch = _run(make_batch, [{"v": [1, "a"]}, {"v": [2]}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["failed", "done"]
    assert rows[0][2] == "TypeDriftError"
    assert "'v'" in rows[0][3]


def test_dates_and_datetimes_results(make_batch):
    """date and datetime results become Date and Datetime columns."""
    batch = _run(make_batch, [{"d": dt.date(2020, 1, 2), "t": dt.datetime(2020, 1, 2, 3, 4)},
                              {"d": None, "t": dt.datetime(1999, 12, 31)}])
    results = batch.results()
    assert results["d"].to_list() == [dt.date(2020, 1, 2), None]
    assert results["t"].dtype == pl.Datetime("us")
    assert results["t"].to_list() == [dt.datetime(2020, 1, 2, 3, 4), dt.datetime(1999, 12, 31)]


def test_first_chunk_all_null_then_values(make_batch):
    """A column that is null in the first chunk gets its type from a later chunk."""
    batch = _run(make_batch, [{"v": None}, {"v": 7}], chunk_size=1)
    assert batch.counts()["done"] == 2
    assert batch.results()["v"].dtype == pl.Int64
    assert batch.results()["v"].to_list() == [None, 7]


def test_scalar_result_is_stored_under_function_name(make_batch):
    """A scalar result goes into a column named after the function."""
    batch = make_batch("scalar")
    batch.add(pl.DataFrame({"n": [1, 2]}), key="n")

    def plus_ten(row):
        return row["n"] + 10

    batch.run(plus_ten, backend="sequential", progress=False)
    assert batch.results()["plus_ten"].to_list() == [11, 12]


def test_none_result_is_done_without_columns(make_batch):
    """A None result marks the row done and adds no column."""
    batch = _run(make_batch, [None, None])
    assert batch.counts()["done"] == 2
    assert batch.results().columns == ["i"]


@pytest.mark.parametrize("value", [[1, 2], (1,), {1, 2}, object()],
                         ids=["list", "tuple", "set", "object"])
def test_non_dict_non_scalar_result_fails_the_row(make_batch, value):
    """A list/tuple/set/object result fails that row alone with ResultTypeError."""
    batch = _run(make_batch, [value, {"ok": 1}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["failed", "done"]
    assert rows[0][2] == "ResultTypeError"
    assert "return a dict" in rows[0][3]


def test_unstorable_value_in_dict_fails_the_row(make_batch):
    """A dict value of an unsupported type fails the row with ResultTypeError naming the column."""
    batch = _run(make_batch, [{"v": object()}, {"v": 1}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["failed", "done"]
    assert rows[0][2] == "ResultTypeError"
    assert "'v'" in rows[0][3]


@pytest.mark.parametrize("key", ["_status", "_private", 3])
def test_reserved_or_non_string_result_keys_fail_the_row(make_batch, key):
    """Result keys starting with '_' (or not strings) fail that row alone with ResultKeyError."""
    batch = _run(make_batch, [{key: 1, "ok": 1}, {"ok": 2}])
    rows = _status(batch)
    assert [r[1] for r in rows] == ["failed", "done"]
    assert rows[0][2] == "ResultKeyError"
    assert repr(key) in rows[0][3]
    assert batch.items()["_status"].to_list() == ["failed", "done"]
    assert batch.results().columns == ["i", "ok"]


def test_result_column_named_like_an_input_replaces_it_in_results(make_batch):
    """A returned column named like an input shows in results(); the input stays stored."""
    batch = make_batch("shadow")
    batch.add(pl.DataFrame({"n": [1, 2], "name": ["a", "b"]}), key="n")
    batch.run(lambda row: {"name": row["name"].upper()}, backend="sequential", progress=False)
    assert batch.results()["name"].to_list() == ["A", "B"]
    assert batch.failed().height == 0
