"""`python3 -m twinstream ...` is the same as the `twinstream` console script.

`clusterd` is dispatched before the CLI is imported: a replica process must start fast and
needs none of typer, the adapter or the HTTP stack (see `twinstream.compute.clusterd`).
"""

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["clusterd"]:
        from twinstream.compute.clusterd import main as clusterd_main

        sys.exit(clusterd_main(sys.argv[2:]))
    from twinstream.cli.main import main

    main()
