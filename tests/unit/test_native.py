"""Every compiled extension of ``setup.NATIVE`` imports (under ``CI=true``: must).

``setup.py`` builds them with ``optional=True``: a machine without a C
compiler still installs and runs, on the pure-Python twins.  CI has the
compiler (tools/apt-run.txt), so there a missing extension is a failed
build, not a slower server: this test fails.  Elsewhere it skips, saying why.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[2] / "setup.py"


def native_rows() -> list[tuple[str, str]]:
    """``NATIVE`` of setup.py, read without running it (it calls ``setup()``)."""
    for node in ast.parse(SETUP.read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "NATIVE" for t in targets):
                assert node.value is not None
                return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no NATIVE table")


ROWS = native_rows()


def test_every_row_names_a_source_in_its_package() -> None:
    root = SETUP.parent
    for module, source in ROWS:
        assert (root / source).is_file(), source
        assert Path(source).parent == Path(*module.split(".")[:-1]), (module, source)


@pytest.mark.parametrize("module", [m for m, _ in ROWS])
def test_the_extension_is_built(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} did not build: {e}")
        pytest.skip(f"{module} did not build ({e}): its pure-Python twin serves")


@pytest.mark.parametrize("pure", ["1", "0"])
def test_the_twins_serve_when_asked(pure: str) -> None:
    """``RECOVERY_FS_PURE=1`` (read once, at import) puts every twin in place."""
    probe = (
        "from nfsd import native; from nfsd.programs.nfs3 import fastpath;"
        "print(native.compiled is not None, native.fastcall is None,"
        " fastpath.parse_call is fastpath.parse_call_py)"
    )
    env = dict(os.environ, RECOVERY_FS_PURE=pure)
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=SETUP.parent, capture_output=True, text=True,
        check=True,
    ).stdout.split()  # fmt: skip
    built = out[0] == "True"
    twins = pure == "1" or not built
    assert out[1:] == [str(twins), str(twins)]
