"""The availability index: an in-memory read model of bookable time that keeps $find fast.

core.py holds the numpy structures and the query; expand.py turns a Schedule into its
offered slots through the availability engine; service.py builds it from MongoDB and keeps
it in step (write hook after commit, Redis stream across processes). See
docs/availability-index.md.
"""

from fhirserver.scheduling.index.core import AvailabilityIndex, IndexStats
from fhirserver.scheduling.index.service import IndexService

__all__ = ["AvailabilityIndex", "IndexService", "IndexStats"]
