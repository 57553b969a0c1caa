"""The version of sktransfer, here so that any module can read it without
importing the package's ``__init__`` (which imports the estimators)."""

__version__ = "0.1.0.dev0"
