"""Charts of plans and runs (matplotlib, imported lazily inside the functions)."""
