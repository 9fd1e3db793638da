"""Batched behavioural-event ingest over HTTP, against the bare SQLAlchemy Core insert of the same
encrypted rows.

1. **http event batches**, once per ``--workers`` count, each on a fresh store prepared
   identically (embedded default: SQLite data file + separate SQLite key store + generated master
   key, in a temporary folder; or a PostgreSQL data database) and served by the real CLI,
   ``profilestore serve --workers N``, in its own process tree on a free localhost port.
   ``--subjects`` visitors get consent first (``POST /v1/consents``, cookie banner,
   ``personalize`` granted, by anonymous id); then ``--batches`` batches of ``--batch-size``
   realistic events (sessions of page views, product views, searches, add-to-carts and purchases
   with category, brand, price, sku, url; a few % from visitors who never consented, which the
   service drops) are posted to ``POST /v1/events`` by ``--concurrency`` senders, each with its
   own ``httpx.Client``. Every answer must be 200 and accept exactly the events of consenting
   visitors. The server's CPU (parent and workers) is measured over the timed batches.
2. **bare Core insert**: the rows the service stored for the same batches (same subject, ids,
   epoch, purposes; properties encrypted beforehand with ``events.service.encrypt_properties`` under
   the subject's key) inserted with ``insert(Event.__table__)`` executemany, one transaction and one
   commit per batch, into a fresh migrated database of the same kind, with the same number of
   writers (and from one writer too), in this process. No HTTP, no validation, no identity
   lookups, no consent gate, no conflict check (the table's unique index on subject, client and
   message id is kept up all the same), no signals: the floor the ingest path stands on.

Run: ``.venv/bin/python bench/events_bench.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/events_bench.py` from anywhere
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import Connection, Table, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import (  # noqa: E402
    Failed,
    Phase,
    ServedProcess,
    Store,
    add_run_options,
    begin,
    check_run_options,
    machine_info,
    open_store,
    parse_workers,
    py_spy,
    row_counts,
    run_concurrently,
)
from bench.workload import COOKIE_BANNER, USER_AGENTS, iso  # noqa: E402
from profilestore import migrate  # noqa: E402
from profilestore.db import Database  # noqa: E402
from profilestore.events.models import Event  # noqa: E402
from profilestore.events.service import encrypt_properties  # noqa: E402
from profilestore.runtime import Runtime  # noqa: E402

BASELINE = "bare Core insert"
SERIAL = "bare Core, 1 writer"
UNINDEXED = "bare Core, no dedup index"
CONSENT_PURPOSE = "personalize"
TABLES = ("subjects", "consent_state", "events", "signals", "signal_values", "signal_buckets")
TARGET_EVENTS_PER_S = 20_000  # on SQLite, on the 2-core bench machine
TARGET_RATIO = 0.5

# -- a shop's catalogue ------------------------------------------------------------------------------

# category → (low, high) typical price in EUR
CATEGORIES: dict[str, tuple[float, float]] = {
    "Running Shoes": (60, 220),
    "Trail Shoes": (80, 200),
    "Sneakers": (50, 180),
    "Hiking Boots": (90, 280),
    "Sandals": (20, 90),
    "T-Shirts": (10, 45),
    "Hoodies": (35, 110),
    "Jackets": (60, 260),
    "Rain Jackets": (70, 320),
    "Down Jackets": (120, 450),
    "Jeans": (40, 130),
    "Shorts": (20, 60),
    "Leggings": (25, 90),
    "Sports Bras": (20, 70),
    "Socks": (5, 25),
    "Backpacks": (30, 220),
    "Tents": (90, 650),
    "Sleeping Bags": (50, 350),
    "Yoga Mats": (20, 120),
    "Cycling Helmets": (40, 250),
    "Bike Lights": (15, 90),
    "Water Bottles": (8, 45),
    "Sunglasses": (25, 210),
    "Watches": (90, 700),
    "Caps": (12, 40),
    "Gloves": (15, 80),
    "Swimwear": (20, 90),
    "Kids Shoes": (25, 80),
    "Kitchenware": (10, 150),
    "Home Decor": (10, 200),
}
BRANDS: tuple[str, ...] = (
    "Nike",
    "Adidas",
    "Puma",
    "ASICS",
    "New Balance",
    "Brooks",
    "Hoka",
    "Saucony",
    "On",
    "Salomon",
    "Merrell",
    "The North Face",
    "Patagonia",
    "Columbia",
    "Arc'teryx",
    "Mammut",
    "Jack Wolfskin",
    "Fjällräven",
    "Helly Hansen",
    "Levi's",
    "Wrangler",
    "Lee",
    "Uniqlo",
    "Zara",
    "H&M",
    "Mango",
    "COS",
    "Gap",
    "Tommy Hilfiger",
    "Calvin Klein",
    "Lacoste",
    "Ralph Lauren",
    "Hugo Boss",
    "Superdry",
    "Vans",
    "Converse",
    "Dr. Martens",
    "Birkenstock",
    "Crocs",
    "Timberland",
    "Garmin",
    "Polar",
    "Suunto",
    "Oakley",
    "Ray-Ban",
    "Osprey",
    "Deuter",
    "CamelBak",
    "Hydro Flask",
    "IKEA",
)
ADJECTIVES = ("Classic", "Pro", "Ultra", "Lite", "Trail", "Urban", "Everyday", "Tech", "Air", "Flex", "Storm", "Core")
COLOURS = ("black", "white", "navy", "grey", "olive", "red", "blue", "sand", "green", "pink")
SIZES = ("XS", "S", "M", "L", "XL", "38", "39", "40", "41", "42", "43", "44", "45")
JOURNAL = ("how-to-choose-running-shoes", "layering-guide", "packing-list-alps", "care-for-down", "size-guide")
REFERRERS = (
    "https://www.google.com/",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://www.instagram.com/",
    "https://l.facebook.com/",
    "",
    "",
    "",
)
SHOP = "https://shop.example.com"

# event type → share of events (a session's later steps follow the same mix)
EVENT_TYPES: tuple[tuple[str, int], ...] = (
    ("page_viewed", 38),
    ("product_viewed", 32),
    ("search", 11),
    ("added_to_cart", 14),
    ("purchase", 5),
)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


@dataclass(frozen=True)
class Product:
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float

    def properties(self) -> dict[str, Any]:
        return {
            "product_id": self.product_id,
            "sku": self.sku,
            "name": self.name,
            "category": self.category,
            "brand": self.brand,
            "price": self.price,
            "currency": "EUR",
        }


def catalogue(seed: int, size: int = 1500) -> dict[str, list[Product]]:
    """Products by category: every category carries most brands, at realistic prices."""
    rng = random.Random(f"profilestore-events-catalogue:{seed}")
    by_category: dict[str, list[Product]] = {c: [] for c in CATEGORIES}
    names = list(CATEGORIES)
    for i in range(size):
        category = names[i % len(names)]
        brand = rng.choice(BRANDS)
        low, high = CATEGORIES[category]
        price = round(math.exp(rng.uniform(math.log(low), math.log(high)))) - rng.choice((0.01, 0.05, 0.51))
        product_id = f"{rng.randrange(10**7, 10**8)}"
        sku = f"{_slug(brand)[:3].upper()}-{_slug(category)[:3].upper()}-{i:05d}"
        name = f"{brand} {rng.choice(ADJECTIVES)} {category.rstrip('s')}"
        by_category[category].append(Product(product_id, sku, name, category, brand, round(price, 2)))
    return by_category


# -- the event stream --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedEvent:
    """One event as posted, plus what the generator knows about it."""

    body: dict[str, Any]
    anonymous_id: str
    known: bool  # the visitor consented: the service must accept it
    occurred_at: datetime

    @property
    def message_id(self) -> str:
        return str(self.body["message_id"])

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.body["properties"])


@dataclass(frozen=True)
class Visitor:
    anonymous_id: str
    categories: tuple[str, ...]  # what they keep coming back to
    brands: tuple[str, ...]


class EventStream:
    """Sessions of realistic shop events from ``visitors`` (some far busier than others) and, for
    ``unknown_share`` of the sessions, from visitors who never consented. A pure function of the
    seed, the visitors and ``now``: events occurred within the ``hours`` before ``now``."""

    def __init__(
        self,
        seed: int,
        visitors: Sequence[str],
        *,
        now: datetime,
        unknown_share: float = 0.03,
        hours: float = 6.0,
    ) -> None:
        self.rng = random.Random(f"profilestore-events:{seed}")
        self.products = catalogue(seed)
        self.now = now
        self.hours = hours
        self.unknown_share = unknown_share
        self.visitors = [self._visitor(a) for a in visitors]
        # A heavy-tailed activity: a few visitors send many sessions, most send a few.
        weights = [self.rng.paretovariate(1.3) for _ in self.visitors]
        self._cum_weights = list(itertools.accumulate(weights))
        self._carry: list[GeneratedEvent] = []

    def _visitor(self, anonymous_id: str) -> Visitor:
        rng = random.Random(f"visitor:{anonymous_id}")
        return Visitor(
            anonymous_id,
            tuple(rng.sample(list(CATEGORIES), rng.randrange(1, 4))),
            tuple(rng.sample(BRANDS, rng.randrange(1, 4))),
        )

    def _product(self, visitor: Visitor) -> Product:
        rng = self.rng
        category = rng.choice(visitor.categories) if rng.random() < 0.65 else rng.choice(list(CATEGORIES))
        products = self.products[category]
        if rng.random() < 0.5:
            favourites = [p for p in products if p.brand in visitor.brands]
            if favourites:
                return rng.choice(favourites)
        return rng.choice(products)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def session(self, visitor: Visitor, known: bool, length: int | None = None) -> list[GeneratedEvent]:
        """One visit: a landing page, then a walk through the shop, sometimes a purchase."""
        rng = self.rng
        length = length or min(1 + int(rng.expovariate(1 / 6)), 60)
        at = self.now - timedelta(seconds=rng.uniform(120, self.hours * 3600))
        session_id = self._uuid()
        cart: list[tuple[Product, int]] = []
        cart_id = f"cart_{rng.getrandbits(64):016x}"
        referrer = rng.choice(REFERRERS)
        types, weights = zip(*EVENT_TYPES, strict=True)
        events = []
        for step in range(length):
            kind = "page_viewed" if step == 0 else rng.choices(types, weights=weights)[0]
            if kind == "purchase" and not cart:
                kind = "added_to_cart"
            properties = self._properties(kind, visitor, cart, cart_id, referrer if step == 0 else "")
            properties["session_id"] = session_id
            body = {
                "identifiers": {"anonymous_id": visitor.anonymous_id},
                "type": kind,
                "properties": properties,
                "occurred_at": iso(at),
                "message_id": self._uuid(),
            }
            events.append(GeneratedEvent(body, visitor.anonymous_id, known, at))
            at = min(at + timedelta(seconds=rng.uniform(2, 120)), self.now - timedelta(seconds=1))
            if kind == "purchase":
                cart = []
                cart_id = f"cart_{rng.getrandbits(64):016x}"
        return events

    def _properties(
        self, kind: str, visitor: Visitor, cart: list[tuple[Product, int]], cart_id: str, referrer: str
    ) -> dict[str, Any]:
        rng = self.rng
        if kind == "page_viewed":
            roll = rng.random()
            if roll < 0.2:
                props: dict[str, Any] = {"url": f"{SHOP}/", "path": "/", "title": "Example Shop"}
            elif roll < 0.85:
                category = self._product(visitor).category
                path = f"/c/{_slug(category)}"
                props = {"url": f"{SHOP}{path}", "path": path, "title": f"{category} | Example Shop"}
                props["category"] = category
            else:
                path = f"/journal/{rng.choice(JOURNAL)}"
                props = {"url": f"{SHOP}{path}", "path": path, "title": "Journal | Example Shop"}
            props["referrer"] = referrer
            return props
        if kind == "product_viewed":
            product = self._product(visitor)
            path = f"/p/{_slug(product.name)}-{product.product_id}"
            return {**product.properties(), "variant": rng.choice(COLOURS), "url": f"{SHOP}{path}", "path": path}
        if kind == "search":
            product = self._product(visitor)
            query = rng.choice((product.category.lower(), f"{product.brand.lower()} {product.category.lower()}"))
            props = {"query": query, "results": rng.randrange(0, 240), "url": f"{SHOP}/search?q={_slug(query)}"}
            if rng.random() < 0.4:  # a filtered search names its category
                props["category"] = product.category
            return props
        if kind == "added_to_cart":
            product = self._product(visitor)
            quantity = 1 if rng.random() < 0.85 else rng.randrange(2, 4)
            cart.append((product, quantity))
            return {
                **product.properties(),
                "cart_id": cart_id,
                "quantity": quantity,
                "size": rng.choice(SIZES),
                "variant": rng.choice(COLOURS),
                "url": f"{SHOP}/p/{_slug(product.name)}-{product.product_id}",
            }
        # purchase: the cart, as an order
        items = [{**p.properties(), "quantity": q} for p, q in cart]
        subtotal = round(sum(p.price * q for p, q in cart), 2)
        shipping = 0.0 if subtotal >= 50 else 4.95
        return {
            "order_id": f"ORD-{rng.randrange(10**8, 10**9)}",
            "value": round(subtotal + shipping, 2),
            "revenue": subtotal,
            "shipping": shipping,
            "tax": round(subtotal * 0.19 / 1.19, 2),
            "currency": "EUR",
            "coupon": rng.choice(("", "", "", "WELCOME10", "SUMMER15")),
            "categories": sorted({p.category for p, _ in cart}),
            "brand": cart[0][0].brand,
            "products": items,
        }

    def _pick(self) -> tuple[Visitor, bool]:
        if self.rng.random() < self.unknown_share:
            anonymous_id = self._uuid()  # a visitor who never answered the cookie banner
            return self._visitor(anonymous_id), False
        return self.rng.choices(self.visitors, cum_weights=self._cum_weights)[0], True

    def batch(self, size: int) -> list[GeneratedEvent]:
        """``size`` events as a tracker relay sends them: sessions of many visitors, interleaved
        by time, the tail of the last session going into the next batch."""
        events = self._carry
        while len(events) < size:
            visitor, known = self._pick()
            events.extend(self.session(visitor, known))
        batch, self._carry = events[:size], events[size:]
        return sorted(batch, key=lambda e: e.occurred_at)

    def for_visitor(self, anonymous_id: str, count: int) -> list[GeneratedEvent]:
        """``count`` events of one visitor (the views benchmark's subjects)."""
        visitor = self._visitor(anonymous_id)
        events: list[GeneratedEvent] = []
        while len(events) < count:
            events.extend(self.session(visitor, True)[: count - len(events)])
        return events


def workload_stats(batches: Sequence[Sequence[GeneratedEvent]]) -> dict[str, Any]:
    events = [e for batch in batches for e in batch]
    sizes = [len(json.dumps(e.body["properties"], separators=(",", ":"))) for e in events]
    return {
        "batches": len(batches),
        "events": len(events),
        "known": sum(e.known for e in events),
        "unknown": sum(not e.known for e in events),
        "types": dict(sorted(Counter(e.body["type"] for e in events).items())),
        "visitors": len({e.anonymous_id for e in events if e.known}),
        "visitors_per_batch": round(sum(len({e.anonymous_id for e in b}) for b in batches) / max(1, len(batches)), 1),
        "properties_bytes_mean": round(sum(sizes) / max(1, len(sizes)), 1),
        "properties_bytes_max": max(sizes, default=0),
        "body_bytes_mean": round(sum(len(encode_batch(b)) for b in batches) / max(1, len(batches))),
    }


def encode_batch(batch: Sequence[GeneratedEvent]) -> bytes:
    return json.dumps({"events": [e.body for e in batch]}, separators=(",", ":")).encode()


# -- setup and batches over HTTP ---------------------------------------------------------------------


def publish_notice(url: str, admin_key: str) -> None:
    """Publish the cookie-banner notice the consent posts refer to."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as client:
        answer = client.post("/v1/notices", json=COOKIE_BANNER.body())
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"publishing the notice failed: {answer.status_code} {answer.text[:300]}")


def _ipv4(rng: random.Random) -> str:
    return f"{rng.choice((62, 81, 88, 92, 176))}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def grant_consent(
    url: str, collector_key: str, anonymous_ids: Sequence[str], concurrency: int, deadline: float, seed: int = 1
) -> dict[str, str]:
    """Cookie-banner consent (``personalize`` granted, notice published) for each anonymous id;
    returns anonymous id → subject id. Raises if any post fails."""
    rng = random.Random(f"profilestore-events-consent:{seed}")
    collected = datetime.now(UTC) - timedelta(hours=8)
    bodies = [
        json.dumps(
            {
                "identifiers": {"anonymous_id": a},
                "consents": [{"purpose": CONSENT_PURPOSE, "status": "granted"}],
                "notice": COOKIE_BANNER.ref(),
                "source": "cookie-banner",
                "collected_at": iso(collected + timedelta(seconds=rng.uniform(0, 3600))),
                "evidence": {
                    "user_agent": rng.choice(USER_AGENTS),
                    "ip": _ipv4(rng),
                    "locale": rng.choice(("en-GB", "de-DE", "fr-FR", "nl-NL", "en-US")),
                },
            },
            separators=(",", ":"),
        ).encode()
        for a in anonymous_ids
    ]
    subjects: dict[str, str] = {}
    lock = threading.Lock()

    @contextlib.contextmanager
    def open_client() -> Iterator[httpx.Client]:
        headers = {"Authorization": f"Bearer {collector_key}", "content-type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            yield client

    def send(client: httpx.Client, item: tuple[str, bytes]) -> None:
        answer = client.post("/v1/consents", content=item[1])
        if answer.status_code != 201:
            raise Failed(f"{answer.status_code} {answer.text[:300]}")
        with lock:
            subjects[item[0]] = answer.json()["subject_id"]

    phase = run_concurrently(
        "consent setup", list(zip(anonymous_ids, bodies, strict=True)), concurrency, open_client, send, deadline
    )
    if phase.errors or phase.not_sent:
        sample = phase.error_samples[0] if phase.error_samples else "deadline"
        raise RuntimeError(f"consent setup: {phase.errors} errors, {phase.not_sent} not sent, e.g. {sample}")
    return subjects


@dataclass
class Ingested:
    """What the service's answers to a run of batches said."""

    accepted: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)


