"""``python -m devhost``: run the Function App locally without Azure tooling."""

from __future__ import annotations

from devhost._cli import main

raise SystemExit(main())
