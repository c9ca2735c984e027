"""One server process from start to stop: its settings (``config``), state
directory (``state``), registry, logs, the background daemon, and the
service that builds the programs and the transport (``app``)."""