def post_batches(
    name: str,
    url: str,
    collector_key: str,
    batches: Sequence[Sequence[GeneratedEvent]],
    concurrency: int,
    deadline: float,
    around: contextlib.AbstractContextManager[None] | None = None,
    server: ServedProcess | None = None,
) -> tuple[Phase, Ingested]:
    """POST each batch to /v1/events (bodies encoded before the clock starts) from ``concurrency``
    clients; every answer must be 200 and accept exactly the events of consenting visitors.
    ``around`` (a profiler) wraps the sending only; the CPU of ``server``'s process tree is
    measured over the sending."""
    encoded = [(encode_batch(b), sum(e.known for e in b), len(b)) for b in batches]
    result = Ingested()
    lock = threading.Lock()

    @contextlib.contextmanager
    def open_client() -> Iterator[httpx.Client]:
        headers = {"Authorization": f"Bearer {collector_key}", "content-type": "application/json"}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            yield client

    def send(client: httpx.Client, item: tuple[bytes, int, int]) -> None:
        body, known, size = item
        answer = client.post("/v1/events", content=body)
        if answer.status_code != 200:
            raise Failed(f"{answer.status_code} {answer.text[:300]}")
        report = answer.json()
        with lock:
            result.accepted += report["accepted"]
            result.duplicates += report["duplicates"]
            result.dropped.update(report["dropped"])
            if report["accepted"] != known and len(result.mismatches) < 5:
                result.mismatches.append(f"accepted {report['accepted']} of {size}, expected {known}: {report}")

    with around or contextlib.nullcontext():
        server_cpu = server.cpu_seconds() if server is not None else 0.0
        phase = run_concurrently(name, encoded, concurrency, open_client, send, deadline)
        if server is not None:
            phase.server_cpu_seconds = server.cpu_seconds() - server_cpu
    return phase, result


