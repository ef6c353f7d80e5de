"""The base of every error the backend reports to users (CLI, service, Blender) as a message."""


class UVIDMError(Exception):
    """Something a user can act on; the message says what went wrong and what to do."""
