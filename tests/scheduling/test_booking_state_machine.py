"""Random operation sequences against the real HTTP server, checked against a model.

A hypothesis RuleBasedStateMachine drives $find, $hold, $book (of an offer, of a hold by
its holder or by someone else, with `cancelled-appt-id`), cancel by PUT and PATCH, direct
POSTs of booked Appointments with mixed durations, and the clock past hold expiry. The
machine keeps its own model of who holds which time and predicts every status code; after
every step it checks the server against the model and runs the invariant scan
(`find_overlaps`: no overlap on any actor, no duplicate, missing, stray or orphan claim).

The server is a private uvicorn (own database, own fixed SettableClock, so time only moves
when a rule moves it); the machine is synchronous (httpx.Client), and the async scan runs
on a private event loop in a thread, independent of pytest-asyncio's session loop.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from pymongo import AsyncMongoClient

from fhirserver.config import Settings
from fhirserver.phi.cipher import RecordCipher
from fhirserver.phi.codec import PhiCodec
from fhirserver.scheduling.clock import SettableClock
from fhirserver.storage.claims import find_overlaps
from fhirserver.storage.embedded import EmbeddedServers
from tests.api.conftest import free_port
from tests.api.factories import uid
from tests.api.scheduling_factories import VISIT, hospital
from tests.api.scheduling_factories import rule as availability_rule
from tests.thread_server import serve_in_thread

Json = dict[str, Any]
T = TypeVar("T")

FHIR = {"Content-Type": "application/fhir+json"}
PATCH = {"Content-Type": "application/json-patch+json"}
HOLD_EXPIRES = "http://fhirserver.dev/StructureDefinition/hold-expires"
TZ = ZoneInfo("America/New_York")  # the factories' hospital time zone
BOOKED = frozenset({"booked", "arrived", "checked-in", "fulfilled"})
VISIT_MINUTES = {"FOLLOW_UP": 30, "NEW_PATIENT": 60}
HOLD_MINUTES = 5  # $hold's default window
# Clock steps: one well inside a hold's window, one past it (the clock is fixed, so the
# model and the server agree on "now" to the microsecond).
ADVANCE_MINUTES = (2, 7)
PATIENTS = 3
# A short bookable morning keeps contention high: 6 FOLLOW_UP and 3 NEW_PATIENT slots.
OPEN, CLOSE = (9, 0), (12, 0)
QUARTERS = 12  # direct POSTs start at a quarter hour in [OPEN, CLOSE)


# ---- infrastructure: a private server and a private event loop -----------------------


@dataclass
class Env:
    """What the machine needs: the server's base URL, its clock and the scan."""

    base_url: str
    clock: SettableClock
    loop: LoopThread
    mongo: AsyncMongoClient[Json]
    db_name: str
    cipher: RecordCipher  # opens the sealed Appointments (docs/phi.md)

    def scan(self) -> list[Any]:
        """The invariant scan over the machine's database at the server's now."""
        return self.loop.run(find_overlaps(self.mongo[self.db_name], now=self.clock.now(),
                                           cipher=self.cipher))