# -- the baseline ------------------------------------------------------------------------------------


def stored_rows(
    runtime: Runtime, batches: Sequence[Sequence[GeneratedEvent]]
) -> tuple[list[list[dict[str, Any]]], int]:
    """The rows the service stored for ``batches`` (found by message id), with the properties
    encrypted again, exactly as the service does, under the subject's key: batch by batch, ready
    for executemany. Also returns how many events of consenting visitors were not found."""
    with runtime.db.transaction(write=False) as session:
        stored = {
            r.message_id: r
            for r in session.execute(
                select(
                    Event.message_id,
                    Event.subject_id,
                    Event.occurred_at,
                    Event.event_id,
                    Event.client_id,
                    Event.type,
                    Event.category,
                    Event.received_at,
                    Event.epoch,
                    Event.purposes,
                )
            )
        }
    subjects = sorted({r.subject_id for r in stored.values()})
    ciphers = runtime.vault.ciphers({sid: () for sid in subjects}) if subjects else {}
    missing = 0
    result = []
    for batch in batches:
        rows = []
        for e in batch:
            r = stored.get(e.message_id)
            if r is None:
                missing += e.known
                continue
            rows.append(
                {
                    "subject_id": r.subject_id,
                    "occurred_at": r.occurred_at,
                    "event_id": r.event_id,
                    "client_id": r.client_id,
                    "message_id": r.message_id,
                    "type": r.type,
                    "category": r.category,
                    "received_at": r.received_at,
                    "epoch": r.epoch,
                    "purposes": r.purposes,
                    "properties_ct": encrypt_properties(ciphers[r.subject_id], r.event_id, e.properties),
                }
            )
        result.append(rows)
    return result, missing


