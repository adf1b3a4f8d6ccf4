"""Reading torch ``.pt`` files without letting them run code.

A ``.pt`` file is a pickle: unpickling it can call any importable function (``os.system`` included). This module
offers three tools:

* ``pickle_globals(path)``: the "module.qualname" globals a file references, read from the pickle opcodes without
  executing anything (used to tell ultralytics, legacy yolov5 and yolo_prune checkpoints apart).
* ``safe_torch_load(path)``: ``torch.load(weights_only=True)`` (tensors and plain containers only) with clear
  errors for missing, truncated or corrupt files.
* ``allow_list_load(path, policy)``: ``torch.load`` through an Unpickler that resolves only the globals a policy
  allows and refuses every other one with ``RefusedGlobal`` naming it. ``base_policy`` / ``tensor_policy`` live
  here; each family's own policy lives in its module and is registered with it (``Family.pickle_policy``:
  ``yolov5_legacy.yolov5_policy``, ``ultralytics.ultralytics_policy``), as are the extra callables its pickles
  construct (``Family.pickle_calls``).
"""
from __future__ import annotations

import _compat_pickle
import collections
import enum
import functools
import importlib
import io
import os
import pathlib
import pickle
import pickletools
import re
import struct
import tarfile
import types
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from . import registry

__all__ = ["RefusedGlobal", "CorruptCheckpoint", "pickle_globals", "safe_torch_load", "allow_list_load", "is_allowed",
           "sanitize_module", "tensor_policy",
           "base_policy", "restricted_getattr", "import_known"]

_EXPECTED = ("a torch.save() checkpoint (a zip archive holding data.pkl, or the legacy pickle format); "
             "re-download or re-export the file")


class RefusedGlobal(pickle.UnpicklingError, ValueError):
    """The pickle asked for a global outside the allow-list; nothing was called.

    Also a ValueError, like every refusal of bad input in yolo_prune, so the tools report it in one line."""


class CorruptCheckpoint(ValueError):
    """The file is empty, truncated or not a torch checkpoint."""


# --------------------------------------------------------------------------------------------- listing globals
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
               "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


def _scan_one_pickle(stream, found: set[str]) -> None:
    """Add the globals of one pickle (up to its STOP) to ``found``. Nothing is executed."""
    memo: dict = {}
    recent: list = []  # last pushed values that may feed STACK_GLOBAL (strings, or None for anything else)
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, qual = str(arg).partition(" ")
            found.add(f"{module}.{qual}")
            recent.append(None)
        elif name == "STACK_GLOBAL":
            if len(recent) >= 2 and isinstance(recent[-2], str) and isinstance(recent[-1], str):
                found.add(f"{recent[-2]}.{recent[-1]}")
            else:
                found.add("<unresolved STACK_GLOBAL>")
            recent.append(None)
        elif name in _STRING_OPS:
            recent.append(arg if isinstance(arg, str) else arg.decode("latin-1", "replace"))
        elif name in _PUT_OPS:
            memo[arg] = recent[-1] if recent else None
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in _GET_OPS:
            recent.append(memo.get(arg))
        else:
            recent.append(None)
        if len(recent) > 8:
            del recent[:-8]


# members torch.save writes under the archive's top folder; data/<key> holds the storages
_ARCHIVE_FILES = {"data.pkl", "byteorder", "version", ".data/version", ".format_version", ".storage_alignment",
                  ".data/serialization_id", "serialization_id"}


