"""End-to-end fixtures: the same real servers and service factories as the integration tier."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 (fixtures re-exported for this package)
    ADMIN_KEY,
    Embedded,
    anyio_backend,
    embedded,
    embedded_factory,
    settings_factory,
)
from tests.servers import (  # noqa: F401
    clean_redis,
    pg_database,
    pg_url,
    redis_url,
    service_env,
)
