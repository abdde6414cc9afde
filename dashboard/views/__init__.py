"""The dashboard's pages; each module has a ``TITLE`` and a ``render(snapshot)`` function."""
