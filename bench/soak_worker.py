"""One load process of bench/soak: ``soak_worker.py ROLE CONFIG.json`` prints its result.

Each load (and the well-behaved client) runs in a process of its own, so
that the harness that samples the server and the client that measures it
never wait on a busy load generator.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import soak_conns
import soak_fuzz
import soak_probe
import soak_readers

ROLES = {
    "probe": soak_probe.run,
    "fuzz": soak_fuzz.run,
    "trickle_idle": soak_conns.trickle_idle,
    "readers": soak_readers.run,
    "flood": soak_conns.flood,
}

if __name__ == "__main__":
    role, config = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    print(json.dumps(ROLES[role](config)))
