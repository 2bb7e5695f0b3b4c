"""venus-prio: AC loads first from PV near the battery floor on Victron ESS systems."""

__version__ = "0.1.0"