class LoopThread:
    """An event loop running in its own daemon thread; `run` blocks on one coroutine."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coro` on the private loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def env(embedded: EmbeddedServers) -> Iterator[Env]:
    """A uvicorn server on its own database with a fixed clock, plus a scan client."""
    port = free_port()
    db_name = f"state_machine_{uid()}"
    settings_ = Settings(
        mongodb_uri=embedded.mongodb_uri,
        redis_url=embedded.redis_url,
        db_name=db_name,
        port=port,
        demo=False,
    )
    clock = SettableClock(start=datetime.now(UTC).replace(microsecond=0))
    with serve_in_thread(settings_, clock):
        loop = LoopThread()
        assert embedded.mongodb_uri
        mongo: AsyncMongoClient[Json] = loop.run(_client(embedded.mongodb_uri))
        try:
            cipher = PhiCodec.from_settings(settings_).cipher
            yield Env(settings_.base_url(), clock, loop, mongo, db_name, cipher)
        finally:
            loop.run(mongo.drop_database(db_name))
            loop.run(mongo.close())
            loop.close()


async def _client(uri: str) -> AsyncMongoClient[Json]:
    return AsyncMongoClient(uri, tz_aware=True)


# ---- the model ----------------------------------------------------------------------


@dataclass
class Appt:
    """What the model knows of one Appointment the server acknowledged."""

    id: str
    start: datetime
    end: datetime
    actors: frozenset[str]
    patient: str
    status: str
    exp: datetime | None = None

    def live(self, now: datetime) -> bool:
        """Owns time now: booked-like, or pending with an unexpired hold."""
        if self.status in BOOKED:
            return True
        return self.status == "pending" and self.exp is not None and self.exp > now


@dataclass
class Model:
    """Who should hold which time."""

    appts: dict[str, Appt] = field(default_factory=dict)

    def blockers(
        self,
        start: datetime,
        end: datetime,
        actors: frozenset[str],
        now: datetime,
        ignore: str | None = None,
    ) -> list[Appt]:
        """Live appointments sharing an actor with, and overlapping, [start, end)."""
        return [
            a
            for a in self.appts.values()
            if a.id != ignore
            and a.live(now)
            and a.actors & actors
            and a.start < end
            and start < a.end
        ]


def instant(value: str) -> datetime:
    """A FHIR instant as an aware UTC datetime."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def claimed(appt: Json) -> frozenset[str]:
    """The claimed actors of an Appointment (this test only uses plain references)."""
    refs = (str((p.get("actor") or {}).get("reference", "")) for p in appt["participant"])
    return frozenset(r for r in refs if r.split("/")[0] in ("Practitioner", "Location", "Device"))


def patient_of(appt: Json) -> str:
    """The Patient reference among the participants."""
    refs = (str((p.get("actor") or {}).get("reference", "")) for p in appt["participant"])
    return next(r for r in refs if r.startswith("Patient/"))


def hold_exp(appt: Json) -> datetime | None:
    """The hold-expires instant, if any."""
    for ext in appt.get("extension", []):
        if ext.get("url") == HOLD_EXPIRES:
            return instant(ext["valueInstant"])
    return None


