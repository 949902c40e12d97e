"""All SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from __future__ import annotations

from jobs.models import render as render
from jobs.models.account import ApiKey, User
from jobs.models.base import (
    ACTIVE_STATUSES,
    Base,
    JobStatus,
    UTCDateTime,
    new_id,
    utcnow,
)
from jobs.models.library import (
    TEMPLATE_STAGES,
    Asset,
    Audio,
    AudioGroup,
    AudioJob,
    Template,
    TemplateJob,
)

__all__ = [
    "ACTIVE_STATUSES",
    "TEMPLATE_STAGES",
    "ApiKey",
    "Asset",
    "Audio",
    "AudioGroup",
    "AudioJob",
    "Base",
    "JobStatus",
    "Template",
    "TemplateJob",
    "UTCDateTime",
    "User",
    "new_id",
    "render",
    "utcnow",
]
