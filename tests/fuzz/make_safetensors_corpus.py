#!/usr/bin/env python3
# Regenerates the seed corpus in corpus/safetensors_header/: tiny valid and invalid safetensors
# files (each < 2 KB) for the header fuzzer and its replay test. Deterministic; run from anywhere:
#   python3 tests/fuzz/make_safetensors_corpus.py
import json
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "safetensors_header")


def build(header, data=b"", length=None, pad=True):
    text = header if isinstance(header, str) else json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * ((8 - (8 + len(text)) % 8) % 8)
    raw = text.encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


SEEDS = {
    "valid_single": build({"w": entry("F32", [2, 2], 0, 16)}, bytes(range(16))),
    "valid_all_dtypes": build({
        "__metadata__": {"format": "pt"},
        "a": entry("F8_E4M3", [3], 0, 3),
        "b": entry("BF16", [2], 3, 7),
        "c": entry("F16", [1, 2], 7, 11),
        "d": entry("F32", [1], 11, 15),
        "e": entry("I64", [], 15, 23),
        "z": entry("F32", [0, 5], 23, 23),
    }, bytes(23)),
    "valid_empty": build({}),
    "valid_metadata_only": build({"__metadata__": {"k": "v", "unicode": "\u00e9"}}),
    "valid_padded": build('{"x":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}' + " " * 40, bytes(8)),
    "invalid_overlap": build({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}, bytes(12)),
    "invalid_unknown_dtype": build({"w": entry("F64", [1], 0, 8)}, bytes(8)),
    "invalid_size_mismatch": build({"w": entry("F32", [3], 0, 8)}, bytes(8)),
    "invalid_beyond_data": build({"w": entry("F8_E4M3", [64], 0, 64)}, bytes(16)),
    "invalid_negative_dim": build('{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', bytes(4)),
    "invalid_overflow_shape": build({"w": entry("I64", [4294967296, 4294967296], 0, 0)}),
    "invalid_duplicate": build('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                               '"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
    "invalid_json": build('{"w":{"dtype":"F32",', pad=False),
    "invalid_length_zero": build("{}", length=0),
    "invalid_length_beyond": build("{}", length=4096),
    "invalid_short": b"\x02\x00\x00",
    "invalid_metadata_value": build({"__metadata__": {"k": 1}}),
}

os.makedirs(OUT, exist_ok=True)
for name, blob in sorted(SEEDS.items()):
    assert len(blob) < 2048, name
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(blob)
print(f"wrote {len(SEEDS)} seeds to {OUT}")
