"""`fhirserver generate`: a synthetic health system for load tests and benchmarks.

Builds Organizations, ~50 Locations (positions, IANA time zones, hoursOfOperation), ~30
specialties, N Practitioners with a PractitionerRole and one Schedule each (availability-rule
extensions, docs/scheduling.md), Patients, and ~50% pre-booked Appointments over a D-day
horizon. Everything is written straight into MongoDB in the ResourceStore's document shape
(``{_id, v, lu, raw, idx, srt}`` plus a history entry per resource) with ``insert_many``,
and every booked Appointment gets the claims the BookingGuard would write for it (one per
claimed actor and granule, kind ``booking``), so the result is what the same resources
written through the API would give, only much faster.

Deterministic for a given (providers, days, seed, start date, granule).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pymongo.asynchronous.database import AsyncDatabase

from fhirserver.phi.codec import PhiCodec
from fhirserver.phi.rotation import record_if_sealed_under
from fhirserver.scheduling.availability import generated_slot_id, render_local
from fhirserver.scheduling.claims_policy import granules
from fhirserver.scheduling.rules import RULE_URL
from fhirserver.scheduling.visit_types import VISIT_TYPE_SYSTEM, default_minutes
from fhirserver.storage.claims import CLAIMS
from fhirserver.storage.resources import HISTORY, Indexer, format_instant

Json = dict[str, Any]
Doc = dict[str, Any]

SNOMED = "http://snomed.info/sct"
BCP47 = "urn:ietf:bcp:47"
TIMEZONE_URL = "http://hl7.org/fhir/StructureDefinition/timezone"
META_ID = "synthetic"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
BATCH = 5_000

# Metro areas the locations sit around: (city, state, lat, lng, IANA zone).
METROS: tuple[tuple[str, str, float, float, str], ...] = (
    ("New York", "NY", 40.7128, -74.0060, "America/New_York"),
    ("Boston", "MA", 42.3601, -71.0589, "America/New_York"),
    ("Philadelphia", "PA", 39.9526, -75.1652, "America/New_York"),
    ("Atlanta", "GA", 33.7490, -84.3880, "America/New_York"),
    ("Chicago", "IL", 41.8781, -87.6298, "America/Chicago"),
    ("Dallas", "TX", 32.7767, -96.7970, "America/Chicago"),
    ("Houston", "TX", 29.7604, -95.3698, "America/Chicago"),
    ("Denver", "CO", 39.7392, -104.9903, "America/Denver"),
    ("Phoenix", "AZ", 33.4484, -112.0740, "America/Phoenix"),
    ("Los Angeles", "CA", 34.0522, -118.2437, "America/Los_Angeles"),
    ("San Francisco", "CA", 37.7749, -122.4194, "America/Los_Angeles"),
    ("Seattle", "WA", 47.6062, -122.3321, "America/Los_Angeles"),
)

# SNOMED CT practice-setting specialties (c80 practice codes).
SPECIALTIES: tuple[tuple[str, str], ...] = (
    ("394802001", "General medicine"),
    ("394579002", "Cardiology"),
    ("394582007", "Dermatology"),
    ("394537008", "Pediatric specialty"),
    ("394585009", "Obstetrics and gynecology"),
    ("394801008", "Trauma and orthopedics"),
    ("394583002", "Endocrinology"),
    ("394584008", "Gastroenterology"),
    ("394589003", "Nephrology"),
    ("394591006", "Neurology"),
    ("394594003", "Ophthalmology"),
    ("394592004", "Clinical oncology"),
    ("394807007", "Infectious diseases"),
    ("394810000", "Rheumatology"),
    ("394811001", "Geriatric medicine"),
    ("394814009", "General practice"),
    ("394821009", "Occupational medicine"),
    ("394600006", "Clinical pharmacology"),
    ("394609007", "General surgery"),
    ("394610002", "Neurosurgery"),
    ("394611003", "Plastic surgery"),
    ("394612005", "Urology"),
    ("394604002", "Ear, nose and throat surgery"),
    ("394586005", "Gynecology"),
    ("394587001", "Psychiatry"),
    ("394588006", "Child and adolescent psychiatry"),
    ("394590007", "Thoracic medicine"),
    ("394593009", "Medical oncology"),
    ("394595002", "Pathology"),
    ("394577000", "Anesthetics"),
)

# Visit types used by the synthetic system: every length a multiple of 15 minutes.
VISIT_MIX: tuple[str, ...] = ("FOLLOW_UP", "NEW_PATIENT", "CONSULT", "ANNUAL_PHYSICAL")
LANGS: tuple[tuple[str, str, float], ...] = (
    ("es", "Spanish", 0.3),
    ("zh", "Chinese", 0.08),
    ("vi", "Vietnamese", 0.05),
    ("fr", "French", 0.05),
)
FAMILY = ("Garcia", "Smith", "Nguyen", "Johnson", "Chen", "Patel", "Brown", "Kim", "Lopez",
          "Miller", "Davis", "Wilson", "Martinez", "Lee", "Clark", "Young", "Walker", "Hall")
GIVEN = ("Ana", "John", "Mei", "Ravi", "Sara", "Luis", "Emma", "Omar", "Lena", "Paul",
         "Nora", "Ivan", "Rosa", "Tom", "Aiko", "Ben", "Carla", "Dev")


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate."""

    providers: int = 5000
    days: int = 90
    seed: int = 1
    locations: int = 50
    specialties: int = 30
    booked_fraction: float = 0.5
    granule_minutes: int = 5
    start: date | None = None  # first day of the horizon (default: today, UTC)

    def first_day(self) -> date:
        """The horizon's first local date."""
        return self.start or datetime.now(UTC).date()


