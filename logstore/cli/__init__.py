"""The ``logstore`` command line: ``serve`` starts a broker; the other commands are clients."""
