"""Checkpoints for exact resume whose loading runs no code unless this user wrote them.

A checkpoint holds the whole training state at the end of a collect-and-train iteration, where
nothing is half done: the agent (networks, optimizer, replay buffer, interventions, the vectorized
env with its task schedule, episode buffers and RNGs), the callbacks' state (logging position,
per-task returns, the metrics' RNG and state, θ₀), the global RNG states and the resolved config.
Resuming from it continues exactly as if the run had never stopped.

**Two parts.** :func:`save_checkpoint` splits the payload it is given:

* the **state** part — every tensor and array (parameters, optimizer moments, replay contents,
  θ₀, RNG states) and every plain value (numbers, strings, lists, dicts, tuples, deques): written
  with ``torch.save`` and read with ``torch.load(weights_only=True)``, which builds tensors and
  plain containers only and never runs code from the file;
* the **objects** part — what only pickling can restore: the objects themselves (the agent and
  its env stack with the inner env's internal state, the interventions' running attributes, a
  population's envs), cloudpickled with every tensor and array they hold lifted out into the
  state part (a reference by name), so this part is the structure and the small counters only.

**Who wrote it.** Unpickling the objects part can run code, so it is loaded only from
checkpoints this user wrote: each file carries an HMAC-SHA256 over its header, which holds the
SHA-256 of both parts, keyed with a per-user secret (:func:`checkpoint_key`: 32 random bytes,
created on first use with mode 0600 in ``$RLPLAST_KEY_DIR``, else ``$XDG_CONFIG_HOME/rlplast``,
else ``~/.config/rlplast``; never in a run directory). A checkpoint whose HMAC does not verify —
another user's or machine's, or an altered one — is refused before anything in it is parsed
beyond its header (:class:`UntrustedCheckpoint`), unless the caller trusts it explicitly
(``rlplast train --resume DIR --trust-checkpoint``). Checkpoints of the previous format (one
cloudpickle, ``RLPLAST-CKPT 1``) are read only that way too. :func:`read_state` reads the state
part of any checkpoint, trusted or not, without the objects.

File layout (``checkpoints/ckpt-<step>.pkl``)::

    RLPLAST-CKPT 2
    {"key": "<key id>", "sections": [["state", <bytes>, "<sha256>"], ["objects", <bytes>, "<sha256>"]], "step": <step>}
    hmac-sha256 <hex digest of the two lines above, newlines included>
    <state bytes><objects bytes>

A file whose sizes or checksums do not match (a kill during a copy, a truncated disk) is corrupt:
:func:`load_latest` skips it with a warning in favour of the previous one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import os
import pickle
import random
import secrets
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlplast.errors import UserError
from rlplast.io import atomic_write_bytes

#: The first line of a checkpoint of this format.
MAGIC = b"RLPLAST-CKPT 2"
#: The first line's start in the previous format (one cloudpickle of the payload, no HMAC).
LEGACY_MAGIC = b"RLPLAST-CKPT 1"
#: Environment variable naming the folder of the checkpoint key (tests point it at a temporary one).
KEY_DIR_ENV = "RLPLAST_KEY_DIR"
#: The key's file name in that folder.
KEY_FILE = "checkpoint.key"
#: The flag that reads a checkpoint whose writer cannot be verified.
TRUST_FLAG = "--trust-checkpoint"

#: The key of a tagged value in the state part's tree (a dict holding it is escaped as ``dict``).
_TAG = "__rlplast__"
#: Longest header (first two lines) a reader accepts.
_MAX_HEADER = 1 << 16

#: Classes that moved after checkpoints referring to them were written: (module, name) as pickled
#: → where they live now. The speed layer moved from rlplast.agents.dqn to rlplast.agents.speed.
MOVED = {
    ("rlplast.agents.dqn", old): ("rlplast.agents.speed", new)
    for old, new in [
        ("_DeviceMean", "DeviceMean"),
        ("LeanDummyVecEnv", "LeanDummyVecEnv"),
        ("LeanReplayBuffer", "LeanReplayBuffer"),
        ("LeanNStepReplayBuffer", "LeanNStepReplayBuffer"),
        ("MlpPolicy", "MlpPolicy"),
        ("CnnPolicy", "CnnPolicy"),
        ("MultiInputPolicy", "MultiInputPolicy"),
    ]
}


class CorruptCheckpoint(Exception):
    """A damaged checkpoint file: not a checkpoint, truncated, a checksum mismatch, unloadable."""


class UntrustedCheckpoint(UserError):
    """A checkpoint whose writer cannot be verified: loading its objects could run someone's code."""