@dataclass
class GenerateStats:
    """What was written, and how long it took."""

    resources: dict[str, int] = field(default_factory=dict)
    claims: int = 0
    seconds: float = 0.0
    reused: bool = False

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return {"resources": dict(self.resources), "claims": self.claims,
                "seconds": round(self.seconds, 1), "reused": self.reused}


@dataclass(frozen=True)
class _Loc:
    id: str
    tz: str
    lat: float
    lng: float


@dataclass(frozen=True)
class _Prov:
    index: int
    pid: str
    role: str
    schedule: str
    loc: _Loc
    specialty: tuple[str, str]
    visit_types: tuple[str, ...]
    start_minute: int  # local start of the day block (lunch 12:00-13:00 inside it)
    end_minute: int


def _concept(system: str, code: str, display: str) -> Json:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _visit(code: str) -> Json:
    return {"coding": [{"system": VISIT_TYPE_SYSTEM, "code": code}]}


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


class _Builder:
    """Builds the resources of one synthetic system (pure, deterministic)."""

    def __init__(self, cfg: GenerateConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.first = cfg.first_day()
        self.locs: list[_Loc] = []
        self.provs: list[_Prov] = []
        self.patients = max(20, cfg.providers * 2)

    def organizations(self) -> list[Json]:
        out: list[Json] = [{"resourceType": "Organization", "id": "syn-org", "active": True,
                            "name": "Synthetic Health System"}]
        for i, (city, state, *_rest) in enumerate(METROS):
            out.append({"resourceType": "Organization", "id": f"syn-org-{i:02d}",
                        "active": True, "name": f"Synthetic Health {city}",
                        "address": [{"city": city, "state": state, "country": "US"}],
                        "partOf": {"reference": "Organization/syn-org"}})
        return out

    def locations(self) -> list[Json]:
        out: list[Json] = []
        for i in range(self.cfg.locations):
            m = i % len(METROS)
            city, state, lat, lng, tz = METROS[m]
            lat += self.rng.uniform(-0.15, 0.15)
            lng += self.rng.uniform(-0.15, 0.15)
            loc = _Loc(f"syn-loc-{i:03d}", tz, round(lat, 5), round(lng, 5))
            self.locs.append(loc)
            out.append({
                "resourceType": "Location", "id": loc.id, "status": "active",
                "name": f"{city} Clinic {i // len(METROS) + 1}", "mode": "instance",
                "extension": [{"url": TIMEZONE_URL, "valueCode": tz}],
                "address": {"line": [f"{100 + i} Main St"], "city": city, "state": state,
                            "country": "US"},
                "position": {"latitude": loc.lat, "longitude": loc.lng},
                "managingOrganization": {"reference": f"Organization/syn-org-{m:02d}"},
                "hoursOfOperation": [
                    {"daysOfWeek": list(WEEKDAYS), "openingTime": "07:00:00",
                     "closingTime": "19:00:00"},
                    {"daysOfWeek": ["sat"], "openingTime": "08:00:00",
                     "closingTime": "13:00:00"},
                ],
            })
        return out

    def providers(self) -> Iterator[list[Json]]:
        """Per provider: Practitioner, PractitionerRole, Schedule."""
        specs = SPECIALTIES[: self.cfg.specialties]
        horizon_end = self.first + timedelta(days=self.cfg.days)
        for i in range(self.cfg.providers):
            rng = self.rng
            loc = self.locs[rng.randrange(len(self.locs))]
            spec = specs[rng.randrange(len(specs))]
            types = tuple(rng.sample(VISIT_MIX, 2))
            start = rng.choice((7 * 60, 8 * 60, 9 * 60))
            p = _Prov(i, f"syn-pr-{i:05d}", f"syn-role-{i:05d}", f"syn-sch-{i:05d}", loc,
                      spec, types, start, start + 8 * 60)
            self.provs.append(p)
            org = f"Organization/syn-org-{self.locs.index(loc) % len(METROS):02d}"
            langs = [("en", "English")] + [(c, d) for c, d, share in LANGS
                                           if rng.random() < share]
            family, given = FAMILY[i % len(FAMILY)], GIVEN[(i // len(FAMILY)) % len(GIVEN)]
            practitioner = {
                "resourceType": "Practitioner", "id": p.pid, "active": True,
                "identifier": [{"system": "http://fhirserver.dev/synthetic/provider",
                                "value": f"{i:05d}"}],
                "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
                "gender": rng.choice(("female", "male")),
                "communication": [_concept(BCP47, c, d) for c, d in langs],
            }
            role = {
                "resourceType": "PractitionerRole", "id": p.role, "active": True,
                "practitioner": {"reference": f"Practitioner/{p.pid}"},
                "organization": {"reference": org},
                "location": [{"reference": f"Location/{loc.id}"}],
                "specialty": [_concept(SNOMED, *spec)],
            }
            subs: list[Json] = [{"url": "daysOfWeek", "valueCode": d} for d in WEEKDAYS]
            subs += [
                {"url": "start", "valueTime": _hhmm(p.start_minute)},
                {"url": "end", "valueTime": _hhmm(p.end_minute)},
                {"url": "location", "valueReference": {"reference": f"Location/{loc.id}"}},
            ]
            subs += [{"url": "visitType", "valueCoding": {"system": VISIT_TYPE_SYSTEM,
                                                          "code": t}} for t in types]
            subs += [
                {"url": "break", "extension": [{"url": "start", "valueTime": "12:00:00"},
                                               {"url": "end", "valueTime": "13:00:00"}]},
                {"url": "minNoticeMinutes", "valueInteger": 60},
                {"url": "maxAdvanceDays", "valueInteger": self.cfg.days + 30},
            ]
            tz = ZoneInfo(loc.tz)
            schedule = {
                "resourceType": "Schedule", "id": p.schedule, "active": True,
                "serviceType": [_visit(t) for t in types],
                "specialty": [_concept(SNOMED, *spec)],
                "actor": [{"reference": f"Practitioner/{p.pid}"},
                          {"reference": f"PractitionerRole/{p.role}"}],
                "planningHorizon": {
                    "start": datetime.combine(self.first, datetime.min.time(), tz).isoformat(),
                    "end": datetime.combine(horizon_end, datetime.min.time(), tz).isoformat(),
                },
                "extension": [{"url": RULE_URL, "extension": subs}],
            }
            yield [practitioner, role, schedule]

    def patient_resources(self) -> Iterator[Json]:
        rng = random.Random(self.cfg.seed + 7)
        for i in range(self.patients):
            yield {
                "resourceType": "Patient", "id": f"syn-pat-{i:06d}", "active": True,
                "name": [{"family": FAMILY[rng.randrange(len(FAMILY))],
                          "given": [GIVEN[rng.randrange(len(GIVEN))]]}],
                "gender": rng.choice(("female", "male")),
                "birthDate": f"{rng.randint(1940, 2020)}-{rng.randint(1, 12):02d}-"
                             f"{rng.randint(1, 28):02d}",
            }

    def appointments(self, p: _Prov) -> Iterator[tuple[Json, datetime, datetime]]:
        """Booked Appointments on the rule's own slot grid, about `booked_fraction` of it.

        Walks each working day from the block start: picks a visit type, moves to its next
        grid start that fits before lunch or the block end, and books it with the configured
        probability (else leaves it free). Starts from tomorrow so every visit is in the
        future (past the rule's notice).
        """
        rng = random.Random(self.cfg.seed * 1_000_003 + p.index)
        tz = ZoneInfo(p.loc.tz)
        n = 0
        segments = ((p.start_minute, 12 * 60), (13 * 60, p.end_minute))
        for offset in range(1, self.cfg.days):
            day = self.first + timedelta(days=offset)
            if day.weekday() >= 5:
                continue
            midnight = datetime.combine(day, datetime.min.time(), tz)
            for seg_start, seg_end in segments:
                t = seg_start
                while t < seg_end:
                    code = p.visit_types[rng.randrange(len(p.visit_types))]
                    minutes = default_minutes(code) or 30
                    s = -(-t // minutes) * minutes  # the grid is the visit length
                    if s + minutes > seg_end:
                        break
                    if rng.random() < self.cfg.booked_fraction:
                        start = (midnight + timedelta(minutes=s)).astimezone(UTC)
                        end = start + timedelta(minutes=minutes)
                        yield self._appointment(p, code, start, end, n, tz), start, end
                        n += 1
                    t = s + minutes

    def _appointment(self, p: _Prov, code: str, start: datetime, end: datetime, n: int,
                     tz: ZoneInfo) -> Json:
        minutes = int((end - start).total_seconds() // 60)
        patient = f"syn-pat-{(p.index * 7919 + n * 104729) % self.patients:06d}"
        return {
            "resourceType": "Appointment", "id": f"syn-ap-{p.index:05d}-{n:05d}",
            "status": "booked",
            "serviceType": [_visit(code)],
            "specialty": [_concept(SNOMED, *p.specialty)],
            "start": render_local(start, p.loc.tz),
            "end": render_local(end, p.loc.tz),
            "minutesDuration": minutes,
            "slot": [{"reference": f"Slot/{generated_slot_id(start, minutes, p.schedule)}"}],
            "participant": [
                {"actor": {"reference": f"Practitioner/{p.pid}"}, "required": "required",
                 "status": "accepted"},
                {"actor": {"reference": f"Patient/{patient}"}, "required": "required",
                 "status": "accepted"},
            ],
        }


class _Writer:
    """Buffers current-version documents, history entries and claims; bulk-inserts them."""

    def __init__(self, db: AsyncDatabase[Doc], indexer: Indexer, stats: GenerateStats,
                 granule_minutes: int, phi: PhiCodec | None = None) -> None:
        self.db = db
        self.phi = phi
        self.indexer = indexer
        self.stats = stats
        self.granule_minutes = granule_minutes
        self.lu = datetime.now(UTC).replace(microsecond=0)
        self.buffers: dict[str, list[Doc]] = {}
        self.pending: set[asyncio.Task[None]] = set()

    def resource(self, resource: Json) -> None:
        rtype, rid = resource["resourceType"], resource["id"]
        body: Json = {"resourceType": rtype, "id": rid,
                      "meta": {"versionId": "1", "lastUpdated": format_instant(self.lu)}}
        body.update({k: v for k, v in resource.items() if k not in ("resourceType", "id")})
        raw = orjson.dumps(body)
        idx, srt = self.indexer(body)
        sealed: Doc = {}
        if self.phi is not None and self.phi.sealed_type(rtype):
            raw, kid = self.phi.seal_raw(rtype, rid, 1, raw)
            sealed["k"] = kid
        self._add(rtype, {"_id": rid, "v": 1, "lu": self.lu, "raw": raw, "idx": idx,
                          "srt": srt, **sealed})
        self._add(HISTORY, {"_id": f"{rtype}/{rid}/1", "t": rtype, "rid": rid, "v": 1,
                            "lu": self.lu, "m": "PUT", "raw": raw, **sealed})
        self.stats.resources[rtype] = self.stats.resources.get(rtype, 0) + 1

    def claims(self, appt_id: str, actor: str, start: datetime, end: datetime) -> None:
        for g in granules(start, end, self.granule_minutes):
            self._add(CLAIMS, {"r": actor, "g": g, "a": appt_id, "k": "booking"})
            self.stats.claims += 1

    def _add(self, coll: str, doc: Doc) -> None:
        buf = self.buffers.setdefault(coll, [])
        buf.append(doc)
        if len(buf) >= BATCH:
            self.buffers[coll] = []
            task = asyncio.get_running_loop().create_task(self._insert(coll, buf))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)

    async def _insert(self, coll: str, docs: list[Doc]) -> None:
        await self.db[coll].insert_many(docs, ordered=False)

    async def drain(self, limit: int = 4) -> None:
        """Wait while more than `limit` inserts are in flight (bounded memory)."""
        while len(self.pending) > limit:
            done, _ = await asyncio.wait(set(self.pending), return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()

    async def flush(self) -> None:
        """Insert everything buffered and wait for every insert."""
        for coll, docs in list(self.buffers.items()):
            if docs:
                await self._insert(coll, docs)
        self.buffers.clear()
        while self.pending:
            done, _ = await asyncio.wait(set(self.pending))
            for t in done:
                t.result()


async def existing(db: AsyncDatabase[Doc]) -> Doc | None:
    """The marker of a synthetic system already generated in this database, if any."""
    return await db["_meta"].find_one({"_id": META_ID})


def _marker(cfg: GenerateConfig) -> Doc:
    return {"providers": cfg.providers, "days": cfg.days, "seed": cfg.seed,
            "locations": cfg.locations, "granule_minutes": cfg.granule_minutes,
            "start": cfg.first_day().isoformat()}


async def generate(db: AsyncDatabase[Doc], cfg: GenerateConfig, indexer: Indexer,
                   *, progress: Any = None, phi: PhiCodec | None = None) -> GenerateStats:
    """Write the synthetic system into `db` (migrated, empty of synthetic data).

    With `phi` (what `serve` uses), Patients and Appointments are sealed and their PHI
    search values blind-indexed, as the ResourceStore would store them (docs/phi.md).

    If the same configuration was generated here before, nothing is written and
    ``reused`` is set; a different configuration is refused (use a fresh database).
    """
    stats = GenerateStats()
    started = time.perf_counter()
    marker = await existing(db)
    if marker is not None:
        same = {k: marker.get(k) for k in _marker(cfg)} == _marker(cfg)
        if not same:
            raise RuntimeError(f"this database already holds a different synthetic system "
                               f"({ {k: marker.get(k) for k in _marker(cfg)} }); "
                               "use another --data-dir or database")
        stats.reused = True
        stats.resources = dict(marker.get("resources", {}))
        stats.claims = int(marker.get("claims", 0))
        return stats
    b = _Builder(cfg)
    w = _Writer(db, phi.indexer(indexer) if phi else indexer, stats, cfg.granule_minutes, phi)
    for r in [*b.organizations(), *b.locations()]:
        w.resource(r)
    for trio in b.providers():
        for r in trio:
            w.resource(r)
    for patient in b.patient_resources():
        w.resource(patient)
        await w.drain()
    for k, p in enumerate(b.provs):
        for appt, start, end in b.appointments(p):
            w.resource(appt)
            w.claims(appt["id"], f"Practitioner/{p.pid}", start, end)
        await w.drain()
        if progress is not None and (k + 1) % 100 == 0:
            progress(f"{k + 1}/{len(b.provs)} providers, "
                     f"{stats.resources.get('Appointment', 0)} appointments, "
                     f"{time.perf_counter() - started:.0f}s")
    await w.flush()
    if phi is not None:
        # Sealed as written: spare the first `serve` a pass over every record to find that.
        await record_if_sealed_under(db, phi.cipher.active_kid)
    stats.seconds = time.perf_counter() - started
    await db["_meta"].update_one(
        {"_id": META_ID},
        {"$set": {**_marker(cfg), "resources": stats.resources, "claims": stats.claims,
                  "seconds": stats.seconds}},
        upsert=True,
    )
    return stats


def sample_queries(db_marker: Doc) -> dict[str, Any]:
    """Facts a load generator needs about a generated system: ids and metro centres."""
    providers = int(db_marker["providers"])
    return {
        "providers": providers,
        "schedules": [f"syn-sch-{i:05d}" for i in range(providers)],
        "practitioners": [f"syn-pr-{i:05d}" for i in range(providers)],
        "specialties": [c for c, _ in SPECIALTIES[:30]],
        "metros": [(lat, lng) for _, _, lat, lng, _ in METROS],
    }
