"""The package version, in a module of its own so that any room can read it without importing
the package's `__init__` (which would make every room depend on the compiler)."""

__version__ = "0.1.0"
