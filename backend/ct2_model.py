"""Read a CTranslate2 model file (`model.bin`) into numpy arrays: no pickles, no code run from the file.

The format (little-endian): u32 version, a string (the spec's name), u32 revision, u32 variable count; per
variable a name string, u8 rank, rank x u32 dims, u8 dtype, u32 byte count and the raw bytes; then u32 alias
count and (alias, target) string pairs. A string is a u16 length (counting its NUL) and the bytes.

    variables = read_ct2_variables(path, prefix="encoder/")   # {name: np.ndarray}, others skipped unread
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from backend.errors import ThunderError

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
SUPPORTED_VERSIONS = (5, 6)
MAX_RANK = 8


class Ct2ModelError(ThunderError):
    """A CTranslate2 model file is missing, damaged or not of a version Thunder reads."""


class _Reader:
    def __init__(self, file, path: Path, size: int):
        self.file, self.path, self.size = file, path, size

    def take(self, n: int) -> bytes:
        data = self.file.read(n)
        if len(data) != n:
            raise Ct2ModelError(f"{self.path}: the CTranslate2 model file ends early (damaged or cut short)")
        return data

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        data = self.take(self.u("H"))
        try:
            return data.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            raise Ct2ModelError(f"{self.path}: a name in the CTranslate2 model file is not text (damaged)") from None


def read_ct2_variables(path: str | Path, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) for the variables whose names start with `prefix`."""
    path = Path(path)
    if not path.is_file():
        raise Ct2ModelError(f"{path}: no CTranslate2 model file there")
    size = path.stat().st_size
    variables = {}
    with open(path, "rb") as file:
        r = _Reader(file, path, size)
        version = r.u("I")
        if version not in SUPPORTED_VERSIONS:
            raise Ct2ModelError(f"{path}: CTranslate2 model version {version}; Thunder reads versions "
                                f"{', '.join(map(str, SUPPORTED_VERSIONS))} (not a model.bin, or damaged)")
        spec = r.string()
        r.u("I")  # revision
        for _ in range(r.u("I")):
            name = r.string()
            rank = r.u("B")
            if rank > MAX_RANK:
                raise Ct2ModelError(f"{path}: variable {name} has rank {rank} (damaged)")
            shape = tuple(r.u("I") for _ in range(rank))
            dtype_code, n_bytes = r.u("B"), r.u("I")
            if dtype_code not in DTYPES:
                raise Ct2ModelError(f"{path}: variable {name} has an unknown data type {dtype_code} (damaged)")
            dtype = np.dtype(DTYPES[dtype_code])
            if n_bytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or file.tell() + n_bytes > size:
                raise Ct2ModelError(f"{path}: variable {name}'s size does not match its shape {shape} (damaged)")
            if name.startswith(prefix):
                variables[name] = np.frombuffer(r.take(n_bytes), dtype=dtype.newbyteorder("<")).reshape(shape)
            else:
                file.seek(n_bytes, 1)
        aliases = {}
        for _ in range(r.u("I")):
            alias = r.string()
            aliases[alias] = r.string()
    for alias, target in aliases.items():
        if alias.startswith(prefix) and target in variables:
            variables[alias] = variables[target]
    return spec, variables
