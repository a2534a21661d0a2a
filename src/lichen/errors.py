"""Lichen's one tree of user-facing errors.

Every error a user can cause derives from :class:`LichenError` and carries
*where* the problem is, so the CLI can print one clear line without a
traceback::

    LichenError
    ├── SpecError          lichen.yaml is invalid (file:line:col, field path)
    ├── ConfigError        a CLI argument, env var or config file is wrong
    │   └── UnknownServiceError  a command names a service the app does not have
    ├── DataError          a data file is malformed (file:line)
    ├── StateError         the state store is missing, locked or inconsistent
    ├── PlacementError     requested resources do not fit this machine
    └── ControlPlaneError  the controller is unreachable or refused a request

Third-party exceptions are translated into these at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass


class LichenError(Exception):
    """Base for every error caused by user input or environment.

    ``exit_code`` is what the CLI exits with; 2 means "bad input".
    """

    exit_code: int = 1

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(LichenError):
    exit_code = 2


class UnknownServiceError(ConfigError):
    """A command names a service the app does not have; the control API answers 404."""


class DataError(LichenError):
    exit_code = 2


class StateError(LichenError):
    exit_code = 1


class PlacementError(LichenError):
    exit_code = 1


class ControlPlaneError(LichenError):
    exit_code = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec file, located precisely.

    ``severity`` is ``"error"`` (the spec is invalid) or ``"warning"`` (it is
    valid, but asks for something Lichen does not do yet).
    """

    file: str
    line: int
    column: int
    field: str
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        field = f" {self.field}:" if self.field else ""
        kind = " warning:" if self.severity == "warning" else ""
        return f"{self.file}:{self.line}:{self.column}{field}{kind} {self.message}"


class SpecError(LichenError):
    """A spec file is invalid; ``issues`` lists every problem found."""

    exit_code = 2

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or "invalid spec")

    def __str__(self) -> str:
        return self.message
