"""The console's pages, one module each; ``register`` adds their routes to a console.

A page for a later feature (share groups when the broker has queue mode, brokers when it is
clustered) is one more module here with a ``register(console)`` that adds its routes and its
``Layout.nav`` entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from logstore.server.console.pages import groups, login, messages, overview, queues, topic

if TYPE_CHECKING:
    from logstore.server.console.app import Console


def register(console: Console) -> None:
    for module in (login, overview, topic, messages, groups, queues):
        module.register(console)
