"""``python -m edge.channels.telegram set-webhook | info``."""

import sys

from edge.channels.telegram.channel import main

sys.exit(main())
