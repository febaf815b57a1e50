"""The installed shared library: FAISS is linked in statically and none of its
symbols (nor the core's) leak into the dynamic symbol table, where they could
clash with another extension's FAISS."""
import subprocess


def installed_library():
    pkglibdir = subprocess.run(["/usr/lib/postgresql/15/bin/pg_config", "--pkglibdir"],
                               check=True, capture_output=True, text=True).stdout.strip()
    return f"{pkglibdir}/ivfpq.so"


def dynamic_symbols(path):
    out = subprocess.run(["nm", "-D", "--defined-only", "-C", path],
                         check=True, capture_output=True, text=True).stdout
    return out.splitlines()


def test_faiss_is_linked_statically_and_hidden():
    path = installed_library()
    needed = subprocess.run(["readelf", "-d", path], check=True, capture_output=True, text=True).stdout
    assert "libfaiss" not in needed
    symbols = dynamic_symbols(path)
    assert not [s for s in symbols if "faiss" in s.lower()]
    assert not [s for s in symbols if "ivfpq::core" in s]
    # what Postgres needs is still there
    names = {s.split()[-1] for s in symbols}
    assert {"Pg_magic_func", "ivfpqhandler", "pg_finfo_ivfpqhandler", "IvfpqParallelBuildMain"} <= names


def parse_vectors(array_text):
    """'{"[0,0.05]","[10,10.05]"}' (a vector[] as text) -> list of float lists."""
    return [[float(x) for x in v.strip('"[]').split(",")]
            for v in array_text.strip("{}").split('","')]


def test_kmeans_reaches_faiss(conn):
    """The chain SQL -> glue -> core -> FAISS works in the server: the
    centroids of two obvious pairs are the pairs' means."""
    centroids = parse_vectors(conn.execute(
        "SELECT ivfpq_kmeans(ARRAY['[0,0]','[0,0.1]','[10,10]','[10,10.2]']::vector[], 2)::text"
    ).fetchone()[0])
    assert len(centroids) == 2
    for mean in ([0.0, 0.05], [10.0, 10.1]):
        near = [c for c in centroids if max(abs(a - b) for a, b in zip(c, mean)) < 1e-4]
        assert len(near) == 1, (mean, centroids)
