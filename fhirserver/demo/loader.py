"""Load the demo health system once per database."""

from __future__ import annotations

import logging

from fhirserver.context import AppContext
from fhirserver.demo.data import demo_resources

log = logging.getLogger(__name__)

_MARKER = {"_id": "demo-data"}


async def load_demo_once(ctx: AppContext) -> int:
    """PUT every demo resource unless this database already got them; returns how many."""
    meta = ctx.mongo.db["_meta"]
    if await meta.find_one(_MARKER):
        return 0
    resources = demo_resources()
    for resource in resources:
        await ctx.service.update(resource["resourceType"], resource["id"], resource)
    await meta.update_one(_MARKER, {"$set": {"count": len(resources)}}, upsert=True)
    log.info("loaded %d demo resources", len(resources))
    return len(resources)