def run_baseline(
    name: str,
    url: str,
    warmup: Sequence[list[dict[str, Any]]],
    timed: Sequence[list[dict[str, Any]]],
    concurrency: int,
    deadline: float,
    *,
    without_dedup_index: bool = False,
) -> tuple[Phase, dict[str, Any]]:
    """``insert(Event.__table__)`` executemany, one transaction and commit per batch, through the
    product's engine setup (WAL, synchronous=FULL, BEGIN IMMEDIATE and its writer lock on SQLite),
    into ``url``; ``without_dedup_index`` drops the unique index that finds repeated messages
    first, for the floor as it was when repeats had a table of their own (before migration 0005)."""
    migrate.upgrade("data", url)
    database = Database(url, pool_size=max(5, concurrency))
    if without_dedup_index:
        with database.engine.begin() as conn:
            conn.exec_driver_sql("DROP INDEX uq_events_message")
    statement = insert(cast(Table, Event.__table__))
    try:

        @contextlib.contextmanager
        def open_connection() -> Iterator[Connection]:
            with database.engine.connect() as conn:
                yield conn

        # Writers of one process take turns on the product's own lock where it has one (SQLite), as
        # the service's do, rather than meeting SQLite's sleeping busy handler.
        writer = getattr(database, "writer", contextlib.nullcontext)

        def send(conn: Connection, rows: list[dict[str, Any]]) -> None:
            with writer(), conn.begin():
                conn.execute(statement, rows)

        run_concurrently(f"{name} warm-up", list(warmup), concurrency, open_connection, send, deadline)
        phase = run_concurrently(name, list(timed), concurrency, open_connection, send, deadline)
        with database.engine.connect() as conn:
            counts = row_counts(conn, ("events",))
    finally:
        database.dispose()
    return phase, {"rows": counts}


