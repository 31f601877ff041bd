"""`python3 -m twinstream ...` is the same as the `twinstream` console script."""

from twinstream.cli.main import main

if __name__ == "__main__":
    main()
