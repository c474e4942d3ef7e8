"""Failure clusters: failed rows grouped into patterns, and what their inputs share.

Pure functions over frames: ``cluster_failures(batch.items(), inputs)`` groups the
failed rows by (step, error type, normalised message). Each cluster says how many
rows it holds, when it was first and last seen, a few example keys, and which input
values are over-represented among its rows ("82% of Timeout errors have country =
'BR' (vs 20% overall)"). A cluster can be re-run: ``cluster.expr`` selects its rows.

Messages are normalised by ``normalise_message``: numbers, ids, hashes, quoted
values, e-mail addresses, times and the variable parts of URLs become placeholders,
so "user 42 not found" and "user 7 not found" are one pattern.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload
from urllib.parse import urlsplit

import polars as pl

from ._errors import ConfigError

__all__ = ["Cluster", "FailureClusters", "OverRepresented", "cluster_failures",
           "normalise_message"]

# -- normalising messages ------------------------------------------------------------------

# Every rule starts where no letter or digit precedes (checked once, up front, which
# makes the pass about twice as fast); backtick quotes may start anywhere.
_PATTERN = re.compile(r"(?<![A-Za-z0-9])(?=[\w'\"%+.\-])(?:" + "|".join((
    # a URL: scheme://… up to white space, quotes or brackets (normalised by _url)
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{}]+)",
    r"(?P<email>\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)",
    # 'single' (apostrophes inside words do not open or close), "double" (with \"
    # escapes)
    r"(?P<str>(?<!\w)'(?:[^'\n]|'(?=\w))*'(?!\w)|(?<!\w)\"(?:[^\"\\\n]|\\.)*\")",
    r"(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)",
    r"(?P<time>\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
    r"(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w:])|\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b)",
    # 0x… or 8+ hex digits with at least one digit and one letter (hashes, hex ids)
    r"(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])"
    r"[0-9a-fA-F]{8,}\b)",
    # a word of 8+ letters, digits, _ or - with at least two digits (req_8fJ2kL93)
    r"(?P<token>\b(?=(?:[A-Za-z_\-]*\d){2})(?=[\w\-]*[A-Za-z])[\w\-]{8,}\b)",
    # a number not glued to a preceding letter or digit (v1, utf8, sha256 stay)
    r"(?P<n>(?<![A-Za-z0-9.])\d+(?:\.\d+)*)",
)) + r")|(?P<tick>`[^`\n]*`)")
_PLACEHOLDER = {"email": "<email>", "str": "<str>", "tick": "<str>", "uuid": "<id>",
                "time": "<time>", "hex": "<id>", "token": "<id>", "n": "<n>"}
_REPEATED = re.compile(
    r"([\[({]\s*)(<(?:n|id|str|email|time|url)>)(?:\s*,\s*\2)+(\s*[\])}])")
_SPACE = re.compile(r"\s+")
_VERSION_SEGMENT = re.compile(r"(?i)v\d+(?:\.\d+)*")
_VARIABLE_CHARS = frozenset("0123456789%@:,;~+=")


def _variable_segment(segment: str) -> bool:
    if not segment or _VERSION_SEGMENT.fullmatch(segment):
        return False
    return len(segment) > 40 or any(c in _VARIABLE_CHARS for c in segment)


def _url(url: str) -> str:
    tail = ""
    while url and url[-1] in ".,;:!?":
        url, tail = url[:-1], url[-1] + tail
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<url>" + tail
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    out = f"{parts.scheme.lower()}://{host}" + (":<n>" if port is not None else "")
    out += "/".join("<id>" if _variable_segment(s) else s for s in parts.path.split("/"))
    if parts.query:
        out += "?" + "&".join(p.split("=", 1)[0] + "=<v>" if "=" in p else "<v>"
                              for p in parts.query.split("&"))
    if parts.fragment:
        out += "#<v>"
    return out + tail


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup or "n"
    if kind == "url":
        return _url(match.group())
    return _PLACEHOLDER[kind]


def normalise_message(msg: str) -> str:
    """The pattern of an error message: its variable parts replaced by placeholders.

    One left-to-right pass; where several rules could start at the same place, the
    first of this list wins, and a replaced part is never looked at again:

    1. URLs keep their scheme, host and constant path segments. The port becomes
       ``<n>``; a path segment with a digit (other than a version such as ``v2``) or
       one of ``%@:,;~+=``, or longer than 40 characters, becomes ``<id>``; query
       values and the fragment become ``<v>`` (query keys stay). Trailing ``.,;:!?``
       is not part of the URL. A URL that cannot be parsed becomes ``<url>``.
       (Userinfo is dropped.)
    2. E-mail addresses become ``<email>``.
    3. Quoted values, ``'…'``, ``"…"`` or backticks, become ``<str>`` (an apostrophe
       inside a word such as ``can't`` does not open a quote).
    4. UUIDs, ``0x…`` numbers, runs of 8+ hex digits with a digit and a letter
       (hashes), and words of 8+ letters/digits/``_``/``-`` with at least two digits
       (``req_8fJ2kL93``) become ``<id>``.
    5. ISO dates and times (``2024-05-01``, ``2024-05-01T10:00:00Z``, ``10:00:00``)
       become ``<time>``.
    6. Other numbers (``42``, ``3.5``, ``10.0.0.1``) become ``<n>``, unless glued to a
       preceding letter or digit (``v1``, ``utf8``, ``sha256`` stay); a unit after a
       number stays (``12.5s`` → ``<n>s``).

    Then a bracketed list of one placeholder becomes one followed by ``…``
    (``[1, 2, 3]`` → ``[<n>, …]``) and white space is collapsed. The result depends only on ``msg``.

    Example:
        >>> normalise_message("user 42 not found (request 9f86d081884c7d65)")
        'user <n> not found (request <id>)'
        >>> normalise_message("GET https://api.example.com:8443/v1/users/123?q=acme failed")
        'GET https://api.example.com:<n>/v1/users/<id>?q=<v> failed'
        >>> normalise_message("KeyError: 'country' for bob@example.com, ids [1, 2, 3]")
        'KeyError: <str> for <email>, ids [<n>, …]'
    """
    text = _PATTERN.sub(_replace, msg)
    text = _REPEATED.sub(r"\1\2, …\3", text)
    return _SPACE.sub(" ", text).strip()


# -- clusters ------------------------------------------------------------------------------

_MIN_ROWS = 2  # an over-represented value must be seen on at least this many cluster rows
_MAX_EXAMPLES = 5
_NESTED = (pl.List, pl.Array, pl.Struct, pl.Object)


def _pct(share: float) -> str:
    """A share as a percentage: whole numbers from 1%, one decimal below."""
    return f"{share * 100:.0f}%" if share == 0 or share >= 0.01 else f"{share * 100:.1f}%"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class OverRepresented:
    """An input value seen more often among a cluster's rows than in the whole batch.

    Attributes:
        column: the input column.
        value: the value (None for null).
        rows: cluster rows with this value.
        share_in_cluster: ``rows`` / rows in the cluster.
        share_overall: share of all the batch's rows with this value.
        sentence: the finding in words.

    Example:
        >>> v = OverRepresented("country", "BR", 4, 0.8, 0.2, "80% of ... (vs 20% overall)")
        >>> v.lift
        4.0
    """

    column: str
    value: Any
    rows: int
    share_in_cluster: float
    share_overall: float
    sentence: str

    @property
    def lift(self) -> float:
        """How many times more common the value is in the cluster than overall."""
        return self.share_in_cluster / self.share_overall if self.share_overall else 0.0


@dataclass(frozen=True)
class Cluster:
    """Failed rows that share a step, an error type and a normalised message.

    Attributes:
        id: a short id, stable across calls and runs (hash of step, type and template).
        step: the step the rows failed in (None for a plain function).
        error_type: the exception class name.
        template: the normalised message (see ``normalise_message``).
        count: failed rows in the cluster.
        share: ``count`` / all failed rows.
        first_seen / last_seen: earliest and latest ``_finished_at`` of its rows (and
            of its retried attempts' ends, when the attempt log was given).
        example_keys: keys of up to 5 of its rows (lowest ``_id`` first).
        ids: ``_id`` of every failed row in it, ascending.
        over_represented: input values over-represented among its rows, most telling
            first.
        example_message: one original (redacted) message of the pattern.
        retried: attempts in the attempt log that failed transiently with this
            pattern and were retried (0 without the log). A cluster with ``count == 0``
            holds only such retried errors: nothing of it is left to re-run.

    Example:
        >>> c = Cluster("ab12cd34", None, "KeyError", "<str>", 2, 1.0, None, None,
        ...             ("a", "b"), (1, 2), (), "'x'")
        >>> import polars as pl
        >>> pl.DataFrame({"_id": [1, 2, 3]}).filter(c.expr)["_id"].to_list()
        [1, 2]
    """

    id: str
    step: str | None
    error_type: str | None
    template: str
    count: int
    share: float
    first_seen: datetime | None
    last_seen: datetime | None
    example_keys: tuple[str, ...]
    ids: tuple[int, ...]
    over_represented: tuple[OverRepresented, ...]
    example_message: str | None
    retried: int = 0

    @property
    def expr(self) -> pl.Expr:
        """A Polars expression selecting the cluster's rows: ``batch.run(fn, only=c.expr)``."""
        return pl.col("_id").is_in(pl.Series("ids", self.ids, dtype=pl.Int64))

    @property
    def label(self) -> str:
        """``step: ErrorType: template`` in one line."""
        head = f"{self.step}: " if self.step else ""
        return f"{head}{self.error_type or 'error'}: {self.template}"

    def __str__(self) -> str:
        lines = [f"[{self.id}] {_plural(self.count, 'row')} ({_pct(self.share)}) {self.label}"]
        if self.retried:
            lines.append(f"    {_plural(self.retried, 'retried attempt')}")
        if self.example_keys:
            lines.append("    e.g. " + ", ".join(self.example_keys))
        lines += [f"    {v.sentence}" for v in self.over_represented]
        return "\n".join(lines)


@dataclass(frozen=True)
class FailureClusters:
    """The failure clusters of a batch, largest first. Iterable, indexable, sized.

    Attributes:
        clusters: the clusters, by count (then retried attempts) descending.
        failed: failed rows in the batch.
        total: rows in the batch.

    Example:
        >>> import polars as pl
        >>> items = pl.DataFrame({"_id": [1, 2, 3], "_key": ["a", "b", "c"],
        ...     "_status": ["failed", "failed", "done"], "_error_type": ["KeyError"] * 2 + [None],
        ...     "_error_message": ["'x'", "'y'", None]})
        >>> fc = cluster_failures(items, [])
        >>> len(fc), fc[0].template, fc[0].ids
        (1, '<str>', (1, 2))
    """

    clusters: tuple[Cluster, ...]
    failed: int
    total: int

    def __len__(self) -> int:
        return len(self.clusters)

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self.clusters)

    @overload
    def __getitem__(self, index: int) -> Cluster: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[Cluster, ...]: ...
    def __getitem__(self, index: int | slice) -> Cluster | tuple[Cluster, ...]:
        return self.clusters[index]

    def get(self, cluster_id: str) -> Cluster:
        """The cluster with this id; KeyError naming the ids there are otherwise.

        Example:
            >>> FailureClusters((), 0, 0).get("ab12")
            Traceback (most recent call last):
            ...
            KeyError: "no cluster 'ab12'; clusters: []"
        """
        for cluster in self.clusters:
            if cluster.id == cluster_id:
                return cluster
        raise KeyError(f"no cluster {cluster_id!r}; clusters: "
                       f"{[c.id for c in self.clusters]}")

    @property
    def table(self) -> pl.DataFrame:
        """One row per cluster, by count descending (over-represented values as sentences)."""
        return pl.DataFrame(
            {"id": [c.id for c in self], "step": [c.step for c in self],
             "error_type": [c.error_type for c in self],
             "template": [c.template for c in self], "count": [c.count for c in self],
             "share": [c.share for c in self], "retried": [c.retried for c in self],
             "first_seen": [c.first_seen for c in self],
             "last_seen": [c.last_seen for c in self],
             "example_keys": [list(c.example_keys) for c in self],
             "over_represented": [[v.sentence for v in c.over_represented] for c in self]},
            schema={"id": pl.String, "step": pl.String, "error_type": pl.String,
                    "template": pl.String, "count": pl.Int64, "share": pl.Float64,
                    "retried": pl.Int64, "first_seen": pl.Datetime("us"),
                    "last_seen": pl.Datetime("us"), "example_keys": pl.List(pl.String),
                    "over_represented": pl.List(pl.String)})

    def __str__(self) -> str:
        head = (f"{_plural(len(self), 'failure cluster')} over "
                f"{_plural(self.failed, 'failed row')} (of {self.total:,})")
        return "\n".join([head, *(str(c) for c in self)]) if self.clusters else (
            f"no failures ({self.total:,} rows)")

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        if not self.clusters:
            return f"<div><b>Failure clusters</b>: no failures ({self.total:,} rows)</div>"
        rows = "".join(
            "<tr>"
            f"<td><code>{esc(c.id)}</code></td><td>{esc(c.step or '')}</td>"
            f"<td>{esc(c.error_type or '')}</td><td><code>{esc(c.template)}</code></td>"
            f"<td style='text-align:right'>{c.count:,}</td>"
            f"<td style='text-align:right'>{_pct(c.share)}</td>"
            f"<td style='text-align:right'>{c.retried:,}</td>"
            f"<td>{esc(', '.join(c.example_keys))}</td>"
            f"<td>{'<br>'.join(esc(v.sentence) for v in c.over_represented)}</td>"
            "</tr>" for c in self)
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in (
            "id", "step", "error", "pattern", "rows", "share", "retried", "examples",
            "over-represented"))
        return (f"<div><b>Failure clusters</b>: {len(self)} over {self.failed:,} failed rows "
                f"(of {self.total:,})<table><tr>{head}</tr>{rows}</table></div>")


