"""``recovery-fs status``: the lines of a supervised server's workers."""

from __future__ import annotations

from typing import Any


def mib(n: int | float | None) -> str:
    return f"{int(n or 0) / (1 << 20):.1f} MiB"


def worker_lines(st: dict[str, Any]) -> list[str]:
    """One line per worker (pid, connections, calls, RSS), the spare's, then the
    total; nothing for a single-process server."""
    workers = st.get("workers")
    if not workers:
        return []
    lines = [f"  workers:  {len(workers)} ({st.get('listen_mode', '?')} listeners)"]
    for w in workers:
        state = "" if w.get("ready") else " (starting)"
        restarts = f", restarted {w['restarts']}x" if w.get("restarts") else ""
        lines.append(
            f"    worker {w.get('index')}: pid {w.get('pid')}{state}, "
            f"{w.get('connections') or 0} connections, {w.get('calls') or 0} calls, "
            f"RSS {mib(w.get('rss'))}{restarts}"
        )
    spare = st.get("spare")
    if spare:
        lines.append(f"    spare:    pid {spare.get('pid')}, RSS {mib(spare.get('rss'))}")
    t = st.get("transport") or {}
    lines.append(
        f"    total:    {t.get('connections', 0)} connections, {t.get('calls', 0)} calls, "
        f"RSS {mib(st.get('rss_total'))} (supervisor{' and spare' if spare else ''} included)"
    )
    return lines