# -- the runs ----------------------------------------------------------------------------------------


def http_name(workers: int) -> str:
    return f"http, {workers} worker{'s' if workers > 1 else ''}"


@dataclass
class HttpRun:
    """One HTTP phase, on its own store served with ``workers`` processes."""

    workers: int
    phase: Phase
    ingested: Ingested
    consent_setup_s: float
    warmup_errors: int
    rows: dict[str, int]


def run_http(
    store: Store,
    workers: int,
    visitors: Sequence[str],
    warm: Sequence[Sequence[GeneratedEvent]],
    timed: Sequence[Sequence[GeneratedEvent]],
    args: argparse.Namespace,
    profile: Path | None,
) -> HttpRun:
    """Serve ``store`` with ``profilestore serve --workers N``; publish the notice and give every
    visitor consent (4 clients, untimed), send the warm-up batches, then time the batches from
    ``--concurrency`` senders (py-spy on the server's workers with ``profile``). The store's row
    counts are read once the server has stopped."""
    collector = store.keys["collector"]
    with store.served(workers) as server:
        deadline = time.monotonic() + args.max_seconds
        publish_notice(server.url, store.keys["admin"])
        t0 = time.perf_counter()
        grant_consent(server.url, collector, visitors, 4, deadline, args.seed)
        setup_s = time.perf_counter() - t0
        print(f"  consent for {len(visitors)} visitors in {setup_s:.1f}s; now the event batches", file=sys.stderr)
        warm_phase, _ = post_batches("warm-up", server.url, collector, warm, args.concurrency, deadline)
        if warm_phase.errors:
            print(f"  warm-up: {warm_phase.errors} errors, e.g. {warm_phase.error_samples[0]}", file=sys.stderr)
        phase, ingested = post_batches(
            http_name(workers),
            server.url,
            collector,
            timed,
            args.concurrency,
            time.monotonic() + args.max_seconds,
            around=py_spy(profile, server.worker_pids(), gil=args.profile_gil),
            server=server,
        )
    with store.runtime.db.engine.connect() as conn:
        rows = row_counts(conn, TABLES)
    print(f"  {phase.name}: {ingested.accepted / max(phase.seconds, 1e-9):.0f} events/s", file=sys.stderr)
    return HttpRun(workers, phase, ingested, setup_s, warm_phase.errors, rows)


