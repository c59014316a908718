"""A restricted unpickler for FLAME ``.pkl`` files (arrays only, no code).

FLAME model files are Python-2 era pickles (load with ``encoding="latin1"``) holding numpy
arrays, a ``scipy.sparse`` matrix (``J_regressor``) and ``chumpy`` objects (typically
``shapedirs``). Plain ``pickle.load`` would import and call whatever the file names, so a
tampered file could run code. ``FlamePickleUnpickler.find_class`` therefore resolves only an
allowlist of globals:

* numpy array / dtype / scalar reconstruction (``numpy.core.*`` and ``numpy._core.*`` paths);
* ``scipy.sparse`` CSC / CSR matrices (public and private module paths, old and new scipy),
  captured as ``SparseStub`` and rebuilt through the scipy constructor with a full format check;
* ``chumpy.*`` (any class): replaced by a ``ChumpyStub`` subclass that only records its state;
  a ``chumpy.ch.Ch`` keeps its value in the state key ``'x'`` (exposed as ``ChumpyStub.value``);
* container builtins (``object``, ``set``, ``frozenset``, ``bytes``, ``bytearray``), the
  protocol-0/1 helper ``copyreg._reconstructor`` (only for the stub classes above) and
  ``_codecs.encode`` (only with latin-1, which protocol-2 pickles use for ``bytes``).

Anything else (``os.system``, ``builtins.eval``, ``subprocess.*``, ...) raises
``HeadModelError`` *before* it is imported or called.
"""

from __future__ import annotations

import codecs
import copyreg
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from ..errors import HeadModelError

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _np_numeric  # type: ignore[no-redef]

PICKLE_ENCODING = "latin1"  # Python-2 ``str`` payloads (numpy buffers) decode byte-for-byte
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})

# numpy's array/scalar reconstruction lives in numpy.core (numpy 1.x pickles) or numpy._core (2.x).
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "scalar")] = _np_multiarray.scalar
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _np_numeric._frombuffer  # protocol >= 5 arrays
del _core

# scipy.sparse classes by storage format; module paths vary across scipy versions.
_SPARSE_FORMATS = {"csc_matrix": "csc", "csr_matrix": "csr", "csc_array": "csc", "csr_array": "csr"}
_SPARSE_MODULES = frozenset(
    {
        "scipy.sparse",
        "scipy.sparse.csc",
        "scipy.sparse.csr",
        "scipy.sparse._csc",
        "scipy.sparse._csr",
        "scipy.sparse.compressed",
        "scipy.sparse._compressed",
        "scipy.sparse.base",
        "scipy.sparse._base",
        "scipy.sparse._matrix",
        "scipy.sparse._arrays",
    }
)

# Builtins a pickle may need for containers (Python 2 spells the module "__builtin__").
_BUILTIN_MODULES = ("builtins", "__builtin__")
_BUILTIN_NAMES = {"object": object, "set": set, "frozenset": frozenset, "bytes": bytes, "bytearray": bytearray}
_COPYREG_MODULES = ("copyreg", "copy_reg")
_CHUMPY_ROOT = "chumpy"


class ChumpyStub:
    """Stand-in for any ``chumpy`` object: records what the pickle gives it, runs nothing.

    ``chumpy_class`` is the dotted name of the class the pickle asked for (e.g.
    ``"chumpy.ch.Ch"``); ``state`` is the object's pickled ``__dict__`` (for ``Ch`` the
    array is in ``state['x']``); ``args`` are constructor arguments, if any.
    """

    chumpy_class = "chumpy"

    def __new__(cls, *args: Any, **kwargs: Any) -> "ChumpyStub":
        obj = super().__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        self.state = state if isinstance(state, dict) else {"__state__": state}

    @property
    def has_value(self) -> bool:
        """True when the pickle stored an explicit value (``state['x']``)."""
        return "x" in self.state

    @property
    def value(self) -> np.ndarray:
        """The stored array (``state['x']``, itself converted if it is a stub)."""
        if "x" not in self.state:
            raise HeadModelError(
                f"{self.chumpy_class} object holds no stored array (it is a chumpy expression, "
                "not a value); re-export the FLAME file with plain arrays"
            )
        x, seen = self.state["x"], {id(self)}
        while isinstance(x, ChumpyStub):  # a Ch wrapping a Ch: follow, but never in a cycle
            if id(x) in seen or "x" not in x.state:
                raise HeadModelError(f"{self.chumpy_class} object does not resolve to an array")
            seen.add(id(x))
            x = x.state["x"]
        return to_numpy(x, name=self.chumpy_class, densify=True)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.value
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self) -> str:
        return f"<ChumpyStub {self.chumpy_class} keys={sorted(map(str, self.state))}>"


