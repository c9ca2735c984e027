"""The registry: a few named settings an operator changes while the server runs.

It is one JSON object in the state directory (``registry.json``), written
whole and atomically by ``recovery-fs registry set``; the running server
polls the file and follows changes within about a second
(``nfsd.service.logsetup.LevelWatcher``).  Keys absent from the file have their
default value.

=========================  =======  =====  ==================================
key                        default  range  meaning
=========================  =======  =====  ==================================
``appliance.debug.level``  0        0..9   0 warnings and errors; 1 info;
                                           2 debug; 3 and more: debug with one
                                           line per RPC call
=========================  =======  =====  ==================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from nfsd.service.state import StateError, atomic_write

DEBUG_LEVEL = "appliance.debug.level"


class RegistryError(Exception):
    """An unknown key, or a value the key does not take."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One registry key: a small integer in ``[minimum, maximum]``."""

    key: str
    default: int
    minimum: int
    maximum: int
    help: str

    def parse(self, value: object) -> int:
        """The value as an int in range; RegistryError otherwise."""
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        else:
            try:
                number = int(str(value).strip(), 10)
            except ValueError:
                number = None
        if number is None or not self.minimum <= number <= self.maximum:
            raise RegistryError(
                f"{self.key} takes an integer from {self.minimum} to {self.maximum}, "
                f"not {value!r} ({self.help})"
            )
        return number


SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in (
        Setting(
            DEBUG_LEVEL,
            default=0,
            minimum=0,
            maximum=9,
            help="0 warnings, 1 info, 2 debug, 3+ debug with one line per RPC",
        ),
    )
}


def setting(key: str) -> Setting:
    try:
        return SETTINGS[key]
    except KeyError:
        raise RegistryError(
            f"unknown registry key {key!r} (known: {', '.join(SETTINGS)})"
        ) from None


class Registry:
    """The registry file of one state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, object]:
        """The raw JSON object; {} if the file does not exist."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise StateError(f"cannot read the registry {self.path}: {e.strerror}") from e
        try:
            data = json.loads(text)
        except ValueError as e:
            raise StateError(
                f"the registry {self.path} is not valid JSON ({e}); remove it to start afresh"
            ) from e
        if not isinstance(data, dict):
            raise StateError(f"the registry {self.path} is not a JSON object")
        return data

    def values(self) -> dict[str, int]:
        """Every known key with its value (the default where unset).

        Raises StateError if the file is unreadable or a stored value invalid.
        """
        data = self._load()
        out: dict[str, int] = {}
        for key, s in SETTINGS.items():
            try:
                out[key] = s.parse(data[key]) if key in data else s.default
            except RegistryError as e:
                raise StateError(f"the registry {self.path} holds a bad value: {e}") from None
        return out

    def get(self, key: str) -> int:
        setting(key)
        return self.values()[key]

    def set(self, key: str, value: object) -> int:
        """Validate and store ``value`` for ``key``; returns the stored value."""
        number = setting(key).parse(value)
        data = self._load()
        data[key] = number
        try:
            atomic_write(
                self.path, json.dumps(data, indent=2, sort_keys=True).encode() + b"\n", 0o600
            )
        except OSError as e:
            raise StateError(f"cannot write the registry {self.path}: {e.strerror}") from e
        return number

    def signature(self) -> tuple[int, int, int] | None:
        """What changes when the file is replaced: (inode, mtime ns, size), None if absent."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
