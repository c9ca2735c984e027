"""The compiled parts of recovery-fs: optional C extensions of hot loops.

Everything else is in setup.cfg.  Each extension sits in the package whose
loop it speeds up (the arrows stay one way: merge's knows nothing of RPC)
and has a pure-Python twin that it must equal byte for byte; the module that
uses it imports it through ``try``/``except ImportError`` and falls back to
the twin, also when ``RECOVERY_FS_PURE=1`` is set (the tests run both).
``optional=True``: a machine without a C compiler or Python's headers still
installs and runs, only slower; ``make`` installs both (tools/apt-run.txt),
and under ``CI=true`` a test fails if an extension did not build.
"""

from setuptools import Extension, setup

# (module, C source): one row per extension
NATIVE: list[tuple[str, str]] = [
    ("nfsd._fastcall", "nfsd/_fastcall.c"),
    ("merge._native", "merge/_native.c"),  # merge.watch's pass over a folder's entries
    ("nfsd.programs.nfs3._native", "nfsd/programs/nfs3/_native.c"),  # READDIRPLUS entries
    ("instant._native", "instant/_native.c"),  # the maps' pieces out of the cyclic collector
]

# module: the libraries it links (their -dev packages in tools/apt-run.txt)
LIBRARIES: dict[str, list[str]] = {
    "merge._native": ["b2"],  # libb2: BLAKE2b
    "nfsd.programs.nfs3._native": ["b2", "crypto"],  # handles: BLAKE2b, HMAC-SHA256's SHA-256
}

setup(
    ext_modules=[
        Extension(
            name,
            [source],
            libraries=LIBRARIES.get(name, []),
            optional=True,
            extra_compile_args=["-O2", "-Wall"],
        )
        for name, source in NATIVE
    ]
)
