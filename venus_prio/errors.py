"""The exception tree of venus-prio, drawn once here.

    VenusPrioError                 base of everything venus-prio raises on purpose
    ├── ConfigError                the user's configuration is wrong (exit code 2)
    ├── InputError                 a user-supplied data file (a --profile CSV) is malformed (exit 2)
    └── SourceError                the GX, the broker or the bus misbehaved (never the user's fault)
        ├── SourceUnavailable      cannot connect / connection lost; retried with backoff
        ├── PortalIdNotFound       no N/+/system/0/Serial within the timeout
        └── WriteNotConfirmed      a write did not show up in the read-back

Transports translate library errors (``raise SourceUnavailable(...) from exc``), so "your config
is wrong" is never confused with "the GX misbehaved".
"""

from __future__ import annotations


class VenusPrioError(Exception):
    """Base of every error venus-prio raises on purpose."""


class ConfigError(VenusPrioError):
    """The configuration is invalid; the message starts with the key path."""


class InputError(VenusPrioError):
    """A data file given on the command line is malformed; the message names the line."""


class SourceError(VenusPrioError):
    """The GX, its broker or the bus misbehaved."""


class SourceUnavailable(SourceError):
    """The GX cannot be reached (connection refused, lost, bus service gone)."""


class PortalIdNotFound(SourceError):
    """The portal id could not be discovered in time."""


class WriteNotConfirmed(SourceError):
    """A write to the GX did not show up in its read-back."""
