"""The package's version, a leaf every module may read (pyproject.toml's ``version``;
tests/test_first_hour.py keeps the two equal)."""

__version__ = "0.1.0"
