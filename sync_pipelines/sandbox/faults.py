"""A seeded fault plan, shared by the Zoho and Moodle simulators.

Give one :class:`FaultPlan` to both simulators (``faults=`` or ``set_faults``) and, at the top of
every API request, the simulator asks it whether this request fails and how. The plan draws from
one seeded RNG under a lock, so a sync whose requests come in the same order meets the same faults.

A drawn kind is turned into what the service in question can actually do (:meth:`FaultPlan.decide`):

================  ==========================================  ==========================================
kind              Zoho (``/crm/...`` and the token endpoint)  Moodle (``webservice/rest/server.php``)
================  ==========================================  ==========================================
``429``           429 ``TOO_MANY_REQUESTS``, no Retry-After   503 (Moodle has no 429): the error page
                  (token endpoint: 400 ``Access Denied``)
``500``/``503``   Zoho's JSON error body                      the web server's HTML error page
``drop``          connection closed, no answer                connection closed, no answer
``slow``          ``slow_seconds`` of sleep, then served      ``slow_seconds`` of sleep, then served
``expire_token``  every access token revoked, then served:    not applicable: served normally
                  the call answers 401 ``INVALID_TOKEN``      (not counted)
                  (token endpoint: not applicable)
``lost_answer``   upsert and update: applied, then the        write functions: applied, then the
                  connection closed; other calls: served      connection closed; reads: served
================  ==========================================  ==========================================

Every fault but ``slow`` and ``lost_answer`` happens *before* the request has any effect: a write
answered 500 was not applied. ``lost_answer`` is the nasty real case: the write happened and the
client never heard. A kind drawn for a request it does not apply to is not injected (the request is
served normally and nothing is counted), so the rate of faults actually injected is a little below
``rate``; :attr:`FaultPlan.injected` counts those injected, per kind.
"""

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

#: Every kind a plan can inject.
KINDS: tuple[str, ...] = ("429", "500", "503", "drop", "slow", "expire_token", "lost_answer")
#: The kinds a plan draws from unless told otherwise: all of them.
DEFAULT_KINDS: tuple[str, ...] = KINDS
#: Kinds that stop a request before it has any effect (with an error answer or none at all).
FAILING_KINDS: frozenset[str] = frozenset({"429", "500", "503", "drop", "expire_token"})
#: The services a plan knows.
SERVICES: frozenset[str] = frozenset({"zoho", "moodle"})


@dataclass(frozen=True)
class InjectedFault:
    """One fault the plan injected.

    Attributes:
        service: ``zoho`` or ``moodle``.
        kind: the fault as applied (after mapping to what the service can do).
        target: what the request was (``POST /crm/v8/BTEC_Grades/upsert``, a ``wsfunction``...).
    """

    service: str
    kind: str
    target: str


@dataclass
class FaultPlan:
    """Which requests fail, and how: seeded, so a run can be repeated fault for fault.

    Example:
        >>> plan = FaultPlan(rate=0.1, seed=7)
        >>> zoho = ZohoSimulator(faults=plan)  # doctest: +SKIP
        >>> moodle = MoodleSimulator(faults=plan)  # doctest: +SKIP

    Args:
        rate: probability that one request fails (0 to 1).
        seed: seed of the plan's RNG.
        kinds: the kinds drawn from, uniformly (see the module docstring).
        slow_seconds: how long a ``slow`` answer takes.

    Attributes:
        injected: faults injected so far, per kind (as applied).
        requests: requests the plan was asked about.
        log: every fault injected, in order.
    """

    rate: float
    seed: int
    kinds: tuple[str, ...] = DEFAULT_KINDS
    slow_seconds: float = 0.2
    injected: Counter[str] = field(default_factory=Counter, init=False)
    requests: int = field(default=0, init=False)
    log: list[InjectedFault] = field(default_factory=list, init=False, repr=False)
    _rng: random.Random = field(init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        self.kinds = tuple(self.kinds)
        if not self.kinds:
            raise ValueError("kinds must name at least one fault kind")
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {list(KINDS)}")
        if self.slow_seconds < 0:
            raise ValueError("slow_seconds must be >= 0")
        self._rng = random.Random(self.seed)

    def draw(self) -> str | None:
        """Draw for one request: ``None`` (served normally) or a kind from :attr:`kinds`.

        Two numbers are drawn for every request, whatever the outcome, so the sequence of
        decisions depends only on the seed and the number of requests. Nothing is counted.
        """
        with self._lock:
            roll = self._rng.random()
            pick = self._rng.randrange(len(self.kinds))
            self.requests += 1
        return self.kinds[pick] if roll < self.rate else None

    def decide(
        self, service: str, *, write: bool, token_endpoint: bool = False, target: str = ""
    ) -> str | None:
        """Draw for one request of ``service`` and return the fault to apply to it, counted.

        Args:
            service: ``zoho`` or ``moodle``.
            write: the request changes state and is one ``lost_answer`` applies to (Zoho upsert
                and update, Moodle write functions).
            token_endpoint: the request is Zoho's ``/oauth/v2/token``.
            target: what the request is, for :attr:`log`.

        Returns:
            The kind to apply (mapped as the module docstring says), or ``None``: serve normally.
        """
        if service not in SERVICES:
            raise ValueError(f"service must be one of {sorted(SERVICES)}, got {service!r}")
        kind = self.applicable(self.draw(), service, write=write, token_endpoint=token_endpoint)
        if kind is not None:
            with self._lock:
                self.injected[kind] += 1
                self.log.append(InjectedFault(service, kind, target))
        return kind

    @staticmethod
    def applicable(
        kind: str | None, service: str, *, write: bool, token_endpoint: bool = False
    ) -> str | None:
        """What a drawn ``kind`` becomes for one request of ``service`` (``None``: no fault)."""
        if kind is None:
            return None
        if kind == "lost_answer" and not write:
            return None  # only writes are applied and then left unanswered
        if service == "moodle":
            if kind == "429":
                return "503"
            if kind == "expire_token":
                return None  # a Moodle token does not expire
        if token_endpoint and kind == "expire_token":
            return None  # the token endpoint does not take an access token
        return kind

    @property
    def total(self) -> int:
        """Faults injected so far, all kinds."""
        with self._lock:
            return sum(self.injected.values())

    def by_service(self) -> dict[str, dict[str, int]]:
        """Faults injected so far, per service and kind."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for fault in self.log:
                per = out.setdefault(fault.service, {})
                per[fault.kind] = per.get(fault.kind, 0) + 1
            return out

    def summary(self) -> dict[str, object]:
        """The plan's settings and what it injected, as plain JSON-ready values."""
        per_service = self.by_service()
        with self._lock:
            return {
                "rate": self.rate,
                "seed": self.seed,
                "kinds": list(self.kinds),
                "requests": self.requests,
                "injected": dict(sorted(self.injected.items())),
                "injected_total": sum(self.injected.values()),
                "injected_by_service": per_service,
            }


__all__ = ["DEFAULT_KINDS", "FAILING_KINDS", "KINDS", "FaultPlan", "InjectedFault"]
