"""Command line: sub-commands, logging set-up and exit codes; the only place that exits.

Exit codes: 0 success; 1 runtime failure (GX unreachable, restore not confirmed); 2 bad
configuration or bad input file; 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from datetime import date
from pathlib import Path
from typing import List, Optional

from venus_prio import __version__
from venus_prio.config import (
    OVERRIDE_VARIANTS,
    Config,
    default_config,
    effective_config_yaml,
    load_config,
)
from venus_prio.errors import ConfigError, InputError, SourceError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger(__name__)


def _load(path: Optional[str]) -> Config:
    return default_config() if path is None else load_config(path)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if args.probe:
        from venus_prio.app import probe  # noqa: PLC0415  (heavy imports only when used)

        _setup_logging(config.log_level)
        return probe(config)
    sys.stdout.write(effective_config_yaml(config))
    return EXIT_OK


def _cmd_simulate(args: argparse.Namespace) -> int:
    from venus_prio.sim.report import simulate_command  # noqa: PLC0415

    config = _load(args.config)
    if args.seed is not None:
        config = dataclasses.replace(config, sim=dataclasses.replace(config.sim, seed=args.seed))
    if args.override is not None:
        config = dataclasses.replace(
            config, sim=dataclasses.replace(config.sim, override=args.override)
        )
    profile = args.profile
    if args.recorded is not None:
        from venus_prio.sim.replay import recorded_path  # noqa: PLC0415

        profile = recorded_path(config.resolved_state_dir(), args.recorded, today=date.today())
    return simulate_command(
        config,
        scenario=args.scenario,
        profile=profile,
        as_json=args.json,
        plot=args.plot,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    from venus_prio.app import run  # noqa: PLC0415

    config = load_config(args.config)
    _setup_logging(config.log_level)
    return run(config, dry_run=args.dry_run)


def _cmd_restore(args: argparse.Namespace) -> int:
    from venus_prio.app import restore  # noqa: PLC0415

    config = load_config(args.config)
    _setup_logging(config.log_level)
    return restore(config)


def _cmd_ha_cleanup(args: argparse.Namespace) -> int:
    from venus_prio.ha_publisher import cleanup  # noqa: PLC0415

    config = load_config(args.config)
    _setup_logging(config.log_level)
    return cleanup(config)


def _time_of_day(text: str) -> float:
    """Return ``HH:MM`` as seconds since midnight (argparse names the option on an error)."""
    hours, _, minutes = text.partition(":")
    try:
        seconds = int(hours) * 3600 + int(minutes or "0") * 60
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HH:MM, got {text!r}") from None
    if not 0 <= seconds < 86400:
        raise argparse.ArgumentTypeError(f"expected 00:00 to 23:59, got {text!r}")
    return float(seconds)


def _cmd_fake_gx(args: argparse.Namespace) -> int:
    from venus_prio.fakes.mqtt_gx import fake_gx_command  # noqa: PLC0415

    _setup_logging("INFO")
    return fake_gx_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="venus-prio",
        description="Feed AC loads from PV first near the battery floor on Victron ESS systems.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "simulate", help="compare stock ESS, the original add-on and venus-prio (both actuators)"
    )
    p.add_argument("--scenario", default="all", help="cloudy-floor, sunny, winter or all")
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--profile",
        type=Path,
        help="CSV day profile (time_s,pv_dc_w,load_w[,pv_ac_w]) or a recording (.csv, .csv.gz)",
    )
    source.add_argument(
        "--recorded",
        metavar="DATE",
        help="replay a day venus-prio recorded: today, yesterday or YYYY-MM-DD "
        "(from <state_dir>/recordings: give --config)",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--plot", type=Path, help="write a PNG of the day for each policy")
    p.add_argument("--config", help="config.yaml (control, writes and sim sections are used)")
    p.add_argument("--seed", type=int, help="random seed of the built-in scenarios (sim.seed)")
    p.add_argument(
        "--override",
        choices=OVERRIDE_VARIANTS,
        help="how the simulated GX treats the hub4 override (sim.override)",
    )
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("check-config", help="validate a config file and print the effective config")
    p.add_argument("file")
    p.add_argument(
        "--probe", action="store_true", help="connect, read live values, show the decision"
    )
    p.set_defaults(func=_cmd_check_config)

    p = sub.add_parser("run", help="run the service")
    p.add_argument("--config", required=True)
    p.add_argument("--dry-run", action="store_true", help="decide and publish, never write")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("restore", help="write the journaled baseline back (for uninstall)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_restore)

    p = sub.add_parser(
        "ha-cleanup", help="remove venus-prio's retained Home Assistant topics (for uninstall)"
    )
    p.add_argument("--config", required=True)
    p.set_defaults(func=_cmd_ha_cleanup)

    p = sub.add_parser("fake-gx", help="a fake GX speaking dbus-flashmq over an MQTT broker")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--portal-id", default="c0619ab00001")
    p.add_argument("--scenario", default="cloudy-floor")
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    p.add_argument(
        "--start",
        type=_time_of_day,
        default=0.0,
        metavar="HH:MM",
        help="the time of day the scenario starts at (default 00:00: night)",
    )
    p.add_argument("--config", help="config.yaml (the sim section sets the plant)")
    p.add_argument(
        "--override",
        choices=OVERRIDE_VARIANTS,
        help="how the GX treats the hub4 override (default: sim.override)",
    )
    p.add_argument(
        "--override-expiry-s",
        type=float,
        help="seconds until the override falls back to -1 (default: sim.override_expiry_s)",
    )
    p.add_argument(
        "--write-log", type=Path, help="append every W/ received to this file, one JSON line each"
    )
    p.set_defaults(func=_cmd_fake_gx)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        sys.stderr.write(f"venus-prio: config error: {exc}\n")
        return EXIT_BAD_INPUT
    except InputError as exc:
        sys.stderr.write(f"venus-prio: bad input: {exc}\n")
        return EXIT_BAD_INPUT
    except SourceError as exc:
        sys.stderr.write(f"venus-prio: GX error: {exc}\n")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code
