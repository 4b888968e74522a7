"""The one family of exceptions yiwang raises on purpose.

Library code raises these; only the edges (CLI, HTTP API) turn them into user-facing messages.
Each carries a message a person can act on: it names the file, field, line, rule or key at fault.
"""

from __future__ import annotations


class YiwangError(Exception):
    """Base class for every error yiwang reports to a user."""

    exit_code = 1
    http_status = 400
    code = "error"


class ConfigError(YiwangError):
    """A setting has a bad value; the message names the setting's key."""

    exit_code = 2
    http_status = 500
    code = "config_error"


class ContractError(YiwangError):
    """An export file breaks the data contract as a whole (missing column, unreadable, bad encoding)."""

    exit_code = 2
    http_status = 422
    code = "contract_error"


class RulesError(YiwangError):
    """An operator's rules file is invalid; the message names file, rule and line."""

    exit_code = 2
    http_status = 422
    code = "rules_error"


class ConfigFileError(YiwangError):
    """An experiment or model config names something unknown or has a bad value."""

    exit_code = 2
    http_status = 422
    code = "config_file_error"


class NotFound(YiwangError):
    """A subject, tag, item, model version or alert that was asked for does not exist."""

    exit_code = 3
    http_status = 404
    code = "not_found"


class PermissionDenied(YiwangError):
    """The caller lacks the scope the action needs."""

    exit_code = 4
    http_status = 403
    code = "forbidden"


class Unauthenticated(YiwangError):
    """No API key, an unknown key or a revoked key."""

    exit_code = 4
    http_status = 401
    code = "unauthenticated"


class StateError(YiwangError):
    """The store is not in a state that allows the action (e.g. nothing ingested yet, no model promoted)."""

    exit_code = 5
    http_status = 409
    code = "state_error"
