"""``python -m nfsd.cli``: the same as the ``recovery-fs`` command."""

from nfsd.cli.commands import main

main(prog_name="recovery-fs")