@dataclass
class Baselines:
    """The bare Core insert of the rows one HTTP run stored, with as many writers and with one."""

    phases: list[Phase]
    events: int
    rows: dict[str, int]
    events_not_found: int


def run_baselines(
    store: Store,
    warm: Sequence[Sequence[GeneratedEvent]],
    timed: Sequence[Sequence[GeneratedEvent]],
    concurrency: int,
    max_seconds: float,
) -> Baselines:
    """The rows ``store``'s server stored for the batches, encrypted again, inserted into fresh
    databases of the same kind: from ``concurrency`` writers, then (when more than one) from one."""
    print("  now the bare Core insert of the same rows", file=sys.stderr)
    warm_rows, _ = stored_rows(store.runtime, warm)
    timed_rows, missing = stored_rows(store.runtime, timed)
    url = store.scratch_url("baseline")
    base, extra = run_baseline(BASELINE, url, warm_rows, timed_rows, concurrency, time.monotonic() + max_seconds)
    phases = [base]
    if concurrency > 1:
        url = store.scratch_url("serial")
        serial, _ = run_baseline(SERIAL, url, warm_rows, timed_rows, 1, time.monotonic() + max_seconds)
        phases.append(serial)
    url = store.scratch_url("unindexed")
    deadline = time.monotonic() + max_seconds
    unindexed, _ = run_baseline(UNINDEXED, url, warm_rows, timed_rows, concurrency, deadline, without_dedup_index=True)
    phases.append(unindexed)
    return Baselines(phases, sum(len(r) for r in timed_rows), extra["rows"], missing)


def profile_path(base: Path | None, workers: int, several: bool) -> Path | None:
    """Where the py-spy stacks of the run with ``workers`` go: ``base`` itself, or with several
    worker counts ``name.wN.ext`` beside it."""
    if base is None or not several:
        return base
    return base.with_name(f"{base.stem}.w{workers}{base.suffix}")