def _zip_pickle_name(zf: zipfile.ZipFile, path) -> str:
    """The record torch.load reads: '<top>/data.pkl', where <top> is the folder of the archive's FIRST member.

    torch's reader takes the archive name from the first entry and looks records up under it, and routes any
    archive holding 'constants.pkl' to TorchScript (which runs code). So the layout is checked exactly: one top
    folder, only the members torch.save writes, no duplicates, no compression (torch.save stores members as is;
    this also stops zip bombs), and the pickle scanned is the one torch will read.
    """
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if not names or "/" not in names[0]:
        raise CorruptCheckpoint(f"{path}: zip archive without a top folder (first member {names[:1]}); expected "
                                f"{_EXPECTED}")
    top = names[0].split("/", 1)[0] + "/"
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[:3]
        raise CorruptCheckpoint(f"{path}: zip archive holds duplicate members {dup}; refused (which one torch "
                                "reads is undefined)")
    for info in infos:
        rel = info.filename[len(top):] if info.filename.startswith(top) else None
        if rel == "constants.pkl" or (rel or "").startswith("code/") or info.filename.endswith("constants.pkl"):
            raise CorruptCheckpoint(f"{path}: a TorchScript archive (member '{info.filename}'); TorchScript runs "
                                    "code when loaded and is refused. Expected a torch.save() checkpoint of a "
                                    "state_dict or model (export TorchScript models with their source instead)")
        ok = rel is not None and (rel in _ARCHIVE_FILES or (rel.startswith("data/") and "/" not in rel[5:] and
                                                            rel[5:]))
        if not ok:
            raise CorruptCheckpoint(f"{path}: unknown archive layout (member '{info.filename}' is not one that "
                                    f"torch.save writes under '{top}'); expected {_EXPECTED}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CorruptCheckpoint(f"{path}: archive member '{info.filename}' is compressed; torch.save stores "
                                    f"members uncompressed (re-save the file with torch.save); expected {_EXPECTED}")
    if top + "data.pkl" not in names:
        raise CorruptCheckpoint(f"{path}: zip archive has no '{top}data.pkl'; expected {_EXPECTED}")
    return top + "data.pkl"


def _check_not_tar(path: Path) -> None:
    # torch.load reads the old tar format with another pickle sequence than the one scanned here: refuse it
    try:
        is_tar = tarfile.is_tarfile(path)
    except (OSError, ValueError, EOFError):
        is_tar = False
    if is_tar:
        raise CorruptCheckpoint(f"{path}: a tar archive (pre-1.0 torch tar format) is not accepted; expected "
                                f"{_EXPECTED}")


def pickle_globals(path: str | os.PathLike) -> set[str]:
    """The "module.qualname" globals referenced by a torch ``.pt`` file, found without executing anything."""
    path = Path(path)
    _check_readable(path)
    found: set[str] = set()
    if _starts_like_zip(path) and not zipfile.is_zipfile(path):
        raise CorruptCheckpoint(f"{path}: truncated: a zip archive without its end (central directory missing); "
                                f"expected {_EXPECTED}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                _scan_one_pickle(io.BytesIO(zf.read(_zip_pickle_name(zf, path))), found)
        else:
            _check_not_tar(path)
            # legacy format: magic number, protocol, sys info, the object, storage keys (5 pickles), then raw data
            with open(path, "rb") as f:
                for _ in range(5):
                    _scan_one_pickle(f, found)
    except CorruptCheckpoint:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile, KeyError, OSError, IndexError, struct.error,
            NotImplementedError, OverflowError, UnicodeDecodeError, RuntimeError) as e:
        raise CorruptCheckpoint(f"{path}: cannot read its pickle ({type(e).__name__}: {e}); expected {_EXPECTED}") \
            from e
    return found


