"""credrefresh: keep AWS IAM role credentials fresh in the shared credentials file."""

from importlib.metadata import PackageNotFoundError, version

from credrefresh.errors import (
    AlreadyRunning,
    ConfigError,
    CredentialsFileError,
    CredrefreshError,
    RefreshFailed,
)

try:
    __version__ = version("credrefresh")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "CredentialsFileError",
    "CredrefreshError",
    "RefreshFailed",
    "__version__",
]
