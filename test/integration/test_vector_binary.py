"""Binary wire format of the vector type (pgvector-compatible).

The binary form is: int16 dimensions, int16 unused (always 0), then the
float4 values, all in network byte order.  These tests check the exact bytes
the server sends (binary results and COPY ... (FORMAT binary)), that what it
receives round-trips (binary parameters and COPY FROM), and that malformed
payloads are rejected with the right SQLSTATE.
"""
import math
import os
import random
import struct

import psycopg
import pytest
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


class VectorPayload(bytes):
    """Raw bytes sent as a binary parameter of type vector."""


def pack_vector(values, dim=None, unused=0):
    """The binary form of a vector; dim and unused may be forged."""
    if dim is None:
        dim = len(values)
    return struct.pack(">hh%df" % len(values), dim, unused, *values)


def float32(value):
    """value rounded to the nearest float4."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


@pytest.fixture
def db(conn):
    """conn inside a private schema, with raw binary adapters for vector."""
    schema = "vt_binary_%d" % os.getpid()
    extension_schema = conn.execute(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'ivfpq'"
    ).fetchone()[0]
    conn.execute("DROP SCHEMA IF EXISTS %s CASCADE" % schema)
    conn.execute("CREATE SCHEMA %s" % schema)
    conn.execute("SET search_path = %s, %s" % (schema, extension_schema))
    vector_oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0]

    class RawVectorDumper(Dumper):
        format = Format.BINARY
        oid = vector_oid

        def dump(self, obj):
            return bytes(obj)

    class RawVectorLoader(Loader):
        format = Format.BINARY

        def load(self, data):
            return bytes(data)

    conn.adapters.register_dumper(VectorPayload, RawVectorDumper)
    conn.adapters.register_loader(vector_oid, RawVectorLoader)
    try:
        yield conn
    finally:
        conn.execute("DROP SCHEMA IF EXISTS %s CASCADE" % schema)


def test_send_layout(db):
    cur = db.cursor(binary=True)
    cur.execute("SELECT '[1,-2.5,0.375,16777216]'::vector, '[-0]'::vector")
    first, negative_zero = cur.fetchone()
    assert first == struct.pack(">hhffff", 4, 0, 1.0, -2.5, 0.375, 16777216.0)
    assert first.hex() == "00040000" "3f800000" "c0200000" "3ec00000" "4b800000"
    assert negative_zero == bytes.fromhex("00010000" "80000000")


def test_send_matches_text(db):
    rng = random.Random(42)
    values = [float32(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-30, 0)) for _ in range(1000)]
    literal = "[" + ",".join(repr(v) for v in values) + "]"
    cur = db.cursor(binary=True)
    cur.execute("SELECT %t::vector", [literal])
    assert cur.fetchone()[0] == pack_vector(values)


def test_recv_round_trip(db):
    values = [1.0, -2.5, 1e-45, 3.4028234663852886e38, -0.0, 0.1]
    payload = pack_vector([float32(v) for v in values])
    cur = db.cursor(binary=True)
    cur.execute("SELECT %b, (%b)::text", [VectorPayload(payload), VectorPayload(payload)])
    echoed, text = cur.fetchone()
    assert echoed == payload
    assert text == "[1,-2.5,1e-45,3.4028235e+38,-0,0.1]"


def test_recv_into_typed_column(db):
    db.execute("CREATE TABLE typed (e vector(3))")
    cur = db.cursor()
    cur.execute("INSERT INTO typed VALUES (%b)", [VectorPayload(pack_vector([1, 2, 3]))])
    with pytest.raises(psycopg.Error) as failure:
        cur.execute("INSERT INTO typed VALUES (%b)", [VectorPayload(pack_vector([1, 2]))])
    assert failure.value.sqlstate == "22000"
    assert "expected 3 dimensions, not 2" in str(failure.value)
    assert db.execute("SELECT e::text FROM typed").fetchall() == [("[1,2,3]",)]


@pytest.mark.parametrize(
    "payload, sqlstate, message",
    [
        # dim says 3, only 2 values follow
        (pack_vector([1, 2], dim=3), "08P01", "insufficient data"),
        # dim says 2, 3 values follow: the trailing bytes are not consumed
        (pack_vector([1, 2, 3], dim=2), "22P03", "incorrect binary data format"),
        (pack_vector([1, 2], unused=1), "22P03", "must be 0, not 1"),
        (pack_vector([1, 2], unused=-1), "22P03", "must be 0, not -1"),
        (pack_vector([math.nan, 1]), "22003", "NaN not allowed in vector"),
        (pack_vector([1, math.inf]), "22003", "infinite value not allowed in vector"),
        (pack_vector([-math.inf]), "22003", "infinite value not allowed in vector"),
        (pack_vector([]), "22000", "vector must have at least 1 dimension"),
        (pack_vector([], dim=-1), "22000", "vector must have at least 1 dimension"),
        (pack_vector([0.5] * 16001), "54000", "vector cannot have more than 16000 dimensions"),
        (b"\x00", "08P01", "insufficient data"),
    ],
)
def test_recv_rejects_bad_payload(db, payload, sqlstate, message):
    cur = db.cursor()
    with pytest.raises(psycopg.Error) as failure:
        cur.execute("SELECT %b", [VectorPayload(payload)])
    assert failure.value.sqlstate == sqlstate
    assert message in str(failure.value)
    # The session is still usable.
    assert db.execute("SELECT '[1]'::vector::text").fetchone()[0] == "[1]"


def read_copy_binary(data):
    """Parse a COPY binary stream into a list of tuples of raw field bytes."""
    assert data[: len(COPY_SIGNATURE)] == COPY_SIGNATURE
    pos = len(COPY_SIGNATURE)
    _flags, extension_length = struct.unpack_from(">iI", data, pos)
    pos += 8 + extension_length
    rows = []
    while True:
        (count,) = struct.unpack_from(">h", data, pos)
        pos += 2
        if count == -1:
            break
        fields = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if length == -1:
                fields.append(None)
            else:
                fields.append(bytes(data[pos : pos + length]))
                pos += length
        rows.append(tuple(fields))
    assert pos == len(data)
    return rows


def write_copy_binary(rows):
    """Build a COPY binary stream from tuples of raw field bytes."""
    parts = [COPY_SIGNATURE, struct.pack(">iI", 0, 0)]
    for row in rows:
        parts.append(struct.pack(">h", len(row)))
        for field in row:
            if field is None:
                parts.append(struct.pack(">i", -1))
            else:
                parts.append(struct.pack(">i", len(field)) + field)
    parts.append(struct.pack(">h", -1))
    return b"".join(parts)


def test_copy_binary_round_trip(db):
    rng = random.Random(7)
    vectors = [
        [1.0, 2.0, 3.0],
        [-0.0, 0.0, 1e-45],
        [3.4028234663852886e38, -3.4028234663852886e38],
        [float32(rng.gauss(0, 1)) for _ in range(768)],
        [float32(rng.random()) for _ in range(16000)],
        None,
    ]
    db.execute("CREATE TABLE source (id int, e vector)")
    db.execute("CREATE TABLE target (id int, e vector)")
    with db.cursor() as cur:
        for number, values in enumerate(vectors):
            literal = None if values is None else "[" + ",".join(repr(v) for v in values) + "]"
            cur.execute("INSERT INTO source VALUES (%s, %s::vector)", [number, literal])

        with cur.copy("COPY source TO STDOUT (FORMAT binary)") as copy:
            data = b"".join(bytes(block) for block in copy)

        rows = read_copy_binary(data)
        assert len(rows) == len(vectors)
        for id_bytes, vector_bytes in rows:
            (number,) = struct.unpack(">i", id_bytes)
            expected = vectors[number]
            assert vector_bytes == (None if expected is None else pack_vector(expected))

        with cur.copy("COPY target FROM STDIN (FORMAT binary)") as copy:
            copy.write(data)

        # Same rows, bit for bit (text keeps the sign of -0, which = does not see).
        cur.execute(
            """SELECT count(*) FROM source s FULL JOIN target t USING (id)
               WHERE s.e::text IS DISTINCT FROM t.e::text
                  OR (s.e IS NOT NULL AND s.e <> t.e)
                  OR s.id IS NULL OR t.id IS NULL"""
        )
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*), count(e) FROM target")
        assert cur.fetchone() == (len(vectors), len(vectors) - 1)


@pytest.mark.parametrize(
    "payload, sqlstate",
    [
        (pack_vector([1, 2, 3], unused=7), "22P03"),
        (pack_vector([1, math.nan, 3]), "22003"),
        (pack_vector([1, 2, 3, 4], dim=3), "22P03"),  # trailing bytes
        (pack_vector([1, 2]), "22000"),  # the column is vector(3)
    ],
)
def test_copy_binary_rejects_bad_payload(db, payload, sqlstate):
    db.execute("CREATE TABLE target (e vector(3))")
    good = pack_vector([1, 2, 3])
    stream = write_copy_binary([(good,), (payload,)])
    with db.cursor() as cur:
        with pytest.raises(psycopg.Error) as failure:
            with cur.copy("COPY target FROM STDIN (FORMAT binary)") as copy:
                copy.write(stream)
        assert failure.value.sqlstate == sqlstate
        assert cur.execute("SELECT count(*) FROM target").fetchone()[0] == 0

        # The same stream without the bad row loads.
        with cur.copy("COPY target FROM STDIN (FORMAT binary)") as copy:
            copy.write(write_copy_binary([(good,)]))
        assert cur.execute("SELECT e::text FROM target").fetchall() == [("[1,2,3]",)]
