"""Reading pickles of plain data without running code: detectron2's proposal files and model-zoo
``.pkl`` weights are pickles of dicts, lists, numbers, strings and numpy arrays.

Unpickling calls whatever global a file names, so a crafted file can run any code. The
:class:`PlainDataUnpickler` builds only what needs no global (containers, numbers, strings,
bytes) and the few globals that rebuild numpy arrays, a handful of builtin types and Python 2's
byte strings; any other global is refused before it is called.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from typing import IO, Any

# (module, name) of the globals a plain-data pickle may name, whatever its protocol (0-5) and
# numpy version: numpy's array and scalar reconstruction, builtin types beyond dict, list and
# tuple, and how protocols 0-2 write bytes (_codecs.encode); not bytearray, whose bytearray(n)
# would fill memory from a few bytes of file.
PLAIN_DATA_GLOBALS = frozenset(
    {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
    | {("numpy", "ndarray"), ("numpy", "dtype")}
    | {("builtins", name) for name in ("set", "frozenset", "complex")}
    | {("collections", "OrderedDict"), ("_codecs", "encode")}
)


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle naming a global that plain data does not need (it could run code)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refusing to load {module}.{name}")
        self.module, self.name = module, name


class PlainDataUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` that builds plain data only (:data:`PLAIN_DATA_GLOBALS`) and
    raises :class:`RefusedGlobalError` for any other global. ``substitutes`` maps further
    ``(module, name)`` globals to harmless stand-ins (e.g. an enum to ``int``). Bytes that
    Python 2 pickled as ``str`` are read as latin-1, as numpy arrays of Python 2 need."""

    def __init__(
        self, file: IO[bytes], substitutes: Mapping[tuple[str, str], Callable] | None = None
    ) -> None:
        super().__init__(file, encoding="latin1")
        self._substitutes = dict(substitutes or {})

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in PLAIN_DATA_GLOBALS:
            return super().find_class(module, name)
        if (module, name) in self._substitutes:
            return self._substitutes[module, name]
        raise RefusedGlobalError(module, name)
