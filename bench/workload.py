"""A seeded generator of realistic consent and preference traffic for profilestore.

People come from six countries, with names, emails (varied domains, some ``+tags``, some typed
with capitals), E.164 mobile numbers valid for ``phonenumbers``, cookie ids, user ids and loyalty
ids. Each person follows a *journey* that produces one or more consent posts over time:

| journey | posts |
|---|---|
| ``browser`` | cookie banner (anonymous_id only); sometimes a return visit that changes the choice |
| ``anonymous_signup`` | cookie banner, then a signup with email (+ phone) + user_id + the *same* cookie: one subject |
| ``signup`` | signup form with email (+ phone), user_id and a fresh cookie |
| ``newsletter`` | newsletter footer, email only |
| ``loyalty`` | in-store loyalty enrolment: email, phone, loyalty_id |
| ``new_device`` | signup on device 1; cookie banner on device 2 (a second subject); a login on device 2 merges them |

Signed-up people sometimes come back to the preference centre (withdrawals, a few re-grants). Every
post follows the API contract of ``POST /v1/consents`` (DESIGN.md); server-side forms send an
``Idempotency-Key``, a few browsers send ``Sec-GPC: 1``. Preference posts (``POST /v1/preferences``)
follow signups, with categories under ``user.preferences.*``.

Everything is a pure function of ``(seed, number of posts, anchor)``: ``collected_at`` is spread
over ``span_days`` before ``anchor`` (default: today 00:00 UTC, so never in the future) and posts
come out in ``collected_at`` order.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

# -- vocabulary --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notice:
    key: str
    version: int
    text: str
    purposes: tuple[str, ...]

    def ref(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version}

    def body(self) -> dict[str, Any]:
        """The body of ``POST /v1/notices``."""
        return {"key": self.key, "version": self.version, "text": self.text, "purposes": list(self.purposes)}


COOKIE_BANNER = Notice(
    "cookie-banner",
    3,
    "We and our partners use cookies to measure how the site is used, to personalise what you see "
    "and to show you our own ads elsewhere. Choose which you accept; you can change this at any time.",
    ("analytics", "personalize", "marketing.advertising"),
)
SIGNUP = Notice(
    "signup",
    2,
    "Create your account. We would like to send you offers by email and text message and to use what "
    "you browse and buy to personalise the shop for you. Tick what you agree to.",
    ("personalize", "marketing.communications", "analytics"),
)
NEWSLETTER = Notice(
    "newsletter", 1, "Get our weekly newsletter. Unsubscribe with one click.", ("marketing.communications.email",)
)
LOYALTY = Notice(
    "loyalty",
    1,
    "Join the loyalty club: points on every purchase, member offers by email or SMS, and a shop "
    "tailored to what you buy.",
    ("personalize", "marketing.communications"),
)
PREFERENCE_CENTRE = Notice(
    "preference-center",
    1,
    "Manage your privacy choices: marketing emails and texts, personalisation, analytics.",
    ("personalize", "marketing", "analytics"),
)
NOTICES: tuple[Notice, ...] = (COOKIE_BANNER, SIGNUP, NEWSLETTER, LOYALTY, PREFERENCE_CENTRE)

ANALYTICS = "analytics.reporting"
PROFILING = "personalize.content.profiling"
ADS = "marketing.advertising.first_party.targeted"
EMAIL = "marketing.communications.email"
SMS = "marketing.communications.sms"
PURPOSES: tuple[str, ...] = (ANALYTICS, PROFILING, ADS, EMAIL, SMS)

# The purposes a ``Sec-GPC: 1`` header withdraws (profilestore's default ``gpc_purposes``).
GPC_PURPOSES: tuple[str, ...] = (
    "third_party_sharing",
    "marketing.advertising.first_party.targeted",
    "marketing.advertising.third_party.targeted",
)

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70",
)
USER_AGENT_WEIGHTS = (30, 14, 24, 14, 6, 6, 6)
POS_TABLET_UA = (
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Mobile/15E148 Safari/604.1 LoyaltyKiosk/4.2"
)


@dataclass(frozen=True)
class Country:
    code: str
    locale: str
    weight: int
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    domains: tuple[tuple[str, int], ...]
    phone_prefixes: tuple[str, ...]  # E.164 prefixes of mobile ranges
    phone_digits: int  # digits after the prefix


COUNTRIES = (
    Country(
        "US",
        "en-US",
        30,
        ("James", "Mary", "Michael", "Jennifer", "Robert", "Linda", "David", "Emily", "Daniel", "Ashley", "Kevin"),
        ("Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Wilson"),
        (
            ("gmail.com", 45),
            ("yahoo.com", 15),
            ("outlook.com", 10),
            ("icloud.com", 12),
            ("aol.com", 3),
            ("hotmail.com", 8),
        ),
        ("+1212", "+1312", "+1415", "+1617", "+1206", "+1512", "+1303", "+1404", "+1713", "+1305"),
        7,
    ),
    Country(
        "GB",
        "en-GB",
        20,
        ("Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Sophie", "Charlie", "Grace", "Alfie"),
        ("Jones", "Taylor", "Davies", "Evans", "Thomas", "Roberts", "Walker", "Wright", "Hughes", "Edwards"),
        (("gmail.com", 40), ("hotmail.co.uk", 18), ("btinternet.com", 8), ("outlook.com", 10), ("yahoo.co.uk", 8)),
        ("+4477", "+4478", "+4479", "+4475"),
        8,
    ),
    Country(
        "DE",
        "de-DE",
        20,
        ("Lukas", "Anna", "Leon", "Mia", "Felix", "Lea", "Jonas", "Hannah", "Paul", "Laura", "Maximilian"),
        ("Mueller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann"),
        (("gmail.com", 25), ("web.de", 25), ("gmx.de", 20), ("t-online.de", 12), ("outlook.de", 6)),
        ("+49151", "+49152", "+49160", "+49170", "+49171", "+49176", "+49177", "+49179"),
        8,
    ),
    Country(
        "FR",
        "fr-FR",
        12,
        ("Louis", "Emma", "Gabriel", "Jade", "Arthur", "Louise", "Jules", "Alice", "Hugo", "Chloe", "Raphael"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau"),
        (("gmail.com", 35), ("orange.fr", 20), ("free.fr", 15), ("hotmail.fr", 12), ("laposte.net", 8)),
        ("+336", "+337"),
        8,
    ),
    Country(
        "NL",
        "nl-NL",
        10,
        ("Daan", "Emma", "Sem", "Julia", "Lucas", "Tess", "Finn", "Sophie", "Levi", "Zoe", "Bram"),
        ("de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder"),
        (("gmail.com", 40), ("ziggo.nl", 15), ("kpnmail.nl", 10), ("hotmail.nl", 15), ("outlook.com", 8)),
        ("+316",),
        8,
    ),
    Country(
        "ES",
        "es-ES",
        8,
        ("Hugo", "Lucia", "Martin", "Sofia", "Mateo", "Martina", "Leo", "Paula", "Pablo", "Valeria", "Alvaro"),
        ("Garcia", "Fernandez", "Gonzalez", "Rodriguez", "Lopez", "Martinez", "Sanchez", "Perez", "Gomez", "Ruiz"),
        (("gmail.com", 45), ("hotmail.es", 20), ("yahoo.es", 8), ("telefonica.net", 6), ("outlook.es", 8)),
        ("+346", "+347"),
        8,
    ),
)
COMPANY_DOMAINS = ("acme-corp.com", "northwind.io", "contoso.co", "globex.net", "initech.org")
PLUS_TAGS = ("shop", "news", "deals", "store", "promo")

INTERESTS = (
    "running",
    "hiking",
    "yoga",
    "cycling",
    "football",
    "tennis",
    "cooking",
    "home-decor",
    "streetwear",
    "sneakers",
    "outdoor",
    "kids",
    "beauty",
    "gaming",
)
BRANDS = ("nike", "adidas", "patagonia", "the-north-face", "new-balance", "asics", "levis", "uniqlo", "zara", "ikea")

# journey → weight (per person)
JOURNEYS: tuple[tuple[str, int], ...] = (
    ("browser", 34),
    ("anonymous_signup", 20),
    ("signup", 20),
    ("newsletter", 10),
    ("loyalty", 10),
    ("new_device", 6),
)


# -- output ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentPost:
    """One ``POST /v1/consents``: its JSON body and headers, plus what the generator knows about it."""

    body: dict[str, Any]
    headers: dict[str, str]
    person: int
    journey: str
    step: str
    collected_at: datetime
    canonical: dict[str, str]  # kind → normalised identifier (what the blind index is computed over)
    gpc: bool = False

    @property
    def purposes(self) -> list[str]:
        return [item["purpose"] for item in self.body["consents"]]


@dataclass(frozen=True)
class PreferencePost:
    """One ``POST /v1/preferences``."""

    body: dict[str, Any]
    person: int
    declared_at: datetime


@dataclass
class Workload:
    seed: int
    anchor: datetime
    span_days: int
    notices: tuple[Notice, ...]
    consents: list[ConsentPost]
    preferences: list[PreferencePost]
    people: int

    def strip_idempotency_keys(self) -> None:
        """Drop the ``Idempotency-Key`` header from every consent post."""
        self.consents = [
            replace(p, headers={k: v for k, v in p.headers.items() if k != "Idempotency-Key"}) for p in self.consents
        ]

    def stats(self, posts: list[ConsentPost] | None = None) -> dict[str, Any]:
        """Counts that describe a slice of the consent posts (all by default)."""
        chosen = self.consents if posts is None else posts
        statuses = Counter(item["status"] for p in chosen for item in p.body["consents"])
        kinds = Counter(kind for p in chosen for kind in p.canonical)
        return {
            "posts": len(chosen),
            "people": len({p.person for p in chosen}),
            "decisions": sum(statuses.values()),
            "statuses": dict(sorted(statuses.items())),
            "steps": dict(sorted(Counter(p.step for p in chosen).items())),
            "identifier_kinds": dict(sorted(kinds.items())),
            "with_idempotency_key": sum(1 for p in chosen if "Idempotency-Key" in p.headers),
            "with_gpc": sum(1 for p in chosen if p.gpc),
            "first_collected_at": min(p.collected_at for p in chosen).isoformat() if chosen else None,
            "last_collected_at": max(p.collected_at for p in chosen).isoformat() if chosen else None,
        }


# -- generation --------------------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    """``2026-05-04T10:22:31.123Z``: the form a browser's ``toISOString()`` sends."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def default_anchor() -> datetime:
    """Today 00:00 UTC: stable for a day, and never in the future."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass
class _Person:
    index: int
    rng: random.Random
    country: Country
    first: str
    last: str
    email: str  # canonical (lower case)
    phone: str | None  # E.164
    user_id: str
    loyalty_id: str
    cookies: list[str] = field(default_factory=list)
    user_agent: str = ""
    ip: str = ""
    signed_up: bool = False
    granted: set[str] = field(default_factory=set)


class _Generator:
    def __init__(self, seed: int, anchor: datetime, span_days: int) -> None:
        self.seed = seed
        self.anchor = anchor
        self.span = timedelta(days=span_days)
        self.start = anchor - self.span

    # -- people ------------------------------------------------------------------------------------

    def person(self, index: int) -> _Person:
        rng = random.Random(f"profilestore-bench:{self.seed}:{index}")
        country = rng.choices(COUNTRIES, weights=[c.weight for c in COUNTRIES])[0]
        first, last = rng.choice(country.first_names), rng.choice(country.last_names)
        person = _Person(
            index=index,
            rng=rng,
            country=country,
            first=first,
            last=last,
            email=self._email(rng, country, first, last, index),
            phone=self._phone(rng, country) if rng.random() < 0.55 else None,
            user_id=self._user_id(rng),
            loyalty_id=f"LOY-{country.code}-{rng.randrange(10**9, 10**10)}",
        )
        person.cookies.append(self._cookie(rng))
        person.user_agent = rng.choices(USER_AGENTS, weights=USER_AGENT_WEIGHTS)[0]
        person.ip = self._ip(rng)
        return person

    @staticmethod
    def _email(rng: random.Random, country: Country, first: str, last: str, index: int) -> str:
        f, la = first.lower(), last.lower().replace(" ", "")
        local = rng.choice(
            (f"{f}.{la}", f"{f}{la}", f"{f[0]}{la}", f"{f}_{la}", f"{la}.{f}", f"{f}{rng.randrange(1950, 2008)}")
        )
        # The person index keeps addresses unique across a run of any size.
        local = f"{local}{index}" if rng.random() < 0.5 else f"{local}.{index}"
        if rng.random() < 0.08:
            local = f"{local}+{rng.choice(PLUS_TAGS)}"
        if rng.random() < 0.07:
            domain = rng.choice(COMPANY_DOMAINS)
        else:
            names, weights = zip(*country.domains, strict=True)
            domain = rng.choices(names, weights=weights)[0]
        return f"{local}@{domain}"

    @staticmethod
    def _phone(rng: random.Random, country: Country) -> str:
        for _ in range(200):
            prefix = rng.choice(country.phone_prefixes)
            first_digit = rng.randrange(2, 10) if country.code == "US" else rng.randrange(0, 10)
            rest = "".join(str(rng.randrange(10)) for _ in range(country.phone_digits - 1))
            candidate = f"{prefix}{first_digit}{rest}"
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, None)):
                return candidate
        raise RuntimeError(f"could not draw a valid {country.code} phone number")

    @staticmethod
    def _cookie(rng: random.Random) -> str:
        style = rng.random()
        if style < 0.55:  # analytics.js / RudderStack anonymousId
            return str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if style < 0.85:  # Google Analytics client id
            return f"GA1.2.{rng.randrange(10**8, 10**10)}.{rng.randrange(1_690_000_000, 1_760_000_000)}"
        return "anon_" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=22))

    @staticmethod
    def _user_id(rng: random.Random) -> str:
        if rng.random() < 0.6:
            return f"usr_{rng.randrange(10**7, 10**9)}"
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    @staticmethod
    def _ip(rng: random.Random) -> str:
        if rng.random() < 0.12:
            return f"2a02:{rng.randrange(0x1000, 0xFFFF):x}:{rng.randrange(0xFFFF):x}:{rng.randrange(0xFFFF):x}::" + (
                f"{rng.randrange(1, 0xFFFF):x}"
            )
        first = rng.choice((24, 31, 46, 62, 68, 73, 77, 79, 81, 82, 86, 88, 90, 92, 98, 109, 176, 185, 212, 217))
        return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    # -- posts -------------------------------------------------------------------------------------

    def _post(
        self,
        p: _Person,
        journey: str,
        step: str,
        at: datetime,
        notice: Notice,
        source: str,
        identifiers: dict[str, str],
        canonical: dict[str, str],
        decisions: dict[str, str],
        *,
        idempotent: bool,
        user_agent: str | None = None,
        gpc: bool = False,
    ) -> ConsentPost:
        for purpose, status in decisions.items():
            if status == "granted":
                p.granted.add(purpose)
            else:
                p.granted.discard(purpose)
        body = {
            "identifiers": identifiers,
            "consents": [{"purpose": k, "status": v} for k, v in decisions.items()],
            "notice": notice.ref(),
            "source": source,
            "collected_at": iso(at),
            "evidence": {"user_agent": user_agent or p.user_agent, "ip": p.ip, "locale": p.country.locale},
        }
        headers: dict[str, str] = {}
        if idempotent:
            headers["Idempotency-Key"] = str(uuid.UUID(int=p.rng.getrandbits(128), version=4))
        if gpc:
            headers["Sec-GPC"] = "1"
        return ConsentPost(body, headers, p.index, journey, step, at, canonical, gpc)

    def _typed_email(self, p: _Person) -> str:
        """How the person typed it this time: mostly as is, sometimes capitalised."""
        roll = p.rng.random()
        if roll < 0.12:
            local, _, domain = p.email.partition("@")
            return f"{local.title()}@{domain.title()}"
        if roll < 0.15:
            return f" {p.email.upper()} "
        return p.email

    def _typed_phone(self, p: _Person) -> str:
        assert p.phone is not None
        if p.rng.random() < 0.25:
            parsed = phonenumbers.parse(p.phone, None)
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        return p.phone

    def cookie_banner(self, p: _Person, journey: str, at: datetime, cookie: str, step: str) -> ConsentPost:
        rng = p.rng
        choice = rng.random()
        if choice < 0.66:
            decisions = {ANALYTICS: "granted", PROFILING: "granted", ADS: "granted"}
        elif choice < 0.80:
            decisions = {ANALYTICS: "denied", PROFILING: "denied", ADS: "denied"}
        else:
            decisions = {
                ANALYTICS: "granted" if rng.random() < 0.85 else "denied",
                PROFILING: "granted" if rng.random() < 0.5 else "denied",
                ADS: "granted" if rng.random() < 0.3 else "denied",
            }
        gpc = rng.random() < 0.04
        if gpc:
            decisions[ADS] = "denied"
        return self._post(
            p,
            journey,
            step,
            at,
            COOKIE_BANNER,
            "cookie-banner",
            {"anonymous_id": cookie},
            {"anonymous_id": cookie},
            decisions,
            idempotent=False,
            gpc=gpc,
        )

    def signup(self, p: _Person, journey: str, at: datetime, cookie: str | None) -> ConsentPost:
        rng = p.rng
        identifiers = {"email": self._typed_email(p), "user_id": p.user_id}
        canonical = {"email": p.email, "user_id": p.user_id}
        decisions = {
            EMAIL: "granted" if rng.random() < 0.78 else "denied",
            PROFILING: "granted" if rng.random() < 0.7 else "denied",
        }
        if p.phone is not None:
            identifiers["phone"], canonical["phone"] = self._typed_phone(p), p.phone
            decisions[SMS] = "granted" if rng.random() < 0.45 else "denied"
        if rng.random() < 0.3:
            decisions[ANALYTICS] = "granted"
        if cookie is not None:
            identifiers["anonymous_id"] = canonical["anonymous_id"] = cookie
        p.signed_up = True
        return self._post(
            p, journey, "signup", at, SIGNUP, "signup-form", identifiers, canonical, decisions, idempotent=True
        )

    def newsletter(self, p: _Person, journey: str, at: datetime) -> ConsentPost:
        return self._post(
            p,
            journey,
            "newsletter",
            at,
            NEWSLETTER,
            "newsletter-footer",
            {"email": self._typed_email(p)},
            {"email": p.email},
            {EMAIL: "granted"},
            idempotent=True,
        )

    def loyalty(self, p: _Person, journey: str, at: datetime) -> ConsentPost:
        rng = p.rng
        identifiers = {"email": self._typed_email(p), "loyalty_id": p.loyalty_id}
        canonical = {"email": p.email, "loyalty_id": p.loyalty_id}
        decisions = {PROFILING: "granted" if rng.random() < 0.85 else "denied", EMAIL: "granted"}
        if p.phone is not None:
            identifiers["phone"], canonical["phone"] = self._typed_phone(p), p.phone
            decisions[SMS] = "granted" if rng.random() < 0.6 else "denied"
        p.signed_up = True
        return self._post(
            p,
            journey,
            "loyalty",
            at,
            LOYALTY,
            "loyalty-pos",
            identifiers,
            canonical,
            decisions,
            idempotent=True,
            user_agent=POS_TABLET_UA,
        )

    def preference_centre(
        self, p: _Person, journey: str, at: datetime, identifiers: dict[str, str], canonical: dict[str, str], step: str
    ) -> ConsentPost:
        rng = p.rng
        decisions: dict[str, str] = {}
        for purpose in sorted(p.granted & {EMAIL, SMS, PROFILING}):
            if rng.random() < 0.45:
                decisions[purpose] = "withdrawn"
        for purpose in (EMAIL, PROFILING):
            if purpose not in p.granted and rng.random() < 0.35:
                decisions[purpose] = "granted"
        if not decisions:
            decisions[EMAIL] = "withdrawn" if EMAIL in p.granted else "granted"
        return self._post(
            p,
            journey,
            step,
            at,
            PREFERENCE_CENTRE,
            "preference-center",
            identifiers,
            canonical,
            decisions,
            idempotent=True,
        )

    def _later(self, p: _Person, after: datetime, low_hours: float, high_hours: float) -> datetime | None:
        at = after + timedelta(hours=p.rng.uniform(low_hours, high_hours))
        return at if at < self.anchor else None

    def journey(self, index: int) -> tuple[str, _Person, list[ConsentPost]]:
        p = self.person(index)
        rng = p.rng
        name = rng.choices([j for j, _ in JOURNEYS], weights=[w for _, w in JOURNEYS])[0]
        t0 = self.start + timedelta(seconds=rng.uniform(0, self.span.total_seconds() - 3600))
        posts: list[ConsentPost] = []

        def add(post: ConsentPost | None) -> None:
            if post is not None:
                posts.append(post)

        cookie = p.cookies[0]
        if name == "browser":
            add(self.cookie_banner(p, name, t0, cookie, "cookie_banner"))
            at = self._later(p, t0, 24, 24 * 60)
            if at is not None and rng.random() < 0.3:
                add(self.cookie_banner(p, name, at, cookie, "cookie_banner_return"))
        elif name == "anonymous_signup":
            add(self.cookie_banner(p, name, t0, cookie, "cookie_banner"))
            at = self._later(p, t0, 0.1, 24 * 21)
            if at is not None:
                add(self.signup(p, name, at, cookie))
        elif name == "signup":
            add(self.signup(p, name, t0, cookie))
        elif name == "newsletter":
            add(self.newsletter(p, name, t0))
        elif name == "loyalty":
            add(self.loyalty(p, name, t0))
        else:  # new_device
            add(self.signup(p, name, t0, cookie))
            second = self._cookie(rng)
            p.cookies.append(second)
            at = self._later(p, t0, 24, 24 * 30)
            if at is not None:
                add(self.cookie_banner(p, name, at, second, "cookie_banner_second_device"))
                login = self._later(p, at, 0.05, 24 * 7)
                if login is not None:
                    ids = {"user_id": p.user_id, "anonymous_id": second}
                    add(self.preference_centre(p, name, login, ids, dict(ids), "login_merge"))
        if p.signed_up and posts and rng.random() < 0.25:
            at = self._later(p, posts[-1].collected_at, 24, 24 * 90)
            if at is not None:
                # Loyalty members have no web account: they come back with their card number.
                kind, value = ("loyalty_id", p.loyalty_id) if name == "loyalty" else ("user_id", p.user_id)
                if rng.random() < 0.5:
                    ids, canonical = {kind: value}, {kind: value}
                else:
                    ids, canonical = {"email": self._typed_email(p)}, {"email": p.email}
                add(self.preference_centre(p, name, at, ids, canonical, "preference_center"))
        return name, p, posts

    def preferences(self, p: _Person, after: datetime, source: str) -> PreferencePost | None:
        rng = p.rng
        at = self._later(p, after, 0.01, 2)
        if at is None:
            return None
        items: list[dict[str, Any]] = [
            {
                "key": "interests",
                "value": sorted(rng.sample(INTERESTS, rng.randrange(1, 5))),
                "category": "user.preferences.interests",
            },
        ]
        if rng.random() < 0.5:
            items.append(
                {
                    "key": "favourite_brands",
                    "value": sorted(rng.sample(BRANDS, rng.randrange(1, 4))),
                    "category": "user.preferences.interests",
                }
            )
        if rng.random() < 0.6:
            items.append(
                {
                    "key": "preferred_channel",
                    "value": rng.choice(("email", "sms", "push", "none")),
                    "category": "user.preferences.channel",
                }
            )
        if rng.random() < 0.4:
            items.append(
                {
                    "key": "newsletter_frequency",
                    "value": rng.choice(("daily", "weekly", "monthly")),
                    "category": "user.preferences.frequency",
                }
            )
        if rng.random() < 0.3:
            size: str | float = (
                rng.choice(("XS", "S", "M", "L", "XL"))
                if rng.random() < 0.5
                else rng.choice((38.0, 40.0, 42.0, 44.0, 9.5))
            )
            items.append(
                {
                    "key": "shoe_size" if isinstance(size, float) else "shirt_size",
                    "value": size,
                    "category": "user.preferences.size",
                }
            )
        if rng.random() < 0.2:
            items.append(
                {"key": "wants_sale_alerts", "value": rng.random() < 0.7, "category": "user.preferences.channel"}
            )
        account = {"loyalty_id": p.loyalty_id} if source == "loyalty-pos" else {"user_id": p.user_id}
        identifiers = account if rng.random() < 0.7 else {"email": self._typed_email(p)}
        body = {"identifiers": identifiers, "preferences": items, "source": source, "declared_at": iso(at)}
        return PreferencePost(body, p.index, at)


def generate(seed: int = 1, posts: int = 2000, *, anchor: datetime | None = None, span_days: int = 180) -> Workload:
    """Exactly ``posts`` consent posts (in ``collected_at`` order) and the preference posts of the
    people who signed up, for ``seed``. Later posts of a person always come after their earlier ones."""
    if posts < 0:
        raise ValueError("posts must not be negative")
    anchor = anchor or default_anchor()
    gen = _Generator(seed, anchor, span_days)
    consents: list[ConsentPost] = []
    preferences: list[PreferencePost] = []
    people = 0
    while len(consents) < posts:
        _, person, journey = gen.journey(people)
        people += 1
        journey = journey[: posts - len(consents)]  # the last person may lose their later posts
        consents.extend(journey)
        signup = next((c for c in journey if c.step in ("signup", "loyalty")), None)
        if signup is not None and person.rng.random() < 0.6:
            pref = gen.preferences(person, signup.collected_at, signup.body["source"])
            if pref is not None:
                preferences.append(pref)
    consents.sort(key=lambda c: (c.collected_at, c.person))
    preferences.sort(key=lambda c: (c.declared_at, c.person))
    return Workload(seed, anchor, span_days, NOTICES, consents, preferences, people)
