"""The C fast path of the storage envelope (``_core.docs_open``) against the Python decoder
(``storage_format.decode_value``) and ``records.record_id``: a body is returned only for an
uncompressed envelope of the asked kind that the decoder accepts, and then it is the
decoder's body; everything else (compressed, damaged, another kind, not a buffer's worth)
is None, for the decoder to judge. An id is returned only when it equals record_id's."""

from __future__ import annotations

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from llmdsdb._native import _core
from llmdsdb.errors import LlmdsdbError
from llmdsdb.records import record_id
from llmdsdb.storage_format import FORMAT_VERSION, KIND_DOC, decode_value, encode_value

ids = st.text(max_size=300)
records = st.builds(
    lambda i, t, extra: msgpack.packb({"id": i, "text": t, "meta": {}, "hash": "h",
                                       "emb": None, **extra}),
    ids, st.text(max_size=80), st.dictionaries(st.sampled_from(["x", "y"]), st.integers(-(2**63), 2**63 - 1)),
)
payloads = st.one_of(records, st.binary(max_size=300))


@st.composite
def values(draw):
    body = draw(payloads)
    kind = draw(st.sampled_from([KIND_DOC, KIND_DOC, 1, 4]))
    raw = bytearray(encode_value(body, kind=kind, compress=draw(st.sampled_from([False, None, True]))))
    for _ in range(draw(st.integers(0, 2))):  # damage: flip bytes, or cut the value
        if draw(st.booleans()) and raw:
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
        else:
            del raw[draw(st.integers(0, len(raw))):]
    return bytes(raw)


@given(st.lists(st.one_of(values(), st.none()), max_size=6))
def test_docs_open_agrees_with_the_python_decoder(raws) -> None:
    bodies, got_ids = _core.docs_open([None if r is None else memoryview(r) for r in raws],
                                      KIND_DOC, FORMAT_VERSION)
    assert len(bodies) == len(got_ids) == len(raws)
    for raw, body, rid in zip(raws, bodies, got_ids):
        if raw is None:
            assert body is None and rid is None
            continue
        try:
            want = decode_value(raw, key_desc="x", kind=KIND_DOC)
        except LlmdsdbError:
            want = None
        if body is not None:
            assert body == want and raw[3] == 0  # only plain bodies the decoder accepts
        elif want is not None:
            assert raw[3] != 0  # the decoder accepted it: then it was a compressed one
        if rid is not None:
            assert body is not None and rid == record_id(body, "x")


def test_docs_open_plain_record_and_its_id() -> None:
    rec = msgpack.packb({"id": "doc-é", "text": "t", "meta": {}, "hash": "h", "emb": None})
    raw = encode_value(rec, kind=KIND_DOC, compress=False)
    bodies, got = _core.docs_open([raw, None], KIND_DOC, FORMAT_VERSION)
    assert bodies == [rec, None] and got == ["doc-é", None]
    # the right bytes under another kind, or a newer version, are left to the decoder
    assert _core.docs_open([raw], KIND_DOC + 1, FORMAT_VERSION) == ([None], [None])
    assert _core.docs_open([raw[:1] + bytes([FORMAT_VERSION + 1]) + raw[2:]], KIND_DOC,
                           FORMAT_VERSION) == ([None], [None])
