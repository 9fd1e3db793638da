"""Batched behavioural-event ingest over HTTP, against the bare SQLAlchemy Core insert of the same
encrypted rows.

1. **http event batches**: a fresh store (embedded default: SQLite data file + separate SQLite key
   store + generated master key, in a temporary folder; or a PostgreSQL data database) behind a
   real uvicorn server on a free localhost port. ``--subjects`` visitors get consent first
   (``POST /v1/consents``, cookie banner, ``personalize`` granted, by anonymous id); then
   ``--batches`` batches of ``--batch-size`` realistic events (sessions of page views, product
   views, searches, add-to-carts and purchases with category, brand, price, sku, url; a few % from
   visitors who never consented, which the service drops) are posted to ``POST /v1/events`` by
   ``--concurrency`` senders, each with its own ``httpx.Client``. Every answer must be 200 and
   accept exactly the events of consenting visitors.
2. **bare Core insert**: the rows the service stored for the same batches (same subject, ids,
   epoch, purposes; properties encrypted beforehand with ``events.service.encrypt_properties`` under
   the subject's key) inserted with ``insert(Event.__table__)`` executemany, one transaction and one
   commit per batch, into a fresh migrated database of the same kind, with the same number of
   writers (and from one writer too). No HTTP, no validation, no identity lookups, no consent gate,
   no dedupe receipts, no signals: the floor the ingest path stands on.

Run: ``.venv/bin/python bench/events_bench.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
import uvicorn  # noqa: E402
from sqlalchemy import Connection, Table, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.consent_bench import Phase, Postgres, machine_info, row_counts, run_concurrently  # noqa: E402
from bench.workload import COOKIE_BANNER, USER_AGENTS, iso  # noqa: E402
from profilestore import migrate  # noqa: E402
from profilestore.app import create_app  # noqa: E402
from profilestore.auth.schemas import ClientIn, Role  # noqa: E402
from profilestore.auth.service import create_client  # noqa: E402
from profilestore.config import Environment, Settings  # noqa: E402
from profilestore.db import Database  # noqa: E402
from profilestore.events.models import Event  # noqa: E402
from profilestore.events.service import encrypt_properties  # noqa: E402
from profilestore.runtime import Runtime  # noqa: E402

HTTP = "http event batches"
BASELINE = "bare Core insert"
SERIAL = "bare Core, 1 writer"
CONSENT_PURPOSE = "personalize"
TABLES = ("subjects", "consent_state", "events", "event_receipts", "signals")
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


# -- the server --------------------------------------------------------------------------------------


class AppServer:
    """uvicorn (h11 or httptools, asyncio, warnings only) serving an ASGI app from a background
    thread, on a socket bound to a free 127.0.0.1 port."""

    def __init__(self, app: Any, health_path: str = "/healthz") -> None:
        self.health_path = health_path
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
        # and accepted sockets inherit it. With proto 0, Nagle holds the response body back until
        # the client's delayed ACK (40 ms on Linux) releases it.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = int(self._socket.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="uvicorn", daemon=True
        )

    def start(self, timeout: float = 20.0) -> None:
        self._thread.start()
        stop = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while time.monotonic() < stop:
                if not self._thread.is_alive():
                    raise RuntimeError("the server thread exited during startup")
                with contextlib.suppress(httpx.HTTPError):
                    if self._server.started and client.get(self.health_path).status_code == 200:
                        return
                time.sleep(0.05)
        raise RuntimeError(f"the server did not answer {self.health_path} within {timeout:.0f}s")

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self._socket.close()

    def __enter__(self) -> AppServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


# -- the store ---------------------------------------------------------------------------------------


class _Failed(Exception):
    """A request that did not get the answer it should have."""


@dataclass
class Store:
    """A fresh store in a temporary folder (or on PostgreSQL), its clients' keys, and what the
    bench created that must go again."""

    runtime: Runtime
    tmp: Path
    postgres: Postgres | None
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return "postgresql" if self.postgres else "sqlite"

    def scratch_url(self, label: str) -> str:
        """A fresh, empty database of the same kind (migrated by the caller)."""
        if self.postgres is not None:
            return self.postgres.scratch(label)
        return f"sqlite:///{self.tmp / label / 'profilestore.db'}"


def postgres_for(url: str, default_name: str) -> Postgres:
    """The PostgreSQL scratch-database helper for ``url``; a URL without a database name gets
    ``default_name`` (created, and dropped at the end)."""
    parsed = make_url(url)
    if not parsed.database:
        parsed = parsed.set(database=default_name)
    return Postgres(parsed.render_as_string(hide_password=False))


@contextlib.contextmanager
def open_store(
    database_url: str | None, tmp_dir: Path | None, default_db_name: str, readers: Sequence[str] = ()
) -> Iterator[Store]:
    """A migrated store with an admin, a collector and (for each purpose list in ``readers``) a
    reader client; everything it created (temp folder, PostgreSQL databases) is removed on exit."""
    with contextlib.ExitStack() as cleanup:
        tmp = Path(tempfile.mkdtemp(prefix="profilestore-bench-", dir=tmp_dir))
        cleanup.callback(shutil.rmtree, tmp, True)
        postgres = postgres_for(database_url, default_db_name) if database_url else None
        main_url = None
        if postgres is not None:
            cleanup.callback(postgres.drop_created)
            main_url = postgres.prepare_main()
        settings = Settings(
            environment=Environment.development,
            data_dir=tmp / "store",
            database_url=main_url,
            keystore_url=None,
            master_key=None,
            master_key_file=None,
        )
        runtime = Runtime.from_settings(settings)
        cleanup.callback(runtime.close)
        runtime.migrate()
        store = Store(runtime, tmp, postgres)
        with runtime.db.transaction() as session:
            store.keys["admin"] = create_client(session, ClientIn(name="bench-admin", role=Role.admin)).key
            store.keys["collector"] = create_client(session, ClientIn(name="bench-collector", role=Role.collector)).key
            for purpose in readers:
                spec = ClientIn(name=f"bench-reader-{purpose}", role=Role.reader, purposes=[purpose])
                store.keys["reader"] = create_client(session, spec).key
        yield store


def publish_notice(url: str, admin_key: str) -> None:
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
            raise _Failed(f"{answer.status_code} {answer.text[:300]}")
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
) -> tuple[Phase, Ingested]:
    """POST each batch to /v1/events (bodies encoded before the clock starts) from ``concurrency``
    clients; every answer must be 200 and accept exactly the events of consenting visitors.
    ``around`` (a profiler) wraps the sending only."""
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
            raise _Failed(f"{answer.status_code} {answer.text[:300]}")
        report = answer.json()
        with lock:
            result.accepted += report["accepted"]
            result.duplicates += report["duplicates"]
            result.dropped.update(report["dropped"])
            if report["accepted"] != known and len(result.mismatches) < 5:
                result.mismatches.append(f"accepted {report['accepted']} of {size}, expected {known}: {report}")

    with around or contextlib.nullcontext():
        phase = run_concurrently(name, encoded, concurrency, open_client, send, deadline)
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
) -> tuple[Phase, dict[str, Any]]:
    """``insert(Event.__table__)`` executemany, one transaction and commit per batch, through the
    product's engine setup (WAL, synchronous=FULL, BEGIN IMMEDIATE and its writer lock on SQLite),
    into ``url``."""
    migrate.upgrade("data", url)
    database = Database(url, pool_size=max(5, concurrency))
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


# -- profiling and provenance ------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(output: Path | None, *, rate: int = 100, gil: bool = False) -> Iterator[None]:
    """Sample this process with py-spy (raw collapsed stacks to ``output``) while the block runs:
    the timed phase only, not the setup. Nothing happens without ``output``. Non-blocking sampling
    keeps the overhead low on a 2-core machine; ``gil`` keeps only the threads holding the GIL."""
    if output is None:
        yield
        return
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    command = [exe, "record", "--pid", str(os.getpid()), "--rate", str(rate), "--format", "raw"]
    command += ["--output", str(output), "--nonblocking", *(["--gil"] if gil else [])]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attach before the clock starts
    if spy.poll() is not None:
        raise RuntimeError(f"py-spy could not attach: {spy.stderr.read().decode()[-300:] if spy.stderr else ''}")
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        print(f"  profile (py-spy raw stacks) written to {output}", file=sys.stderr)


def source_digest() -> str:
    """A short digest of the package and migration sources benchmarked: the checkout's commit says
    ``+dirty`` when they have local changes, this says which ones."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "profilestore").rglob("*.py"), *(ROOT / "migrations").rglob("*.py")]):
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


