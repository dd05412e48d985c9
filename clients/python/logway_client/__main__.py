"""`python -m logway_client produce|consume|topics|groups`: the CLI without the server installed."""

import sys

from logway_client.cli import main

sys.exit(main())
