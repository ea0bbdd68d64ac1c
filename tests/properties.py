"""Hypothesis settings of the property tests that write to the real stores
(one example costs a few statements): a fixed number of examples, derived
from the test (`derandomize`), so `make test` runs the same ones every time;
`OVERWATCH_PROPERTY_EXAMPLES` runs more."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

EXAMPLES = int(os.environ.get("OVERWATCH_PROPERTY_EXAMPLES", "30"))

against_the_stores = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
