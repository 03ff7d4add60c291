"""credrefresh: keep AWS IAM role credentials fresh in the shared credentials file."""

from daemon.errors import (
    AlreadyRunning,
    ConfigError,
    CredentialsFileError,
    CredrefreshError,
    RefreshFailed,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "CredentialsFileError",
    "CredrefreshError",
    "RefreshFailed",
    "__version__",
]
