"""`python -m api.cli ...`: the same as `overwatch ...`."""

from api.cli import app

app()