def _cluster_id(raw: str) -> str:
    """10 hex digits of the SHA-1 of ``step \\x1f type \\x1f template`` (null as ``\\x00``)."""
    return hashlib.sha1(raw.encode()).hexdigest()[:10]


def _value_text(column: str, value: Any) -> str:
    return f"{column} is null" if value is None else f"{column} = {value!r}"


def _sentence(error_type: str | None, step: str | None, column: str, value: Any,
              share_in: float, share_all: float) -> str:
    what = f"{error_type} errors" if error_type else "errors"
    where = f" in step {step!r}" if step else ""
    return (f"{_pct(share_in)} of {what}{where} have {_value_text(column, value)} "
            f"(vs {_pct(share_all)} overall)")


def _with(frame: pl.DataFrame, schema: dict[str, Any]) -> pl.DataFrame:
    """``frame`` with the columns of ``schema`` it lacks added as nulls."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in schema.items() if c not in frame.columns]
    return frame.with_columns(missing) if missing else frame


_ITEM_COLUMNS: dict[str, Any] = {
    "_id": pl.Int64, "_key": pl.String, "_status": pl.String, "_step": pl.String,
    "_error_type": pl.String, "_error_message": pl.String, "_finished_at": pl.Datetime("us")}
_ATTEMPT_COLUMNS: dict[str, Any] = {
    "_id": pl.Int64, "attempt": pl.Int32, "step": pl.String, "started_at": pl.Datetime("us"),
    "duration_s": pl.Float64, "outcome": pl.String, "error_type": pl.String,
    "error_message": pl.String}


def _retried_occurrences(attempts: pl.DataFrame) -> pl.DataFrame:
    """Retried attempts as ``_id, _step, _error_type, _error_message, _finished_at``.

    The step is the one whose step row failed in the same attempt, if any.
    """
    log = _with(attempts, _ATTEMPT_COLUMNS)
    retried = log.filter(pl.col("step").is_null() & (pl.col("outcome") == "retry"))
    steps = (log.filter(pl.col("step").is_not_null() & (pl.col("outcome") == "failed"))
             .sort("started_at")
             .group_by("_id", "attempt").agg(pl.col("step").last().alias("_step")))
    end = pl.col("started_at") + pl.duration(
        microseconds=(pl.col("duration_s").fill_null(0.0) * 1e6).round().cast(pl.Int64))
    return (retried.join(steps, on=["_id", "attempt"], how="left")
            .select(pl.col("_id").cast(pl.Int64), pl.col("_step").cast(pl.String),
                    pl.col("error_type").cast(pl.String).alias("_error_type"),
                    pl.col("error_message").cast(pl.String).alias("_error_message"),
                    end.cast(pl.Datetime("us")).alias("_finished_at")))


_Skew = tuple[str, Any, int, float, float]  # column, value, rows, share in cluster, overall


def _over_represented(items: pl.DataFrame, members: pl.DataFrame, columns: Sequence[str],
                      top_values: int, min_lift: float) -> dict[str, list[_Skew]]:
    """Per cluster id: its over-represented values, most telling first (see below)."""
    found: dict[str, list[tuple[tuple[float, float, int, str], _Skew]]] = {}
    total = items.height
    if not total or not top_values or members.is_empty():
        return {}
    sizes = dict(members.group_by("_cluster").len().iter_rows())
    for index, column in enumerate(columns):
        if isinstance(items.schema[column], _NESTED):
            continue
        overall = items.select(pl.col("_id").cast(pl.Int64), column,
                               pl.len().over(column).alias("_overall"))
        counted = (members.join(overall, on="_id", how="inner")
                   .group_by("_cluster", column)
                   .agg(pl.len().alias("_rows"), pl.col("_overall").first()))
        for cluster, value, rows, n_overall in counted.iter_rows():
            share_in, share_all = rows / sizes[cluster], n_overall / total
            if rows < _MIN_ROWS or share_in < min_lift * share_all:
                continue
            rank = (share_all - share_in, -share_in / share_all, index, repr(value))
            found.setdefault(cluster, []).append((rank, (column, value, rows, share_in,
                                                         share_all)))
    return {cluster: [skew for _, skew in sorted(values, key=lambda v: v[0])[:top_values]]
            for cluster, values in found.items()}


def cluster_failures(items: pl.DataFrame, input_columns: list[str], *,
                     attempts: pl.DataFrame | None = None, top_values: int = 3,
                     min_lift: float = 1.5) -> FailureClusters:
    """Group the failed rows of ``items`` into patterns and find what their inputs share.

    A cluster is the failed rows (``_status == "failed"``) with the same ``_step``,
    ``_error_type`` and normalised ``_error_message`` (see ``normalise_message``).
    Clusters come largest first (ties: more retried attempts first, then by step,
    type and template).

    Over-represented values: every column of ``input_columns`` is examined, whatever
    its cardinality (nested types — lists, structs — are skipped; null counts as a
    value). A value is reported for a cluster when at least 2 of the cluster's rows
    have it and its share among them is at least ``min_lift`` times its share among
    all rows of ``items``. So a value on more than ``1 / min_lift`` of the batch's
    rows (two thirds by default) never qualifies, and neither does a unique value.
    Of the qualifying values, the ``top_values`` with the largest excess share (share
    in cluster minus share overall; ties: larger lift, then column order, then value)
    are kept.

    Args:
        items: ``batch.items()``: ``_id``, ``_key``, the inputs and the status columns
            (``_status``, ``_step``, ``_error_type``, ``_error_message``,
            ``_finished_at``; missing status columns count as null).
        input_columns: the input columns to examine for over-represented values.
        attempts: the attempt log (``batch.attempts()``), optional. When given, the
            transient errors that were retried (item rows with outcome ``retry``; their
            step is the step row that failed in the same attempt) are normalised too:
            each cluster's ``retried`` counts them, their end times widen
            ``first_seen``/``last_seen``, and patterns seen only in retried attempts
            form clusters of their own with ``count == 0`` and no ``ids`` (their
            example keys and over-represented values come from the rows that hit them).
        top_values: over-represented values kept per cluster (0 for none).
        min_lift: how many times more common than overall a value must be.

    Returns:
        A ``FailureClusters`` (empty when nothing failed).

    Raises:
        ConfigError: an input column is not in ``items``, or a bad ``top_values`` /
            ``min_lift``.

    Example:
        >>> import polars as pl
        >>> items = pl.DataFrame({
        ...     "_id": [1, 2, 3, 4, 5, 6], "_key": list("abcdef"),
        ...     "country": ["BR", "BR", "US", "DE", "FR", "IT"],
        ...     "_status": ["failed", "failed", "done", "done", "failed", "done"],
        ...     "_error_type": ["Timeout", "Timeout", None, None, "Timeout", None],
        ...     "_error_message": ["after 30 s", "after 12 s", None, None, "after 9 s", None]})
        >>> c = cluster_failures(items, ["country"])[0]
        >>> c.template, c.count, c.ids
        ('after <n> s', 3, (1, 2, 5))
        >>> c.over_represented[0].sentence
        "67% of Timeout errors have country = 'BR' (vs 33% overall)"
    """
    missing = [c for c in input_columns if c not in items.columns]
    if missing:
        raise ConfigError(f"input columns {missing} are not in the items frame; its columns: "
                          f"{items.columns}")
    if isinstance(top_values, bool) or not isinstance(top_values, int) or top_values < 0:
        raise ConfigError(f"top_values must be a whole number >= 0, got {top_values!r}")
    if not isinstance(min_lift, (int, float)) or min_lift <= 0:
        raise ConfigError(f"min_lift must be a number > 0, got {min_lift!r}")

    frame = _with(items, _ITEM_COLUMNS)
    failed = frame.filter(pl.col("_status") == "failed").select(
        pl.col("_id").cast(pl.Int64), pl.col("_step").cast(pl.String),
        pl.col("_error_type").cast(pl.String), pl.col("_error_message").cast(pl.String),
        pl.col("_finished_at").cast(pl.Datetime("us")), pl.lit(True).alias("_final"))
    occurrences = failed
    if attempts is not None and attempts.height:
        occurrences = pl.concat([failed, _retried_occurrences(attempts)
                                 .with_columns(pl.lit(False).alias("_final"))])
    if occurrences.is_empty():
        return FailureClusters((), 0, frame.height)

    messages = occurrences["_error_message"].fill_null("").unique().to_list()
    templates = pl.DataFrame({"_error_message": messages,
                              "_template": [normalise_message(m) for m in messages]},
                             schema={"_error_message": pl.String, "_template": pl.String})
    occurrences = (occurrences.with_columns(pl.col("_error_message").fill_null(""))
                   .join(templates, on="_error_message", how="left"))
    raw = pl.concat_str([pl.col("_step").fill_null("\x00"),
                         pl.col("_error_type").fill_null("\x00"), pl.col("_template")],
                        separator="\x1f")
    occurrences = occurrences.with_columns(raw.alias("_raw"))
    raws = occurrences["_raw"].unique().to_list()
    ids_of = pl.DataFrame({"_raw": raws, "_cluster": [_cluster_id(r) for r in raws]},
                          schema={"_raw": pl.String, "_cluster": pl.String})
    occurrences = occurrences.join(ids_of, on="_raw", how="left")

    # members: the failed rows of a cluster, or the retried rows when none failed
    has_final = occurrences.group_by("_cluster").agg(pl.col("_final").any().alias("_has"))
    members = (occurrences.join(has_final, on="_cluster")
               .filter(pl.col("_final") | ~pl.col("_has"))
               .unique(["_cluster", "_id"]).select("_cluster", "_id"))
    skews = _over_represented(frame, members, input_columns, top_values, min_lift)
    key_of = dict(frame.select(pl.col("_id").cast(pl.Int64), pl.col("_key").cast(pl.String))
                  .join(members.select("_id").unique(), on="_id").iter_rows())

    n_failed = failed.height
    summary = (occurrences.group_by("_cluster").agg(
        pl.col("_step").first(), pl.col("_error_type").first(), pl.col("_template").first(),
        pl.col("_final").sum().alias("count"), (~pl.col("_final")).sum().alias("retried"),
        pl.col("_finished_at").min().alias("first"), pl.col("_finished_at").max().alias("last"),
        pl.col("_error_message").sort_by("_final", "_id", descending=[True, False]).first()
        .alias("example")))
    member_ids = dict(members.group_by("_cluster").agg(pl.col("_id").sort()).iter_rows())
    failed_ids = dict(occurrences.filter("_final").group_by("_cluster")
                      .agg(pl.col("_id").sort()).iter_rows())

    clusters = []
    for cid, step, etype, template, count, retried, first, last, example in summary.iter_rows():
        over = tuple(OverRepresented(column, value, rows, share_in, share_all,
                                     _sentence(etype, step, column, value, share_in, share_all))
                     for column, value, rows, share_in, share_all in skews.get(cid, []))
        ids = tuple(failed_ids.get(cid, ()))
        clusters.append(Cluster(
            cid, step, etype, template, int(count), count / n_failed if n_failed else 0.0,
            first, last, tuple(str(key_of.get(i)) for i in member_ids[cid][:_MAX_EXAMPLES]),
            ids, over, example or None, int(retried)))
    clusters.sort(key=lambda c: (-c.count, -c.retried, c.step or "", c.error_type or "",
                                 c.template, c.id))
    return FailureClusters(tuple(clusters), n_failed, frame.height)