# --------------------------------------------------------------------------------------------- loading
def _check_readable(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; supply a .pt checkpoint at this path")
    if path.stat().st_size == 0:
        raise CorruptCheckpoint(f"{path}: file is empty (0 bytes); expected {_EXPECTED}")


def _starts_like_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _torch_load(path: Path, **kwargs):
    _check_readable(path)
    if _starts_like_zip(path) and not zipfile.is_zipfile(path):
        raise CorruptCheckpoint(f"{path}: truncated: a zip archive without its end (central directory missing, "
                                f"{path.stat().st_size} bytes); expected {_EXPECTED}")
    if zipfile.is_zipfile(path):
        # torch reports a truncated member deep inside its reader; check the layout and the CRCs first
        try:
            with zipfile.ZipFile(path) as zf:
                _zip_pickle_name(zf, path)
                bad = zf.testzip()
        except CorruptCheckpoint:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
            raise CorruptCheckpoint(f"{path}: damaged zip archive ({e}); expected {_EXPECTED}") from e
        if bad is not None:
            raise CorruptCheckpoint(f"{path}: archive member '{bad}' is damaged (CRC mismatch); expected {_EXPECTED}")
    else:
        _check_not_tar(path)
    try:
        return torch.load(path, map_location="cpu", **kwargs)
    except RefusedGlobal as e:
        if str(path) in str(e):
            raise
        raise RefusedGlobal(f"{path}: {e} (nothing was executed)") from None
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e)) if kwargs.get("weights_only") else None
        if refused:
            raise RefusedGlobal(f"{path}: refused global '{refused.group(1)}': weights-only loading accepts "
                                "tensors and plain containers only (nothing was executed)") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptCheckpoint(f"{path}: not a readable checkpoint pickle ({first}); expected {_EXPECTED}") from e
    except (EOFError, zipfile.BadZipFile, OSError) as e:
        raise CorruptCheckpoint(f"{path}: file ends early or is not a checkpoint ({type(e).__name__}: {e}); "
                                f"expected {_EXPECTED}") from e
    except CorruptCheckpoint:
        raise
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, struct.error, UnicodeDecodeError,
            AssertionError, NotImplementedError, OverflowError, RecursionError, MemoryError) as e:
        # arbitrary bytes read as pickle opcodes fail in arbitrary ways; none of them is a checkpoint
        raise CorruptCheckpoint(f"{path}: not a checkpoint, its bytes do not parse as a pickle "
                                f"({type(e).__name__}: {e}); expected {_EXPECTED}") from e
    except RuntimeError as e:
        msg = str(e)
        first = (msg.strip().splitlines() or ["RuntimeError"])[0][:300]
        raise CorruptCheckpoint(f"{path}: truncated or corrupt ({first}); expected {_EXPECTED}") from e


def safe_torch_load(path: str | os.PathLike):
    """Tensors and plain containers only (``tensor_policy``: no module classes), with clear errors on bad files.

    Our own unpickler rather than torch's weights_only one, so every .pt goes through the same checked calls
    (torch's would, for instance, call ``torch.Tensor(n)`` with any n)."""
    path = Path(path)
    return _torch_load(path, weights_only=False, pickle_module=_make_pickle_module(tensor_policy, str(path)))


Policy = Callable[[str, str], object]


def _py3_name(module: str, name: str) -> tuple[str, str]:
    # protocol 2 pickles name builtins '__builtin__' (python 2 spelling); pickle maps them the same way
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def is_allowed(global_name: str, policy: Policy) -> bool:
    """Whether a "module.qualname" from ``pickle_globals`` would be accepted by ``policy``."""
    if "." not in global_name:
        return False
    module, name = _py3_name(*global_name.rsplit(".", 1))
    if "Storage" in name and module in ("torch", "torch.cuda"):  # torch.load resolves these itself
        return hasattr(torch, name)
    return policy(module, name) is not None


def _is_class_like(obj) -> bool:
    return isinstance(obj, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
                            types.MethodType))


