"""``python -m edge.channels.telegram set-webhook | info`` (edge/channels/telegram/cli.py)."""

import sys

from edge.channels.telegram.cli import main

sys.exit(main())
