"""The function app's functions, indexed once for every part of the host that reads them."""

from __future__ import annotations

import weakref
from typing import Any

_INDEXED: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def functions_of(app: Any) -> list[Any]:
    """The app's functions, from ``get_functions()`` called once per app.

    ``FunctionApp.get_functions`` records every name it indexes and refuses a second indexing as
    duplicate names; the HTTP side and the durable worker both read the one list.
    """
    functions = _INDEXED.get(app)
    if functions is None:
        functions = list(app.get_functions())
        _INDEXED[app] = functions
    return functions
