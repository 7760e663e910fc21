"""The operators' command line: ``python -m shared.ops <service> <group> <command>``.

One command group per service (``ServiceCommands``); each has ``timers``, ``jobs`` and
``dlq`` (dead letters, ``shared/ops/dead_letters.py``) to start with. A later issue adds a
service's own commands by subclassing ``ServiceCommands`` and overriding ``add_commands``,
then ``register``-ing it.
"""

from shared.ops.cli import SERVICES, ServiceCommands, build_parser, main, register

__all__ = ["SERVICES", "ServiceCommands", "build_parser", "main", "register"]
