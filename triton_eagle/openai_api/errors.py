"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""
from __future__ import annotations

from fastapi.responses import JSONResponse

# HTTP status -> OpenAI's error type (what the `openai` client maps to its exception classes)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 500: "server_error", 503: "service_unavailable"}


class APIError(Exception):
    """A request the server answers with an OpenAI error instead of a completion."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 retry_after_s: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.retry_after_s = retry_after_s

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)