# -- report ------------------------------------------------------------------------------------------


def summary(phase: Phase, events: int, reference: dict[str, Any] | None, workers: int | None) -> dict[str, Any]:
    """One phase as the report shows it. ``cpu_ms_per_1000_events`` is the server process tree's
    CPU for an HTTP phase and this process's (the inserting writers') for a baseline; on
    PostgreSQL it leaves out the database server's CPU either way."""
    rate = events / phase.seconds if phase.seconds else 0.0
    ratio = rate / reference["events_per_s"] if reference and reference["events_per_s"] else None
    cpu = phase.server_cpu_seconds if workers is not None else phase.cpu_seconds
    return {
        "name": phase.name,
        "workers": workers,
        "batches": phase.completed,
        "events": events,
        "seconds": round(phase.seconds, 3),
        "events_per_s": round(rate, 1),
        **phase.latency_summary(),
        "errors": phase.errors,
        "not_sent": phase.not_sent,
        "error_samples": phase.error_samples,
        "bench_process_cpu_s": round(phase.cpu_seconds, 3),
        "server_cpu_s": round(phase.server_cpu_seconds, 3) if phase.server_cpu_seconds is not None else None,
        "cpu_of": "server process tree" if workers is not None else "bench process (the writers)",
        "cpu_ms_per_1000_events": round(cpu / events * 1e6, 1) if cpu is not None and events else None,
        "ratio_to_baseline": round(ratio, 4) if ratio is not None else None,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    """The results as a fixed-width table; ``cpu ms/1k`` is per 1,000 events (see ``summary``)."""
    columns = (
        *(("batches", 7), ("events", 7), ("seconds", 7), ("events/s", 9)),
        *(("p50 ms", 8), ("p99 ms", 8), ("max ms", 8), ("cpu ms/1k", 9), ("errors", 6)),
    )
    width = max(20, *(len(r["name"]) for r in results))
    header = " ".join([f"{'':{width}}", *(f"{n:>{w}}" for n, w in columns), f"{'÷ baseline':>10}"])
    lines = [header]
    for r in results:
        ratio = f"{r['ratio_to_baseline']:.3f}" if r["ratio_to_baseline"] is not None else "-"
        cpu = f"{r['cpu_ms_per_1000_events']:.0f}" if r["cpu_ms_per_1000_events"] is not None else "-"
        lines.append(
            f"{r['name']:{width}} {r['batches']:>7} {r['events']:>7} {r['seconds']:>7.2f} {r['events_per_s']:>9.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} {cpu:>9} {r['errors']:>6} {ratio:>10}"
        )
    return "\n".join(lines)


def targets(backend: str, http_results: Sequence[dict[str, Any]], unindexed: dict[str, Any] | None = None) -> list[str]:
    """The issue's targets, judged on the HTTP run with the most events/s (named in the first line);
    beside the ratio, the one over the floor without the dedup index (``unindexed``), if measured."""
    best = max(http_results, key=lambda r: r["events_per_s"])
    ratio = best["ratio_to_baseline"] or 0.0
    lines = [f"targets judged on the best HTTP run: {best['workers']} worker(s), {best['events_per_s']:.0f} events/s"]
    if backend == "sqlite":
        ok = best["events_per_s"] >= TARGET_EVENTS_PER_S
        lines.append(f"target ≥ {TARGET_EVENTS_PER_S} events/s on SQLite: {'met' if ok else 'NOT met'}")
    ok = ratio >= TARGET_RATIO
    lines.append(f"target http/baseline ≥ {TARGET_RATIO}: {ratio:.3f}, {'met' if ok else 'NOT met'}")
    if unindexed:
        lines.append(f"  (over the {UNINDEXED}: {best['events_per_s'] / unindexed['events_per_s']:.3f})")
    return lines


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="profilestore bench events",
        description="Batched event ingest over HTTP to `profilestore serve --workers N` (events/s, batch latency, "
        "server CPU), against the bare Core insert of the same encrypted rows.",
    )
    parser.add_argument("--subjects", type=int, default=2000, help="consenting visitors (default 2000)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches (default 30)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch (default 1000, the maximum)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches sent first (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent senders (default 4)")
    parser.add_argument(
        "--workers",
        type=parse_workers,
        default=[1, 2],
        help="server processes, comma-separated: one HTTP run on a fresh store per count (default 1,2)",
    )
    parser.add_argument(
        "--unknown-share", type=float, default=0.03, help="share of sessions from non-consenting visitors (0.03)"
    )
    add_run_options(
        parser,
        database_help="bench PostgreSQL (postgresql+psycopg://user@127.0.0.1:5432/[name]): the data database, "
        "missing or empty, default name bench_ev_<pid> (<name>_w<N> for the further worker counts); created and "
        "dropped, with scratch databases for the baseline",
        max_seconds=900,
        max_seconds_help="stop sending after this long per phase",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="record each timed HTTP phase with py-spy attached to the server's workers (raw collapsed stacks, "
        "summed over the workers) to this file; with several worker counts, to NAME.wN.EXT",
    )
    parser.add_argument("--profile-gil", action="store_true", help="with --profile: only threads holding the GIL")
    args = parser.parse_args(argv)
    if args.subjects < 1 or args.batches < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--subjects, --batches and --concurrency must be at least 1, --warmup at least 0")
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be between 1 and 1000 (the service's limit)")
    if not 0 <= args.unknown_share < 1:
        parser.error("--unknown-share must be in [0, 1)")
    check_run_options(parser, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = begin(note_above=0.5)
    started = datetime.now(UTC)
    rng = random.Random(f"profilestore-events-visitors:{args.seed}")
    visitors = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.subjects)]
    stream = EventStream(args.seed, visitors, now=started, unknown_share=args.unknown_share)
    batches = [stream.batch(args.batch_size) for _ in range(args.warmup + args.batches)]
    warm, timed = batches[: args.warmup], batches[args.warmup :]
    print(
        f"profilestore events bench: {'postgresql' if args.database_url else 'sqlite'}, {args.subjects} subjects, "
        f"{args.batches} batches of {args.batch_size} (+{args.warmup} warm-up), {args.concurrency} senders, "
        f"server workers {','.join(map(str, args.workers))}, seed {args.seed}",
        file=sys.stderr,
    )

    runs: list[HttpRun] = []
    baselines: Baselines | None = None
    machine: dict[str, Any] = {}
    for index, workers in enumerate(args.workers):
        # Every count gets a store of its own, prepared the same way: the events of one run would be
        # duplicates (or, with their consent setup, a bigger store) for the next.
        suffix = f"_w{workers}" if index else ""
        with open_store(args.database_url, args.tmp_dir, f"bench_ev_{os.getpid()}", db_suffix=suffix) as store:
            print(f"  {http_name(workers)}: a fresh store in {store.tmp}", file=sys.stderr)
            profile = profile_path(args.profile, workers, len(args.workers) > 1)
            runs.append(run_http(store, workers, visitors, warm, timed, args, profile))
            if baselines is None:
                baselines = run_baselines(store, warm, timed, args.concurrency, args.max_seconds)
                machine = machine_info(store.backend, store.tmp, store.postgres)
    assert baselines is not None
    backend = "postgresql" if args.database_url else "sqlite"
    machine["load_average_before"] = load_before
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]

    reference = summary(baselines.phases[0], baselines.events, None, None)
    http_results = [summary(r.phase, r.ingested.accepted, reference, r.workers) for r in runs]
    results = [*http_results, *(summary(p, baselines.events, reference, None) for p in baselines.phases)]
    expected = sum(e.known for b in timed for e in b)
    report = {
        "benchmark": "event_batches",
        "started_at": started.isoformat(),
        "params": {
            "subjects": args.subjects,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "workers": args.workers,
            "server": "profilestore serve --workers N (separate process tree)",
            "unknown_share": args.unknown_share,
            "seed": args.seed,
            "backend": backend,
            "database_url": make_url(args.database_url).render_as_string(hide_password=True)
            if args.database_url
            else None,
        },
        "machine": machine,
        "workload": workload_stats(timed),
        "results": results,
        "http": [
            {
                "workers": r.workers,
                "consent_setup_s": round(r.consent_setup_s, 2),
                "accepted": r.ingested.accepted,
                "expected_accepted": expected,
                "duplicates": r.ingested.duplicates,
                "dropped": dict(r.ingested.dropped),
                "mismatches": r.ingested.mismatches,
                "warmup_errors": r.warmup_errors,
                "rows": r.rows,
            }
            for r in runs
        ],
        "baseline": {
            "rows": baselines.rows,
            "events_not_found": baselines.events_not_found,
            "from_workers": runs[0].workers,
        },
    }
    print()
    print(
        f"event ingest — {backend}, {args.batches} batches of {args.batch_size}, {args.concurrency} senders, "
        f"{args.subjects} subjects, {machine['cpu_count']} CPUs, load {load_before[0]}"
    )
    print(table(results))
    unindexed = next((r for r in results if r["name"] == UNINDEXED), None)
    for line in targets(backend, http_results, unindexed):
        print(line)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(json.dumps(report, indent=2, default=str))
    failed = (
        any(p.errors or p.not_sent for p in [*(r.phase for r in runs), *baselines.phases])
        or any(r.ingested.accepted != expected or r.ingested.duplicates or r.ingested.mismatches for r in runs)
        or baselines.events_not_found
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