class _AllowListUnpickler(pickle._Unpickler):
    """The pure-Python Unpickler with its call opcodes limited; ``_make_pickle_module`` binds a policy and source."""
    dispatch = dict(pickle._Unpickler.dispatch)
    source = "pickle"

    @staticmethod
    def policy(module: str, name: str):
        return None

    def _refuse(self, what: str):
        raise RefusedGlobal(f"{self.source}: {what}, so the file was not loaded (nothing was executed)")

    def find_class(self, module, name):
        module, name = _py3_name(module, name)
        obj = self.policy(module, name)
        if obj is None:
            self._refuse(f"refused global '{module}.{name}': it is not on the allow-list of model and tensor classes")
        return obj

    def _check_call(self, func):
        if not _safe_call(func):
            self._refuse(f"refused call of '{_qualname(func)}': only tensor rebuild helpers and plain containers may "
                         "be called while loading")

    def load_reduce(self):
        args = self.stack.pop()
        self._check_call(self.stack[-1])
        self.stack[-1] = self.stack[-1](*args)

    def load_inst(self):
        self._refuse("refused INST opcode (protocol-0 object construction)")

    def load_obj(self):
        self._refuse("refused OBJ opcode (protocol-1 object construction)")

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if not isinstance(cls, type) or cls.__new__ not in (object.__new__, dict.__new__, set.__new__) and \
                not _safe_call(cls):
            self._refuse(f"refused NEWOBJ of '{_qualname(cls)}': its __new__ is not the plain object allocator")
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self):
        self._refuse("refused NEWOBJ_EX opcode (keyword construction is never used by torch.save)")

    def load_build(self):
        if _is_class_like(self.stack[-2]):
            self._refuse(f"refused BUILD on '{_qualname(self.stack[-2])}': state may only be set on instances")
        _check_ndarray_state(self.stack[-2], self.stack[-1], self._refuse)
        super().load_build()

    def load(self):
        try:
            return super().load()
        except KeyError as e:  # the pure-Python unpickler reports an unknown opcode as a KeyError
            raise pickle.UnpicklingError(f"invalid pickle opcode or reference {e}") from e

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.OBJ[0]] = load_obj
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def _make_pickle_module(policy: Policy, source: str):
    """A pickle-module stand-in for torch.load whose Unpickler only resolves allowed globals.

    Resolving a class is not enough: REDUCE/INST/OBJ opcodes would *call* it (a module class's constructor can
    read files or download), so calls are limited to ``_SAFE_CALLS`` (tensor rebuild helpers, containers) and
    classes are only ever rebuilt the way pickle restores instances: ``cls.__new__`` then ``__setstate__``.
    The pure-Python Unpickler is used because its opcode table can be overridden.
    """

    class AllowListUnpickler(_AllowListUnpickler):
        pass

    AllowListUnpickler.policy = staticmethod(policy)
    AllowListUnpickler.source = source

    def load(file, **kwargs):
        return AllowListUnpickler(file, **kwargs).load()

    mod = types.ModuleType("yolo_prune_allow_list_pickle")
    mod.Unpickler = AllowListUnpickler
    mod.load = load
    mod.loads = lambda data, **kw: load(io.BytesIO(data), **kw)
    return mod


def _check_ndarray_state(target, state, refuse) -> None:
    """An ndarray's state must carry as many items as its shape says (numpy checks bytes, not object lists)."""
    try:
        import numpy as np
    except ImportError:
        return
    if not isinstance(target, np.ndarray):
        return
    ok = isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple) and \
        all(isinstance(x, int) and x >= 0 for x in state[1])
    if ok:
        n = 1
        for x in state[1]:
            n *= x
        data = state[4]
        ok = isinstance(data, (bytes, bytearray, list)) and (len(data) == n if isinstance(data, list) else
                                                             n <= max(len(data), 1))
    if not ok:
        refuse("refused a numpy array whose shape does not match the data it carries")
    # numpy allocates shape x itemsize bytes; bytes data must fill them (numpy checks), but a list carries only
    # one object per item: an object dtype with a subarray or fields (('O', (10**8,))) would zero-fill gigabytes
    if isinstance(data, list) and not (isinstance(state[2], np.dtype) and state[2] == np.dtype(object)):
        refuse(f"refused a numpy object array of dtype {str(state[2])[:80]}: only the plain object dtype 'O' is "
               "accepted for arrays pickled as lists")


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def allow_list_load(path: str | os.PathLike, policy: Policy):
    """``torch.load`` whose unpickler resolves only what ``policy(module, name)`` returns (None = refuse)."""
    path = Path(path)
    return _torch_load(path, weights_only=False, pickle_module=_make_pickle_module(policy, str(path)))


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
               "_load_state_dict_post_hooks")


