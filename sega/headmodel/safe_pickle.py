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

Bounded memory and time (a hostile file must not exhaust the machine either):

* the file may be at most ``MAX_PICKLE_BYTES``;
* the allowed callables that allocate by a *requested size* (``bytes(n)``, ``bytearray(n)``,
  numpy's ``_reconstruct(ndarray, shape, dtype)``, ``scalar(dtype)``) check the size first, against
  one budget per file (``ALLOC_BUDGET_FLOOR_BYTES`` or the file's size, whichever is larger: a real
  pickle carries its array bytes inline and never asks for zero-filled buffers); ``numpy.ndarray``
  itself is handed out as an inert token, so a pickle cannot call it (or ``__new__`` it) directly;
* dict keys and set members must be plain scalars (hashing a tuple of shared tuples takes time
  exponential in its depth);
* ``to_numpy`` turns nested lists into arrays in time linear in the *distinct* lists (memoised by
  id), refusing deep nesting, too many lists and results over ``MAX_CONVERTED_ELEMENTS`` before
  allocating them (a list holding one list twice, 60 levels deep, would otherwise expand to 2^60).
"""

from __future__ import annotations

import codecs
import copyreg
import math
import operator
import os
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
# Real FLAME pickles are 50-100 MB (FLAME 2020 / 2023: shapedirs 5023 x 3 x 400 float64 = 48 MB is most
# of it); 256 MiB leaves room for variants while keeping a hostile file's unpickled size bounded.
MAX_PICKLE_BYTES = 256 * 2**20
ALLOC_BUDGET_FLOOR_BYTES = 2**20  # allocation budget of a small file (see module docstring)
# Arrays built here from nested lists or by densifying a sparse matrix: the largest FLAME array,
# shapedirs, has 5023 * 3 * 400 = 6.0M elements; 2^24 (16.8M) is ~3x that.
MAX_CONVERTED_ELEMENTS = 2**24
MAX_LIST_DEPTH = 32  # nesting of lists in one value (FLAME arrays have at most 3 axes; numpy allows 64)
MAX_LIST_NODES = 1_000_000  # distinct lists / tuples one conversion visits (each costs Python time)
MESSAGE_DETAIL_CHARS = 200  # an underlying exception's text is quoted up to this many characters
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1"})

# numpy's array/scalar reconstruction lives in numpy.core (numpy 1.x pickles) or numpy._core (2.x).
class _NdarrayToken:
    """What a pickle gets for ``numpy.ndarray``: only an argument of ``_reconstruct`` (never callable,
    not a class, so neither REDUCE nor NEWOBJ can allocate an array of a requested shape with it)."""

    def __repr__(self) -> str:
        return "<numpy.ndarray token>"


_NDARRAY = _NdarrayToken()
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): np.dtype}
_NUMPY_CHECKED: dict[tuple[str, str], str] = {}  # -> FlamePickleUnpickler method that checks sizes first
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_CHECKED[(f"{_core}.multiarray", "_reconstruct")] = "_checked_reconstruct"
    _NUMPY_CHECKED[(f"{_core}.multiarray", "scalar")] = "_checked_scalar"
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _np_numeric._frombuffer  # protocol >= 5 arrays (a view of pickled bytes)
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
_BUILTIN_NAMES = {"object": object}  # bytes, bytearray, set and frozenset are checked wrappers (FlamePickleUnpickler)
_SIZED_BUILTINS = {"bytes": bytes, "bytearray": bytearray}  # bytes(n) allocates n zero bytes
_SET_BUILTINS = {"set": set, "frozenset": frozenset}
_PLAIN_KEYS = (str, bytes, int, float, bool, type(None))  # dict keys / set members whose hash costs O(size)
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
        if self.__dict__.get("_converting"):  # its data leads back to itself (e.g. through a chumpy object)
            raise HeadModelError(f"{self.sparse_class} in FLAME pickle refers to itself")
        st = self.state
        shape = st.get("_shape", st.get("shape"))
        self.__dict__["_converting"] = True
        try:
            data, indices, indptr = (to_numpy(st[k], f"{self.sparse_class}.{k}") for k in ("data", "indices", "indptr"))
            if data.dtype.hasobject or not np.issubdtype(indices.dtype, np.integer) or not np.issubdtype(indptr.dtype, np.integer):
                raise ValueError("data must be numeric and indices/indptr integer")
            shape = tuple(int(s) for s in shape)
            cls = scipy.sparse.csc_matrix if self.sparse_format == "csc" else scipy.sparse.csr_matrix
            mat = cls((data, indices, indptr), shape=shape)
            mat.check_format(full_check=True)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise HeadModelError(f"malformed {self.sparse_class} in FLAME pickle: {str(err)[:MESSAGE_DETAIL_CHARS]}") from err
        finally:
            self.__dict__.pop("_converting", None)
        return mat

    def __repr__(self) -> str:
        return f"<SparseStub {self.sparse_class}>"


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` restricted to latin-1 (how protocol-2 pickles spell ``bytes``)."""
    if not isinstance(obj, str) or str(encoding).lower() not in _LATIN1_NAMES:
        raise HeadModelError(f"refusing _codecs.encode with encoding {encoding!r}: FLAME pickles contain only arrays")
    return codecs.encode(obj, "latin1", errors)


def _plain_members(items: Any, what: str, label: str) -> Any:
    """``items`` if every one is a plain scalar (cheap to hash), else ``HeadModelError``."""
    for item in items:
        if not isinstance(item, _PLAIN_KEYS):
            raise HeadModelError(f"refusing a {type(item).__name__} as {what} in {label}: FLAME pickles key their data by name")
    return items


class FlamePickleUnpickler(pickle._Unpickler):
    """An unpickler that resolves only the allowlisted globals and bounds what the file can make it
    allocate or hash (see module docstring).

    Built on the pure-Python ``pickle._Unpickler`` because the C one cannot be told what to do
    when it adds dict keys or set members; it is as fast on FLAME files (a few large byte strings).
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # extended below with the checked key / member opcodes

    def __init__(self, file: Any, label: str = "<pickle>", alloc_budget: int = ALLOC_BUDGET_FLOOR_BYTES) -> None:
        super().__init__(file, encoding=PICKLE_ENCODING)
        self._label = label
        self._stub_classes: dict[tuple[str, str], type] = {}
        self._alloc_left = int(alloc_budget)  # bytes the sized constructors may still allocate

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

    # ---- allocation budget ---------------------------------------------------------------------
    def _spend(self, nbytes: int, what: str) -> None:
        """Charge ``nbytes`` to the file's allocation budget *before* allocating them."""
        if nbytes > self._alloc_left:
            raise HeadModelError(f"refusing {what} of {nbytes} bytes in {self._label}: more than a FLAME pickle of this size can need")
        self._alloc_left -= nbytes

    def _sized(self, kind: type) -> Any:
        """``bytes`` / ``bytearray`` whose ``(n)`` form (n zero bytes) is charged to the budget first."""

        def make(source: Any = b"", *args: Any) -> Any:
            if not isinstance(source, (str, bytes, bytearray, memoryview, list, tuple)):
                try:
                    count = operator.index(source)  # ints and integer numpy scalars: a size, not data
                except TypeError:
                    count = None
                if count is not None:
                    self._spend(max(count, 0), f"{kind.__name__}({count})")
            return kind(source, *args)

        return make

    def _checked_reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        """numpy's ``_reconstruct`` (an empty array of ``shape``, filled by its state): ndarray only, size charged first."""
        if subtype is not _NDARRAY and subtype is not np.ndarray:
            raise HeadModelError(f"refusing to reconstruct {subtype!r} from {self._label}: FLAME pickles contain only plain arrays")
        try:
            dims = [operator.index(d) for d in (shape if isinstance(shape, (tuple, list)) else (shape,))]
            itemsize = np.dtype(dtype).itemsize
        except (TypeError, ValueError) as err:
            raise HeadModelError(f"malformed array header in {self._label}: {str(err)[:MESSAGE_DETAIL_CHARS]}") from err
        self._spend(math.prod(max(d, 0) for d in dims) * itemsize, f"an array of shape {tuple(dims)}")
        return _np_multiarray._reconstruct(np.ndarray, tuple(dims), dtype)

    def _checked_scalar(self, dtype: Any, *args: Any) -> Any:
        """numpy's ``scalar(dtype[, data])``: without data it allocates ``itemsize`` bytes; charged first."""
        if isinstance(dtype, np.dtype) and not args:
            self._spend(dtype.itemsize, f"a {dtype} scalar")
        return _np_multiarray.scalar(dtype, *args)

    def _checked_reconstructor(self, cls: Any, base: Any, state: Any) -> Any:
        """``copyreg._reconstructor`` for stub classes only (protocol 0/1 object creation)."""
        if not (isinstance(cls, type) and issubclass(cls, (ChumpyStub, SparseStub)) and base is object and state is None):
            raise HeadModelError(
                f"refusing to reconstruct {getattr(cls, '__qualname__', cls)!s} from {self._label}: "
                "FLAME pickles contain only arrays"
            )
        return copyreg._reconstructor(cls, base, state)

    def _set_of(self, kind: type) -> Any:
        def make(items: Any = ()) -> Any:
            return kind(_plain_members(list(items), f"a {kind.__name__} member", self._label))

        return make

    # ---- opcodes that hash what the file supplies ------------------------------------------------
    # (After a MARK, ``pickle._Unpickler`` starts a fresh ``stack``: the marked items are all of it.)
    def load_setitem(self) -> None:
        _plain_members(self.stack[-2:-1], "a dict key", self._label)
        super().load_setitem()

    def load_setitems(self) -> None:
        _plain_members(self.stack[0::2], "a dict key", self._label)
        super().load_setitems()

    def load_dict(self) -> None:
        _plain_members(self.stack[0::2], "a dict key", self._label)
        super().load_dict()

    def load_additems(self) -> None:
        _plain_members(self.stack, "a set member", self._label)
        super().load_additems()

    def load_frozenset(self) -> None:
        _plain_members(self.stack, "a set member", self._label)
        super().load_frozenset()

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        """Resolve a pickled global from the allowlist, or raise ``HeadModelError``."""
        if (module, name) in _NUMPY_GLOBALS:
            return _NUMPY_GLOBALS[(module, name)]
        if (module, name) in _NUMPY_CHECKED:
            return getattr(self, _NUMPY_CHECKED[(module, name)])
        if module in _SPARSE_MODULES and name in _SPARSE_FORMATS:
            fmt = _SPARSE_FORMATS[name]
            return self._stub(SparseStub, module, name, sparse_format=fmt, sparse_class=f"{module}.{name}")
        elif module == _CHUMPY_ROOT or module.startswith(_CHUMPY_ROOT + "."):
            return self._stub(ChumpyStub, module, name, chumpy_class=f"{module}.{name}")
        elif module in _BUILTIN_MODULES and name in _BUILTIN_NAMES:
            return _BUILTIN_NAMES[name]
        elif module in _BUILTIN_MODULES and name in _SIZED_BUILTINS:
            return self._sized(_SIZED_BUILTINS[name])
        elif module in _BUILTIN_MODULES and name in _SET_BUILTINS:
            return self._set_of(_SET_BUILTINS[name])
        elif module in _COPYREG_MODULES and name == "_reconstructor":
            return self._checked_reconstructor
        elif module == "_codecs" and name == "encode":
            return _latin1_encode
        raise self._refuse(module, name)


for _op, _method in ((pickle.SETITEM, "load_setitem"), (pickle.SETITEMS, "load_setitems"), (pickle.DICT, "load_dict"),
                     (pickle.ADDITEMS, "load_additems"), (pickle.FROZENSET, "load_frozenset")):
    FlamePickleUnpickler.dispatch[_op[0]] = getattr(FlamePickleUnpickler, _method)
del _op, _method


def safe_load_pickle(path: str | Path) -> dict:
    """Load a FLAME-style pickle with ``FlamePickleUnpickler`` -> its top-level dict.

    Top-level ``scipy.sparse`` entries come back as real (validated) scipy matrices; chumpy
    objects come back as ``ChumpyStub`` (use ``to_numpy`` / ``to_plain_arrays``).
    Raises ``HeadModelError`` for refused globals, unreadable, oversized or non-dict files.
    """
    path = Path(path)
    label = str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_PICKLE_BYTES:
                raise HeadModelError(f"{label} is {size / 2**20:.0f} MiB, over the "
                                     f"{MAX_PICKLE_BYTES / 2**20:.0f} MiB limit for a FLAME pickle")
            obj = FlamePickleUnpickler(fh, label, alloc_budget=max(size, ALLOC_BUDGET_FLOOR_BYTES)).load()
    except HeadModelError:
        raise
    except OSError as err:
        raise HeadModelError(f"cannot open FLAME pickle {label}: {err}") from err
    except Exception as err:  # truncated / corrupt / not a pickle / bad reconstruct args
        raise HeadModelError(f"cannot read FLAME pickle {label}: {type(err).__name__}: {str(err)[:MESSAGE_DETAIL_CHARS]}") from err
    if not isinstance(obj, dict):
        raise HeadModelError(f"{label} does not hold a dict of arrays (got {type(obj).__name__}); is it a FLAME model file?")
    # Call the base-class method: a pickle may have set attributes on its own stub subclasses.
    return {str(k): (SparseStub.to_sparse(v) if isinstance(v, SparseStub) else v) for k, v in obj.items()}


class _ListToArray:
    """Nested lists / tuples -> one ndarray, in time linear in the *distinct* lists and memory of the result only.

    Pass 1 (``shape``) walks the lists once each (memoised by id; cycles, depth and count refused) and
    finds the result's shape; its size is checked before anything is allocated. Pass 2 (``fill``) writes
    each distinct list once and copies it where it recurs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.shapes: dict[int, tuple[int, ...]] = {}  # id(list) -> shape of its array
        self.leaves: dict[int, np.ndarray] = {}  # id(leaf) -> converted leaf
        self.active: set[int] = set()  # lists on the current path (a repeat is a cycle)

    def _fail(self, what: str) -> HeadModelError:
        return HeadModelError(f"'{self.name}' {what}")

    def shape(self, value: Any, depth: int = 0) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)):
            if id(value) not in self.leaves:
                self.leaves[id(value)] = to_numpy(value, self.name, densify=True)
            return self.leaves[id(value)].shape
        key = id(value)
        if key in self.shapes:
            return self.shapes[key]
        if key in self.active:
            raise self._fail("is a self-referencing list, not an array")
        if depth >= MAX_LIST_DEPTH:
            raise self._fail(f"is a list nested more than {MAX_LIST_DEPTH} levels deep, not an array")
        if len(self.shapes) >= MAX_LIST_NODES:
            raise self._fail(f"is made of more than {MAX_LIST_NODES} lists, not an array")
        self.active.add(key)
        inner = {self.shape(v, depth + 1) for v in value}
        self.active.discard(key)
        if len(inner) > 1:
            raise self._fail(f"is a ragged list, not an array (items of shapes {sorted(inner)[:3]})")
        shape = (len(value), *(inner.pop() if inner else ()))
        if math.prod(shape) > MAX_CONVERTED_ELEMENTS:
            raise self._fail(f"would have more than {MAX_CONVERTED_ELEMENTS} elements (lists of shape {shape[:8]})")
        self.shapes[key] = shape
        return shape

    def convert(self, value: list | tuple) -> np.ndarray:
        shape = self.shape(value)
        try:
            dtype = np.result_type(*{leaf.dtype for leaf in self.leaves.values()}) if self.leaves else np.dtype(np.float64)
        except TypeError as err:  # DTypePromotionError: numbers mixed with text
            raise self._fail("mixes numbers and text, not a numeric array") from err
        if dtype.hasobject:
            raise self._fail("is not a numeric array")
        out = np.empty(shape, dtype)
        self.fill(value, out, {})
        return out

    def fill(self, value: list | tuple, out: np.ndarray, done: dict[int, np.ndarray]) -> None:
        for i, item in enumerate(value):
            if not isinstance(item, (list, tuple)):
                out[i] = self.leaves[id(item)]
            elif id(item) in done:
                out[i] = done[id(item)]  # a shared list: copy its first filling
            else:
                self.fill(item, out[i], done)
                done[id(item)] = out[i]


def to_numpy(value: Any, name: str = "value", densify: bool = True) -> np.ndarray | scipy.sparse.spmatrix:
    """Convert one unpickled value to a plain numpy array.

    ndarray -> itself; ChumpyStub -> its stored array; scipy sparse (or SparseStub) -> dense
    ndarray when ``densify`` else a scipy CSC/CSR matrix; numbers, strings and numeric
    (nested) lists -> an array. Raises ``HeadModelError`` naming ``name`` otherwise, and for
    results over ``MAX_CONVERTED_ELEMENTS`` elements (checked before allocating).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise HeadModelError(f"'{name}' is an object array, not numbers")
        return value
    if isinstance(value, ChumpyStub):
        return ChumpyStub.value.fget(value)
    if isinstance(value, SparseStub):
        value = SparseStub.to_sparse(value)
    if scipy.sparse.issparse(value):
        if not densify:
            return value
        if math.prod(value.shape) > MAX_CONVERTED_ELEMENTS:
            raise HeadModelError(f"'{name}' is a sparse matrix of shape {value.shape}, too large to make dense")
        return value.toarray()
    if isinstance(value, (int, float, complex, str, bytes, np.generic)):
        return np.asarray(value)
    if isinstance(value, (list, tuple)):
        return _ListToArray(name).convert(value)
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
