"""A tiny name -> factory registry, the one pattern used across the project.

Modelled on pyiqa's ``create_metric``: a family of interchangeable backends (aesthetic
scorers, judges, super-resolvers, ...) registers each implementation under a short name,
and configuration picks one by that name::

    SCORERS = Registry("aesthetic scorer")

    @SCORERS.register("laion")
    class LaionAestheticScorer(AestheticScorer): ...

    scorer = SCORERS.create("laion", clip_model="openai/clip-vit-large-patch14")

Any callable can be registered (a class, a factory function). Lookups of an unknown name
raise a ``KeyError`` that lists every known name. The registry knows nothing of Dagster:
resources wrap the objects it creates, not the other way round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Map short names to factories (classes or functions) of one kind of backend.

    ``kind`` is a human label used in error messages, e.g. ``"aesthetic scorer"``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    # -- registration ----------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None):
        """Register ``obj`` under ``name``; without ``obj``, return a decorator that does.

        Registering the same object twice under one name is a no-op (module re-import);
        registering a different object under a taken name raises ``ValueError``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def _add(o: T) -> T:
            if not callable(o):
                raise TypeError(f"{self.kind} {name!r}: registered object must be callable, got {o!r}")
            prev = self._entries.get(name)
            if prev is not None and prev is not o and _qualname(prev) != _qualname(o):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {_qualname(prev)}; "
                    f"cannot register {_qualname(o)}"
                )
            self._entries[name] = o
            return o

        if obj is None:
            return _add
        return _add(obj)

    def unregister(self, name: str) -> T | None:
        """Remove ``name`` (a test's temporary entry); returns what was registered, or None."""
        return self._entries.pop(name, None)

    # -- lookup ----------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The factory registered under ``name``; ``KeyError`` listing known names otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, factory)`` pairs, sorted by name."""
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        """The factories, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    # -- container protocol ----------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def _qualname(o: Any) -> str:
    return f"{getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', repr(o))}"
