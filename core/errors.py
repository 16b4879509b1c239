"""One small error hierarchy. Messages say what went wrong and how to fix it;
the CLI and the UI turn them into text for the user at the edge."""


class QuimbotError(Exception):
    """Base class for every error Quimbot reports to a user."""


class ModelSpecError(QuimbotError):
    """A model spec string that cannot be parsed or names nothing that exists."""


class BackendError(QuimbotError):
    """A backend failed: a server is down, answered with an error, or a model failed to load.
    ``status`` is the HTTP status a server answered with, when there was one (402, 429, 500 ...)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class InputError(QuimbotError):
    """A learner message that cannot be sent (empty, too long for the model, ...)."""


class StoreError(QuimbotError):
    """The conversation log could not be read or written."""


class NotFoundError(QuimbotError):
    """A conversation, turn or file that does not exist."""


class DataError(QuimbotError):
    """A data file, folder or option Quimbot cannot use: missing, unreadable, the wrong kind, empty, or
    training data that cannot be used as it is (schema, length, kind)."""
