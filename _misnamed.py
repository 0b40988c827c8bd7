"""What a subpackage of rolora becomes when it is imported under the wrong top-level name.

The repository root *is* the package ``rolora``, so Python started in the root can see
``kernels/``, ``llm/``, ``federated/``... as top-level packages. Loaded that way they would be a
second copy of our code whose classes differ from ``rolora.kernels``'s. Each subpackage's
``__init__`` therefore replaces itself by a :class:`MisnamedPackage`: any real use of it (an
attribute, ``from kernels import x``, ``import kernels.op``) raises ImportError saying what to
import instead. Dunder look-ups stay plain AttributeErrors, because ``kernels`` and ``llm`` are
also names of PyPI packages that other libraries probe for (transformers imports a ``kernels`` it
finds on ``sys.path`` and reads its ``__version__``): to such a probe the shell is simply not it.
"""

from __future__ import annotations

import sys
import types


class _NoPath:
    """A package ``__path__`` whose use raises: ``import kernels.op`` fails at once, with the fix."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __iter__(self):
        raise ImportError(self.message)

    def __len__(self) -> int:
        return 0


class MisnamedPackage(types.ModuleType):
    def __init__(self, name: str, right: str, spec) -> None:
        super().__init__(name)
        message = (f"imported as {name!r}: import {right} instead (the repository root is the package "
                   "rolora; run Python from outside it, or after `pip install -e .`)")
        object.__setattr__(self, "_message", message)
        self.__path__ = _NoPath(message)
        self.__spec__ = spec  # importlib.util.find_spec(name) keeps working for probes

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        raise ImportError(self._message)


def refuse_misnamed(name: str, right: str, spec) -> None:
    """Called by a subpackage's ``__init__`` when ``__name__ != right``: swap in the refusing shell."""
    sys.modules[name] = MisnamedPackage(name, right, spec)
