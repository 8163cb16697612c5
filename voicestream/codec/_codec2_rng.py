"""Per-decoder control of libcodec2's process-global noise generator.

Why this exists: libcodec2's synthesis draws random phases for unvoiced
harmonics from ``codec2_rand()``, an LCG whose state is ONE static variable
(``next``) shared by every decoder in the process.  Decoded audio therefore
depends on what was decoded before, so two decoders (e.g. a streaming one
and a reference one) can never agree sample for sample.  We locate that
variable from the shared library's ELF symbol table, check the address by
driving the public ``codec2_rand()`` and comparing with the LCG, and then
swap a per-decoder state in and out around each decode call.

If anything about the library differs (stripped symbols, another RNG), the
controller reports ``available = False`` and decoding still works, just
without sample-exact reproducibility.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["Codec2Rng", "rng"]

_LCG_MUL = 1103515245
_LCG_ADD = 12345
INITIAL_STATE = 1  # libcodec2's static initialiser


def _lcg_step(state: int) -> tuple[int, int]:
    nxt = (state * _LCG_MUL + _LCG_ADD) & 0xFFFFFFFFFFFFFFFF
    return nxt, (nxt // 65536) % 32768


def _elf_symbols(path: Path, wanted: set[str]) -> dict[str, list[int]]:
    """Values of the named symbols in an ELF64 little-endian ``.symtab``."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    out: dict[str, list[int]] = {}
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        str_off = strtab[4]
        for j in range(sh[5] // 24):
            name_off, _info, _other, _shndx, value, _size = struct.unpack_from("<IBBHQQ", data, sh[4] + j * 24)
            end = data.index(b"\0", str_off + name_off)
            name = data[str_off + name_off : end].decode("ascii", "replace")
            if name in wanted:
                out.setdefault(name, []).append(value)
    return out


class Codec2Rng:
    """Save/restore access to libcodec2's global ``codec2_rand`` state."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._state_ptr: ctypes.POINTER(ctypes.c_uint64) | None = None  # type: ignore[valid-type]
        try:
            self._locate()
        except (ImportError, OSError, ValueError, AttributeError, struct.error):  # depends on the wheel
            self._state_ptr = None

    @property
    def available(self) -> bool:
        return self._state_ptr is not None

    def _locate(self) -> None:
        import pycodec2

        libdir = Path(pycodec2.__file__).resolve().parent.parent / "pycodec2.libs"
        candidates = sorted(libdir.glob("libcodec2*.so*")) if libdir.is_dir() else []
        for path in candidates:
            lib = ctypes.CDLL(str(path))  # same file as already loaded -> same handle
            syms = _elf_symbols(path, {"next", "codec2_rand"})
            if len(syms.get("codec2_rand", [])) != 1:
                continue
            rand = lib.codec2_rand
            rand.restype = ctypes.c_int
            base = ctypes.cast(rand, ctypes.c_void_p).value - syms["codec2_rand"][0]
            for value in syms.get("next", []):
                ptr = ctypes.cast(ctypes.c_void_p(base + value), ctypes.POINTER(ctypes.c_uint64))
                saved = ptr[0]
                ptr[0] = 7
                expect_state, expect_out = _lcg_step(7)
                ok = rand() == expect_out and ptr[0] == expect_state
                ptr[0] = saved
                if ok:
                    self._state_ptr = ptr
                    return

    def get(self) -> int:
        assert self._state_ptr is not None
        return int(self._state_ptr[0])

    def set(self, state: int) -> None:
        assert self._state_ptr is not None
        self._state_ptr[0] = state

    @contextmanager
    def using(self, holder: list[int]) -> Iterator[None]:
        """Run a decode with ``holder[0]`` as the RNG state, then store it back.

        ``holder`` is a one-element list owned by a decoder, so each decoder
        has its own independent noise sequence.
        """
        if self._state_ptr is None:
            yield
            return
        with self.lock:
            outer = self.get()
            self.set(holder[0])
            try:
                yield
            finally:
                holder[0] = self.get()
                self.set(outer)


rng = Codec2Rng()