@dataclasses.dataclass(frozen=True)
class Pickled:
    """Bytes of a pickle made by the caller (e.g. objects pickled with references of its own).

    A payload value of this type goes into the checkpoint's objects part, so it is read back only
    from checkpoints this user wrote (or explicitly trusted).

    Attributes:
        data: the pickle.
    """

    data: bytes


@dataclasses.dataclass(frozen=True)
class NotLoaded:
    """Stands for a payload value of the objects part in what :func:`read_state` returns.

    Attributes:
        index: the value's position in the objects part.
    """

    index: int


# ------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """The global random states that training draws from."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ the key
def key_dir() -> Path:
    """The folder of the checkpoint key: ``$RLPLAST_KEY_DIR``, else ``$XDG_CONFIG_HOME/rlplast``,
    else ``~/.config/rlplast``."""
    explicit = os.environ.get(KEY_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME")
    try:
        base = Path(config_home).expanduser() if config_home else Path.home() / ".config"
    except (RuntimeError, KeyError):
        raise UserError(
            f"no home directory for the checkpoint key; set {KEY_DIR_ENV} to a private folder"
        ) from None
    return base / "rlplast"


def key_path() -> Path:
    """The checkpoint key file (see :func:`key_dir`)."""
    return key_dir() / KEY_FILE


def key_id(key: bytes) -> str:
    """A short fingerprint of ``key`` recorded in checkpoints (it reveals nothing of the key)."""
    return hashlib.sha256(b"rlplast checkpoint key id\0" + key).hexdigest()[:16]


def checkpoint_key(create: bool = True) -> bytes | None:
    """This user's checkpoint key, created on first use (32 random bytes, hex, mode 0600).

    Args:
        create: create the key (and its folder, mode 0700) when there is none; else return None.

    Raises:
        UserError: the key cannot be created or read, is malformed, or other users can read or
            change it (or own it).
    """
    path = key_path()
    if not path.exists():
        if not create:
            return None
        _create_key(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read checkpoint key {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if os.name == "posix":
        if info.st_uid != os.geteuid():
            raise UserError(
                f"checkpoint key {path} belongs to another user; remove it (a new one is created)"
            )
        if info.st_mode & 0o077:
            raise UserError(
                f"checkpoint key {path} can be read or changed by other users (mode "
                f"{info.st_mode & 0o777:04o}); run: chmod 600 {path}"
            )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise UserError(
            f"checkpoint key {path} is malformed (expected 64 hex digits); remove it to create a new one "
            f"(checkpoints written with the old key can then be read only with {TRUST_FLAG})"
        )
    return key


def _create_key(path: Path) -> None:
    """Write a new key to ``path`` unless another process does first (the first one wins)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint.key.", suffix=".tmp")
    except OSError as exc:
        raise UserError(f"cannot create checkpoint key {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:  # mkstemp: mode 0600
            fh.write(secrets.token_hex(32) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic, and never replaces an existing key
        except FileExistsError:
            pass  # a concurrent process created it first: use theirs
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot create checkpoint key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


# ------------------------------------------------------------------------------------ file names
def checkpoint_path(folder: Path, step: int) -> Path:
    """``folder/ckpt-<step, 12 digits>.pkl``: names sort by step."""
    return folder / f"ckpt-{step:012d}.pkl"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint files, newest (highest step) first."""
    return sorted(folder.glob("ckpt-*.pkl"), reverse=True)


# ------------------------------------------------------------------------------------ tensor names
def module_tensor_names(prefix: str, module: torch.nn.Module) -> dict[int, str]:
    """``{id(tensor): "<prefix>/<state_dict key>"}`` for a module's parameters and buffers.

    Passed to :func:`save_checkpoint` as ``names``, so the state part names them readably.
    """
    return {id(t): f"{prefix}/{k}" for k, t in module.state_dict(keep_vars=True).items()}


def optimizer_tensor_names(prefix: str, optimizer: torch.optim.Optimizer) -> dict[int, str]:
    """``{id(tensor): "<prefix>/<parameter index>/<key>"}`` for a torch optimizer's state tensors."""
    index = {id(p): i for i, p in enumerate(p for g in optimizer.param_groups for p in g["params"])}
    names = {}
    for param, state in optimizer.state.items():
        # A non-parameter key holds optimizer-wide state (e.g. TRAC's "trac" entry).
        where = param if isinstance(param, str) else index.get(id(param), "?")
        for key, value in state.items() if isinstance(state, Mapping) else ():
            if isinstance(value, torch.Tensor):
                names[id(value)] = f"{prefix}/{where}/{key}"
    return names


def attribute_tensor_names(prefix: str, obj: Any) -> dict[int, str]:
    """``{id(value): "<prefix>/<attribute>"}`` for an object's tensor and array attributes."""
    return {id(v): f"{prefix}/{k}" for k, v in vars(obj).items() if isinstance(v, (torch.Tensor, np.ndarray))}


# ------------------------------------------------------------------------------------ writing
def _liftable_tensor(value: Any) -> bool:
    return type(value) in (torch.Tensor, torch.nn.Parameter)


def _as_tensor(array: Any) -> torch.Tensor | None:
    """The array as a CPU tensor sharing its memory, or None when it must stay pickled."""
    if type(array) is not np.ndarray:
        return None
    dtype = array.dtype
    if dtype.kind not in "biufc" or not dtype.isnative or dtype.fields is not None:
        return None
    if not (array.flags.c_contiguous and array.flags.writeable):
        return None
    try:
        return torch.from_numpy(array)
    except TypeError:  # a dtype torch has no tensor type for (e.g. float128)
        return None


class _Split:
    """Splits a payload into the state part's tree and tensors and the objects part's values."""

    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = names
        self.tensors: dict[str, torch.Tensor] = {}
        self.arrays: dict[str, str] = {}  # name -> the array's dtype (its tensor is in tensors)
        self.by_id: dict[int, str] = {}
        self.objects: list[Any] = []
        self.active: set[int] = set()

    def lift(self, value: Any, hint: str) -> str | None:
        """The name of a tensor or array in the state part (added on first sight), or None."""
        name = self.by_id.get(id(value))
        if name is not None:
            return name
        tensor = value if _liftable_tensor(value) else _as_tensor(value)
        if tensor is None:
            return None
        name = self.names.get(id(value), hint)
        if name in self.tensors:
            name = f"{name}#{len(self.tensors)}"
        self.tensors[name] = tensor
        if isinstance(value, np.ndarray):
            self.arrays[name] = value.dtype.str
        self.by_id[id(value)] = name
        return name

    def encode(self, value: Any, path: str) -> Any:
        """``value`` as plain containers and tagged references (see :func:`_decode`)."""
        if value is None or type(value) in (bool, int, float, str, bytes):
            return value
        if isinstance(value, (torch.Tensor, np.ndarray)):
            name = self.lift(value, path)
            if name is not None:
                return {_TAG: "ndarray" if isinstance(value, np.ndarray) else "tensor", "name": name}
            return self.object(value)
        if isinstance(value, np.generic) and value.dtype.kind in "biufc":
            return {_TAG: "scalar", "dtype": value.dtype.str, "value": value.item()}
        kind: type = type(value)
        if kind not in (list, tuple, dict, collections.OrderedDict, collections.deque, set, frozenset):
            return self.object(value)
        if id(value) in self.active:  # a cycle: only pickling can keep it
            return self.object(value)
        self.active.add(id(value))
        try:
            if kind in (list, tuple):
                packed = _pack(value)
                if packed is not None:
                    return packed
            if kind is list:
                return [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
            if kind is tuple:
                return tuple(self.encode(v, f"{path}/{i}") for i, v in enumerate(value))
            if kind is collections.deque:
                items = [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
                return {_TAG: "deque", "items": items, "maxlen": value.maxlen}
            if kind in (set, frozenset):
                items = [self.encode(v, f"{path}/{i}") for i, v in enumerate(value)]
                return {_TAG: kind.__name__, "items": items}
            if not all(_plain_key(k) for k in value):
                return self.object(value)
            encoded = {k: self.encode(v, f"{path}/{k}") for k, v in value.items()}
            if kind is dict and _TAG not in encoded:
                return encoded
            return {_TAG: "dict" if kind is dict else "odict", "items": list(encoded.items())}
        finally:
            self.active.discard(id(value))

    def object(self, value: Any) -> dict[str, Any]:
        self.objects.append(value)
        return {_TAG: "object", "index": len(self.objects) - 1}

    def pickle_objects(self) -> bytes:
        """The objects part: a cloudpickle of the object values, their tensors and arrays lifted."""
        if not self.objects:
            return b""
        import cloudpickle

        split = self

        class _Pickler(cloudpickle.CloudPickler):
            def persistent_id(self, obj: Any) -> Any:
                if not isinstance(obj, (torch.Tensor, np.ndarray)):
                    return None
                return split.lift(obj, f"objects/{len(split.tensors)}")

        buffer = io.BytesIO()
        _Pickler(buffer, protocol=5).dump(self.objects)
        return buffer.getvalue()


#: Shortest list of numbers stored as one tensor (the weights-only reader is slow per element).
_PACK_MIN = 64
_INT64 = (-(2**63), 2**63 - 1)


def _pack(values: list[Any] | tuple[Any, ...]) -> dict[str, Any] | None:
    """A long list or tuple of Python ints (within int64) or floats as one tensor, else None.

    Exact: floats are float64 (NaN, infinities and -0.0 included), ints int64; unpacked with
    ``tolist()`` they are the same Python objects' values and types (e.g. Python's RNG state,
    per-episode returns).
    """
    if len(values) < _PACK_MIN:
        return None
    first = type(values[0])
    if first not in (int, float) or any(type(v) is not first for v in values):
        return None
    if first is int and not (_INT64[0] <= min(values) and max(values) <= _INT64[1]):
        return None
    dtype = torch.int64 if first is int else torch.float64
    return {
        _TAG: "packed",
        "kind": type(values).__name__,
        "values": torch.tensor(values, dtype=dtype),
    }


def _plain_key(key: Any) -> bool:
    if key is None or type(key) in (bool, int, float, str):
        return True
    return type(key) is tuple and all(_plain_key(k) for k in key)


def save_checkpoint(
    folder: Path,
    step: int,
    payload: dict[str, Any],
    keep: int,
    names: Mapping[int, str] | None = None,
) -> Path:
    """Atomically write ``payload`` as the checkpoint of ``step``; keep the newest ``keep`` files.

    Plain values, tensors and arrays go into the state part; any other object (with its tensors
    and arrays lifted into the state part) into the objects part. The file is signed with this
    user's key (:func:`checkpoint_key`, created on first use).

    Args:
        folder: the checkpoint folder (created).
        step: the env step (the file's name).
        payload: what :func:`read_checkpoint` returns again.
        keep: newest checkpoints kept on disk.
        names: optional readable names of tensors and arrays inside the payload's objects, by
            ``id`` (e.g. :func:`module_tensor_names`); others are named by where they were found.

    Raises:
        UserError: the key cannot be created or read.
    """
    key = checkpoint_key()
    assert key is not None
    split = _Split(names or {})
    tree = split.encode(payload, "payload")
    objects = split.pickle_objects()
    buffer = io.BytesIO()
    torch.save({"format": 2, "tree": tree, "tensors": split.tensors, "arrays": split.arrays}, buffer)
    state = buffer.getvalue()
    sections = [["state", len(state), hashlib.sha256(state).hexdigest()]]
    sections.append(["objects", len(objects), hashlib.sha256(objects).hexdigest()])
    body = json.dumps({"key": key_id(key), "sections": sections, "step": int(step)}, sort_keys=True)
    signed = MAGIC + b"\n" + body.encode() + b"\n"
    signature = hmac.new(key, signed, hashlib.sha256).hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, step)
    atomic_write_bytes(path, b"".join([signed, f"hmac-sha256 {signature}\n".encode(), state, objects]))
    for old in list_checkpoints(folder)[keep:]:
        old.unlink(missing_ok=True)
    return path


# ------------------------------------------------------------------------------------ reading
@dataclasses.dataclass
class _File:
    """A checkpoint file whose header, sizes and checksums are verified (not yet its writer)."""

    path: Path
    signed: bytes
    signature: str
    key: str
    sections: dict[str, memoryview]


def _open(path: Path) -> _File | None:
    """Parse and check a checkpoint's header, sizes and checksums; None for the previous format.

    Raises:
        CorruptCheckpoint: not a checkpoint, a damaged header, truncated, or a checksum mismatch.
    """
    try:
        raw = memoryview(path.read_bytes())
    except OSError as exc:
        raise CorruptCheckpoint(f"{path.name}: cannot be read ({exc.strerror or exc})") from None
    if bytes(raw[: len(LEGACY_MAGIC) + 1]) == LEGACY_MAGIC + b" ":
        return None
    lines = bytes(raw[:_MAX_HEADER]).split(b"\n", 3)
    if len(lines) < 4 or lines[0] != MAGIC:
        raise CorruptCheckpoint(f"{path.name}: not an rlplast checkpoint")
    magic, body, signature_line, _ = lines
    start = len(magic) + len(body) + len(signature_line) + 3
    try:
        header = json.loads(body)
        sections = [(str(n), int(s), str(h)) for n, s, h in header["sections"]]
        key = str(header["key"])
        scheme, signature = signature_line.decode("ascii").split(" ")
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise CorruptCheckpoint(f"{path.name}: damaged header") from None
    if scheme != "hmac-sha256" or [n for n, _, _ in sections] != ["state", "objects"]:
        raise CorruptCheckpoint(f"{path.name}: damaged header")
    size = sum(s for _, s, _ in sections)
    if len(raw) - start != size or any(s < 0 for _, s, _ in sections):
        raise CorruptCheckpoint(f"{path.name}: truncated ({len(raw) - start} of {size} bytes)")
    parts = {}
    for name, length, digest in sections:
        parts[name] = raw[start : start + length]
        start += length
        if hashlib.sha256(parts[name]).hexdigest() != digest:
            raise CorruptCheckpoint(f"{path.name}: checksum mismatch")
    return _File(path, magic + b"\n" + body + b"\n", signature, key, parts)


def _refusal(path: Path, why: str) -> UntrustedCheckpoint:
    return UntrustedCheckpoint(
        f"checkpoint {path} {why}; loading it could run code from whoever wrote it. If you trust its "
        f"source, pass {TRUST_FLAG}; otherwise start the run again"
    )


def _verify(file: _File) -> None:
    """Raise :class:`UntrustedCheckpoint` unless ``file`` is signed with this user's key."""
    key = checkpoint_key(create=False)
    if key is None:
        raise _refusal(file.path, f"was not written by this user (no checkpoint key at {key_path()})")
    expected = hmac.new(key, file.signed, hashlib.sha256).hexdigest()
    if hmac.compare_digest(expected, file.signature):
        return
    if file.key != key_id(key):
        raise _refusal(file.path, "was written with another user's or machine's checkpoint key")
    raise _refusal(file.path, "does not match its signature (it was altered)")


def _legacy_refusal(path: Path) -> UntrustedCheckpoint:
    return UntrustedCheckpoint(
        f"checkpoint {path} has rlplast's previous format (a pickle, with no proof of who wrote it); "
        f"loading it could run code. If you wrote it or trust its source, pass {TRUST_FLAG} (the run "
        "then continues in the new format); otherwise start the run again"
    )


def verify_checkpoint(path: Path, trust: bool = False) -> bool:
    """Check a checkpoint's header, sizes, checksums and writer without loading anything.

    Returns:
        Whether it is signed with this user's key (always True unless ``trust``).

    Raises:
        CorruptCheckpoint: a damaged file.
        UntrustedCheckpoint: not signed with this user's key (or the previous format), without
            ``trust``.
    """
    file = _open(path)
    if file is None:
        if not trust:
            raise _legacy_refusal(path)
        return False
    try:
        _verify(file)
    except UntrustedCheckpoint:
        if not trust:
            raise
        return False
    return True


class _Unpickler(pickle.Unpickler):
    """``pickle``'s unpickler (cloudpickle writes standard pickles) that finds moved classes and
    the tensors and arrays lifted into the state part."""

    def __init__(self, data: Any, lifted: Mapping[str, Any] | None = None) -> None:
        super().__init__(io.BytesIO(data))
        self.lifted = lifted or {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = MOVED.get((module, name), (module, name))
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self.lifted[pid]


def _load_state(file: _File) -> tuple[Any, dict[str, Any]]:
    """The state part's tree and its tensors and arrays by name (never runs code)."""
    try:
        state = torch.load(io.BytesIO(file.sections["state"]), weights_only=True, map_location=None)
        tree, tensors, arrays = state["tree"], dict(state["tensors"]), dict(state["arrays"])
        lifted: dict[str, Any] = dict(tensors)
        for name, dtype in arrays.items():
            array = tensors[name].numpy()
            if array.dtype.str != dtype:
                raise ValueError(f"array {name}: dtype {array.dtype.str}, recorded {dtype}")
            lifted[name] = array
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable state part
        raise CorruptCheckpoint(f"{file.path.name}: damaged state ({type(exc).__name__})") from None
    return tree, lifted


def _decode(value: Any, lifted: Mapping[str, Any], objects: list[Any] | None) -> Any:
    """Invert :meth:`_Split.encode`; object values become :class:`NotLoaded` without ``objects``."""
    kind = type(value)
    if kind is list:
        return [_decode(v, lifted, objects) for v in value]
    if kind is tuple:
        return tuple(_decode(v, lifted, objects) for v in value)
    if kind is not dict:
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {k: _decode(v, lifted, objects) for k, v in value.items()}
    if tag in ("tensor", "ndarray"):
        return lifted[value["name"]]
    if tag == "object":
        index = int(value["index"])
        return NotLoaded(index) if objects is None else objects[index]
    if tag == "packed":
        values = value["values"]
        if not isinstance(values, torch.Tensor) or values.dtype not in (torch.int64, torch.float64):
            raise ValueError("packed values must be an int64 or float64 tensor")
        unpacked = values.tolist()
        return tuple(unpacked) if value["kind"] == "tuple" else unpacked
    if tag == "scalar":
        dtype = np.dtype(value["dtype"])
        if dtype.kind not in "biufc":
            raise ValueError(f"scalar of dtype {dtype}")
        return dtype.type(value["value"])
    items = [_decode(v, lifted, objects) for v in value["items"]]
    if tag == "deque":
        return collections.deque(items, maxlen=value["maxlen"])
    if tag in ("set", "frozenset"):
        return set(items) if tag == "set" else frozenset(items)
    if tag in ("dict", "odict"):
        pairs = [(k, v) for k, v in items]
        return dict(pairs) if tag == "dict" else collections.OrderedDict(pairs)
    raise ValueError(f"unknown tag {tag!r}")


def read_checkpoint(path: Path, trust: bool = False) -> dict[str, Any]:
    """Read one checkpoint: the payload :func:`save_checkpoint` was given.

    Args:
        path: the checkpoint file.
        trust: load the objects part even when the file is not signed with this user's key, and
            read checkpoints of the previous format (a pickle): only for files whose source you
            trust, as unpickling them can run code. A line on stderr says so when it matters.

    Raises:
        CorruptCheckpoint: wrong header, size or checksum, or an unloadable part.
        UntrustedCheckpoint: not signed with this user's key, or the previous format (without
            ``trust``); nothing in the file was loaded.
    """
    file = _open(path)
    if file is None:
        if not trust:
            raise _legacy_refusal(path)
        _warn_trusted(path, "has the previous format")
        return _read_legacy(path)
    try:
        _verify(file)
    except UntrustedCheckpoint:
        if not trust:
            raise
        _warn_trusted(path, "is not signed with this user's checkpoint key")
    tree, lifted = _load_state(file)
    objects: list[Any] = []
    if len(file.sections["objects"]):
        try:
            objects = _Unpickler(file.sections["objects"], lifted).load()
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
            raise CorruptCheckpoint(f"{path.name}: cannot be loaded ({type(exc).__name__})") from None
    try:
        return _decode(tree, lifted, objects)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable state part
        raise CorruptCheckpoint(f"{path.name}: damaged state ({type(exc).__name__})") from None


def read_state(path: Path) -> dict[str, Any]:
    """The state part of any checkpoint, trusted or not: loading it never runs code.

    Returns:
        ``{"step": ..., "payload": ..., "tensors": ...}``: the payload with each value of the
        objects part replaced by :class:`NotLoaded`, and every tensor and array of the checkpoint
        by name (those of the agent under ``model/...`` in a run's checkpoint).

    Raises:
        CorruptCheckpoint: a damaged file, or one of the previous format (a pickle: never read here).
    """
    file = _open(path)
    if file is None:
        raise CorruptCheckpoint(f"{path.name}: the previous format (a pickle) has no state part")
    tree, lifted = _load_state(file)
    try:
        payload = _decode(tree, lifted, None)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable state part
        raise CorruptCheckpoint(f"{path.name}: damaged state ({type(exc).__name__})") from None
    return {
        "step": payload.get("step") if isinstance(payload, dict) else None,
        "payload": payload,
        "tensors": lifted,
    }


def _read_legacy(path: Path) -> dict[str, Any]:
    """A checkpoint of the previous format: header ``RLPLAST-CKPT 1 <sha256> <size>``, then a pickle."""
    raw = path.read_bytes()
    head, sep, data = raw.partition(b"\n")
    parts = head.split(b" ")
    if not sep or len(parts) != 4 or b" ".join(parts[:2]) != LEGACY_MAGIC:
        raise CorruptCheckpoint(f"{path.name}: not an rlplast checkpoint")
    try:
        digest, size = parts[2].decode(), int(parts[3])
    except (UnicodeDecodeError, ValueError):
        raise CorruptCheckpoint(f"{path.name}: damaged header") from None
    if len(data) != size:
        raise CorruptCheckpoint(f"{path.name}: truncated ({len(data)} of {size} bytes)")
    if hashlib.sha256(data).hexdigest() != digest:
        raise CorruptCheckpoint(f"{path.name}: checksum mismatch")
    try:
        return _Unpickler(data).load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CorruptCheckpoint(f"{path.name}: cannot be loaded ({type(exc).__name__})") from None


def _warn_trusted(path: Path, why: str) -> None:
    print(f"rlplast: warning: {TRUST_FLAG}: {path} {why}; loading it as trusted", file=sys.stderr)


def _candidates(folder: Path) -> Iterator[Path]:
    yield from list_checkpoints(folder) if folder.is_dir() else []


def latest_checkpoint(folder: Path, trust: bool = False) -> Path | None:
    """The newest undamaged checkpoint in ``folder`` after checking who wrote it (nothing is loaded).

    Returns:
        Its path, or None when there is no undamaged checkpoint.

    Raises:
        UntrustedCheckpoint: the newest undamaged checkpoint is not signed with this user's key
            (without ``trust``).
    """
    for path in _candidates(folder):
        try:
            verify_checkpoint(path, trust)
        except CorruptCheckpoint:
            continue
        return path
    return None


def load_latest(folder: Path, trust: bool = False) -> tuple[dict[str, Any], Path]:
    """The newest valid checkpoint; damaged ones are skipped (a warning on stderr for each).

    A checkpoint that is not signed with this user's key is refused, not skipped: an older one is
    not silently used instead.

    Args:
        folder: the checkpoint folder.
        trust: see :func:`read_checkpoint`.

    Raises:
        UserError: no checkpoint folder, or no valid checkpoint in it (one line naming why each
            file is unusable).
        UntrustedCheckpoint: the newest undamaged checkpoint is not signed with this user's key.
    """
    candidates = list(_candidates(folder))
    if not candidates:
        raise UserError(f"no checkpoint in {folder}; nothing to resume")
    skipped = []
    for path in candidates:
        try:
            payload = read_checkpoint(path, trust)
        except CorruptCheckpoint as exc:
            skipped.append(str(exc))
            continue
        for reason in skipped:
            print(f"rlplast: warning: skipping corrupt checkpoint {reason}", file=sys.stderr)
        return payload, path
    raise UserError(f"no valid checkpoint in {folder} ({'; '.join(skipped)}); cannot resume")
