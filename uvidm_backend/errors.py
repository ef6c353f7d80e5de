"""The base of every error the backend reports to users (CLI, service, Blender) as a message."""

from __future__ import annotations


class UVIDMError(Exception):
    """Something a user can act on; the message says what went wrong and what to do.

    Subclasses may take other constructor arguments: pickling (an error raised in a writer process) keeps the
    class, the message and the attributes without calling the constructor again.
    """

    def __reduce__(self):
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[UVIDMError], args: tuple, state: dict) -> UVIDMError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