class SparseStub:
    """Captured state of a pickled ``scipy.sparse`` CSC/CSR matrix (rebuilt by ``to_sparse``)."""

    sparse_format = "csc"
    sparse_class = "scipy.sparse.csc_matrix"

    def __new__(cls, *args: Any, **kwargs: Any) -> "SparseStub":
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}

    def to_sparse(self) -> scipy.sparse.spmatrix:
        """A real ``scipy.sparse`` matrix, validated with a full format check."""
        st = self.state
        shape = st.get("_shape", st.get("shape"))
        try:
            data = np.asarray(st["data"])
            indices = np.asarray(st["indices"])
            indptr = np.asarray(st["indptr"])
            if data.dtype == object or not np.issubdtype(indices.dtype, np.integer) or not np.issubdtype(indptr.dtype, np.integer):
                raise ValueError("data must be numeric and indices/indptr integer")
            shape = tuple(int(s) for s in shape)
            cls = scipy.sparse.csc_matrix if self.sparse_format == "csc" else scipy.sparse.csr_matrix
            mat = cls((data, indices, indptr), shape=shape)
            mat.check_format(full_check=True)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise HeadModelError(f"malformed {self.sparse_class} in FLAME pickle: {err}") from err
        return mat

    def __repr__(self) -> str:
        return f"<SparseStub {self.sparse_class}>"


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1 (how protocol-2 pickles spell ``bytes``)."""
    if not isinstance(obj, str) or str(encoding).lower() not in _LATIN1_NAMES:
        raise HeadModelError(f"refusing _codecs.encode with encoding {encoding!r}: FLAME pickles contain only arrays")
    return codecs.encode(obj, "latin1", errors)


class FlamePickleUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the allowlisted globals (see module docstring)."""

    def __init__(self, file: Any, label: str = "<pickle>") -> None:
        super().__init__(file, encoding=PICKLE_ENCODING)
        self._label = label
        self._stub_classes: dict[tuple[str, str], type] = {}

    def persistent_load(self, pid: Any) -> Any:
        raise HeadModelError(f"refusing persistent id {pid!r} in {self._label}: FLAME pickles contain only arrays")

    def _refuse(self, module: str, name: str) -> HeadModelError:
        return HeadModelError(f"refusing to load {module}.{name} from {self._label}: FLAME pickles contain only arrays")

    def _stub(self, base: type, module: str, name: str, **attrs: Any) -> type:
        """One stub subclass per pickled class name, so stubs remember what they replace."""
        key = (module, name)
        if key not in self._stub_classes:
            self._stub_classes[key] = type(f"{base.__name__}[{module}.{name}]", (base,), attrs)
        return self._stub_classes[key]

    def _checked_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` for stub classes only (protocol 0/1 object creation)."""
        if not (isinstance(cls, type) and issubclass(cls, (ChumpyStub, SparseStub)) and base is object and state is None):
            raise HeadModelError(
                f"refusing to reconstruct {getattr(cls, '__qualname__', cls)!s} from {self._label}: "
                "FLAME pickles contain only arrays"
            )
        return copyreg._reconstructor(cls, base, state)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        """Resolve a pickled global from the allowlist, or raise ``HeadModelError``."""
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if module in _SPARSE_MODULES and name in _SPARSE_FORMATS:
            fmt = _SPARSE_FORMATS[name]
            return self._stub(SparseStub, module, name, sparse_format=fmt, sparse_class=f"{module}.{name}")
        elif module == _CHUMPY_ROOT or module.startswith(_CHUMPY_ROOT + "."):
            return self._stub(ChumpyStub, module, name, chumpy_class=f"{module}.{name}")
        elif module in _BUILTIN_MODULES and name in _BUILTIN_NAMES:
            return _BUILTIN_NAMES[name]
        elif module in _COPYREG_MODULES and name == "_reconstructor":
            return self._checked_reconstructor
        elif module == "_codecs" and name == "encode":
            return _latin1_encode
        raise self._refuse(module, name)


def safe_load_pickle(path: str | Path) -> dict:
    """Load a FLAME-style pickle with ``FlamePickleUnpickler`` -> its top-level dict.

    Top-level ``scipy.sparse`` entries come back as real (validated) scipy matrices; chumpy
    objects come back as ``ChumpyStub`` (use ``to_numpy`` / ``to_plain_arrays``).
    Raises ``HeadModelError`` for refused globals, unreadable or non-dict files.
    """
    path = Path(path)
    label = str(path)
    try:
        with open(path, "rb") as fh:
            obj = FlamePickleUnpickler(fh, label).load()
    except HeadModelError:
        raise
    except OSError as err:
        raise HeadModelError(f"cannot open FLAME pickle {label}: {err}") from err
    except Exception as err:  # truncated / corrupt / not a pickle / bad reconstruct args
        raise HeadModelError(f"cannot read FLAME pickle {label}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict):
        raise HeadModelError(f"{label} does not hold a dict of arrays (got {type(obj).__name__}); is it a FLAME model file?")
    # Call the base-class method: a pickle may have set attributes on its own stub subclasses.
    return {str(k): (SparseStub.to_sparse(v) if isinstance(v, SparseStub) else v) for k, v in obj.items()}


def to_numpy(value: Any, name: str = "value", densify: bool = True) -> np.ndarray | scipy.sparse.spmatrix:
    """Convert one unpickled value to a plain numpy array.

    ndarray -> itself; ChumpyStub -> its stored array; scipy sparse (or SparseStub) -> dense
    ndarray when ``densify`` else a scipy CSC/CSR matrix; numbers, strings and numeric
    lists -> ``np.asarray``. Raises ``HeadModelError`` naming ``name`` otherwise.
    """
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise HeadModelError(f"'{name}' is an object array, not numbers")
        return value
    if isinstance(value, ChumpyStub):
        return ChumpyStub.value.fget(value)
    if isinstance(value, SparseStub):
        value = SparseStub.to_sparse(value)
    if scipy.sparse.issparse(value):
        return value.toarray() if densify else value
    if isinstance(value, (int, float, complex, str, bytes, np.generic)):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        try:
            arr = np.asarray([to_numpy(v, name, densify=True) for v in value])
        except ValueError as err:
            raise HeadModelError(f"'{name}' is a ragged list, not an array: {err}") from err
        except RecursionError as err:  # a list that contains itself
            raise HeadModelError(f"'{name}' is a self-referencing list, not an array") from err
        if arr.dtype == object:
            raise HeadModelError(f"'{name}' is not a numeric array")
        return arr
    raise HeadModelError(f"'{name}' is a {type(value).__name__}, which cannot be converted to an array")


def to_plain_arrays(data: dict, densify: bool = False, strict: bool = False) -> dict[str, Any]:
    """Convert every value of a ``safe_load_pickle`` dict with ``to_numpy``.

    densify: also turn sparse matrices into dense arrays (else they stay scipy CSC/CSR).
    strict: raise on an unconvertible value (e.g. a chumpy expression without a stored
        array); otherwise such entries are left out of the result.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        try:
            out[key] = to_numpy(value, name=key, densify=densify)
        except HeadModelError:
            if strict:
                raise
    return out


__all__: list[str] = [
    "ChumpyStub",
    "FlamePickleUnpickler",
    "SparseStub",
    "safe_load_pickle",
    "to_numpy",
    "to_plain_arrays",
]
