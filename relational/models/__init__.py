"""Registry tables (SQLAlchemy 2 declarative), one module per area; Alembic revisions mirror them.

Every tenant-owned row carries `customer_id`; repositories filter on it. Importing this
package registers every table on `Base.metadata`, so `from relational.models import X` works
for any model.

May import: SQLAlchemy only.
"""

from relational.models.base import NAMING, Base
from relational.models.conflicts import SyncConflict
from relational.models.fleet import (
    DeviceEvent,
    Drone,
    Heartbeat,
    Kit,
    OccupancyRecord,
    UpdateRecord,
)
from relational.models.journal import (
    EmbeddingQueueItem,
    JournalApplied,
    JournalEntry,
    SyncEntity,
    SyncMutation,
)
from relational.models.scopes import (
    TENANT_WIDE,
    SyncScope,
    SyncScopeExit,
    SyncScopeRemoval,
    SyncScopeVenue,
)
from relational.models.storage import Blob, StreamPresence
from relational.models.tenants import ApiKey, Customer, CustomerVersion, Workstation

__all__ = [
    "NAMING",
    "TENANT_WIDE",
    "ApiKey",
    "Base",
    "Blob",
    "Customer",
    "CustomerVersion",
    "DeviceEvent",
    "Drone",
    "EmbeddingQueueItem",
    "Heartbeat",
    "JournalApplied",
    "JournalEntry",
    "Kit",
    "OccupancyRecord",
    "StreamPresence",
    "SyncConflict",
    "SyncEntity",
    "SyncMutation",
    "SyncScope",
    "SyncScopeExit",
    "SyncScopeRemoval",
    "SyncScopeVenue",
    "UpdateRecord",
    "Workstation",
]