# -- report ------------------------------------------------------------------------------------------


def summary(phase: Phase, events: int, reference: dict[str, Any] | None) -> dict[str, Any]:
    rate = events / phase.seconds if phase.seconds else 0.0
    ratio = rate / reference["events_per_s"] if reference and reference["events_per_s"] else None
    return {
        "name": phase.name,
        "batches": phase.posts,
        "events": events,
        "seconds": round(phase.seconds, 3),
        "events_per_s": round(rate, 1),
        "p50_ms": round(phase.percentile_ms(50), 2),
        "p90_ms": round(phase.percentile_ms(90), 2),
        "p99_ms": round(phase.percentile_ms(99), 2),
        "max_ms": round(phase.percentile_ms(100), 2),
        "mean_ms": round(sum(phase.latencies) / len(phase.latencies) * 1000, 2) if phase.latencies else None,
        "errors": phase.errors,
        "not_sent": phase.not_sent,
        "error_samples": phase.error_samples,
        "process_cpu_s": round(phase.cpu_seconds, 3),
        "cpu_ms_per_1000_events": round(phase.cpu_seconds / events * 1e6, 1) if events else None,
        "ratio_to_baseline": round(ratio, 4) if ratio is not None else None,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    columns = ("batches", 8), ("events", 8), ("seconds", 8), ("events/s", 10), ("p50 ms", 8), ("p99 ms", 8)
    header = " ".join([f"{'':20}", *(f"{n:>{w}}" for n, w in columns), f"{'errors':>7}", f"{'÷ baseline':>11}"])
    lines = [header]
    for r in results:
        ratio = f"{r['ratio_to_baseline']:.3f}" if r["ratio_to_baseline"] is not None else "-"
        lines.append(
            f"{r['name']:20} {r['batches']:>8} {r['events']:>8} {r['seconds']:>8.2f} {r['events_per_s']:>10.0f} "
            f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>7} {ratio:>11}"
        )
    return "\n".join(lines)


