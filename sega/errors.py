"""Exceptions with messages meant for users (CLI, app), not tracebacks.

Every error a user can cause derives from ``SegaError``; shells print ``str(err)``
and exit (CLI) or show it (app) instead of a traceback.
"""


class SegaError(Exception):
    """Base class: the message is written for the person who supplied the input."""


class PhotoError(SegaError):
    """The photo could not be used (not an image, truncated, too large, ...)."""


class FaceNotFoundError(SegaError):
    """No usable face in the photo (none, or too small)."""


class NotHumanFaceError(FaceNotFoundError):
    """A face was found, but it is not a human face (an animal, a toy, an object)."""


class HeadModelError(SegaError):
    """Head-model data is missing, malformed or refused (e.g. an unsafe pickle)."""
