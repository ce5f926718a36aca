"""AutoGluon's text files beside its pickles (version.txt, metadata.json): what AutoGluon gets from their bytes.
Shared by strict mode's readers and the scanner."""

from __future__ import annotations

import os

MAX_TEXT = 16 << 20
# what TabularPredictor.load reads from metadata.json (a missing key is a KeyError in AutoGluon's own check)
METADATA_KEYS = {"version": str, "py_version": str, "system": str}


class TextProblem(ValueError):
    """Why AutoGluon could not use a text file: unreadable as text, or (``content``) text it cannot use."""

    def __init__(self, reason: str, content: bool = False):
        super().__init__(reason)
        self.content = content


def parse_text(data: bytes, path: str, *, as_json: bool):
    """What AutoGluon's load_str / load_json gets from ``data`` (at most MAX_TEXT + 1 bytes of the file at
    ``path``); TextProblem when that is not text AutoGluon can use.  Shared with the scanner."""
    if len(data) > MAX_TEXT:
        raise TextProblem(f"larger than {MAX_TEXT} bytes (AutoGluon writes a few kilobytes)")
    import json  # here, not at import time

    try:
        text = data.decode("utf-8")
        value = json.loads(text) if as_json else text
    except ValueError as exc:
        raise TextProblem(f"not the text AutoGluon writes ({type(exc).__name__}: {exc})") from None
    if os.path.basename(path) == "metadata.json" and not (
            isinstance(value, dict) and all(isinstance(value.get(k), t) for k, t in METADATA_KEYS.items())):
        raise TextProblem("metadata.json lacks the fields AutoGluon checks (" + ", ".join(METADATA_KEYS) + ")",
                          content=True)
    return value
