"""``python -m runtime``: the ``fleetnas`` command, for when the console script is not on PATH."""

from runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
