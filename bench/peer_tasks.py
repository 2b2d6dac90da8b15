"""The RQ no-op job: a module with no imports, so RQ's forked work horse pays nothing extra."""


def noop() -> None:
    """Do nothing."""
