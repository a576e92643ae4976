"""One implementation behind `Client` and `AsyncClient`.

Every call is written once, as a generator method marked `@call`: it builds its request,
runs each I/O step with `yield from self._io.NAME(...)`, and parses the answer. Only the
transport (`Steps`) differs between the two clients:

- sync: each step runs its function at once and never suspends (`now`), so the call runs
  to its end in one `send` (`run_sync`);
- async: each step delegates to its coroutine's `__await__` (`awaiting`), so the call is
  an awaitable whose suspensions are the event loop's (`run_async`).

A class that names `method=` (`sync_method` or `async_method`) gets, for each `@call`
of its bases, a public method of that kind with the call's name, signature and docstring
(`help(Client.classify)` shows them; the annotated return type is the method's result).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Generator
from typing import Any

Run = Generator[Any, Any, Any]  # a @call or a step: a generator whose return value is its result


def call(fn: Callable[..., Run]) -> Callable[..., Run]:
    """Marks a generator method as a public call of both clients."""
    fn.is_call = True
    return fn


def now(fn: Callable) -> Callable[..., Run]:
    """The sync transport's step: `fn` runs when the step starts; the step never suspends."""
    def step(*args, **kwargs):
        return fn(*args, **kwargs)
        yield  # never reached: it makes `step` a generator that `yield from` finishes at once
    return step


def awaiting(fn: Callable) -> Callable[..., Run]:
    """The async transport's step: suspends, through the event loop, until `fn`'s coroutine is done."""
    def step(*args, **kwargs):
        return (yield from fn(*args, **kwargs).__await__())
    return step


class Steps:
    """A transport: each I/O function (send, sleep, ...) as a step (`now` or `awaiting`)."""

    def __init__(self, step: Callable[[Callable], Callable[..., Run]], **functions: Callable):
        for name, fn in functions.items():
            setattr(self, name, step(fn))


def run_sync(steps: Run) -> Any:
    try:
        steps.send(None)
    except StopIteration as done:
        return done.value
    steps.close()
    raise RuntimeError("a step of the sync client suspended (an async transport in a sync client?)")


@types.coroutine
def run_async(steps: Run) -> Any:
    return (yield from steps)


def sync_method(fn: Callable[..., Run]) -> Callable:
    @functools.wraps(fn, updated=())
    def method(self, *args, **kwargs):
        return run_sync(fn(self, *args, **kwargs))
    return method


def async_method(fn: Callable[..., Run]) -> Callable:
    @functools.wraps(fn, updated=())
    async def method(self, *args, **kwargs):
        return await run_async(fn(self, *args, **kwargs))
    return method


class Calls:
    """Base of the clients: `class Client(Calls, method=sync_method)` turns every `@call` into a method."""

    def __init_subclass__(cls, method: Callable | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if method is None:
            return
        for name in dir(cls):
            fn = inspect.getattr_static(cls, name)  # the nearest definition: an override wins
            if getattr(fn, "is_call", False):
                setattr(cls, name, method(fn))