def targets(backend: str, http: dict[str, Any]) -> list[str]:
    ratio = http["ratio_to_baseline"] or 0.0
    lines = []
    if backend == "sqlite":
        ok = http["events_per_s"] >= TARGET_EVENTS_PER_S
        lines.append(f"target ≥ {TARGET_EVENTS_PER_S} events/s on SQLite: {'met' if ok else 'NOT met'}")
    ok = ratio >= TARGET_RATIO
    lines.append(f"target http/baseline ≥ {TARGET_RATIO}: {ratio:.3f}, {'met' if ok else 'NOT met'}")
    return lines


# -- main --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="profilestore bench events",
        description="Batched event ingest over HTTP (events/s, batch latency), against the bare Core insert "
        "of the same encrypted rows.",
    )
    parser.add_argument("--subjects", type=int, default=2000, help="consenting visitors (default 2000)")
    parser.add_argument("--batches", type=int, default=30, help="timed batches (default 30)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch (default 1000, the maximum)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches sent first (default 2)")
    parser.add_argument("--concurrency", type=int, default=2, help="concurrent senders (default 2)")
    parser.add_argument(
        "--unknown-share", type=float, default=0.03, help="share of sessions from non-consenting visitors (0.03)"
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--json-out", type=Path, help="also write the JSON result to this file")
    parser.add_argument(
        "--database-url",
        help="bench PostgreSQL (postgresql+psycopg://user@127.0.0.1:5432/[name]): the data database, missing or "
        "empty, default name bench_ev_<pid>; created and dropped, with scratch databases for the baseline",
    )
    parser.add_argument("--tmp-dir", type=Path, help="where the temporary data folder goes (default: system temp)")
    parser.add_argument("--max-seconds", type=float, default=900, help="stop sending after this long per phase")
    parser.add_argument(
        "--profile", type=Path, help="record the timed HTTP phase with py-spy (raw collapsed stacks) to this file"
    )
    parser.add_argument("--profile-gil", action="store_true", help="with --profile: only threads holding the GIL")
    args = parser.parse_args(argv)
    if args.subjects < 1 or args.batches < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--subjects, --batches and --concurrency must be at least 1, --warmup at least 0")
    if not 1 <= args.batch_size <= 1000:
        parser.error("--batch-size must be between 1 and 1000 (the service's limit)")
    if not 0 <= args.unknown_share < 1:
        parser.error("--unknown-share must be in [0, 1)")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url must be a postgresql:// URL (the default is the embedded SQLite store)")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def quiet() -> None:
    """The embedded default generates a development master key and says so: expected here."""
    logging.getLogger("profilestore.crypto").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # clean up (server, temp folder, databases) on kill
    quiet()
    load_before = [round(x, 2) for x in os.getloadavg()]
    if load_before[0] > 0.5:
        print(f"note: the machine is busy (load average {load_before[0]}): figures will be low", file=sys.stderr)
    started = datetime.now(UTC)
    rng = random.Random(f"profilestore-events-visitors:{args.seed}")
    visitors = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(args.subjects)]
    stream = EventStream(args.seed, visitors, now=started, unknown_share=args.unknown_share)
    batches = [stream.batch(args.batch_size) for _ in range(args.warmup + args.batches)]
    warm, timed = batches[: args.warmup], batches[args.warmup :]

    with open_store(args.database_url, args.tmp_dir, f"bench_ev_{os.getpid()}") as store:
        runtime = store.runtime
        print(
            f"profilestore events bench: {store.backend}, {args.subjects} subjects, {args.batches} batches of "
            f"{args.batch_size} (+{args.warmup} warm-up), concurrency {args.concurrency}, seed {args.seed}",
            file=sys.stderr,
        )
        deadline = time.monotonic() + args.max_seconds
        with AppServer(create_app(runtime=runtime)) as server:
            publish_notice(server.url, store.keys["admin"])
            t0 = time.perf_counter()
            grant_consent(server.url, store.keys["collector"], visitors, 4, deadline, args.seed)
            setup_s = time.perf_counter() - t0
            print(f"  consent for {len(visitors)} visitors in {setup_s:.1f}s; now the event batches", file=sys.stderr)
            warm_phase, _ = post_batches(
                "warm-up", server.url, store.keys["collector"], warm, args.concurrency, deadline
            )
            if warm_phase.errors:
                print(f"  warm-up: {warm_phase.errors} errors, e.g. {warm_phase.error_samples[0]}", file=sys.stderr)
            http, ingested = post_batches(
                HTTP,
                server.url,
                store.keys["collector"],
                timed,
                args.concurrency,
                time.monotonic() + args.max_seconds,
                around=py_spy(args.profile, gil=args.profile_gil),
            )
        with runtime.db.engine.connect() as conn:
            http_rows = row_counts(conn, TABLES)
        print(
            f"  http: {ingested.accepted / http.seconds:.0f} events/s; now the bare Core insert of the same rows",
            file=sys.stderr,
        )
        warm_rows, _ = stored_rows(runtime, warm)
        timed_rows, missing = stored_rows(runtime, timed)
        base_events = sum(len(r) for r in timed_rows)
        base, base_extra = run_baseline(
            BASELINE,
            store.scratch_url("baseline"),
            warm_rows,
            timed_rows,
            args.concurrency,
            time.monotonic() + args.max_seconds,
        )
        phases: list[tuple[Phase, int]] = [(http, ingested.accepted), (base, base_events)]
        if args.concurrency > 1:
            serial, _ = run_baseline(
                SERIAL, store.scratch_url("serial"), warm_rows, timed_rows, 1, time.monotonic() + args.max_seconds
            )
            phases.append((serial, base_events))
        machine = machine_info(store.backend, store.tmp, store.postgres)
        machine["load_average_before"] = load_before
        machine["source_digest"] = source_digest()
        machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        backend = store.backend

    reference = summary(base, base_events, None)
    results = [summary(phase, n, reference) for phase, n in phases]
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
        "http": {
            "consent_setup_s": round(setup_s, 2),
            "accepted": ingested.accepted,
            "expected_accepted": expected,
            "duplicates": ingested.duplicates,
            "dropped": dict(ingested.dropped),
            "mismatches": ingested.mismatches,
            "warmup_errors": warm_phase.errors,
            "rows": http_rows,
        },
        "baseline": {**base_extra, "events_not_found": missing},
    }
    http_result = results[0]
    print()
    print(
        f"event ingest — {backend}, {args.batches} batches of {args.batch_size}, concurrency {args.concurrency}, "
        f"{args.subjects} subjects, {machine['cpu_count']} CPUs, load {load_before[0]}"
    )
    print(table(results))
    if http_result["ratio_to_baseline"]:
        ratio = http_result["ratio_to_baseline"]
        print(f"http/baseline = {ratio:.3f}: the bare insert of the same rows is {1 / ratio:.1f}x faster")
    for line in targets(backend, http_result):
        print(line)
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(json.dumps(report, indent=2, default=str))
    failed = (
        any(phase.errors or phase.not_sent for phase, _ in phases)
        or ingested.accepted != expected
        or ingested.duplicates
        or bool(ingested.mismatches)
        or missing
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
