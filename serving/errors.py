"""Errors that are the caller's fault: the HTTP layers turn them into 4xx with the message."""


class InputError(ValueError):
    """Bad request data; `status` is the HTTP status to answer with (400 unless said)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class UnknownModel(InputError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model {name!r}; this server serves: {', '.join(sorted(known)) or 'nothing'}", 404)
