"""Property tests of the safetensors header validator: any bytes either parse into a consistent
layout or raise BadModelError — never another exception, never a hang."""

from __future__ import annotations

import contextlib
import json
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.errors import BadModelError
from registry.safetensors_check import DTYPE_SIZES, check_safetensors, parse_header

FUZZ = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _consistent(info, data_len: int) -> None:
    cursor = 0
    for t in sorted(info.tensors.values(), key=lambda t: (t.start, t.end)):
        assert t.start == cursor and t.end <= data_len
        assert math.prod(t.shape) * DTYPE_SIZES[t.dtype] == t.end - t.start
        cursor = t.end
    assert cursor == data_len


@FUZZ
@given(raw=st.binary(max_size=512), data_len=st.integers(min_value=0, max_value=1 << 20))
def test_random_header_bytes(raw, data_len):
    try:
        _consistent(parse_header(raw, data_len, "fuzz.safetensors"), data_len)
    except BadModelError as exc:
        assert "fuzz.safetensors" in str(exc)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                      st.floats(allow_nan=False), st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c,
                                                                                           max_size=4), max_leaves=20)
tensor_spec = st.fixed_dictionaries({
    "dtype": st.sampled_from([*DTYPE_SIZES, "F128", "f32", ""]) | json_leaf,
    "shape": st.lists(st.integers(min_value=-2, max_value=6), max_size=4) | json_value,
    "data_offsets": st.lists(st.integers(min_value=-4, max_value=300), min_size=0, max_size=3) | json_value,
})


@FUZZ
@given(header=st.dictionaries(st.text(min_size=1, max_size=10), tensor_spec | json_value, max_size=5),
       data_len=st.integers(min_value=0, max_value=400))
def test_structured_headers(header, data_len):
    raw = json.dumps(header).encode()
    with contextlib.suppress(BadModelError):
        _consistent(parse_header(raw, data_len, "x.safetensors"), data_len)


@FUZZ
@given(prefix=st.binary(max_size=16), tail=st.binary(max_size=256),
       claimed=st.integers(min_value=0, max_value=2**64 - 1))
def test_whole_files(tmp_path, prefix, tail, claimed):
    path = tmp_path / "f.safetensors"
    path.write_bytes(prefix if len(prefix) < 8 else struct.pack("<Q", claimed) + tail)
    with contextlib.suppress(BadModelError):
        check_safetensors(path)


tensor_layout = st.lists(st.tuples(st.sampled_from(sorted(DTYPE_SIZES)), st.lists(st.integers(0, 5), max_size=3)),
                         min_size=1, max_size=6)


@FUZZ
@given(layout=tensor_layout, field=st.sampled_from(["dtype", "shape", "data_offsets", None]),
       junk=json_value, extra=st.integers(min_value=-3, max_value=3))
def test_valid_layouts_parse_and_single_mutations_are_caught(layout, field, junk, extra):
    header, cursor = {}, 0
    for i, (dtype, shape) in enumerate(layout):
        n = math.prod(shape) * DTYPE_SIZES[dtype]
        header[f"t{i}"] = {"dtype": dtype, "shape": shape, "data_offsets": [cursor, cursor + n]}
        cursor += n
    info = parse_header(json.dumps(header).encode(), cursor, "v.safetensors")
    assert {k: (t.dtype, list(t.shape)) for k, t in info.tensors.items()} == {k: (v["dtype"], v["shape"])
                                                                              for k, v in header.items()}
    if field is not None:
        header["t0"][field] = junk
    try:
        _consistent(parse_header(json.dumps(header).encode(), cursor + extra, "v.safetensors"), cursor + extra)
    except BadModelError:
        assert field is not None or extra != 0


def test_deep_nesting_is_bad_input_not_a_crash():
    raw = b"[" * 200_000 + b"]" * 200_000
    try:
        parse_header(raw, 0, "deep.safetensors")
    except BadModelError as exc:
        assert "deep.safetensors" in str(exc)


def test_valid_file_written_by_safetensors_parses(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "ok.safetensors"
    save_file({"a": torch.zeros(3, 5), "b": torch.ones(7, dtype=torch.bfloat16), "c": torch.zeros(0)}, str(path),
              metadata={"format": "pt"})
    info = check_safetensors(path)
    assert info.tensors["a"].shape == (3, 5) and info.tensors["b"].dtype == "BF16"
    assert info.metadata == {"format": "pt"}
    _consistent(info, path.stat().st_size - info.data_start)


def test_duplicate_tensor_names_are_refused():
    raw = b'{"w": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, ' \
          b'"w": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}'
    try:
        parse_header(raw, 2, "dup.safetensors")
    except BadModelError as exc:
        assert "duplicate" in str(exc)
    else:
        raise AssertionError("duplicate key accepted")


def _zero_size_tensors(n: int, metadata: bool = False) -> bytes:
    """A header of `n` zero-size tensors, written directly (torch would take minutes for a million)."""
    entries = [b'"t%d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(n)]
    if metadata:
        entries.insert(n // 2, b'"__metadata__":{"format":"pt"}')
    return b"{" + b",".join(entries) + b"}"


def test_tensor_count_is_capped_while_the_header_is_decoded(tmp_path):
    """Issue 10: a million zero-size tensors is a valid layout that took tens of seconds and a
    gigabyte to check; it is refused after MAX_TENSORS entries, naming the file and the limit."""
    import time

    from registry.safetensors_check import MAX_HEADER_BYTES, MAX_TENSORS

    raw = _zero_size_tensors(1_000_000)
    assert len(raw) < MAX_HEADER_BYTES  # only the count cap stands in its way
    path = tmp_path / "many.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    start = time.monotonic()
    try:
        check_safetensors(path, name="many.safetensors")
    except BadModelError as exc:
        message = str(exc)
    else:
        raise AssertionError("a header with a million tensors was accepted")
    assert time.monotonic() - start < 5.0
    assert message.startswith("many.safetensors: ") and f"more than {MAX_TENSORS} tensors" in message
    assert "\n" not in message


def test_tensor_count_cap_is_exact_and_ignores_metadata(monkeypatch):
    import registry.safetensors_check as stc

    monkeypatch.setattr(stc, "MAX_TENSORS", 100)
    assert len(parse_header(_zero_size_tensors(100, metadata=True), 0, "ok.safetensors").tensors) == 100
    try:
        parse_header(_zero_size_tensors(101), 0, "big.safetensors")
    except BadModelError as exc:
        assert "more than 100 tensors" in str(exc)
    else:
        raise AssertionError("101 tensors accepted under a cap of 100")


def test_member_by_member_decoding_still_refuses_malformed_json():
    for raw in (b'{"a": 1,}', b'{"a" 1}', b'{"a": 1} x', b'{"a": 1', b"{'a': 1}", b'{"a": 1 "b": 2}', b" ", b"",
                b'{"a": [1, 2}'):
        try:
            parse_header(raw, 0, "m.safetensors")
        except BadModelError as exc:
            assert "m.safetensors" in str(exc), raw
        else:
            raise AssertionError(f"{raw!r} accepted")
    assert parse_header(b' \n{ }\t', 0, "empty.safetensors").tensors == {}
