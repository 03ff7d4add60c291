"""credrefresh: keep AWS IAM role credentials fresh in the shared credentials file."""

from credrefresh.errors import (
    AlreadyRunning,
    ConfigError,
    CredentialsFileError,
    CredrefreshError,
    RefreshFailed,
)

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "CredentialsFileError",
    "CredrefreshError",
    "RefreshFailed",
    "__version__",
]


def __getattr__(name: str) -> str:
    # As stamina does: importlib.metadata costs tens of milliseconds at start-up, and only
    # ``--version`` and the STS client's User-Agent need the version.
    if name != "__version__":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("credrefresh")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
