#!/usr/bin/env python3
"""Writes the seed corpora of the safetensors fuzz targets: small valid files and one bad file per rejection class
of RELIABILITY.md S1-S20, plus model.safetensors.index.json seeds. Standard library only, deterministic, so the
checked-in files can be regenerated and compared:

    python3 tests/fuzz/make_safetensors_corpus.py            # rewrites tests/fuzz/corpus/safetensors*/
"""
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def st_file(header, data=b"", pad=True, raw=None):
    """A safetensors file: 8-byte little-endian length, header JSON (padded with spaces to 8), data."""
    text = raw if raw is not None else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


def header_seeds():
    good = {
        "good_single_f32": st_file({"w": entry("F32", [2, 2], 0, 16)}, f32(1, 2, 3, 4)),
        "good_metadata_two_dtypes": st_file(
            {"__metadata__": {"format": "pt"}, "a": entry("BF16", [3], 0, 6), "b": entry("I64", [1], 6, 14)},
            bytes(range(14))),
        "good_zero_size_shares_offset": st_file(
            {"e": entry("F32", [0, 4], 0, 0), "w": entry("F32", [1], 0, 4), "z": entry("U8", [2, 0], 4, 4)}, f32(1)),
        "good_scalar_bool": st_file({"s": entry("BOOL", [], 0, 1)}, b"\x01"),
        "good_empty": st_file({}),
        "good_unpadded_odd_offset": st_file({"w": entry("F16", [1], 0, 2)}, b"\x00\x3c", pad=False),
        "good_rank8_all_dtypes": st_file(
            {name: entry(name, [1] * 7 + [1], off, off + size) for (name, size), off in
             zip([("F64", 8), ("F32", 4), ("F16", 2), ("BF16", 2), ("I64", 8), ("I32", 4), ("I16", 2), ("I8", 1),
                  ("U8", 1), ("BOOL", 1)], [0, 8, 12, 14, 16, 24, 28, 30, 31, 32])},
            bytes(33)),
        "good_unicode_names": st_file({"層.重み": entry("U8", [1], 0, 1), "../x": entry("U8", [1], 1, 2)}, b"ab"),
    }
    w16 = {"w": entry("F32", [4], 0, 16)}
    bad = {
        "s1_seven_bytes": b"\x10" * 7,
        "s2_length_2_63": struct.pack("<Q", 1 << 63) + b"{}",
        "s3_length_cap_plus_one": struct.pack("<Q", 100_000_001) + b"{}",
        "s4_length_past_end": struct.pack("<Q", 64) + b'{"w":',
        "s5_data_truncated": st_file(w16, f32(1, 2, 3)[:-1] + b"\x00" * 3),
        "s6_trailing_bytes": st_file(w16, f32(1, 2, 3, 4) + b"PK\x03\x04"),
        "s7_not_utf8": st_file(None, f32(1), raw=b'{"\xff":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'),
        "s8_array": st_file([1, 2]),
        "s8_byte_order_mark": st_file(None, raw=b"\xef\xbb\xbf{}"),
        "s9_unknown_dtype": st_file({"w": entry("F31", [1], 0, 4)}, f32(1)),
        "s10_overlap": st_file({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 0, 16)}, f32(1, 2, 3, 4)),
        "s11_gap": st_file({"a": entry("F32", [1], 0, 4), "b": entry("F32", [1], 8, 12)}, f32(1, 2, 3)),
        "s12_begin_after_end": st_file({"w": entry("F32", [1], 4, 0)}, f32(1)),
        "s13_fractional_offset": st_file(None, f32(1), raw=b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}'),
        "s14_shape_overflow": st_file({"w": entry("F32", [4194305, 4194305, 211106198978564], 0, 16)},
                                      f32(1, 2, 3, 4)),
        "s15_info_mismatch": st_file({"w": entry("I32", [2, 2], 0, 4)}, f32(1)),
        "s16_negative_dim": st_file({"w": entry("F32", [-1], 0, 4)}, f32(1)),
        "s17_duplicate_name": st_file(None, f32(1, 2), raw=(b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                                                            b'"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}')),
        "s18_metadata_not_string": st_file({"__metadata__": {"a": {"b": 1}}}),
        "s19_control_char_name": st_file({"a\u0001": entry("U8", [1], 0, 1)}, b"x"),
        "s22_deep_nesting": st_file(None, raw=b'{"w":{"dtype":"U8","shape":' + b"[" * 200),
    }
    return {**good, **bad}


def index_seeds():
    good = {"metadata": {"total_size": 36},
            "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    return {
        "good_index": json.dumps(good, indent=2).encode(),
        "good_index_extra_keys": json.dumps({**good, "extra": [{"x": [1, None]}]}).encode(),
        "bad_path_traversal": json.dumps({"weight_map": {"a": "../../x.safetensors"}}).encode(),
        "bad_duplicate_tensor": b'{"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}}',
        "bad_total_size_float": json.dumps({"metadata": {"total_size": 1.5}, "weight_map": {"a": "s"}}).encode(),
        "bad_deep_nesting": b'{"extra": ' + b"[" * 100,
    }


def write(directory, seeds):
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main():
    write(os.path.join(HERE, "corpus", "safetensors"), header_seeds())
    write(os.path.join(HERE, "corpus", "safetensors_index"), index_seeds())


if __name__ == "__main__":
    main()