def _ema_or_model(ckpt):
    """A training/release checkpoint's EMA, else its model (compared with None: a pickled module's truthiness
    would call its own __len__ on unchecked state)."""
    if not isinstance(ckpt, dict):
        return ckpt
    for key in ("ema", "model"):
        if ckpt.get(key) is not None:
            return ckpt[key]
    return None


def sanitize_module(root, source: str, max_modules: int = 100_000):
    """Make an unpickled module tree safe to call torch's own methods on (``state_dict``, ``named_modules``).

    The pickle chose every attribute: hook dictionaries would make ``state_dict()`` call whatever allowed callable
    it put there, and a non-module in ``_modules`` would crash deep inside torch. So every module's hooks are
    cleared and its children, parameters and buffers are checked to be modules, Parameters and tensors.
    Returns ``root``; raises CorruptCheckpoint naming the file and the module path.
    """
    if not isinstance(root, nn.Module):
        raise CorruptCheckpoint(f"{source}: expected a model (torch.nn.Module), found {type(root).__name__}")
    stack, seen = [("model", root)], 0
    while stack:
        where, m = stack.pop()
        seen += 1
        if seen > max_modules:
            raise CorruptCheckpoint(f"{source}: more than {max_modules:,} modules in the pickled model")
        state = m.__dict__
        for attr in _HOOK_DICTS:
            if attr in state:
                state[attr] = collections.OrderedDict()
        for attr, kinds in (("_modules", (nn.Module,)), ("_parameters", (nn.Parameter, torch.Tensor)),
                            ("_buffers", (torch.Tensor,))):
            table = state.get(attr)
            if not isinstance(table, dict):
                raise CorruptCheckpoint(f"{source}: {where}.{attr} expected a mapping, found {type(table).__name__}")
            for k, v in table.items():
                if not isinstance(k, str) or not (v is None or isinstance(v, kinds)):
                    raise CorruptCheckpoint(f"{source}: {where}.{attr}[{k!r}] expected a "
                                            f"{kinds[0].__name__}, found {type(v).__name__}"[:300])
        stack.extend((f"{where}.{k}", v) for k, v in state["_modules"].items() if v is not None)
    return root


# --------------------------------------------------------------------------------------------- policies
def _rebuild_from_type_v2_checked(func, new_type, args, state):
    # torch's helper calls func(*args); only let it call another allowed rebuild helper, for a Tensor subclass
    if not (_safe_call(func) and not isinstance(func, type)) or not (isinstance(new_type, type) and
                                                                       issubclass(new_type, torch.Tensor)):
        raise RefusedGlobal(f"refused _rebuild_from_type_v2({_qualname(func)}, {_qualname(new_type)})")
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


def _no_hooks(backward_hooks):
    # pickled hooks would be called by autograd later; checkpoints never need them
    if backward_hooks:
        raise RefusedGlobal(f"refused a Parameter carrying backward hooks ({list(backward_hooks.values())[:3]})")


def _rebuild_parameter_checked(data, requires_grad, backward_hooks):
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_parameter(data, requires_grad, collections.OrderedDict())


def _rebuild_parameter_with_state_checked(data, requires_grad, backward_hooks, state):
    _no_hooks(backward_hooks)
    return torch._utils._rebuild_parameter_with_state(data, requires_grad, collections.OrderedDict(), state)


def _codecs_encode_checked(obj, encoding="utf-8", errors="strict"):
    # protocol-2 pickles write bytes as _codecs.encode(text, 'latin1'); nothing else of _codecs is reachable
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise RefusedGlobal(f"refused _codecs.encode({type(obj).__name__}, {encoding!r}): only the latin-1 bytes "
                            "encoding pickle writes is accepted")
    return obj.encode("latin-1")


def _bounded_iterable(name: str, arg) -> None:
    # set(range(10**18)) would run for ever: containers are only built from an already materialised list/tuple
    if not isinstance(arg, (list, tuple, set, frozenset, dict, str, bytes)):
        raise RefusedGlobal(f"refused {name}({type(arg).__name__}): expected a list or tuple")


