"""Make opening chosen paths fail as the operating system would, whoever runs the tests.

File modes cannot stand in: root opens a mode-0 file and writes into a mode-0555
folder, so such a test proves nothing in a container. Patching every way Python
opens a file raises the real ``OSError`` subclass (``PermissionError`` for EACCES)
with the system's own message.
"""

from __future__ import annotations

import builtins
import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest


def refuse_open(monkeypatch: pytest.MonkeyPatch, refused: Callable[[Path], bool], code: int) -> None:
    """Opening a path for which ``refused(path)`` holds raises ``OSError(code)``; others open as usual.

    Covers ``open``, ``io.open`` (behind ``Path.open``, ``read_bytes``, ``write_text``) and ``os.open``.
    """
    real_open, real_os_open = io.open, os.open

    def check(file: object) -> None:
        if isinstance(file, (str, bytes, os.PathLike)):
            name = os.fsdecode(file)
            if refused(Path(name)):
                raise OSError(code, os.strerror(code), name)

    def patched_open(file, *args, **kwargs):
        check(file)
        return real_open(file, *args, **kwargs)

    def patched_os_open(path, *args, **kwargs):
        check(path)
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(io, "open", patched_open)
    monkeypatch.setattr(builtins, "open", patched_open)
    monkeypatch.setattr(os, "open", patched_os_open)
