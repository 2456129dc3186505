"""The service's error hierarchy: what went wrong, in the domain's terms.

Each error has a stable `code` and a message for the caller, and carries data rather than protocol details
(`retry_after_s` for an overload, not a `Retry-After` header): how an error becomes a response, per API family,
is decided in one place, `app.http.errors`.
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to a caller."""

    code = "internal_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s

    def renamed(self, message: str) -> ServiceError:
        """The same error (class and data) with another message."""
        return type(self)(message, retry_after_s=self.retry_after_s)


class InvalidInput(ServiceError):
    """The request is malformed or has an invalid value."""

    code = "invalid_input"


class MalformedRequest(InvalidInput):
    """The body cannot be parsed as the declared content type."""

    code = "malformed_request"


class MissingInput(InvalidInput):
    code = "missing_input"


class UnknownField(InvalidInput):
    code = "unknown_field"


class CorruptInput(InvalidInput):
    code = "corrupt_input"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class HeadersTooLarge(InvalidInput):
    """A request's line and headers are over their limit."""

    code = "request_header_too_large"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class ModalityNotSupported(InvalidInput):
    code = "modality_not_supported"


class Unauthorized(ServiceError):
    """No API key, or not a Bearer one, where keys are required."""

    code = "unauthorized"


class Forbidden(ServiceError):
    """An API key that is not among the configured ones."""

    code = "forbidden"


class RequestTimeout(ServiceError):
    """The client stopped sending its request (its head or its body)."""

    code = "request_timeout"


class Overloaded(ServiceError):
    """Too much work in hand: retry after `retry_after_s`."""

    code = "overloaded"


class NotReady(ServiceError):
    """Loading, warming up, or shutting down."""

    code = "not_ready"


class DeadlineExceeded(ServiceError):
    """The request waited past its deadline and was never computed."""

    code = "deadline_exceeded"


class ModelFailure(ServiceError):
    """The model failed on the batch that held the request."""

    code = "model_failure"


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