def _container(cls, name: str):
    def build(*args):
        if len(args) > 1:
            raise RefusedGlobal(f"refused {name} with {len(args)} arguments")
        if args:
            _bounded_iterable(name, args[0])
        return cls(*args)
    build.__qualname__ = f"checked_{name}"
    return build


def _bytearray_checked(*args):
    if args and not isinstance(args[0], (bytes, str, list)):  # bytearray(10**12) would allocate a terabyte
        raise RefusedGlobal(f"refused bytearray({type(args[0]).__name__}): only bytearray(bytes) is accepted")
    return bytearray(*args)


@functools.lru_cache(maxsize=None)  # one set of checked wrappers: the call table compares them by identity
def _torch_allowed() -> dict:
    """Tensor/storage rebuild helpers, dtypes and plain containers: what torch.save writes for tensors."""
    from torch import _utils

    allowed = {f"torch._utils.{n}": getattr(_utils, n) for n in
               ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3") if hasattr(_utils, n)}
    allowed["torch._utils._rebuild_parameter"] = _rebuild_parameter_checked
    allowed["torch._utils._rebuild_parameter_with_state"] = _rebuild_parameter_with_state_checked
    allowed["torch._tensor._rebuild_from_type_v2"] = _rebuild_from_type_v2_checked
    allowed.update({"collections.OrderedDict": _container(collections.OrderedDict, "OrderedDict"),
                    "builtins.set": _container(set, "set"), "builtins.frozenset": _container(frozenset, "frozenset"),
                    "builtins.slice": slice, "builtins.range": range,
                    "builtins.complex": complex, "builtins.bytearray": _bytearray_checked,
                    "collections.Counter": _container(collections.Counter, "Counter"),
                    "_codecs.encode": _codecs_encode_checked,
                    "torch.Size": _container(torch.Size, "torch.Size"), "torch.device": torch.device, "torch.Tensor": torch.Tensor,
                    "torch.nn.parameter.Parameter": nn.Parameter,
                    "torch.storage.TypedStorage": torch.storage.TypedStorage,
                    "torch.storage.UntypedStorage": torch.storage.UntypedStorage})
    if hasattr(torch.serialization, "_get_layout"):
        allowed["torch.serialization._get_layout"] = torch.serialization._get_layout
    for n in dir(torch):  # dtypes (torch.float16 ...) and memory formats are pickled by name
        obj = getattr(torch, n, None)
        if isinstance(obj, (torch.dtype, torch.memory_format, torch.layout)):
            allowed[f"torch.{n}"] = obj
    return allowed


@functools.lru_cache(maxsize=None)
def _numpy_allowed() -> dict:
    try:
        import numpy as np
    except ImportError:
        return {}
    raw_scalar = np.float64(0).__reduce__()[0]  # numpy's scalar rebuild helper (numpy 1 and 2 differ in path)

    def scalar(dtype, *obj):
        # numpy writes scalar(dtype, bytes of dtype.itemsize) (an object scalar: the object). Without the bytes it
        # would malloc and zero-fill itemsize bytes, which a pickled dtype sets to gigabytes ('V2000000000')
        plain = isinstance(dtype, np.dtype) and len(obj) == 1 and not dtype.hasobject and \
            isinstance(obj[0], bytes) and len(obj[0]) == dtype.itemsize
        if not (plain or isinstance(dtype, np.dtype) and dtype == np.dtype(object) and len(obj) == 1):
            size = f"{dtype.itemsize:,}-byte " if isinstance(dtype, np.dtype) else ""
            raise RefusedGlobal(f"refused numpy scalar({size}{str(dtype)[:60]}, ...): expected the dtype with exactly "
                                f"its itemsize in bytes, as numpy pickles a scalar")
        return raw_scalar(dtype, *obj)
    raw_reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]

    def reconstruct(subtype, shape, dtype):
        # ndarray.__reduce__ always writes (ndarray, (0,), b'b'); the real shape and data come with BUILD
        if subtype is not np.ndarray or tuple(shape) != (0,) or not isinstance(dtype, (bytes, str)) or len(dtype) > 8:
            raise RefusedGlobal(f"refused numpy _reconstruct({_qualname(subtype)}, {shape!r}): only the empty "
                                "ndarray that numpy pickles is accepted")
        return raw_reconstruct(subtype, shape, dtype)

    allowed = {"numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray}
    for core in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{core}.scalar"] = scalar
        allowed[f"{core}._reconstruct"] = reconstruct
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for n in dir(dtypes):
            obj = getattr(dtypes, n)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                allowed[f"numpy.dtypes.{n}"] = obj
    return allowed


def _torch_nn_class(module: str, name: str):
    """An nn.Module subclass defined under torch.nn.modules (layers carry no code that runs on unpickling)."""
    if not (module == "torch.nn.modules" or module.startswith("torch.nn.modules.")):
        return None
    mod = import_known(module)
    obj = getattr(mod, name, None) if mod is not None else None
    return obj if isinstance(obj, type) and issubclass(obj, nn.Module) else None


def import_known(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_BASE: dict | None = None


def base_policy(module: str, name: str):
    """Tensors, storages, dtypes, plain containers, numpy arrays/scalars and torch.nn layer classes."""
    global _BASE
    if _BASE is None:
        _BASE = {**_torch_allowed(), **_numpy_allowed(),
                 "pathlib.PosixPath": pathlib.PurePosixPath, "pathlib.WindowsPath": pathlib.PureWindowsPath,
                 "pathlib._local.PosixPath": pathlib.PurePosixPath,
                 "pathlib._local.WindowsPath": pathlib.PureWindowsPath,
                 "pathlib.PurePosixPath": pathlib.PurePosixPath, "pathlib.PureWindowsPath": pathlib.PureWindowsPath,
                 "pathlib._local.PurePosixPath": pathlib.PurePosixPath,
                 "pathlib._local.PureWindowsPath": pathlib.PureWindowsPath}
    obj = _BASE.get(f"{module}.{name}")
    return obj if obj is not None else _torch_nn_class(module, name)


def tensor_policy(module: str, name: str):
    """Our own checkpoints: tensors, dtypes, plain containers, numpy values and paths; no module classes."""
    if module == "torch.nn.modules" or module.startswith("torch.nn.modules."):
        return None
    return base_policy(module, name)


def restricted_getattr(obj, name):
    # ultralytics pickles a module's bound forward and enum members through getattr; allow only those
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and name in obj.__members__:
        return obj[name]
    if isinstance(obj, nn.Module) and name in {"forward", "forward_fuse"}:
        return getattr(type(obj), name).__get__(obj)
    raise RefusedGlobal(f"refused getattr({type(obj).__name__}, {name!r}): only a module's forward/forward_fuse "
                        "or an enum member may be looked up")


def _safe_call_table() -> set:
    table = set()
    # classes that pickles only pass around (never call): called, they would allocate whatever size they are given
    never_called = {torch.Tensor, nn.Parameter, torch.storage.TypedStorage, torch.storage.UntypedStorage}
    try:
        import numpy as np
        never_called.add(np.ndarray)
    except ImportError:
        pass
    for obj in {**_torch_allowed(), **_numpy_allowed()}.values():
        if callable(obj) and not isinstance(obj, (torch.dtype, torch.memory_format, torch.layout)) and \
                obj not in never_called:
            table.add(obj)
    table.update({restricted_getattr, pathlib.PurePosixPath, pathlib.PureWindowsPath})
    for family in registry.families():  # what each family's pickles construct (e.g. ultralytics' namespaces)
        if family.pickle_calls is not None:
            table.update(family.pickle_calls())
    return table


_SAFE_CALLS: tuple[tuple, set] | None = None  # (registered family names, table)


def _safe_call(func) -> bool:
    global _SAFE_CALLS
    names = tuple(f.name for f in registry.families())
    if _SAFE_CALLS is None or _SAFE_CALLS[0] != names:
        _SAFE_CALLS = (names, _safe_call_table())
    try:
        return func in _SAFE_CALLS[1]
    except TypeError:  # unhashable: not a table entry
        return False
