// The apply fence: one node per tenant holding the highest apply epoch that
// wrote its journal to this graph (api/journal/apply.py). Every apply
// transaction first raises it to its own epoch, or gives up if a later
// applier already passed: an applier that lost its Postgres lock (a restart
// dropped its connection) can then never land an older batch after a newer
// one, which would bring deleted entities back. `tenant`, not `customer_id`:
// it is bookkeeping, not tenant data.
CREATE CONSTRAINT apply_fence_tenant IF NOT EXISTS FOR (f:ApplyFence) REQUIRE f.tenant IS UNIQUE;
