"""A file whose writes fail as on a full disk: ENOSPC (or another errno) raised at the write call."""

from __future__ import annotations

import errno
import os


class WritesFail:
    def __init__(self, handle, code: int = errno.ENOSPC):
        self.handle = handle
        self.code = code

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()

    def write(self, data):
        raise OSError(self.code, os.strerror(self.code))

    def __getattr__(self, name):
        return getattr(self.handle, name)
