"""Dependency-free GGUF header reader: a model card without loading the model. Only the header
(metadata + tensor infos) is parsed. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# Metadata value type id -> struct for scalars (8 = string, 9 = array are handled apart).
_SCALARS = {t: struct.Struct("<" + c) for t, c in zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True)}
_U32, _U64 = _SCALARS[4], _SCALARS[10]
_STRING, _ARRAY = 8, 9
_MIN_SIZE = {_STRING: 8, _ARRAY: 12}  # smallest encoding, used to reject absurd counts early
# Vocab-sized arrays are kept as their length only: they cost memory/time and no card needs them.
_BIG_ARRAY = 1024
_LENGTH_ONLY = {f"tokenizer.ggml.{k}" for k in ("tokens", "merges", "scores", "token_type")}
_MAX_DEPTH = 8  # nested arrays; deeper means garbage (and would risk RecursionError)
_MAX_DIMS = 4  # GGML_MAX_DIMS; llama.cpp rejects more
# Longest string value read (a chat template is the longest real one, tens of KB): a garbage length
# must not copy a gigabyte of the file into memory.
MAX_STRING = 1 << 20
# llama_ftype (llama.h), values 0..40 in order, removed ones included for old files.
_FTYPE_NAMES = (
    "F32 F16 Q4_0 Q4_1 Q4_1_SOME_F16 Q4_2 Q4_3 Q8_0 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M "
    "Q5_K_S Q5_K_M Q6_K IQ2_XXS IQ2_XS Q2_K_S IQ3_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ3_M IQ2_S IQ2_M IQ4_XS "
    "IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 Q4_0_8_8 TQ1_0 TQ2_0 MXFP4_MOE NVFP4 Q1_0"
)
_FTYPES = dict(enumerate(_FTYPE_NAMES.split()))
# ggml_type -> (block size, bytes per block) (gguf-py GGML_QUANT_SIZES), to check the data fits the file.
_TYPE_SIZES = {
    0: (1, 4),
    1: (1, 2),
    2: (32, 18),
    3: (32, 20),
    6: (32, 22),
    7: (32, 24),
    8: (32, 34),
    9: (32, 40),
    10: (256, 84),
    11: (256, 110),
    12: (256, 144),
    13: (256, 176),
    14: (256, 210),
    15: (256, 292),
    16: (256, 66),
    17: (256, 74),
    18: (256, 98),
    19: (256, 50),
    20: (32, 18),
    21: (256, 110),
    22: (256, 82),
    23: (256, 136),
    24: (1, 1),
    25: (1, 2),
    26: (1, 4),
    27: (1, 8),
    28: (1, 8),
    29: (256, 56),
    30: (1, 2),
    34: (256, 54),
    35: (256, 66),
    39: (32, 17),
    40: (64, 36),
    41: (128, 18),
}


T = TypeVar("T")


class GGUFError(ValueError):
    """The file cannot be read as GGUF; the message names the file and the problem."""


@dataclass(frozen=True)
class GGUFInfo:
    metadata: dict[str, object]  # vocab-sized arrays are stored as their length (int)
    n_params: int
    n_tensors: int
    file_size: int

    def _get(self, key: str, kind: type[T]) -> T | None:
        value = self.metadata.get(key)
        return value if isinstance(value, kind) and not isinstance(value, bool) else None

    @property
    def name(self) -> str | None:
        return self._get("general.name", str)

    @property
    def architecture(self) -> str | None:
        return self._get("general.architecture", str)

    @property
    def size_label(self) -> str | None:
        return self._get("general.size_label", str)

    @property
    def chat_template(self) -> str | None:
        return self._get("tokenizer.chat_template", str)

    @property
    def family(self) -> str | None:
        return self._get("general.basename", str) or self.architecture

    @property
    def quantisation(self) -> str | None:
        ftype = self._get("general.file_type", int)
        return _FTYPES.get(ftype) if ftype is not None else None

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        return self._get(f"{arch}.context_length", int) if arch else None


class _Reader:
    """Cursor over a read-only mmap: only the header pages are ever touched, and every
    length is checked against the file size before use (garbage must not over-read/allocate)."""

    def __init__(self, mm: mmap.mmap, path: Path) -> None:
        self.mm, self.size, self.path, self.pos = mm, len(mm), path, 0

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def take(self, n: int) -> int:
        """Consume n bytes; return their offset."""
        if n > self.size - self.pos:
            raise self.fail(f"truncated or corrupt: needs {n} bytes at offset {self.pos}, file has {self.size} bytes")
        self.pos += n
        return self.pos - n

    def scalar(self, s: struct.Struct) -> Any:
        return s.unpack_from(self.mm, self.take(s.size))[0]

    def string(self) -> str:  # lenient decoding: a stray bad byte must not hide the whole card
        n = self.scalar(_U64)
        off = self.take(n)  # a length past the end of the file is reported as such first
        if n > MAX_STRING:
            raise self.fail(
                f"corrupt or unsupported: a string of {n} bytes at offset {off - 8}; "
                f"strings over {MAX_STRING} bytes are not read"
            )
        return self.mm[off : off + n].decode("utf-8", "replace")

    def skip_strings(self, n: int) -> None:
        """Hot path (~300k vocab strings): a tight loop over locals instead of method calls."""
        mm, pos, size, unpack = self.mm, self.pos, self.size, _U64.unpack_from
        for _ in range(n):
            if pos + 8 > size:
                raise self.fail(f"truncated or corrupt: string array runs past end of file ({size} bytes)")
            pos += 8 + unpack(mm, pos)[0]
        self.take(pos - self.pos)  # advances to pos, with the final bounds check

    def value(self, vtype: int, depth: int = 0, length_only: bool = False) -> object:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise self.fail(f"unknown metadata value type {vtype} at offset {self.pos}")
        if depth >= _MAX_DEPTH:
            raise self.fail("corrupt: arrays nested too deeply")
        etype, n = self.scalar(_U32), self.scalar(_U64)
        if etype not in _SCALARS and etype not in _MIN_SIZE:
            raise self.fail(f"unknown array element type {etype} at offset {self.pos}")
        item = _SCALARS[etype].size if etype in _SCALARS else _MIN_SIZE[etype]
        if n * item > self.size - self.pos:
            raise self.fail(f"truncated or corrupt: array of {n} items at offset {self.pos}")
        if not (length_only or n > _BIG_ARRAY):
            return [self.value(etype, depth + 1) for _ in range(n)]
        if etype in _SCALARS:  # fixed-size items: one jump
            self.take(n * item)
        elif etype == _STRING:
            self.skip_strings(n)
        else:
            for _ in range(n):
                self.value(etype, depth + 1, length_only=True)
        return n


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Parse the GGUF header of `path`. Raises GGUFError for anything that is not a readable GGUF v2/v3."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)  # checked before mmap, which cannot map an empty file
            if head[:4] != b"GGUF":
                raise GGUFError(f"{path}: not a GGUF file (missing 'GGUF' magic)")
            if len(head) < 8:
                raise GGUFError(f"{path}: truncated GGUF file ({len(head)} bytes)")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # lazy: only header pages are read
        with mm:
            r, size, raw = _Reader(mm, path), len(mm), head[4:]
            r.pos, version = 8, int.from_bytes(raw, "little")
            if version not in (2, 3):
                if int.from_bytes(raw, "big") in (1, 2, 3):
                    raise r.fail("big-endian GGUF files are not supported")
                raise r.fail(f"unsupported GGUF version {version} (only 2 and 3 are supported)")
            n_tensors, n_kv = r.scalar(_U64), r.scalar(_U64)
            if n_tensors * 24 + n_kv * 13 > size - r.pos:  # smallest tensor info / key-value pair
                raise r.fail(f"truncated or corrupt: header claims {n_tensors} tensors and {n_kv} keys")
            metadata: dict[str, object] = {}
            for _ in range(n_kv):
                key = r.string()
                metadata[key] = r.value(r.scalar(_U32), length_only=key in _LENGTH_ONLY)
            n_params, data_end = 0, 0
            for _ in range(n_tensors):
                r.take(r.scalar(_U64))  # tensor name: not needed for the card
                n_dims = r.scalar(_U32)
                if n_dims > _MAX_DIMS:
                    raise r.fail(f"corrupt: tensor with {n_dims} dimensions at offset {r.pos}")
                count = math.prod(r.scalar(_U64) for _ in range(n_dims))
                ggml_type, offset = r.scalar(_U32), r.scalar(_U64)
                block, nbytes = _TYPE_SIZES.get(ggml_type, (1, 0))  # unknown type: check offset only
                n_params += count
                data_end = max(data_end, offset + count // block * nbytes)
            align = metadata.get("general.alignment", 32)
            if not isinstance(align, int) or align <= 0:
                raise r.fail(f"corrupt: general.alignment is {align!r}")
            data_start = -(-r.pos // align) * align
            if n_tensors and data_start + data_end > size:
                raise r.fail(f"truncated: tensor data ends at byte {data_start + data_end}, file has {size} bytes")
    except OSError as e:
        raise GGUFError(f"{path}: cannot read file ({e.strerror or e})") from e
    except (struct.error, MemoryError, OverflowError, RecursionError) as e:  # safety net; guards should prevent
        raise GGUFError(f"{path}: corrupt GGUF header ({type(e).__name__})") from e
    return GGUFInfo(metadata=metadata, n_params=n_params, n_tensors=n_tensors, file_size=size)
