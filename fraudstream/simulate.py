"""Seeded transaction simulator: the fraud-detection handbook's generator plus production fields.

The base stream follows the generator of the public handbook *Reproducible Machine Learning for
Credit Card Fraud Detection*:

* customers live at ``(x, y)`` uniform in ``[0, 100]``, spend ``normal(mean, mean / 2)`` with
  ``mean`` uniform in ``[5, 100]``, and make ``poisson(m)`` transactions a day, ``m`` uniform in
  ``[0, 4]``;
* terminals sit uniformly in the same square; a customer pays at a terminal drawn uniformly among
  those within ``radius`` of home, and a customer with none makes no transactions;
* the time of day is ``normal(noon, 20000 s)``; as in the handbook, draws outside the day are
  dropped (clipping would pile transactions up at midnight);
* a negative amount is redrawn uniform in ``[0, 2 * mean]`` (as in the handbook) and amounts are
  rounded to cents.

Production fields on top: each customer has 1-2 cards, 1-2 devices (one IP each), a weighted home
country whose currency it pays in, and a share of its payments goes to online merchants
(``channel="ecom"``, each online merchant has one virtual terminal). Physical terminals are
grouped into merchants (1 + Poisson terminals each) with a merchant category code. Every record
carries a device and an IP: for ``pos`` payments they are the customer's wallet phone.

Fraud scenarios (ground truth in :attr:`Simulation.fraud`, never in the records), applied in the
handbook's order, a later scenario taking over the name of an earlier one:

``amount``    any transaction above ``fraud_amount_threshold`` (220).
``terminal``  each day ``compromised_terminals_per_day`` physical terminals are compromised: all
              their transactions from that day for ``terminal_compromise_days`` days are fraud.
``customer``  each day ``compromised_customers_per_day`` customers are compromised: of their
              transactions from that day for ``customer_compromise_days`` days, a third (drawn
              per compromise) are fraud with amount x5. Unlike the handbook, a transaction picked
              by two overlapping compromises is multiplied once, not twice.
``ato``       ``poisson(ato_per_day)`` account takeovers a day: a burst of 5-15 ``ecom`` payments
              within 30 minutes from a device and IP the account never used, in a foreign
              country, for 2-6 times the customer's mean amount.

Labels: every fraud gets ``label=1, source="chargeback"`` after ``chargeback_delay_ms`` plus a
uniform jitter; a fraction of frauds gets a second, later chargeback; a fraction of legitimate
transactions gets ``label=0, source="review"``. Labels may fall after the last transaction.

Drift switches (off by default), for streams with a known change at a known instant:
``drift_kinds`` names any of :data:`DRIFT_KINDS` and ``drift_at_day`` the day ``D`` (0-based,
``0 <= D < days``) from whose start, ``start_ms + D * DAY_MS`` (:attr:`SimConfig.drift_start_ms`),
they act. Each acts on the transactions with ``event_time_ms`` at or after that instant and on
their labels, never on earlier ones:

``amount``       legitimate customers spend ``drift_amount_factor`` (2.5) times more: each
                 legitimate amount is multiplied by it and rounded to cents, so the mean and the
                 spread of every customer's spending move by that factor. Frauds keep their
                 amounts and the same transactions are fraud as without drift (the ``amount``
                 rule saw the undrifted amount), so legitimate amounts above the threshold appear;
                 the labels do not change.
``new-pattern``  card testing, which no earlier day has: on each day from ``D``,
                 ``poisson(drift_card_testing_per_day)`` (2) bursts of 20-60
                 (``drift_card_testing_burst_size``, uniform) ``ecom`` payments within 10 minutes
                 (``drift_card_testing_burst_ms``), each burst from one fresh device and IP in a
                 country uniform among :data:`COUNTRIES` (the payments' country and currency),
                 at one online merchant uniform among them (not by popularity); each payment on
                 a card uniform among all cards (any customer's), of 0.50-2.00
                 (``drift_card_testing_amount``, uniform, in cents). Ground truth
                 ``card_testing`` (:data:`DRIFT_SCENARIOS`); labelled like the other frauds
                 (chargeback delay, jitter and duplicate rate). Earlier transactions keep their
                 ``tx_id``; later ones shift, as ids follow event time.
``label``        of the frauds (card testing included), a share
                 ``drift_chargeback_loss_rate`` (0.5) never gets a chargeback (nor a duplicate);
                 of the reviews (``label=0``), a share ``drift_review_flip_rate`` (0.2) says
                 ``label=1``, source still ``review``, at the same time. Each is drawn
                 independently per transaction. Transactions and ground truth do not change, so
                 these labels disagree with the ground truth.

As labels come after their transaction, the label stream shows the ``label`` drift from one day
(reviews) and seven days (chargebacks) after the instant on (the default delays).

Randomness: one named child stream of ``SeedSequence(seed)`` per component, so a scenario knob
(e.g. ``ato_per_day``) changes only its own transactions, never the legitimate stream. The same
config always produces the same output. The drift draws from its own child, spawned after the
others so they keep their seeds, and split into one grandchild per kind (``amount`` draws
nothing). Hence, with a drift, the transactions before the instant (``tx_id`` included), their
labels and their ground truth, and so every label issued before the instant, are byte-for-byte
those of the same config without drift; and turning a kind on changes no other kind's draws.

IP prefixes per country are made up (disjoint per country), not real allocations; amounts are
nominal and not converted between currencies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

import numpy as np

from fraudstream.jsonl import read_jsonl, write_jsonl  # their home before fraudstream.jsonl
from fraudstream.runtime import gc_paused

__all__ = [
    "COUNTRIES",
    "DRIFT_KINDS",
    "DRIFT_SCENARIOS",
    "SCENARIOS",
    "SimConfig",
    "Simulation",
    "generate",
    "read_jsonl",
    "write_jsonl",
]

DAY_MS = 86_400_000
MINUTE_MS = 60_000

SCENARIOS = ("amount", "terminal", "customer", "ato")
DRIFT_KINDS = ("amount", "new-pattern", "label")
DRIFT_SCENARIOS = ("card_testing",)  # fraud scenarios that only a drift switch brings
_AMOUNT, _TERMINAL, _CUSTOMER, _ATO, _CARD_TESTING = 1, 2, 3, 4, 5
_SCENARIO_NAMES = (*SCENARIOS, *DRIFT_SCENARIOS)  # indexed by fraud code - 1

# country -> (currency, first IP octets). Made-up, disjoint prefixes: an IP names one country.
COUNTRIES: Mapping[str, tuple[str, tuple[int, ...]]] = MappingProxyType(
    {
        "FR": ("EUR", (2, 77, 78, 90)),
        "BE": ("EUR", (81,)),
        "DE": ("EUR", (46, 79, 84)),
        "ES": ("EUR", (83, 88)),
        "IT": ("EUR", (87, 93)),
        "GB": ("GBP", (51, 86)),
        "CH": ("CHF", (85,)),
        "US": ("USD", (23, 24, 50)),
        "BR": ("BRL", (177, 179)),
        "NG": ("NGN", (102, 105)),
        "RO": ("RON", (89,)),
        "VN": ("VND", (113, 171)),
    }
)
_COUNTRY_CODES = tuple(COUNTRIES)

# (mcc, weight): card-present merchants, then online merchants.
_POS_MCCS = (
    ("5411", 0.25),  # grocery
    ("5812", 0.15),  # restaurants
    ("5814", 0.10),  # fast food
    ("5541", 0.10),  # fuel
    ("5912", 0.08),  # pharmacy
    ("5311", 0.07),  # department stores
    ("5999", 0.07),  # misc retail
    ("5651", 0.06),  # clothing
    ("4111", 0.05),  # transport
    ("7011", 0.04),  # hotels
    ("5732", 0.03),  # electronics
)
_ECOM_MCCS = (
    ("5999", 0.30),
    ("5815", 0.20),  # digital goods
    ("4899", 0.15),  # streaming / subscriptions
    ("5732", 0.15),
    ("5651", 0.10),
    ("4121", 0.10),  # ride hailing
)

# Handbook customer profile ranges.
_MEAN_AMOUNT_RANGE = (5.0, 100.0)
_MAX_TX_PER_DAY = 4.0
_TIME_OF_DAY_STD_MS = 20_000_000.0

# Spawned in this order; "drift" comes last so that adding it left the others' seeds unchanged.
_STREAMS = ("world", "tx", "terminal", "customer", "ato", "labels", "drift")


def _check_int(name: str, value: object, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ValueError(f"SimConfig.{name} must be an int >= {minimum}, got {value!r}")


def _check_rate(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"SimConfig.{name} must be a number in [0, 1], got {value!r}")


def _check_range(name: str, value: object, minimum: float) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and minimum <= value[0] <= value[1]
    )
    if not ok:
        raise ValueError(f"SimConfig.{name} must be a pair (lo, hi) with {minimum} <= lo <= hi")


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    """Everything that shapes a simulation; equal configs generate equal output.

    Rates are probabilities per transaction (``*_rate``, ``*_share``) or expected counts per day
    (``*_per_day``). Durations are integer milliseconds; ``*_days`` count whole simulated days.
    """

    seed: int = 42
    n_customers: int = 5000
    n_terminals: int = 10000
    days: int = 30
    start_ms: int = 1767225600000  # 2026-01-01T00:00:00Z
    radius: float = 5.0
    chargeback_delay_ms: int = 7 * DAY_MS
    # upper bound of the uniform jitter added to each chargeback
    chargeback_jitter_ms: int = DAY_MS
    # share of frauds with a second chargeback, 1 ms to duplicate_label_delay_ms after the first
    duplicate_label_rate: float = 0.02
    duplicate_label_delay_ms: int = 3 * DAY_MS
    # share of legitimate transactions confirmed by a manual review (label 0), delay (lo, hi)
    review_rate: float = 0.01
    review_delay_ms: tuple[int, int] = (DAY_MS, 3 * DAY_MS)
    # production fields
    home_countries: tuple[tuple[str, float], ...] = (
        ("FR", 0.85),
        ("BE", 0.04),
        ("DE", 0.03),
        ("ES", 0.03),
        ("IT", 0.02),
        ("GB", 0.02),
        ("CH", 0.01),
    )
    second_card_rate: float = 0.3  # customers with two cards
    second_card_use: float = 0.2  # share of their payments on the second card
    second_device_rate: float = 0.4
    second_device_use: float = 0.3
    ecom_share: float = 0.15  # share of a customer's payments made online
    n_online_merchants: int = 200  # popularity ~ 1 / rank
    terminals_per_merchant: float = 3.0  # mean; each merchant has >= 1 terminal
    # scenario 1
    fraud_amount_threshold: float = 220.0
    # scenario 2
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    # scenario 3
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    customer_fraud_fraction: float = 1 / 3
    customer_fraud_multiplier: float = 5.0
    # scenario 4: account takeover bursts
    ato_per_day: float = 1.0
    ato_burst_size: tuple[int, int] = (5, 15)
    ato_burst_ms: int = 30 * MINUTE_MS
    ato_amount_multiplier: tuple[float, float] = (2.0, 6.0)
    # drift switches, off by default: the kinds of DRIFT_KINDS that act from the start of day
    # drift_at_day (0-based) on; kinds are stored in DRIFT_KINDS order
    drift_at_day: int | None = None
    drift_kinds: tuple[str, ...] = ()
    # drift "amount": legitimate amounts x factor
    drift_amount_factor: float = 2.5
    # drift "new-pattern": card-testing bursts
    drift_card_testing_per_day: float = 2.0
    drift_card_testing_burst_size: tuple[int, int] = (20, 60)
    drift_card_testing_burst_ms: int = 10 * MINUTE_MS
    drift_card_testing_amount: tuple[float, float] = (0.5, 2.0)
    # drift "label": share of frauds never charged back, share of reviews saying label 1
    drift_chargeback_loss_rate: float = 0.5
    drift_review_flip_rate: float = 0.2

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, 0)
        _check_int("n_customers", self.n_customers, 1)
        _check_int("n_terminals", self.n_terminals, 1)
        _check_int("days", self.days, 1)
        _check_int("start_ms", self.start_ms, 0)
        _check_int("chargeback_delay_ms", self.chargeback_delay_ms, 0)
        _check_int("chargeback_jitter_ms", self.chargeback_jitter_ms, 0)
        _check_int("duplicate_label_delay_ms", self.duplicate_label_delay_ms, 1)
        _check_int("n_online_merchants", self.n_online_merchants, 1)
        _check_int("compromised_terminals_per_day", self.compromised_terminals_per_day, 0)
        _check_int("terminal_compromise_days", self.terminal_compromise_days, 1)
        _check_int("compromised_customers_per_day", self.compromised_customers_per_day, 0)
        _check_int("customer_compromise_days", self.customer_compromise_days, 1)
        _check_int("ato_burst_ms", self.ato_burst_ms, 1)
        _check_int("drift_card_testing_burst_ms", self.drift_card_testing_burst_ms, 1)
        for name in ("ato_burst_ms", "drift_card_testing_burst_ms"):
            if getattr(self, name) >= DAY_MS:
                raise ValueError(f"SimConfig.{name} must be < one day, got {getattr(self, name)}")
        for name in (
            "duplicate_label_rate",
            "review_rate",
            "second_card_rate",
            "second_card_use",
            "second_device_rate",
            "second_device_use",
            "ecom_share",
            "customer_fraud_fraction",
            "drift_chargeback_loss_rate",
            "drift_review_flip_rate",
        ):
            _check_rate(name, getattr(self, name))
        for name, minimum in (
            ("radius", 0.0),
            ("terminals_per_merchant", 1.0),
            ("fraud_amount_threshold", 0.0),
            ("customer_fraud_multiplier", 0.0),
            ("ato_per_day", 0.0),
            ("drift_card_testing_per_day", 0.0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"SimConfig.{name} must be a number >= {minimum}, got {value!r}")
        if self.radius <= 0:
            raise ValueError(f"SimConfig.radius must be > 0, got {self.radius!r}")
        _check_range("review_delay_ms", self.review_delay_ms, 0)
        _check_range("ato_burst_size", self.ato_burst_size, 1)
        _check_range("ato_amount_multiplier", self.ato_amount_multiplier, 0.0)
        _check_range("drift_card_testing_burst_size", self.drift_card_testing_burst_size, 1)
        _check_range("drift_card_testing_amount", self.drift_card_testing_amount, 0.0)
        for name in ("review_delay_ms", "ato_burst_size", "drift_card_testing_burst_size"):
            if not all(type(v) is int for v in getattr(self, name)):
                raise ValueError(f"SimConfig.{name} must hold ints")
        if self.compromised_terminals_per_day > self.n_terminals:
            raise ValueError("SimConfig.compromised_terminals_per_day exceeds n_terminals")
        if self.compromised_customers_per_day > self.n_customers:
            raise ValueError("SimConfig.compromised_customers_per_day exceeds n_customers")
        homes = self.home_countries
        if not isinstance(homes, tuple) or not homes:
            raise ValueError("SimConfig.home_countries must be a non-empty tuple of pairs")
        for entry in homes:
            if (
                not isinstance(entry, tuple)
                or len(entry) != 2
                or entry[0] not in COUNTRIES
                or not isinstance(entry[1], int | float)
                or not entry[1] > 0
            ):
                raise ValueError(
                    f"SimConfig.home_countries: {entry!r} is not (known country, weight > 0); "
                    f"known: {', '.join(_COUNTRY_CODES)}"
                )
        if len({code for code, _ in homes}) != len(homes):
            raise ValueError("SimConfig.home_countries lists a country twice")
        self._check_drift()

    def _check_drift(self) -> None:
        kinds, day = self.drift_kinds, self.drift_at_day
        if not isinstance(kinds, tuple) or not all(isinstance(k, str) for k in kinds):
            raise ValueError(f"SimConfig.drift_kinds must be a tuple of str, got {kinds!r}")
        unknown = [k for k in kinds if k not in DRIFT_KINDS]
        if unknown:
            raise ValueError(
                f"SimConfig.drift_kinds: unknown kind {unknown[0]!r}; known: "
                f"{', '.join(DRIFT_KINDS)}"
            )
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"SimConfig.drift_kinds lists a kind twice: {kinds!r}")
        if day is not None:
            _check_int("drift_at_day", day, 0)
            if day >= self.days:
                raise ValueError(
                    f"SimConfig.drift_at_day must be < days ({self.days}): day {day} is beyond "
                    "the stream"
                )
        if bool(kinds) != (day is not None):
            raise ValueError(
                "SimConfig.drift_kinds and drift_at_day go together: "
                f"got drift_kinds={kinds!r}, drift_at_day={day!r}"
            )
        factor = self.drift_amount_factor
        if (
            not isinstance(factor, int | float)
            or isinstance(factor, bool)
            or not 0 < factor < math.inf
        ):
            raise ValueError(
                f"SimConfig.drift_amount_factor must be a finite number > 0, got {factor!r}"
            )
        # one spelling per set of kinds: equal switches give equal configs
        object.__setattr__(self, "drift_kinds", tuple(k for k in DRIFT_KINDS if k in kinds))

    @property
    def drift_start_ms(self) -> int | None:
        """The instant the drift switches act from, or None without drift."""
        if self.drift_at_day is None:
            return None
        return self.start_ms + self.drift_at_day * DAY_MS


@dataclass(frozen=True)
class Simulation:
    """Generated transactions (by event time), labels (by label time) and the ground truth.

    ``fraud`` maps the ``tx_id`` of every fraudulent transaction to its scenario name
    (one of :data:`SCENARIOS`, or of :data:`DRIFT_SCENARIOS` with the ``new-pattern`` drift).
    """

    transactions: list[dict]
    labels: list[dict]
    fraud: dict[str, str]


@dataclass(frozen=True)
class _World:
    """Static entities. Terminals ``>= n_terminals`` are the online merchants' virtual ones."""

    mean_amount: np.ndarray
    std_amount: np.ndarray
    tx_per_day: np.ndarray
    home: np.ndarray  # country index per customer
    avail_ptr: np.ndarray  # CSR: terminals within radius of customer c are
    avail_idx: np.ndarray  # avail_idx[avail_ptr[c]:avail_ptr[c + 1]]
    card_ptr: np.ndarray  # first card of each customer; a second one follows if n_cards == 2
    n_cards: np.ndarray
    device_ptr: np.ndarray
    n_devices: np.ndarray
    device_codes: np.ndarray  # uint64 per legitimate device
    device_ips: list[str]
    merchant_of_terminal: np.ndarray
    mcc_of_terminal: list[str]
    online_popularity: np.ndarray


