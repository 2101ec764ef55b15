"""Error answers of the emulated API: an HTTP status and a ``{code, message}`` body.

The codes and statuses are those of docs/convex-export-api.md §5 (and §13 for Data Sync).
"""

from __future__ import annotations

import orjson

INTERNAL_SERVER_ERROR_MESSAGE = "Your request couldn't be completed. Try again later."


class ApiError(Exception):
    """An error answer; raising it anywhere in a handler sends exactly this response."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        """The JSON body: ``{"code": …, "message": …}``."""
        return orjson.dumps({"code": self.code, "message": self.message})


def internal_server_error() -> ApiError:
    """What every unexpected failure becomes (and a bad legacy selection, a negative ts)."""
    return ApiError(500, "InternalServerError", INTERNAL_SERVER_ERROR_MESSAGE)


def bad_query_args(detail: str) -> ApiError:
    """A GET query string that does not deserialize."""
    return ApiError(400, "BadQueryArgs", f"Failed to deserialize query string: {detail}")


def bad_json_body(detail: str) -> ApiError:
    """A POST body with the wrong content type, bad JSON or wrongly typed fields."""
    return ApiError(400, "BadJsonBody", f"Failed to deserialize JSON body: {detail}")


def bad_format(name: str) -> ApiError:
    """An unknown ``format`` name."""
    return ApiError(400, "BadFormat", f"format param must be one of [`json`]. Got {name}")


def bad_deploy_key() -> ApiError:
    """No credentials at all: the anonymous identity fails the permission check."""
    return ApiError(
        403,
        "BadDeployKey",
        "The provided deploy key was invalid for this deployment. "
        "Did you set the correct CONVEX_DEPLOY_KEY?",
    )


def bad_admin_key() -> ApiError:
    """A key was sent but it is not this deployment's."""
    return ApiError(401, "BadAdminKey", "The provided admin key was invalid for this instance")


def invalid_admin_key() -> ApiError:
    """An Authorization scheme other than ``Convex`` (or ``Bearer``)."""
    return ApiError(400, "InvalidAdminKey", "Invalid admin key")


def header_parse_failure() -> ApiError:
    """A non-ASCII Authorization header."""
    return ApiError(400, "HeaderParseFailure", "Failed to parse header Authorization as ASCII")


def invalid_header_failure() -> ApiError:
    """An Authorization header shorter than 7 characters."""
    return ApiError(
        400, "InvalidHeaderFailure", "Authorization header is too short to hold a scheme and key"
    )


def streaming_export_not_enabled() -> ApiError:
    """The plan does not include streaming export (the devserver's switch is off)."""
    return ApiError(
        403,
        "StreamingExportNotEnabled",
        "Streaming export is not available on your current subscription. "
        "Upgrade your plan to use streaming export.",
    )


def invalid_data_sync_cursor(detail: str) -> ApiError:
    """A Data Sync cursor that cannot be opened, or that is ahead of the server."""
    return ApiError(400, "InvalidDataSyncCursor", f"Invalid data sync cursor: {detail}")


def data_sync_cursor_expired() -> ApiError:
    """A Data Sync cursor older than the document retention window."""
    return ApiError(
        400,
        "DataSyncCursorExpired",
        "The data sync cursor is outside the deployment's data retention window and can no "
        "longer be resumed. Restart the sync from scratch by calling this endpoint again "
        "without a cursor.",
    )


def invalid_data_sync_selection(detail: str) -> ApiError:
    """A Data Sync selection that names something invalid or excludes ``_id``."""
    return ApiError(400, "InvalidDataSyncSelection", f"Invalid selection: {detail}")
