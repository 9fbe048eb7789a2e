"""`rulesd run`: the daemon. `build` makes the real parts from the configuration (the
composition root); `run` runs whatever parts it is handed: the main loop, reloads,
heartbeats, liveness and shutdown."""

from rulesd.daemon.build import STATE_FILE, Parts, build_parts
from rulesd.daemon.reloader import describe_change
from rulesd.daemon.run import Daemon

__all__ = ["STATE_FILE", "Daemon", "Parts", "build_parts", "describe_change"]
