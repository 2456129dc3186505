"""The service's error hierarchy. Every error knows its HTTP status, a stable code and a message for the caller."""
from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidInput(ServiceError):
    """The request is malformed or has an invalid value (422)."""

    status_code = 422
    code = "invalid_input"


class MalformedRequest(InvalidInput):
    """The body cannot be parsed as the declared content type (400)."""

    status_code = 400
    code = "malformed_request"


class MissingInput(InvalidInput):
    code = "missing_input"


class UnknownField(InvalidInput):
    code = "unknown_field"


class CorruptInput(InvalidInput):
    code = "corrupt_input"


class UnsupportedMediaType(InvalidInput):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(InvalidInput):
    status_code = 413
    code = "payload_too_large"


class ModelNotFound(ServiceError):
    status_code = 404
    code = "model_not_found"


class ModalityNotSupported(InvalidInput):
    code = "modality_not_supported"


class Unauthorized(ServiceError):
    """No API key, or not a Bearer one, where keys are required (401)."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    """An API key that is not among the configured ones (403)."""

    status_code = 403
    code = "forbidden"


class RequestTimeout(ServiceError):
    """The client stopped sending its request body (408)."""

    status_code = 408
    code = "request_timeout"


class Overloaded(ServiceError):
    status_code = 503
    code = "overloaded"


class NotReady(ServiceError):
    status_code = 503
    code = "not_ready"


class DeadlineExceeded(ServiceError):
    status_code = 504
    code = "deadline_exceeded"


class ModelFailure(ServiceError):
    status_code = 500
    code = "model_failure"


class ArtifactError(Exception):
    """A model artifact on disk is missing, malformed or inconsistent. Raised at startup, not per request."""


class UsageError(Exception):
    """A command-line flag, manifest or training setting the user must change (not a service error).

    `fusion-serve` prints the message as one line and exits with status 2, without a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SettingError(UsageError, ValueError):
    """A setting's value is out of range; `setting` is its field name, which the command line maps to its flag."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting
