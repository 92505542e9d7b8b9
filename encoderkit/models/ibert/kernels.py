"""The integer chains (int_ops) compiled ahead of time, once per machine, and loaded by every later process.

A chain is a function of int_ops and the signature of its arguments: each tensor's dtype and shape (the
sequence dimension any length), the names of its constants, its static arguments (a layer's head count).
The export stores a constant as int32 or int64 by its range (export._width), so one model may have a few
distinct layer chains; the layers that share one share its kernel. The first call of a chain exports it with
torch.export (the sequence dimension dynamic) and compiles it with AOTInductor into a .pt2 package in
kernel_cache_dir(), named by a hash of torch's version, the CPU's flags (Inductor builds for this CPU's
vector ISA), int_ops' source and the signature; later calls, in this process or any other, load the package
(a shared library: milliseconds) instead of compiling again (minutes) or tracing again (torch.compile's
Dynamo does so in every process: 90 s before the first answer, issue #15).

A package must give the integers of the plain function on the first call's own (shortened) arguments before
it is used. A package that does not load or fails that check (a damaged file, a cache copied from another
machine) is removed, with a note: the chain then runs eagerly in this process, with the same integers, and the
next process builds it again. Eagerly too (no package at all): no C++ compiler, TORCHDYNAMO_DISABLE=1
(torch's own switch for "compile nothing", which the CLI tests set), or a build that fails (with a note).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from encoderkit.files import cache_dir

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # of the packages' names: raise it when what goes into a package changes outside int_ops
# A low realize threshold keeps per-row values (LayerNorm's square root and divisions) in a buffer instead of
# recomputing them for every element of the row (LayerNorm chains ~30% faster). Dynamic threads: the kernels
# ask OpenMP for the thread count at run time, so one package serves schedule.py's single-threaded workers
# and the batch-1 path on all of torch's threads.
INDUCTOR_OPTIONS = {"realize_opcount_threshold": 4, "cpp.dynamic_threads": True}
PROBE_LENGTH = 4  # tokens of the first call's arguments that check a loaded package against the plain function
MAX_LENGTH = 1 << 16  # the dynamic sequence dimension's bound (position tables are far shorter)

_lock = threading.Lock()
_chains: dict[str, Callable] = {}


def kernel_cache_dir() -> Path:
    """Where the packages live: encoderkit's cache dir ($ENCODERKIT_CACHE, else ~/.cache/encoderkit)."""
    return cache_dir() / "integer-kernels"


@functools.cache
def _can_compile() -> bool:
    if os.environ.get("TORCHDYNAMO_DISABLE") == "1":
        return False
    if shutil.which("g++") is None and shutil.which("c++") is None:
        logger.warning("no C++ compiler: the integer chains run eagerly (slower, same results)")
        return False
    return True


@functools.cache
def _cpu() -> str:
    """The CPU's model and feature flags (what Inductor's choice of vector instructions depends on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    return platform.machine() + "".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))


@functools.cache
def _source(fn: Callable) -> bytes:
    import inspect

    return Path(inspect.getsourcefile(fn)).read_bytes()


def _signature(args: tuple, seq_dims: tuple[int | None, ...]) -> list:
    """Each argument's dtype and shape (the sequence dimension as "S"); for a dict, each constant's, by name."""
    def describe(tensor: torch.Tensor, seq_dim: int | None) -> list:
        shape = ["S" if d == seq_dim else n for d, n in enumerate(tensor.shape)]
        return [str(tensor.dtype), shape]

    return [{k: describe(v, None) for k, v in arg.items()} if isinstance(arg, dict) else describe(arg, dim)
            for arg, dim in zip(args, seq_dims, strict=True)]


def package_path(fn: Callable, args: tuple, seq_dims: tuple[int | None, ...], static: dict) -> Path:
    identity = repr((FORMAT_VERSION, torch.__version__, _cpu(), _source(fn), fn.__name__,
                     _signature(args, seq_dims), sorted(static.items()), sorted(INDUCTOR_OPTIONS.items())))
    return kernel_cache_dir() / f"{fn.__name__}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}.pt2"


class _Bound(torch.nn.Module):
    """fn with its static arguments, as the module torch.export takes."""

    def __init__(self, fn: Callable, static: dict):
        super().__init__()
        self.fn, self.static = fn, static

    def forward(self, *args):
        return self.fn(*args, **self.static)


def _resized(args: tuple, seq_dims: tuple[int | None, ...], length: int, example: bool) -> tuple:
    """args with their sequence dimension cut to `length` (the probe), or zeros of that length (the
    export's example: its values do not matter, and a length of 1 would be specialised)."""
    def resize(arg, dim):
        if dim is None:
            return arg
        if not example:
            return arg.narrow(dim, 0, min(length, arg.shape[dim]))
        shape = list(arg.shape)
        shape[dim] = length
        return torch.zeros(shape, dtype=arg.dtype)

    return tuple(resize(arg, dim) for arg, dim in zip(args, seq_dims, strict=True))


def _build(path: Path, fn: Callable, args: tuple, seq_dims: tuple[int | None, ...], static: dict) -> None:
    """Export fn on an example of args' signature and compile it into the package at `path` (written whole,
    then renamed into place, so a concurrent process never reads half a package)."""
    from torch._inductor import aoti_compile_and_package

    # Inductor's own caches (compiled headers, ...) beside the packages, not under /tmp, so a rebuild is faster.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    length = torch.export.Dim("S", min=1, max=MAX_LENGTH)
    dynamic = tuple({k: None for k in arg} if isinstance(arg, dict) else
                    (None if dim is None else {dim: length}) for arg, dim in zip(args, seq_dims, strict=True))
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation notices while exporting, not the user's concern
        example = _resized(args, seq_dims, 3, example=True)
        program = torch.export.export(_Bound(fn, static), example, dynamic_shapes={"args": dynamic}, strict=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            built = aoti_compile_and_package(program, package_path=str(Path(scratch) / path.name),
                                             inductor_configs=dict(INDUCTOR_OPTIONS))  # it adds to the dict
            os.replace(built, path)


class _Package:
    """A package's shared library, called as the function it was built from, with the GIL released while it runs
    (through ctypes), so that schedule.py's workers run it in parallel: torch's own loader
    (torch._C._aoti.AOTIModelPackageLoader) holds the GIL for the whole call, and
    torch._inductor.package.load_package imports torch's whole compiler first (3 s of a first answer).
    The C interface is AOTInductor's (torch/csrc/inductor/aoti_runtime/interface.h); the model steals the input
    handles and hands over the output's."""

    def __init__(self, path: Path):
        with zipfile.ZipFile(path) as package, tempfile.NamedTemporaryFile(suffix=".so") as library:
            library.write(package.read(next(n for n in package.namelist() if n.endswith(".so"))))
            library.flush()
            self._lib = ctypes.CDLL(library.name)  # mapped: the file itself can go
        self._run = self._lib.AOTInductorModelContainerRun
        self._run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_void_p, ctypes.c_void_p]
        self._container = ctypes.c_void_p()
        runners = os.cpu_count() or 1  # a model instance per concurrent caller
        _check(self._lib.AOTInductorModelContainerCreateWithDevice(ctypes.byref(self._container),
                                                                   ctypes.c_size_t(runners), b"cpu", None))

    def inputs(self) -> int:
        """How many tensors it takes: a call with any other number would abort the process, not raise."""
        count = ctypes.c_size_t()
        _check(self._lib.AOTInductorModelContainerGetNumInputs(self._container, ctypes.byref(count)))
        return count.value

    def __call__(self, *args) -> torch.Tensor:
        handles = torch._C._aoti.unsafe_alloc_void_ptrs_from_tensors(pytree.tree_leaves(args))
        inputs = (ctypes.c_void_p * len(handles))(*(_capsule_pointer(h, None) for h in handles))
        output = (ctypes.c_void_p * 1)()
        _check(self._run(self._container, inputs, len(handles), output, 1, None, None))
        return torch._C._aoti.alloc_tensors_by_stealing_from_void_ptrs([_capsule(output[0], None, None)])[0]


def _check(error: int) -> None:
    if error:
        raise RuntimeError(f"AOTInductor's runtime failed (error {error}; its message is above on stderr)")


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer  # torch hands the handles over as capsules
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule = ctypes.pythonapi.PyCapsule_New
_capsule.restype, _capsule.argtypes = ctypes.py_object, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]


def _load(path: Path, fn: Callable, args: tuple, seq_dims: tuple[int | None, ...], static: dict) -> Callable:
    """The package at `path`, once it gives fn's integers on a probe of args."""
    compiled = _Package(path)
    tensors = len(pytree.tree_leaves(args))
    if compiled.inputs() != tensors:
        raise ValueError(f"it takes {compiled.inputs()} tensors, {fn.__name__} {tensors}")
    probe = _resized(args, seq_dims, PROBE_LENGTH, example=False)
    if not torch.equal(compiled(*probe), fn(*probe, **static)):
        raise ValueError("its integers differ from the plain function's")
    return compiled


def _compiled(fn: Callable, args: tuple, seq_dims: tuple[int | None, ...], static: dict) -> Callable:
    path = package_path(fn, args, seq_dims, static)
    if not path.is_file():
        try:
            _build(path, fn, args, seq_dims, static)
        except Exception as err:  # noqa: BLE001 (any failure of torch's compiler: the chain still runs eagerly)
            logger.warning(f"the integer chain {fn.__name__} could not be compiled ({type(err).__name__}: {err}); "
                           "it runs eagerly (slower, same results)")
            return functools.partial(fn, **static)
    try:
        return _load(path, fn, args, seq_dims, static)
    except Exception as err:  # noqa: BLE001 (a damaged or foreign package: never a reason to stop)
        logger.warning(f"{path}: unusable compiled kernel ({type(err).__name__}: {err}); removed, running "
                       f"{fn.__name__} eagerly (slower, same results); the next run compiles it again")
        path.unlink(missing_ok=True)
        return functools.partial(fn, **static)


def chain(fn: Callable, args: tuple, seq_dims: tuple[int | None, ...], **static) -> Callable:
    """fn(*args, **static) as one compiled kernel for args' signature, from the cache (built there first if
    missing), or fn itself (see the module's docstring). seq_dims[i]: the sequence dimension of tensor args[i]
    (None: none); dict args hold constants, whose key order is part of the signature (callers sort them)."""
    if not _can_compile():
        return functools.partial(fn, **static)
    key = str(package_path(fn, args, seq_dims, static))
    with _lock:  # schedule.py's workers reach a chain together: one builds or loads it, the others wait
        if key not in _chains:
            _chains[key] = _compiled(fn, args, seq_dims, static)
        return _chains[key]