def _weights(pairs: Iterable[tuple[str, float]]) -> tuple[list[str], np.ndarray]:
    names, weights = zip(*pairs, strict=True)
    p = np.asarray(weights, dtype=np.float64)
    return list(names), p / p.sum()


def _random_ips(rng: np.random.Generator, countries: np.ndarray) -> list[str]:
    """One dotted IP per country index in ``countries``, inside that country's prefixes."""
    n = len(countries)
    pick = rng.random(n)
    rest = rng.integers(0, 256, size=(n, 2))
    host = rng.integers(1, 255, size=n)
    ips = []
    for c, u, (b, d), h in zip(
        countries.tolist(), pick.tolist(), rest.tolist(), host.tolist(), strict=True
    ):
        firsts = COUNTRIES[_COUNTRY_CODES[c]][1]
        ips.append(f"{firsts[int(u * len(firsts))]}.{b}.{d}.{h}")
    return ips


def _available_terminals(
    cx: np.ndarray, cy: np.ndarray, tx: np.ndarray, ty: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """CSR of terminals strictly within ``radius`` of each customer, in terminal order.

    Customers are swept in x order, each chunk against the terminals in its x band only; the
    test itself is the brute-force one, so the result does not depend on the chunking.
    """
    by_x = np.argsort(cx, kind="stable")
    t_order = np.argsort(tx, kind="stable")
    t_x = tx[t_order]
    r2 = radius * radius
    rows, cols = [], []
    chunk = 256
    for start in range(0, len(by_x), chunk):
        c = by_x[start : start + chunk]
        lo, hi = np.searchsorted(t_x, [cx[c[0]] - radius, cx[c[-1]] + radius])
        t = t_order[lo:hi]
        dx = cx[c, None] - tx[None, t]
        dy = cy[c, None] - ty[None, t]
        i, j = np.nonzero(dx * dx + dy * dy < r2)
        rows.append(c[i])
        cols.append(t[j])
    customer = np.concatenate(rows).astype(np.int64)
    terminal = np.concatenate(cols).astype(np.int64)
    order = np.lexsort((terminal, customer))
    ptr = np.searchsorted(customer[order], np.arange(len(cx) + 1))
    return ptr, terminal[order]


def _build_world(config: SimConfig, rng: np.random.Generator) -> _World:
    n_c, n_t = config.n_customers, config.n_terminals
    cx, cy = rng.uniform(0, 100, n_c), rng.uniform(0, 100, n_c)
    mean_amount = rng.uniform(*_MEAN_AMOUNT_RANGE, n_c)
    tx_per_day = rng.uniform(0, _MAX_TX_PER_DAY, n_c)
    tx_, ty_ = rng.uniform(0, 100, n_t), rng.uniform(0, 100, n_t)
    avail_ptr, avail_idx = _available_terminals(cx, cy, tx_, ty_, config.radius)

    names, p_home = _weights(config.home_countries)
    home_codes = np.asarray([_COUNTRY_CODES.index(n) for n in names])
    home = home_codes[rng.choice(len(names), size=n_c, p=p_home)]

    n_cards = 1 + (rng.random(n_c) < config.second_card_rate)
    n_devices = 1 + (rng.random(n_c) < config.second_device_rate)
    card_ptr = np.concatenate(([0], np.cumsum(n_cards)[:-1]))
    device_ptr = np.concatenate(([0], np.cumsum(n_devices)[:-1]))
    n_dev = int(n_devices.sum())
    device_codes = rng.integers(0, 2**63, size=n_dev, dtype=np.int64).astype(np.uint64)
    device_ips = _random_ips(rng, np.repeat(home, n_devices))

    # Merchants own runs of a random permutation of the terminals (chains spread over the map).
    sizes = 1 + rng.poisson(config.terminals_per_merchant - 1, size=n_t)
    owner = np.searchsorted(np.cumsum(sizes), np.arange(n_t), side="right")
    n_merchants = int(owner[-1]) + 1
    merchant_of_terminal = np.empty(n_t + config.n_online_merchants, dtype=np.int64)
    merchant_of_terminal[rng.permutation(n_t)] = owner
    merchant_of_terminal[n_t:] = n_merchants + np.arange(config.n_online_merchants)
    pos_mccs, p_pos = _weights(_POS_MCCS)
    ecom_mccs, p_ecom = _weights(_ECOM_MCCS)
    merchant_mcc = [pos_mccs[i] for i in rng.choice(len(pos_mccs), size=n_merchants, p=p_pos)]
    merchant_mcc += [
        ecom_mccs[i] for i in rng.choice(len(ecom_mccs), size=config.n_online_merchants, p=p_ecom)
    ]
    mcc_of_terminal = [merchant_mcc[m] for m in merchant_of_terminal.tolist()]
    popularity = 1.0 / np.arange(1, config.n_online_merchants + 1)

    return _World(
        mean_amount=mean_amount,
        std_amount=mean_amount / 2,
        tx_per_day=tx_per_day,
        home=home,
        avail_ptr=avail_ptr,
        avail_idx=avail_idx,
        card_ptr=card_ptr,
        n_cards=n_cards,
        device_ptr=device_ptr,
        n_devices=n_devices,
        device_codes=device_codes,
        device_ips=device_ips,
        merchant_of_terminal=merchant_of_terminal,
        mcc_of_terminal=mcc_of_terminal,
        online_popularity=popularity / popularity.sum(),
    )


@dataclass
class _Batch:
    """Column arrays of transactions before they become records."""

    time_ms: np.ndarray
    day: np.ndarray
    customer: np.ndarray
    terminal: np.ndarray
    card: np.ndarray
    device: np.ndarray  # < n legit devices: the customer's own; above: ATO devices
    country: np.ndarray
    ecom: np.ndarray
    amount: np.ndarray
    fraud: np.ndarray


def _base_transactions(config: SimConfig, world: _World, rng: np.random.Generator) -> _Batch:
    n_c, n_d = config.n_customers, config.days
    counts = rng.poisson(np.repeat(world.tx_per_day, n_d).reshape(n_c, n_d))
    n_avail = np.diff(world.avail_ptr)
    counts[n_avail == 0] = 0
    cell = np.repeat(np.arange(n_c * n_d), counts.ravel())
    customer, day = cell // n_d, cell % n_d
    n = len(cell)

    tod_ms = rng.normal(DAY_MS / 2, _TIME_OF_DAY_STD_MS, n).astype(np.int64)
    amount = rng.normal(world.mean_amount[customer], world.std_amount[customer])
    negative = np.flatnonzero(amount < 0)
    amount[negative] = rng.uniform(0, 2 * world.mean_amount[customer[negative]])
    amount = np.round(amount, 2)
    pick = (rng.random(n) * n_avail[customer]).astype(np.int64)
    terminal = world.avail_idx[world.avail_ptr[customer] + pick]
    ecom = rng.random(n) < config.ecom_share
    online = rng.choice(config.n_online_merchants, size=n, p=world.online_popularity)
    terminal = np.where(ecom, config.n_terminals + online, terminal)
    second_card = (rng.random(n) < config.second_card_use) & (world.n_cards[customer] == 2)
    second_device = (rng.random(n) < config.second_device_use) & (world.n_devices[customer] == 2)

    keep = (tod_ms > 0) & (tod_ms < DAY_MS)
    customer, day = customer[keep], day[keep]
    return _Batch(
        time_ms=config.start_ms + day * DAY_MS + tod_ms[keep],
        day=day,
        customer=customer,
        terminal=terminal[keep],
        card=world.card_ptr[customer] + second_card[keep],
        device=world.device_ptr[customer] + second_device[keep],
        country=world.home[customer],
        ecom=ecom[keep],
        amount=amount[keep],
        fraud=np.zeros(len(customer), dtype=np.int8),
    )


def _group(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR grouping: rows with key k are ``order[ptr[k]:ptr[k + 1]]``, in row order."""
    order = np.argsort(keys, kind="stable")
    ptr = np.searchsorted(keys[order], np.arange(n_keys + 1))
    return order, ptr


def _inject_handbook_frauds(
    config: SimConfig,
    batch: _Batch,
    terminal_rng: np.random.Generator,
    customer_rng: np.random.Generator,
) -> None:
    """Scenarios 1-3, in place, in the handbook's order (a later one renames an earlier one)."""
    batch.fraud[batch.amount > config.fraud_amount_threshold] = _AMOUNT

    order, ptr = _group(batch.terminal, config.n_terminals + config.n_online_merchants)
    for day in range(config.days):
        picked = terminal_rng.choice(
            config.n_terminals, size=config.compromised_terminals_per_day, replace=False
        )
        for t in picked.tolist():
            rows = order[ptr[t] : ptr[t + 1]]
            window = (batch.day[rows] >= day) & (
                batch.day[rows] < day + config.terminal_compromise_days
            )
            batch.fraud[rows[window]] = _TERMINAL

    order, ptr = _group(batch.customer, config.n_customers)
    chosen = np.zeros(len(batch.fraud), dtype=bool)
    for day in range(config.days):
        picked = customer_rng.choice(
            config.n_customers, size=config.compromised_customers_per_day, replace=False
        )
        if not len(picked):
            continue
        rows = np.sort(np.concatenate([order[ptr[c] : ptr[c + 1]] for c in picked.tolist()]))
        rows = rows[
            (batch.day[rows] >= day) & (batch.day[rows] < day + config.customer_compromise_days)
        ]
        k = int(len(rows) * config.customer_fraud_fraction)
        chosen[customer_rng.choice(rows, size=k, replace=False)] = True
    batch.amount[chosen] = np.round(batch.amount[chosen] * config.customer_fraud_multiplier, 2)
    batch.fraud[chosen] = _CUSTOMER


def _ato_bursts(
    config: SimConfig, world: _World, rng: np.random.Generator
) -> tuple[_Batch, list[int], list[str]]:
    """Scenario 4. Returns the burst transactions and the new devices' codes and IPs."""
    per_day = rng.poisson(config.ato_per_day, size=config.days)
    n_bursts = int(per_day.sum())
    burst_day = np.repeat(np.arange(config.days), per_day)
    victim = rng.integers(0, config.n_customers, size=n_bursts)
    size = rng.integers(config.ato_burst_size[0], config.ato_burst_size[1] + 1, size=n_bursts)
    start = rng.integers(0, DAY_MS - config.ato_burst_ms, size=n_bursts)
    # a foreign country: uniform among the table's countries other than the victim's home
    shift = rng.integers(1, len(COUNTRIES), size=n_bursts)
    country = (world.home[victim] + shift) % len(COUNTRIES)
    # a device the account "never used": reject any collision
    codes = _fresh_devices(rng, n_bursts, set(world.device_codes.tolist()))
    ips = _random_ips(rng, country)

    burst = np.repeat(np.arange(n_bursts), size)
    n = len(burst)
    offset = rng.integers(0, config.ato_burst_ms, size=n)
    customer = victim[burst]
    lo, hi = config.ato_amount_multiplier
    amount = np.round(world.mean_amount[customer] * rng.uniform(lo, hi, n), 2)
    card = world.card_ptr[customer] + (rng.random(n) * world.n_cards[customer]).astype(np.int64)
    online = rng.choice(config.n_online_merchants, size=n, p=world.online_popularity)
    day = burst_day[burst]
    batch = _Batch(
        time_ms=config.start_ms + day * DAY_MS + start[burst] + offset,
        day=day,
        customer=customer,
        terminal=config.n_terminals + online,
        card=card,
        device=len(world.device_codes) + burst,
        country=country[burst],
        ecom=np.ones(n, dtype=bool),
        amount=amount,
        fraud=np.full(n, _ATO, dtype=np.int8),
    )
    return batch, codes, ips


def _fresh_devices(rng: np.random.Generator, n: int, known: set[int]) -> list[int]:
    """``n`` device codes outside ``known`` (added to it): devices no account ever used."""
    codes: list[int] = []
    for code in rng.integers(0, 2**63, size=n, dtype=np.int64).tolist():
        while code in known:
            code = int(rng.integers(0, 2**63))
        known.add(code)
        codes.append(code)
    return codes


def _card_testing(
    config: SimConfig,
    world: _World,
    known_devices: set[int],
    first_device: int,
    rng: np.random.Generator,
) -> tuple[_Batch, list[int], list[str]]:
    """The ``new-pattern`` drift: card-testing bursts from the drift day on, sorted by time.

    Returns the transactions and their devices' codes and IPs; the bursts' devices are numbered
    from ``first_device``.
    """
    assert config.drift_at_day is not None
    days = np.arange(config.drift_at_day, config.days)
    per_day = rng.poisson(config.drift_card_testing_per_day, size=len(days))
    n_bursts = int(per_day.sum())
    burst_day = np.repeat(days, per_day)
    lo, hi = config.drift_card_testing_burst_size
    size = rng.integers(lo, hi + 1, size=n_bursts)
    start = rng.integers(0, DAY_MS - config.drift_card_testing_burst_ms, size=n_bursts)
    merchant = rng.integers(0, config.n_online_merchants, size=n_bursts)
    country = rng.integers(0, len(COUNTRIES), size=n_bursts)
    codes = _fresh_devices(rng, n_bursts, known_devices)
    ips = _random_ips(rng, country)

    burst = np.repeat(np.arange(n_bursts), size)
    n = len(burst)
    offset = rng.integers(0, config.drift_card_testing_burst_ms, size=n)
    card = rng.integers(0, int(world.n_cards.sum()), size=n)  # uniform among all cards
    customer = np.searchsorted(world.card_ptr, card, side="right") - 1
    lo_amount, hi_amount = config.drift_card_testing_amount
    amount = np.round(rng.uniform(lo_amount, hi_amount, n), 2)
    day = burst_day[burst]
    batch = _Batch(
        time_ms=config.start_ms + day * DAY_MS + start[burst] + offset,
        day=day,
        customer=customer,
        terminal=config.n_terminals + merchant[burst],
        card=card,
        device=first_device + burst,
        country=country[burst],
        ecom=np.ones(n, dtype=bool),
        amount=amount,
        fraud=np.full(n, _CARD_TESTING, dtype=np.int8),
    )
    return _take(batch, np.argsort(batch.time_ms, kind="stable")), codes, ips


def _concat(a: _Batch, b: _Batch) -> _Batch:
    return _Batch(
        **{f.name: np.concatenate((getattr(a, f.name), getattr(b, f.name))) for f in fields(_Batch)}
    )


def _take(batch: _Batch, rows: np.ndarray) -> _Batch:
    return _Batch(**{f.name: getattr(batch, f.name)[rows] for f in fields(_Batch)})


_FIRST, _DUPLICATE, _REVIEW = 0, 1, 2  # label kinds, in their tie-break order


@dataclass
class _Labels:
    """Label columns: the labelled row, the label time, its kind and its value (0 or 1)."""

    rows: np.ndarray
    time_ms: np.ndarray
    kind: np.ndarray
    value: np.ndarray


def _concat_labels(a: _Labels, b: _Labels) -> _Labels:
    return _Labels(
        **{
            f.name: np.concatenate((getattr(a, f.name), getattr(b, f.name)))
            for f in fields(_Labels)
        }
    )


def _chargebacks(
    config: SimConfig, time_ms: np.ndarray, fraud_rows: np.ndarray, rng: np.random.Generator
) -> _Labels:
    """A first chargeback for each fraud row, and a second one for a share of them."""
    first = time_ms[fraud_rows] + config.chargeback_delay_ms
    first += rng.integers(0, config.chargeback_jitter_ms + 1, size=len(fraud_rows))
    dup = rng.random(len(fraud_rows)) < config.duplicate_label_rate
    dup_rows = fraud_rows[dup]
    dup_time = first[dup] + rng.integers(1, config.duplicate_label_delay_ms + 1, size=len(dup_rows))
    n = len(fraud_rows) + len(dup_rows)
    return _Labels(
        rows=np.concatenate((fraud_rows, dup_rows)),
        time_ms=np.concatenate((first, dup_time)),
        kind=np.repeat(
            np.asarray([_FIRST, _DUPLICATE], dtype=np.int8), [len(fraud_rows), len(dup_rows)]
        ),
        value=np.ones(n, dtype=np.int8),
    )


def _labels(
    config: SimConfig, time_ms: np.ndarray, fraud: np.ndarray, rng: np.random.Generator
) -> _Labels:
    """Chargebacks of the frauds, then reviews of a share of the legitimate rows."""
    chargebacks = _chargebacks(config, time_ms, np.flatnonzero(fraud), rng)
    legit_rows = np.flatnonzero(fraud == 0)
    review_rows = legit_rows[rng.random(len(legit_rows)) < config.review_rate]
    lo, hi = config.review_delay_ms
    review_time = time_ms[review_rows] + rng.integers(lo, hi + 1, size=len(review_rows))
    reviews = _Labels(
        rows=review_rows,
        time_ms=review_time,
        kind=np.full(len(review_rows), _REVIEW, dtype=np.int8),
        value=np.zeros(len(review_rows), dtype=np.int8),
    )
    return _concat_labels(chargebacks, reviews)


def _drift_labels(
    config: SimConfig,
    time_ms: np.ndarray,
    labels: _Labels,
    start_ms: int,
    rng: np.random.Generator,
) -> _Labels:
    """The ``label`` drift on the labels of the transactions from ``start_ms`` on.

    Draws one uniform per such fraud, then one per such review, both in transaction order, so
    the draws depend on these labels only.
    """
    after = time_ms[labels.rows] >= start_ms
    first = np.flatnonzero(after & (labels.kind == _FIRST))
    lost = labels.rows[first[rng.random(len(first)) < config.drift_chargeback_loss_rate]]
    reviews = np.flatnonzero(after & (labels.kind == _REVIEW))
    flipped = reviews[rng.random(len(reviews)) < config.drift_review_flip_rate]
    value = labels.value.copy()
    value[flipped] = 1
    keep = ~np.isin(labels.rows, lost)  # a lost fraud's duplicate goes with it
    return _Labels(labels.rows[keep], labels.time_ms[keep], labels.kind[keep], value[keep])


def _label_records(labels: _Labels, tx_ids: list[str]) -> list[dict]:
    """Records by label time; ties by transaction, then first, duplicate, review."""
    order = np.lexsort((labels.kind, labels.rows, labels.time_ms))
    return [
        {
            "tx_id": tx_ids[r],
            "label": v,
            "label_time_ms": t,
            "source": "review" if k == _REVIEW else "chargeback",
        }
        for r, t, k, v in zip(
            labels.rows[order].tolist(),
            labels.time_ms[order].tolist(),
            labels.kind[order].tolist(),
            labels.value[order].tolist(),
            strict=True,
        )
    ]


def generate(config: SimConfig) -> Simulation:
    """Generate transactions, labels and ground truth; deterministic in ``config``."""
    if not isinstance(config, SimConfig):
        raise TypeError(f"generate() needs a SimConfig, got {type(config).__name__}")
    seeds = dict(
        zip(_STREAMS, np.random.SeedSequence(config.seed).spawn(len(_STREAMS)), strict=True)
    )
    rngs = {name: np.random.default_rng(seeds[name]) for name in _STREAMS if name != "drift"}
    # one child per kind, used or not, so a kind's draws never depend on the other kinds
    drift_rngs = {
        kind: np.random.default_rng(seed)
        for kind, seed in zip(DRIFT_KINDS, seeds["drift"].spawn(len(DRIFT_KINDS)), strict=True)
    }
    world = _build_world(config, rngs["world"])
    base = _base_transactions(config, world, rngs["tx"])
    _inject_handbook_frauds(config, base, rngs["terminal"], rngs["customer"])
    ato, ato_codes, ato_ips = _ato_bursts(config, world, rngs["ato"])
    batch = _concat(base, ato)

    # Ties in event time keep generation order, which is itself deterministic.
    order = np.argsort(batch.time_ms, kind="stable")
    b = _take(batch, order)
    codes, ips = [*world.device_codes.tolist(), *ato_codes], [*world.device_ips, *ato_ips]

    labels = _labels(config, b.time_ms, b.fraud, rngs["labels"])

    # Drift: each kind touches only transactions from start_ms on and their labels.
    kinds, start_ms = config.drift_kinds, config.drift_start_ms
    if start_ms is not None and "amount" in kinds:
        # after the scenarios: which transactions are fraud, and their amounts, do not move
        drifted = (b.fraud == 0) & (b.time_ms >= start_ms)
        b.amount[drifted] = np.round(b.amount[drifted] * config.drift_amount_factor, 2)
    if start_ms is not None and "label" in kinds:
        labels = _drift_labels(config, b.time_ms, labels, start_ms, drift_rngs["label"])
    if start_ms is not None and "new-pattern" in kinds:
        rng = drift_rngs["new-pattern"]
        new, new_codes, new_ips = _card_testing(config, world, set(codes), len(codes), rng)
        new_labels = _chargebacks(config, new.time_ms, np.arange(len(new.time_ms)), rng)
        if "label" in kinds:
            new_labels = _drift_labels(
                config, new.time_ms, new_labels, start_ms, drift_rngs["label"]
            )
        b, labels = _merge(b, labels, new, new_labels)
        codes += new_codes
        ips += new_ips

    with gc_paused():  # ~10^6 acyclic dicts: full collections would double the time
        return _records(config, world, b, codes, ips, labels)


def _merge(a: _Batch, a_labels: _Labels, b: _Batch, b_labels: _Labels) -> tuple[_Batch, _Labels]:
    """Two time-sorted batches as one (ties: ``a`` first) with their labels' rows renumbered."""
    both = _concat(a, b)
    order = np.argsort(both.time_ms, kind="stable")
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    shift = len(a.time_ms)
    b_labels = _Labels(
        position[b_labels.rows + shift], b_labels.time_ms, b_labels.kind, b_labels.value
    )
    a_labels = _Labels(position[a_labels.rows], a_labels.time_ms, a_labels.kind, a_labels.value)
    return _take(both, order), _concat_labels(a_labels, b_labels)


def _records(
    config: SimConfig,
    world: _World,
    b: _Batch,
    device_codes: list[int],
    device_ips: list[str],
    labels: _Labels,
) -> Simulation:
    n = len(b.time_ms)
    tx_ids = [f"tx{i:010d}" for i in range(n)]
    accounts = [f"acc{i:06d}" for i in range(config.n_customers)]
    cards = [f"card{i:07d}" for i in range(int(world.n_cards.sum()))]
    n_all_terminals = config.n_terminals + config.n_online_merchants
    terminals = [f"t{i:06d}" for i in range(n_all_terminals)]
    merchants = [f"m{i:06d}" for i in world.merchant_of_terminal.tolist()]
    devices = [f"d{c:016x}" for c in device_codes]
    ips = device_ips
    currencies = [COUNTRIES[c][0] for c in _COUNTRY_CODES]
    mccs = world.mcc_of_terminal
    transactions = [
        {
            "tx_id": tx_id,
            "event_time_ms": t,
            "account_id": accounts[c],
            "amount": a,
            "card_id": cards[k],
            "terminal_id": terminals[m],
            "merchant_id": merchants[m],
            "mcc": mccs[m],
            "currency": currencies[g],
            "country": _COUNTRY_CODES[g],
            "device_id": devices[d],
            "ip": ips[d],
            "channel": "ecom" if e else "pos",
            "schema_version": 1,
        }
        for tx_id, t, c, a, k, m, g, d, e in zip(
            tx_ids,
            b.time_ms.tolist(),
            b.customer.tolist(),
            b.amount.tolist(),
            b.card.tolist(),
            b.terminal.tolist(),
            b.country.tolist(),
            b.device.tolist(),
            b.ecom.tolist(),
            strict=True,
        )
    ]
    fraud_rows = np.flatnonzero(b.fraud)
    fraud = {
        tx_ids[r]: _SCENARIO_NAMES[s - 1]
        for r, s in zip(fraud_rows.tolist(), b.fraud[fraud_rows].tolist(), strict=True)
    }
    return Simulation(transactions=transactions, labels=_label_records(labels, tx_ids), fraud=fraud)
