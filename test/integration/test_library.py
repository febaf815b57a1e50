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


def test_kmeans_reaches_faiss(conn):
    """The chain SQL -> glue -> core -> FAISS works in the server."""
    centroids = conn.execute(
        "SELECT ivfpq_kmeans(ARRAY['[0,0]','[0,0.1]','[10,10]','[10,10.1]']::vector[], 2)"
    ).fetchone()[0]
    assert len(centroids.strip("{}").split('","')) == 2