def parameters(*pairs: tuple[str, Any]) -> Json:
    """A Parameters resource from (name, value) pairs (a dict is a resource)."""
    out: list[Json] = []
    for name, value in pairs:
        if isinstance(value, dict):
            out.append({"name": name, "resource": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"resourceType": "Parameters", "parameter": out}


def first_resource(r: httpx.Response) -> Json:
    """The Appointment in a $hold/$book collection Bundle."""
    resource: Json = r.json()["entry"][0]["resource"]
    return resource


# ---- the machine ---------------------------------------------------------------------


class BookingMachine(RuleBasedStateMachine):
    """One practitioner, a few patients, random operations, exact expectations."""

    env: ClassVar[Env]
    http: ClassVar[httpx.Client]
    outcomes: ClassVar[Counter[str]] = Counter()  # "rule status" tallies, for the log
    scan_seconds: ClassVar[float] = 0.0

    offers = Bundle("offers")  # generated slot ids from $find
    appts = Bundle("appts")  # ids of Appointments the server acknowledged
    holds = Bundle("holds")  # ids of those created by $hold

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.offer_docs: dict[str, Json] = {}
        self.practitioner = ""
        self.location = ""
        self.schedule = ""
        self.patients: list[str] = []
        self.day = datetime.now(UTC)

    # -- helpers --

    @property
    def now(self) -> datetime:
        """The server's now (its clock only moves in `advance`)."""
        return self.env.clock.now()

    def post(self, path: str, body: Json, headers: dict[str, str] = FHIR) -> httpx.Response:
        """POST JSON to the server."""
        return self.http.post(path, json=body, headers=headers)

    def create(self, body: Json) -> str:
        """Create a supporting resource; its id."""
        r = self.post(f"/{body['resourceType']}", body)
        assert r.status_code == 201, r.text
        rid: str = r.json()["id"]
        return rid

    def expect(self, r: httpx.Response, *codes: int) -> None:
        """The response has one of the predicted status codes."""
        rule_name = sys._getframe(1).f_code.co_name
        BookingMachine.outcomes[f"{rule_name} {r.status_code}"] += 1
        assert r.status_code in codes, (
            f"expected {codes}, got {r.status_code}: {r.text[:1500]}\nmodel: {self.describe()}"
        )

    def describe(self) -> str:
        """The model, for failure messages."""
        now = self.now
        rows = [
            f"{a.id} {a.status}{' live' if a.live(now) else ''} "
            f"{a.start.astimezone(TZ):%H:%M}-{a.end.astimezone(TZ):%H:%M} {sorted(a.actors)}"
            for a in sorted(self.model.appts.values(), key=lambda a: a.start)
        ]
        return f"now={now.isoformat()} " + "; ".join(rows)

    def remember(self, appt: Json) -> Appt:
        """Record an Appointment the server returned."""
        m = Appt(
            id=str(appt["id"]),
            start=instant(appt["start"]),
            end=instant(appt["end"]),
            actors=claimed(appt),
            patient=patient_of(appt),
            status=str(appt["status"]),
            exp=hold_exp(appt),
        )
        self.model.appts[m.id] = m
        return m

    def local(self, hhmm: tuple[int, int]) -> datetime:
        """An instant on the machine's day, local time at the hospital."""
        d = self.day
        return datetime(d.year, d.month, d.day, hhmm[0], hhmm[1], tzinfo=TZ).astimezone(UTC)

    def expected_offers(self, visit: str | None) -> set[tuple[datetime, int]]:
        """What $find must offer: the rule's grid (OPEN-CLOSE, aligned on the visit's
        length) minus everything that overlaps live time."""
        out: set[tuple[datetime, int]] = set()
        actors = frozenset({f"Practitioner/{self.practitioner}"})
        for code, minutes in VISIT_MINUTES.items():
            if visit not in (None, code):
                continue
            start = self.local(OPEN)
            while start + timedelta(minutes=minutes) <= self.local(CLOSE):
                end = start + timedelta(minutes=minutes)
                if not self.model.blockers(start, end, actors, self.now):
                    out.add((start, minutes))
                start = end
        return out

    # -- setup --

    @initialize()
    def setup(self) -> None:
        """A fresh practitioner (FOLLOW_UP 30 and NEW_PATIENT 60, OPEN-CLOSE) and patients."""
        self.location = self.create(hospital())
        self.practitioner = self.create(
            {"resourceType": "Practitioner", "name": [{"family": f"Machine{uid()}"}]}
        )
        types = tuple(VISIT_MINUTES)
        self.schedule = self.create(
            {
                "resourceType": "Schedule",
                "active": True,
                "actor": [{"reference": f"Practitioner/{self.practitioner}"}],
                "serviceType": [{"coding": [{"system": VISIT, "code": c}]} for c in types],
                "extension": [
                    availability_rule(
                        self.location,
                        start=f"{OPEN[0]:02}:{OPEN[1]:02}:00",
                        end=f"{CLOSE[0]:02}:{CLOSE[1]:02}:00",
                        visit_types=types,
                    )
                ],
            }
        )
        self.patients = [
            self.create({"resourceType": "Patient", "name": [{"family": f"P{uid()}"}]})
            for _ in range(PATIENTS)
        ]
        self.day = (self.now + timedelta(days=2)).astimezone(TZ)

    def teardown(self) -> None:
        """Deactivate the Schedule: only the running example's practitioner is bookable.

        Keeps $find small and the examples independent: hypothesis runs (and shrinks)
        many examples, and Schedules offering the same times must not pile up. (They once
        broke $book: `_proposal_from` in scheduling/operations.py looked for the offer among
        the first 50 proposals at its start across all Schedules, so past 50 Schedules a
        free offer was a 409.)
        """
        if not self.schedule:
            return
        r = self.http.get(f"/Schedule/{self.schedule}")
        assert r.status_code == 200, r.text
        r = self.http.put(
            f"/Schedule/{self.schedule}", json={**r.json(), "active": False}, headers=FHIR
        )
        assert r.status_code == 200, r.text

    # -- rules --

    @rule(target=offers, visit=st.sampled_from([None, "FOLLOW_UP", "NEW_PATIENT"]))
    def find(self, visit: str | None) -> Any:
        """$find on the machine's day: exactly the free grid slots, earliest first."""
        params = {
            "start": self.local((0, 0)).isoformat(),
            "end": (self.local((0, 0)) + timedelta(days=1)).isoformat(),
            "practitioner": f"Practitioner/{self.practitioner}",
            "_count": "100",
        }
        if visit:
            params["visit-type"] = visit
        r = self.http.get("/Appointment/$find", params=params)
        self.expect(r, 200)
        found = [e["resource"] for e in r.json().get("entry", [])]
        starts = [instant(o["start"]) for o in found]
        assert starts == sorted(starts)
        got = {(instant(o["start"]), int(o["minutesDuration"])) for o in found}
        want = self.expected_offers(visit)
        assert got == want, (
            f"$find offered {sorted(got - want)} too many, {sorted(want - got)} missing\n"
            f"model: {self.describe()}"
        )
        for o in found:
            self.offer_docs[o["id"]] = o
        return multiple(*(o["id"] for o in found))

    def _offer(self, offer_id: str) -> tuple[Json, datetime, datetime, frozenset[str]]:
        offer = self.offer_docs[offer_id]
        return offer, instant(offer["start"]), instant(offer["end"]), claimed(offer)

    @rule(targets=(appts, holds), offer_id=offers, who=st.integers(0, PATIENTS - 1))
    def hold(self, offer_id: str, who: int) -> Any:
        """$hold an offer for a patient: 201 when its time is free, else 409."""
        offer, start, end, actors = self._offer(offer_id)
        free = not self.model.blockers(start, end, actors, self.now)
        r = self.post(
            "/Appointment/$hold",
            parameters(("appointment", offer), ("patient", f"Patient/{self.patients[who]}")),
        )
        self.expect(r, 201 if free else 409)
        if r.status_code != 201:
            return multiple()
        held = self.remember(first_resource(r))
        assert held.status == "pending"
        assert held.exp == self.now + timedelta(minutes=HOLD_MINUTES)
        assert held.patient == f"Patient/{self.patients[who]}"
        return held.id

    @rule(target=appts, offer_id=offers, who=st.integers(0, PATIENTS - 1))
    def book_offer(self, offer_id: str, who: int) -> Any:
        """$book an offer: 201 when its time is free, else 409."""
        offer, start, end, actors = self._offer(offer_id)
        free = not self.model.blockers(start, end, actors, self.now)
        r = self.post(
            "/Appointment/$book",
            parameters(("appointment", offer), ("patient", f"Patient/{self.patients[who]}")),
        )
        self.expect(r, 201 if free else 409)
        if r.status_code != 201:
            return multiple()
        booked = self.remember(first_resource(r))
        assert booked.status == "booked" and (booked.start, booked.end) == (start, end)
        return booked.id

    @rule(appt_id=holds, holder=st.booleans(), other=st.integers(1, PATIENTS - 1))
    def book_held(self, appt_id: str, holder: bool, other: int) -> None:
        """$book a held appointment: the holder gets it while the hold is live; another
        patient or an expired hold is 409; an appointment that is not pending is 422."""
        appt = self.model.appts[appt_id]
        idx = self.patients.index(appt.patient.split("/")[1])
        patient = self.patients[idx if holder else (idx + other) % PATIENTS]
        r = self.post(
            "/Appointment/$book",
            parameters(("appointment-id", appt_id), ("patient", f"Patient/{patient}")),
        )
        if appt.status != "pending":
            self.expect(r, 422)
        elif not appt.live(self.now) or not holder:
            self.expect(r, 409)
        else:
            self.expect(r, 200)
            booked = self.remember(first_resource(r))
            assert booked.status == "booked" and booked.exp is None

    @rule(appt_id=appts, how=st.sampled_from(["PUT", "PATCH"]))
    def cancel(self, appt_id: str, how: str) -> None:
        """Cancel by PUT or PATCH status=cancelled: always 200, frees the time."""
        if how == "PUT":
            current = self.http.get(f"/Appointment/{appt_id}")
            assert current.status_code == 200, current.text
            body = {**current.json(), "status": "cancelled"}
            r = self.http.put(f"/Appointment/{appt_id}", json=body, headers=FHIR)
        else:
            ops = [{"op": "replace", "path": "/status", "value": "cancelled"}]
            r = self.http.patch(f"/Appointment/{appt_id}", json=ops, headers=PATCH)
        self.expect(r, 200)
        assert r.json()["status"] == "cancelled"
        self.model.appts[appt_id].status = "cancelled"

    @rule(target=appts, appt_id=appts, offer_id=offers, data=st.data())
    def reschedule(self, appt_id: str, offer_id: str, data: st.DataObject) -> Any:
        """$book an offer with cancelled-appt-id: atomic move, or nothing changes.

        Half the time the offer is one overlapping the old appointment (a 60-minute visit
        moved to 30 minutes inside it, or the reverse), when $find ever offered one: a
        reschedule may move onto time its old appointment still claims.
        """
        old = self.model.appts[appt_id]
        inside = sorted(
            o
            for o, doc in self.offer_docs.items()
            if instant(doc["start"]) < old.end and old.start < instant(doc["end"])
        )
        onto_own_time = data.draw(st.booleans(), label="onto its own time")
        if inside and onto_own_time:
            offer_id = data.draw(st.sampled_from(inside), label="overlapping offer")
        offer, start, end, actors = self._offer(offer_id)
        r = self.post(
            "/Appointment/$book",
            parameters(
                ("appointment", offer),
                ("patient", old.patient),
                ("cancelled-appt-id", appt_id),
            ),
        )
        if self.model.blockers(start, end, actors, self.now) == [old]:
            BookingMachine.outcomes["reschedule onto its own time"] += 1
        if old.status in ("cancelled", "noshow", "entered-in-error", "fulfilled"):
            self.expect(r, 422)  # refused before availability is looked at
        elif self.model.blockers(start, end, actors, self.now, ignore=appt_id):
            self.expect(r, 409)
        else:
            self.expect(r, 201)
        if r.status_code != 201:
            return multiple()
        old.status = "cancelled"
        moved = self.remember(first_resource(r))
        assert moved.status == "booked" and moved.patient == old.patient
        return moved.id

    @rule(
        target=appts,
        quarter=st.integers(0, QUARTERS - 1),
        minutes=st.sampled_from([30, 60]),
        with_room=st.booleans(),
        who=st.integers(0, PATIENTS - 1),
    )
    def post_booked(self, quarter: int, minutes: int, with_room: bool, who: int) -> Any:
        """POST /Appointment status booked at a quarter hour from OPEN, 30 or 60 minutes,
        optionally also claiming the hospital: 201 when free on every actor, else 409."""
        start = self.local(OPEN) + timedelta(minutes=15 * quarter)
        end = start + timedelta(minutes=minutes)
        refs = [f"Patient/{self.patients[who]}", f"Practitioner/{self.practitioner}"]
        if with_room:
            refs.append(f"Location/{self.location}")
        body = {
            "resourceType": "Appointment",
            "status": "booked",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "participant": [{"actor": {"reference": x}, "status": "accepted"} for x in refs],
        }
        actors = frozenset(refs[1:])
        free = not self.model.blockers(start, end, actors, self.now)
        r = self.post("/Appointment", body)
        self.expect(r, 201 if free else 409)
        if r.status_code != 201:
            return multiple()
        return self.remember(r.json()).id

    @rule(minutes=st.sampled_from(ADVANCE_MINUTES))
    def advance(self, minutes: int) -> None:
        """Move the server's clock (holds expire after HOLD_MINUTES)."""
        self.env.clock.advance(timedelta(minutes=minutes))

    # -- invariants --

    @invariant()
    def server_agrees_with_model(self) -> None:
        """Every acknowledged Appointment is stored with the status the model expects, the
        server holds nothing else for this practitioner, and the scan finds no problem."""
        if not self.practitioner:
            return
        r = self.http.get(
            "/Appointment",
            params={"practitioner": f"Practitioner/{self.practitioner}", "_count": "500"},
        )
        assert r.status_code == 200, r.text
        stored = {e["resource"]["id"]: e["resource"]["status"] for e in r.json().get("entry", [])}
        modelled = {a.id: a.status for a in self.model.appts.values()}
        assert stored == modelled, f"server {stored} != model {modelled}"
        began = time.monotonic()
        problems = self.env.scan()
        BookingMachine.scan_seconds += time.monotonic() - began
        assert problems == [], f"{problems}\nmodel: {self.describe()}"


def test_random_booking_sequences_keep_every_invariant(env: Env) -> None:
    """25-40 random sequences of about 15 steps each against the live server."""
    began = time.monotonic()
    with httpx.Client(base_url=env.base_url, timeout=30) as http:
        BookingMachine.env = env
        BookingMachine.http = http
        run_state_machine_as_test(
            BookingMachine,
            settings=settings(
                max_examples=40,
                stateful_step_count=15,
                deadline=None,
                database=None,
                # No shrinking: a failure is reported as found, and CI time stays bounded
                # (shrinking a 15-step HTTP sequence can take many minutes).
                phases=(Phase.explicit, Phase.reuse, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    print(
        f"state machine: {time.monotonic() - began:.1f}s "
        f"(scans {BookingMachine.scan_seconds:.1f}s)",
        dict(sorted(BookingMachine.outcomes.items())),
    )
