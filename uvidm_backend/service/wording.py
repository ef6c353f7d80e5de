"""Pipeline messages are written for the command line; over HTTP the same advice names form fields."""

from __future__ import annotations

import re

# Command-line flag → what an HTTP client sends instead (docs/API.md, POST /v1/jobs).
_FIELDS = (
    (re.compile(r"\b(?:with|via|using) --landmarks\b"), "in the `landmarks` field"),
    (re.compile(r"--landmarks\b"), "the `landmarks` field"),
    (re.compile(r"--face(?: N)?\b"), "the `face_index` field"),
    (re.compile(r"--texture-size\b"), "the `texture_size` field"),
    (re.compile(r"--steps\b"), "the `steps` field"),
)


def in_http_terms(message: str) -> str:
    for flag, field in _FIELDS:
        message = flag.sub(field, message)
    return message
