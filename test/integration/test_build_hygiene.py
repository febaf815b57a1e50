"""Build hygiene: `make install` takes none of PGXS's variables from the
environment.  PGXS reads DATA, DOCS, SCRIPTS, MODULES, ... from the
environment too; a user whose shell exports one of them must not get
`install: cannot stat`.  The dry run (make -n) shows what install would do."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGXS_VARIABLES = ["DATA", "DATA_built", "DATA_TSEARCH", "DOCS", "SCRIPTS", "SCRIPTS_built", "MODULES",
                  "PROGRAM", "HEADERS", "HEADERS_built", "MODULEDIR", "EXTRA_INSTALL", "PG_LIBS"]
BOGUS = "/nonexistent/ivfpq-hygiene-probe"


def dry_install(extra_env):
    env = dict(os.environ, **extra_env)
    return subprocess.run(["make", "-n", "install"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_dry_install_installs_the_extension():
    out = dry_install({})
    assert out.returncode == 0, out.stderr
    assert "ivfpq.so" in out.stdout and "ivfpq.control" in out.stdout


@pytest.mark.parametrize("variable", PGXS_VARIABLES)
def test_environment_does_not_leak_into_install(variable):
    out = dry_install({variable: BOGUS})
    assert out.returncode == 0, out.stderr
    assert BOGUS not in out.stdout + out.stderr, f"{variable} from the environment reached make install"
    assert "ivfpq.so" in out.stdout
