"""A table from part tag to the function that handles that kind of part on one target
(torch factories in ``builder.py``, ONNX emitters in ``exporters/emitters.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

Handler = TypeVar("Handler", bound=Callable[..., object])


class Registry(dict[str, Handler], Generic[Handler]):
    """Handlers by part tag; registering a tag twice is an error, not a silent replacement."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, tag: str) -> Callable[[Handler], Handler]:
        """Decorator: register the handler for parts tagged ``tag``."""

        def decorate(handler: Handler) -> Handler:
            if tag in self:
                raise ValueError(f"{self.what} for {tag!r} is already registered")
            self[tag] = handler
            return handler

        return decorate
