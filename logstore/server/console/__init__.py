"""The web console, served by the broker on the metrics listener beside ``/metrics``.

A transport at the server layer, like the gRPC service: it reads the broker (and the storage
and records layers below it) on the broker's event loop and never imports the client or CLI.
``http.py`` is the HTTP/1.1 server, ``app.py`` the dispatcher, ``session.py`` who is asking,
``routes.py`` routing and rights, ``render.py`` HTML, ``sampler.py`` rates and lag over time,
``browse.py`` the message browser's reading, ``pages/`` one module per page, ``static/`` the
stylesheet and script (no build step, no CDN). See docs/console.md.
"""

from logstore.server.console.app import Console
from logstore.server.console.http import HttpServer

__all__ = ["Console", "HttpServer"]
