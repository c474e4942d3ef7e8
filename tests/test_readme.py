"""The README stays true: its opening commands, its Python tour and its CLI list."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_demo_and_test_commands() -> None:
    """The first block holds the install+demo command, then the install+tests command."""
    first = _blocks("bash")[0].strip().splitlines()
    assert len(first) == 2
    assert "pip install" in first[0] and first[0].endswith("batchkit demo")
    assert "pip install" in first[1] and "'.[test]'" in first[1] and "pytest" in first[1]
    assert README.index("```bash") < README.index("## ")


@pytest.fixture
def in_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding a copy of data/companies.csv, as the README assumes."""
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "companies.csv", tmp_path / "data" / "companies.csv")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_python_tour_runs(in_copy: Path) -> None:
    """The tour's Python code runs as written and its stated counts are what it gets."""
    code = _blocks("python")[0]
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    stated = re.search(r"batch\.counts\(\)\s+# (\{.*?\})", code)
    assert stated is not None
    import batchkit as bk

    batch = bk.Batch("leads", store="leads.duckdb")
    try:
        assert repr(batch.counts()) == stated.group(1)
        assert batch.counts()["failed"] == len(batch.failed())
    finally:
        batch.close()
    assert os.path.exists("leads_enriched.parquet")


def test_readme_lists_every_cli_command() -> None:
    """Every subcommand of the CLI appears in the README's terminal examples."""
    from batchkit._cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    terminal = "\n".join(_blocks("bash"))
    for name in sub.choices:
        assert f"batchkit {name}" in terminal or f"batchkit {name}" in README, name


def test_readme_steps_example_runs(in_copy: Path) -> None:
    """The steps example runs against the simulated service and its stated figures hold."""
    code = _blocks("python")[1]
    scope: dict[str, object] = {}
    exec(compile("import polars as pl\n" + code, "README.md", "exec"), scope)  # noqa: S102
    report = scope["report"]
    assert report.succeeded == 50  # type: ignore[attr-defined]
    import batchkit as bk

    batch = bk.Batch("steps", store="steps.duckdb")
    try:
        assert batch.results()["cost_usd"].sum() == pytest.approx(0.60)
    finally:
        batch.close()


def test_readme_planning_example_runs(in_copy: Path) -> None:
    """The planning example runs: the hand projection gives the stated figures, the
    measured plan comes from a 20-item sample whose rows are kept."""
    code = next(b for b in _blocks("python") if "hand = bk.project(" in b)
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    hand, plan = scope["hand"], scope["plan"]
    assert hand.seconds == pytest.approx(3920.0)  # type: ignore[attr-defined]
    assert hand.cost == pytest.approx(70.0)  # type: ignore[attr-defined]
    assert hand.binding_volume().volume == 6857  # type: ignore[attr-defined]
    assert plan.sample.items == 20  # type: ignore[attr-defined]
    assert plan.volume == 500 and plan.seconds > 0  # type: ignore[attr-defined]
    import batchkit as bk
    from batchkit import demo

    with bk.Batch(demo.BATCH, store="plan.duckdb") as batch:
        assert batch.counts()["done"] + batch.counts()["failed"] == 20
