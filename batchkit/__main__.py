"""``python -m batchkit``: the same command line as ``batchkit``."""

from ._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
