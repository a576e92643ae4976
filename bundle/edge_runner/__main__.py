"""`python -m edge_runner INPUT...` (from the bundle folder) or `python <bundle>/edge_runner INPUT...`."""

import sys

if __package__:
    from . import main
else:  # run as a folder path: make the bundle folder importable, then use the package
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edge_runner import main

sys.exit(main())
