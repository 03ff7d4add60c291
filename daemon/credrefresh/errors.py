"""The small set of errors credrefresh raises.

Each is a plain ``Exception`` subclass. Messages are written for the operator who reads them:
they name the file, the key or the profile concerned and say what was expected. None of them
ever carries a secret.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "CredentialsFileError",
    "CredrefreshError",
    "RefreshFailed",
]


class CredrefreshError(Exception):
    """Base class of every error credrefresh raises on purpose."""


class ConfigError(CredrefreshError):
    """The configuration file is missing, unreadable or invalid.

    ``problems`` holds one message per problem found, each naming the file and the key path
    (``roles[2].role_arn``). The command line prints all of them and exits 78 (EX_CONFIG).
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class CredentialsFileError(CredrefreshError):
    """The shared credentials file cannot be read, parsed or replaced safely.

    When this is raised nothing has been written: the file on disk is exactly as it was.
    """


class AlreadyRunning(CredrefreshError):
    """Another ``credrefresh run`` already keeps this credentials file fresh."""


class RefreshFailed(CredrefreshError):
    """One AssumeRole call failed.

    ``code`` is the AWS error code (``AccessDenied``, ``Throttling``) or the name of the
    network error; ``transient`` says whether trying again soon may help (throttling, 5xx,
    timeouts, connection errors) or not (access denied, validation, malformed policy).
    ``source`` is true when the fault lies with the source credentials (expired or invalid),
    so the STS client should load them afresh before the next try.
    """

    def __init__(self, code: str, message: str, *, transient: bool, source: bool = False) -> None:
        self.code = code
        self.message = message
        self.transient = transient
        self.source = source
        super().__init__(f"{code}: {message}")
