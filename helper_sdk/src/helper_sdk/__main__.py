"""``python -m helper_sdk run module:helper``: the CLI without relying on PATH."""

from ._cli import main

raise SystemExit(main())
