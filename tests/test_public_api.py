"""The public surface: a sorted, honest __all__, docstrings everywhere, doctests that pass."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from importlib.metadata import version
from pathlib import Path

import pytest

import batchkit as bk
import batchkit.testing

MODULES = ["batchkit"] + sorted(
    m.name for m in pkgutil.walk_packages(bk.__path__, "batchkit.")
    if not m.name.endswith("__main__"))

#: classes whose public methods must all be documented
DOCUMENTED_CLASSES = [bk.Batch, bk.RunReport, bk.RetryPolicy, bk.ItemContext, bk.SystemClock,
                      bk.Clock, *(getattr(batchkit.testing, n) for n in batchkit.testing.__all__)]


def _isort_key(name: str) -> tuple[int, str]:
    """ruff/isort order: CONSTANTS, then Classes, then functions and dunders."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_unique():
    """batchkit.__all__ is sorted (isort style: constants, classes, functions), each name once."""
    for module in (bk, batchkit.testing):
        assert list(module.__all__) == sorted(module.__all__, key=_isort_key)
        assert len(set(module.__all__)) == len(module.__all__)


def test_every_name_in_all_exists():
    """Every name in __all__ (of batchkit and batchkit.testing) is importable."""
    for module in (bk, batchkit.testing):
        missing = [n for n in module.__all__ if not hasattr(module, n)]
        assert missing == [], f"{module.__name__}: {missing}"


def test_public_classes_and_functions_are_in_all():
    """Every public class or function batchkit exposes at top level is listed in __all__."""
    exposed = {n for n, v in vars(bk).items() if not n.startswith("_")
               and (inspect.isclass(v) or inspect.isfunction(v))}
    assert exposed <= set(bk.__all__)


def _api_objects():
    for name in bk.__all__:
        value = getattr(bk, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            yield f"batchkit.{name}", value
    for name in batchkit.testing.__all__:
        yield f"batchkit.testing.{name}", getattr(batchkit.testing, name)


@pytest.mark.parametrize(("name", "obj"), list(_api_objects()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_public_names_have_docstrings_with_examples(name, obj):
    """Every public class and function has its own docstring with an example."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    assert doc and doc.strip(), f"{name} has no docstring"
    assert "Example" in doc or ">>>" in doc, f"{name} has no example"


def _public_methods():
    for cls in DOCUMENTED_CLASSES:
        for attr, value in vars(cls).items():
            if attr.startswith("_"):
                continue
            if isinstance(value, property):
                yield f"{cls.__name__}.{attr}", value.fget
            elif isinstance(value, (staticmethod, classmethod)):
                yield f"{cls.__name__}.{attr}", value.__func__
            elif inspect.isfunction(value):
                yield f"{cls.__name__}.{attr}", value


@pytest.mark.parametrize(("name", "fn"), list(_public_methods()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_public_methods_have_docstrings(name, fn):
    """Every public method and property of the public classes has a docstring."""
    assert fn.__doc__ and fn.__doc__.strip(), f"{name} has no docstring"


def test_error_tree_has_one_base():
    """Every batchkit error subclasses BatchkitError; configuration errors are ValueErrors."""
    errors = [getattr(bk, n) for n in bk.__all__
              if inspect.isclass(getattr(bk, n)) and issubclass(getattr(bk, n), BaseException)]
    assert len(errors) >= 9
    assert all(issubclass(e, bk.BatchkitError) for e in errors)
    assert issubclass(bk.ConfigError, ValueError)
    assert issubclass(bk.SchemaError, bk.ConfigError)
    assert issubclass(bk.ItemTimeout, bk.Transient) and issubclass(bk.ItemTimeout, TimeoutError)
    assert issubclass(bk.StoreInUseError, bk.StoreError)
    assert issubclass(bk.StoreVersionError, bk.StoreError)


def test_version_comes_from_package_metadata():
    """__version__ is the installed package's version."""
    assert bk.__version__ == version("batchkit")


def test_package_ships_py_typed():
    """The package ships a py.typed marker."""
    assert (Path(bk.__file__).parent / "py.typed").exists()


def test_backends_and_statuses_are_exposed():
    """The backend names and item statuses are public constants."""
    assert sorted(bk.BACKENDS) == ["processes", "sequential", "threads"]
    assert bk.STATUSES == ("pending", "running", "done", "failed")
    assert {"_status", "_attempts", "_error_type", "_error_message", "_started_at",
            "_finished_at", "_duration_s", "_run_id"} <= set(bk.STATUS_COLUMNS)


@pytest.mark.parametrize("module_name", MODULES)
def test_doctests_pass(module_name, tmp_path, monkeypatch):
    """The examples in every batchkit module's docstrings run as written."""
    monkeypatch.chdir(tmp_path)  # examples that touch files stay in a temporary folder
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0


def test_core_modules_have_doctests():
    """The main public modules carry runnable examples."""
    for name in ("batchkit", "batchkit._batch", "batchkit._policy", "batchkit._errors",
                 "batchkit.testing"):
        finder = doctest.DocTestFinder()
        tests = finder.find(importlib.import_module(name))
        assert sum(len(t.examples) for t in tests) > 0, name
