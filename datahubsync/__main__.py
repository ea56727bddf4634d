"""Entry point for ``python -m datahubsync`` and the frozen binary."""

from datahubsync.cli import main

if __name__ == "__main__":
    main()
