"""The Moodle side, described once: each Moodle entity the pipeline keeps in step with Zoho.

An :class:`EntitySpec` says, for one kind of Moodle object:

* where it comes from in Zoho (``sources``: module names of the module table) and what it needs
  made first (``after``: other entities);
* the fields the pipeline sets and compares (``fields``), and how an existing object is found
  (``find_by``: Moodle fields, in order; the first is the one that holds the Zoho id);
* the plugin events that make it run (``events``) and the Zoho fields that get its Moodle id
  written back (``bookkeeping``);
* what may be done with an object Moodle holds and Zoho does not say (``moodle_only``: the first
  action is the default, always ``keep``; the words are those of Moodle's own external-database
  enrolment plugin, whose "external unenrol action" is keep, suspend or unenrol);
* three functions: ``desired`` (the rows Zoho says Moodle should hold, from the warehouse),
  ``read`` (what Moodle holds, from its web services) and the writes (``write``).

The assets (``moodle/<name>``), their dependencies, the sensors' routing of Zoho changes and of
plugin events, the bookkeeping write-back and the drift report are all derived from
:data:`ENTITIES`; :func:`sync_pipelines.moodle.reconcile.reconcile` is the one procedure that
reconciles each of them.

Keys. Users, categories and courses carry the Zoho id in Moodle's ``idnumber``; a Zoho record's
key is its Zoho id. An enrolment's key is ``enrolment:<Zoho enrolment id>`` or ``teacher:<Zoho
class id>``, and its Moodle identity is ``<user id>:<course id>:<role id>`` (Moodle has no id for
"this user holds this role in this course" that its web services give out).

Usernames: ``username`` is the academic e-mail, lower-cased (Moodle accepts ``a-z 0-9 _ - . @``);
where that has other characters it is ``zoho-<zoho id>``. A student whose ``Status`` is one of
:data:`SUSPENDED_STATUSES`, or who was deleted in Zoho, is suspended in Moodle, never deleted; such
a student who never had an account gets none.

This module reads the warehouse and Moodle; it knows nothing of Zoho's API.
"""

import html
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.client import ItemResult, MoodleClient
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.modules import module

STUDENT_ROLE = 5
TEACHER_ROLE = 3
DEFAULT_CATEGORY = 1  # Moodle's "Miscellaneous": classes without a synced programme go there
#: Student statuses (Zoho ``BTEC_Students.Status``) that suspend the Moodle account.
SUSPENDED_STATUSES = frozenset({"Withdraw", "Blocked", "Freezed"})
_USERNAME = r"^[a-z0-9_.@-]+$"
#: Domains of the school's e-mail addresses: those that at least this share of the accounts Zoho
#: says should exist use (at most three). A Moodle account with such an address that Zoho does
#: not know is reported as Moodle-only.
SCHOOL_DOMAIN_SHARE = 0.1


@dataclass(frozen=True)
class Desired:
    """What Zoho says Moodle should hold, for one entity.

    Attributes:
        rows: one row per object: ``key``, ``zoho_id``, ``zoho_module``, the entity's fields,
            ``fingerprint`` (of those fields), ``active`` (False: only kept in step if it exists,
            never created: a withdrawn student, a deleted class) and ``ident`` (entities whose
            Moodle identity follows from the data, as an enrolment's; else empty).
        waiting: ``key``, ``reason`` of the records that cannot have their object yet.
    """

    rows: pd.DataFrame
    waiting: pd.DataFrame


@dataclass(frozen=True)
class Context:
    """What a read or a write may need besides the rows: the warehouse's id maps, the tenant."""

    store: Warehouse
    tenant_id: str
    service_user_id: int | None = None
    #: A reconciliation by change reads only what it writes for: ``scoped`` leaves out the reads
    #: that only find Moodle-only objects (every account of the school's domains), and ``courses``
    #: names the only courses whose enrolments are read (``None``: every course).
    scoped: bool = False
    courses: frozenset[int] | None = None


@dataclass(frozen=True)
class Writes:
    """The web-service writes of one entity. Each takes the rows to write (the entity's fields,
    ``moodle_id`` where the object exists) and answers one :class:`ItemResult` per row."""

    create: Callable[[MoodleClient, pd.DataFrame], list[ItemResult]]
    update: Callable[[MoodleClient, pd.DataFrame], list[ItemResult]] | None = None
    #: Per Moodle-only action (``suspend``, ``hide``, ``unenrol``): rows of ``read``'s frame.
    moodle_only: Mapping[str, Callable[[MoodleClient, pd.DataFrame], list[ItemResult]]] = field(
        default_factory=dict
    )
    #: Removes what the pipeline made and Zoho no longer has (enrolments only; objects are
    #: suspended or hidden through their fields instead, never deleted).
    remove: Callable[[MoodleClient, pd.DataFrame], list[ItemResult]] | None = None


@dataclass(frozen=True)
class EntitySpec:
    """One Moodle entity (see the module docstring)."""

    name: str  # asset moodle/<name>; the plural
    entity: str  # the id map's and the push log's name: user, category, course, enrolment
    label: str  # what one object is, for messages
    sources: tuple[str, ...]
    after: tuple[str, ...]
    fields: tuple[str, ...]
    compared: tuple[str, ...]
    find_by: tuple[str, ...]
    events: tuple[str, ...]
    desired: Callable[[Warehouse, str], Desired]
    read: Callable[[MoodleClient, pd.DataFrame, pd.DataFrame, Context], pd.DataFrame]
    writes: Writes
    moodle_only: tuple[str, ...] = ("keep",)
    bookkeeping: tuple[tuple[str, str, str], ...] = ()
    #: True where the Moodle identity is the data (``ident``), not an id Moodle hands out.
    derived_identity: bool = False
    description: str = ""

    @property
    def asset(self) -> str:
        return f"moodle/{self.name}"

    @property
    def reports_moodle_only(self) -> bool:
        return len(self.moodle_only) > 1


# --- shared pieces ---------------------------------------------------------------------------------


def epoch_seconds(dates: pd.Series) -> pd.Series:
    """Dates → Unix seconds (Moodle's ``startdate``/``enddate``), 0 for a missing date.

    Whatever unit pandas parsed them in: pandas 3 gives ``datetime64[s]`` for dates read from the
    warehouse and ``[ns]`` for others, so the integer value of a timestamp is no fixed multiple of
    a second; converting the unit first is.
    """
    parsed = pd.to_datetime(dates, errors="coerce", utc=True)
    seconds = parsed.dt.as_unit("s").astype("int64")
    return seconds.where(parsed.notna(), 0).astype(int)


_SPACE = re.compile(r"\s+")


def normalised(values: pd.Series) -> pd.Series:
    """Values as Moodle's answers and the pipeline's rows can be compared: text with HTML
    entities decoded (Moodle answers ``&amp;`` for ``&`` in names) and white space collapsed,
    booleans and integral numbers as integers' text, a missing value as ``""``."""

    def one(v: object) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, bool | np.bool_):
            return str(int(v))
        if isinstance(v, int | np.integer):
            return str(int(v))
        if isinstance(v, float | np.floating) and float(v).is_integer():
            return str(int(v))
        return _SPACE.sub(" ", html.unescape(str(v))).strip()

    return values.map(one).astype(object)


def usernames(email: pd.Series, zoho_id: pd.Series) -> pd.Series:
    """The username rule (module docstring): lower-cased e-mail, else ``zoho-<id>``."""
    candidate = email.astype(object).where(email.notna(), "").str.strip().str.lower()
    ok = candidate.str.match(_USERNAME).fillna(False).astype(bool)
    return candidate.where(ok, "zoho-" + zoho_id.astype(str))


#: Per Zoho module, the fields without which its Moodle object cannot be made. The warehouse
#: mirrors every record; the reconciliation decides what it can use.
BLOCKING_FIELDS: dict[str, tuple[str, ...]] = {
    "students": ("Academic_Email", "First_Name", "Last_Name"),
    "teachers": ("Academic_Email",),
    "classes": ("Class_Name", "Class_Short_Name"),
}


def unusable(frame: pd.DataFrame, name: str) -> pd.Series:
    """Why each record of ``frame`` (a module table's rows) cannot become a Moodle object, by
    ``zoho_id``: the findings that block it (field and value, or the record holding its key);
    records that can be used are not in the answer."""
    blocking = set(BLOCKING_FIELDS.get(name, ()))
    spec = module(name)
    key = " + ".join(spec.natural_key)
    out: dict[str, str] = {}
    if "findings" not in frame:
        return pd.Series(out, dtype=object)
    rows = frame.loc[frame["findings"].notna(), ["zoho_id", "findings"]]
    for zid, text in rows.itertuples(index=False):
        said = []
        for f in json.loads(text):
            if f.get("rule") == "duplicate_natural_key" and f.get("field") == key:
                said.append(f"{key} {f.get('value')!r} is already {spec.api_name} {f.get('holder')}'s")
            elif f.get("field") in blocking:
                value = f.get("value")
                shown = "empty" if value is None else repr(value)
                said.append(f"{f['field']}: {f.get('rule')} ({shown})")
        if said:
            out[zid] = "; ".join(said)
    return pd.Series(out, dtype=object)


def _waits(ids: pd.Series, name: str, live: pd.Series, blocked: pd.Series, moodle_thing: str) -> pd.Series:
    """The reason an object waits for the record ``ids`` names: whether Zoho holds that record at
    all (the warehouse mirrors Zoho) and, if it does, why it has no Moodle object yet."""
    label = module(name).api_name
    held = ids.isin(live)
    reason = ("waits for " + label + " " + ids.astype(str)).where(ids.notna(), f"no {label} given")
    reason = reason.where(~ids.notna() | held, reason + ", which does not exist in Zoho")
    why = ids.map(blocked)
    has_why = held & why.notna()
    reason = reason.where(~has_why, reason + f", which has no Moodle {moodle_thing}: " + why.astype(str))
    plain = held & ~has_why
    return reason.where(~plain, reason + f", which has no Moodle {moodle_thing} yet")


def _finish(rows: pd.DataFrame, spec_fields: Sequence[str], blocked: pd.Series | None = None) -> pd.DataFrame:
    rows = rows.reset_index(drop=True)
    rows["fingerprint"] = fingerprint(rows.astype(str), list(spec_fields))
    reasons = rows["zoho_id"].map(blocked) if blocked is not None else pd.Series(None, index=rows.index)
    rows["unusable"] = reasons.astype(object)
    if "ident" not in rows:
        rows["ident"] = ""
    return rows


def _no_waiting() -> pd.DataFrame:
    return pd.DataFrame(columns=["key", "reason"])


# --- users -----------------------------------------------------------------------------------------

USER_FIELDS = ("username", "firstname", "lastname", "email", "idnumber", "suspended")


def desired_users(store: Warehouse, tenant_id: str) -> Desired:
    """The Moodle account every Zoho student and teacher should have."""
    s = store.read_table(tenant_id, module("students"), include_deleted=True)
    t = store.read_table(tenant_id, module("teachers"), include_deleted=True)
    students = pd.DataFrame(
        {
            "zoho_id": s["zoho_id"],
            "zoho_module": "students",
            "firstname": s["first_name"],
            "lastname": s["last_name"],
            "email": s["academic_email"],
            "suspended": (s["status"].isin(SUSPENDED_STATUSES) | s["deleted_at"].notna()).astype(int),
        }
    )
    parts = t["name"].fillna("").str.strip().str.rsplit(" ", n=1, expand=True).reindex(columns=[0, 1])
    first = parts[0].where(parts[1].notna(), parts[0])
    last = parts[1].where(parts[1].notna(), parts[0])
    teachers = pd.DataFrame(
        {
            "zoho_id": t["zoho_id"],
            "zoho_module": "teachers",
            "firstname": first,
            "lastname": last,
            "email": t["academic_email"],
            "suspended": t["deleted_at"].notna().astype(int),
        }
    )
    users = pd.concat([students, teachers], ignore_index=True).astype(object)
    users["key"] = users["zoho_id"]
    users["username"] = usernames(users["email"], users["zoho_id"])
    users["idnumber"] = users["zoho_id"]
    users["suspended"] = users["suspended"].astype(int)
    users["active"] = users["suspended"].eq(0)
    blocked = pd.concat([unusable(s, "students"), unusable(t, "teachers")])
    return Desired(_finish(users, USER_FIELDS, blocked), _no_waiting())


def school_domains(emails: pd.Series) -> list[str]:
    """The e-mail domains of the school (:data:`SCHOOL_DOMAIN_SHARE`), most used first."""
    domains = emails.dropna().astype(str).str.lower().str.rpartition("@")[2]
    domains = domains[domains.str.contains(r"\.", regex=True)]
    if domains.empty:
        return []
    share = domains.value_counts(normalize=True)
    return [d for d, s in share.items() if s >= SCHOOL_DOMAIN_SHARE][:3]


def _user_frame(users: Sequence[Mapping]) -> pd.DataFrame:
    cols = ["moodle_id", *USER_FIELDS]
    rows = [
        {
            "moodle_id": str(u["id"]),
            "username": u.get("username"),
            "firstname": u.get("firstname"),
            "lastname": u.get("lastname"),
            "email": u.get("email"),
            "idnumber": u.get("idnumber") or "",
            "suspended": int(bool(u.get("suspended"))),
        }
        for u in users
        if isinstance(u, Mapping) and u.get("id") is not None
    ]
    return pd.DataFrame(rows, columns=cols).drop_duplicates("moodle_id").set_index("moodle_id", drop=False)


def read_users(client: MoodleClient, rows: pd.DataFrame, held: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """The accounts Moodle holds that matter: those with a Zoho id as idnumber, the mapped ones
    (found by id, in case their idnumber was changed by hand), those with a wanted e-mail, and
    every account with an e-mail of the school's domains (to find the ones Zoho does not know).
    By change (``ctx.scoped``), the mapped accounts are read by id only and the domains not at all
    (Moodle-only accounts are the nightly reconciliation's to find)."""
    found: list[Mapping] = []
    looked_up = rows[~rows["key"].isin(held.index)] if ctx.scoped else rows
    if len(looked_up):
        found += client.get_users_by_field("idnumber", looked_up["zoho_id"].tolist())
    mapped = held["moodle_id"].dropna().astype(int).tolist()
    if mapped:
        found += client.get_users_by_field("id", mapped)
    seen_ids = {str(u.get("idnumber")) for u in found}
    emails = looked_up.loc[~looked_up["zoho_id"].isin(seen_ids), "email"].dropna().astype(str).str.lower()
    if len(emails):
        found += client.get_users_by_field("email", emails.tolist())
    for domain in [] if ctx.scoped else school_domains(rows["email"]):
        found += client.search_users("email", f"%@{domain}")
    frame = _user_frame(found)
    if ctx.service_user_id is not None:
        frame = frame[frame["moodle_id"] != str(ctx.service_user_id)]
    return frame


def _create_users(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    payload = rows[["username", "firstname", "lastname", "email", "idnumber"]].to_dict("records")
    for p in payload:
        p.update(auth="manual", createpassword=1)
    return client.create_users(payload)


def _update_users(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    payload = rows[list(USER_FIELDS)].assign(id=rows["moodle_id"].astype(int))
    return client.update_users(payload.astype({"suspended": int}).to_dict("records"))


def _suspend_users(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    return client.update_users([{"id": int(m), "suspended": 1} for m in rows["moodle_id"]])


# --- categories ------------------------------------------------------------------------------------


def desired_categories(store: Warehouse, tenant_id: str) -> Desired:
    """One Moodle course category per Zoho programme (idnumber = the programme's Zoho id)."""
    p = store.read_table(tenant_id, module("programmes"))
    rows = pd.DataFrame(
        {
            "key": p["zoho_id"],
            "zoho_id": p["zoho_id"],
            "zoho_module": "programmes",
            "name": p["product_name"],
            "idnumber": p["zoho_id"],
            "active": True,
        }
    )
    return Desired(_finish(rows, ("name", "idnumber")), _no_waiting())


def read_categories(
    client: MoodleClient, rows: pd.DataFrame, held: pd.DataFrame, ctx: Context
) -> pd.DataFrame:
    cats = client.get_categories()
    frame = pd.DataFrame(
        [
            {"moodle_id": str(c["id"]), "name": c.get("name"), "idnumber": c.get("idnumber") or ""}
            for c in cats
        ],
        columns=["moodle_id", "name", "idnumber"],
    )
    return frame.set_index("moodle_id", drop=False)


def _create_categories(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    return client.create_categories(
        [{"name": r["name"], "parent": 0, "idnumber": r["idnumber"]} for _, r in rows.iterrows()]
    )


# --- courses ---------------------------------------------------------------------------------------

COURSE_FIELDS = ("fullname", "shortname", "idnumber", "categoryid", "startdate", "enddate", "visible")


def desired_courses(store: Warehouse, tenant_id: str) -> Desired:
    """The Moodle course every Zoho class should have (hidden once the class is deleted)."""
    c = store.read_table(tenant_id, module("classes"), include_deleted=True)
    categories = store.moodle.id_map(tenant_id, "category")["moodle_id"]
    rows = pd.DataFrame(
        {
            "key": c["zoho_id"],
            "zoho_id": c["zoho_id"],
            "zoho_module": "classes",
            "fullname": c["class_name"],
            "shortname": c["class_short_name"],
            "idnumber": c["zoho_id"],
            "categoryid": c["program_id"].map(categories).fillna(DEFAULT_CATEGORY).astype(int),
            "startdate": epoch_seconds(c["start_date"]),
            "enddate": epoch_seconds(c["end_date"]),
            "visible": c["deleted_at"].isna().astype(int),
        }
    )
    # Moodle refuses an end date before the start (enddatebeforestartdate) and the whole course
    # with it: such a class gets its course without an end date; the mirror keeps the finding.
    reversed_dates = (rows["enddate"] > 0) & (rows["enddate"] < rows["startdate"])
    rows["enddate"] = rows["enddate"].where(~reversed_dates, 0)
    rows["active"] = rows["visible"].eq(1)
    return Desired(_finish(rows, COURSE_FIELDS, unusable(c, "classes")), _no_waiting())


def read_courses(client: MoodleClient, rows: pd.DataFrame, held: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    # The answer includes the site's front page (format "site"): it is no class's course.
    courses = [c for c in client.get_courses_by_field() if c.get("format") != "site"]
    frame = pd.DataFrame(
        [
            {
                "moodle_id": str(c["id"]),
                **{f: c.get(f) for f in COURSE_FIELDS},
                "idnumber": c.get("idnumber") or "",
            }
            for c in courses
        ],
        columns=["moodle_id", *COURSE_FIELDS],
    )
    return frame.set_index("moodle_id", drop=False)


def _create_courses(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    payload = rows[list(COURSE_FIELDS)].astype(
        {"categoryid": int, "startdate": int, "enddate": int, "visible": int}
    )
    return client.create_courses(payload.to_dict("records"))


def _update_courses(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    payload = rows[list(COURSE_FIELDS)].astype(
        {"categoryid": int, "startdate": int, "enddate": int, "visible": int}
    )
    return client.update_courses(payload.assign(id=rows["moodle_id"].astype(int)).to_dict("records"))


def _hide_courses(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    return client.update_courses([{"id": int(m), "visible": 0} for m in rows["moodle_id"]])


# --- enrolments ------------------------------------------------------------------------------------

ENROLMENT_FIELDS = ("moodle_user_id", "moodle_course_id", "role_id")


def ident(users: pd.Series, courses: pd.Series, roles: pd.Series) -> pd.Series:
    """An enrolment's Moodle identity: ``<user id>:<course id>:<role id>``."""
    parts = [s.astype("int64").astype(str).to_numpy() for s in (users, courses, roles)]
    return pd.Series([":".join(p) for p in zip(*parts, strict=True)], index=users.index, dtype=object)


def desired_enrolments(store: Warehouse, tenant_id: str) -> Desired:
    """Students' enrolments (role 5) and class teachers (role 3) Zoho holds, placed on the Moodle
    accounts and courses of the id map; those that cannot be placed yet wait, with the reason."""
    users = store.moodle.id_map(tenant_id, "user")["moodle_id"]
    courses = store.moodle.id_map(tenant_id, "course")["moodle_id"]
    e = store.read_table(tenant_id, module("enrolments"))
    s = store.read_table(tenant_id, module("students"))
    c = store.read_table(tenant_id, module("classes"))
    withdrawn = set(s.loc[s["status"].isin(SUSPENDED_STATUSES), "zoho_id"])
    e = e[~e["student_id"].isin(withdrawn)]
    students = pd.DataFrame(
        {
            "key": "enrolment:" + e["zoho_id"],
            "zoho_id": e["zoho_id"],
            "zoho_module": "enrolments",
            "user": e["student_id"],
            "course": e["class_id"],
            "role_id": STUDENT_ROLE,
        }
    )
    taught = c[c["teacher_id"].notna()]
    teachers = pd.DataFrame(
        {
            "key": "teacher:" + taught["zoho_id"],
            "zoho_id": taught["zoho_id"],
            "zoho_module": "classes",
            "user": taught["teacher_id"],
            "course": taught["zoho_id"],
            "role_id": TEACHER_ROLE,
        }
    )
    wanted = pd.concat([students, teachers], ignore_index=True)
    wanted["moodle_user_id"] = wanted["user"].map(users)
    wanted["moodle_course_id"] = wanted["course"].map(courses)
    teachers_t = store.read_table(tenant_id, module("teachers"))
    live_users = pd.concat([s["zoho_id"], teachers_t["zoho_id"]])
    blocked_users = pd.concat([unusable(s, "students"), unusable(teachers_t, "teachers")])
    is_student = wanted["key"].str.startswith("enrolment:")
    user_wait = pd.concat(
        [
            _waits(wanted.loc[is_student, "user"], "students", live_users, blocked_users, "account"),
            _waits(wanted.loc[~is_student, "user"], "teachers", live_users, blocked_users, "account"),
        ]
    ).reindex(wanted.index)
    course_wait = _waits(wanted["course"], "classes", c["zoho_id"], unusable(c, "classes"), "course")
    reason = np.select(
        [wanted["moodle_user_id"].isna(), wanted["moodle_course_id"].isna()],
        [user_wait.astype(object), course_wait.astype(object)],
        default="",
    )
    waiting = pd.DataFrame({"key": wanted["key"], "reason": reason})[reason != ""]
    ready = wanted[reason == ""].astype({"moodle_user_id": "int64", "moodle_course_id": "int64"})
    ready = ready[["key", "zoho_id", "zoho_module", *ENROLMENT_FIELDS]].copy()
    ready["active"] = True
    ready["ident"] = ident(ready["moodle_user_id"], ready["moodle_course_id"], ready["role_id"])
    return Desired(_finish(ready, ENROLMENT_FIELDS), waiting.reset_index(drop=True))


def read_enrolments(
    client: MoodleClient, rows: pd.DataFrame, held: pd.DataFrame, ctx: Context
) -> pd.DataFrame:
    """The active role holders of every course the pipeline manages (one row per user and role;
    a suspended enrolment or one without a role counts as absent), read page by page."""
    if ctx.courses is not None:
        courses = sorted(ctx.courses)
    else:
        mapped = ctx.store.moodle.id_map(ctx.tenant_id, "course")["moodle_id"]
        courses = sorted({int(c) for c in mapped} | {int(c) for c in held.get("moodle_course_id", [])})
    out: list[dict] = []
    for course in courses:
        for user in client.iter_enrolled_users(course, only_active=True):
            uid = user.get("id")
            if uid is None or uid == ctx.service_user_id:
                continue
            for role in user.get("roles") or []:
                rid = role.get("roleid")
                if rid is None:
                    continue
                out.append({"moodle_user_id": int(uid), "moodle_course_id": course, "role_id": int(rid)})
    frame = pd.DataFrame(out, columns=list(ENROLMENT_FIELDS))
    frame["moodle_id"] = ident(frame["moodle_user_id"], frame["moodle_course_id"], frame["role_id"])
    return frame.drop_duplicates("moodle_id").set_index("moodle_id", drop=False)


def _enrol(client: MoodleClient, rows: pd.DataFrame, *, suspend: bool = False) -> list[ItemResult]:
    payload = [
        {"roleid": int(r), "userid": int(u), "courseid": int(c), **({"suspend": 1} if suspend else {})}
        for u, c, r in rows[list(ENROLMENT_FIELDS)].itertuples(index=False)
    ]
    return client.enrol(payload)


def _unenrol(client: MoodleClient, rows: pd.DataFrame) -> list[ItemResult]:
    payload = [
        {"userid": int(u), "courseid": int(c), "roleid": int(r)}
        for u, c, r in rows[list(ENROLMENT_FIELDS)].itertuples(index=False)
    ]
    return client.unenrol(payload)


# --- the table -------------------------------------------------------------------------------------

ENTITIES: tuple[EntitySpec, ...] = (
    EntitySpec(
        name="users",
        entity="user",
        label="account",
        sources=("students", "teachers"),
        after=(),
        fields=USER_FIELDS,
        compared=USER_FIELDS,
        find_by=("idnumber", "email"),
        events=("user_created", "user_updated"),
        desired=desired_users,
        read=read_users,
        writes=Writes(create=_create_users, update=_update_users, moodle_only={"suspend": _suspend_users}),
        moodle_only=("keep", "suspend"),
        bookkeeping=(
            ("students", "Student_Moodle_ID", "student_moodle_id"),
            ("teachers", "Teacher_Moodle_ID", "teacher_moodle_id"),
        ),
        description="One Moodle account per Zoho student and teacher (idnumber = Zoho id), created, "
        "linked (by idnumber, then e-mail), updated or suspended; accounts with a school e-mail that "
        "Zoho does not know are reported. The map is `moodle_id_map` (entity `user`).",
    ),
    EntitySpec(
        name="categories",
        entity="category",
        label="course category",
        sources=("programmes",),
        after=(),
        fields=("name", "idnumber"),
        # A category's name is the school's to curate in Moodle: a renamed programme keeps it.
        compared=(),
        find_by=("idnumber",),
        events=(),
        desired=desired_categories,
        read=read_categories,
        writes=Writes(create=_create_categories),
        description="One Moodle course category per Zoho programme (idnumber = the programme's Zoho id); "
        "names are left to Moodle's admins once made.",
    ),
    EntitySpec(
        name="courses",
        entity="course",
        label="course",
        sources=("classes",),
        after=("categories",),
        fields=COURSE_FIELDS,
        compared=COURSE_FIELDS,
        find_by=("idnumber", "shortname"),
        events=("course_updated",),
        desired=desired_courses,
        read=read_courses,
        writes=Writes(create=_create_courses, update=_update_courses, moodle_only={"hide": _hide_courses}),
        moodle_only=("keep", "hide"),
        bookkeeping=(("classes", "Moodle_Class_ID", "moodle_class_id"),),
        description="One Moodle course per Zoho class (shortname = Class_Short_Name, idnumber = Zoho id, "
        "dates in Unix seconds), in its programme's category, hidden once the class is deleted; courses "
        "without a class are reported. The map is `moodle_id_map` (entity `course`).",
    ),
    EntitySpec(
        name="enrolments",
        entity="enrolment",
        label="enrolment",
        sources=("enrolments", "classes", "students"),
        after=("users", "courses"),
        fields=ENROLMENT_FIELDS,
        compared=ENROLMENT_FIELDS,
        find_by=("ident",),
        events=("user_enrolment_created", "user_enrolment_deleted", "user_enrolment_updated"),
        desired=desired_enrolments,
        read=read_enrolments,
        writes=Writes(
            create=_enrol,
            moodle_only={
                "suspend": lambda client, rows: _enrol(client, rows, suspend=True),
                "unenrol": _unenrol,
            },
            remove=_unenrol,
        ),
        moodle_only=("keep", "suspend", "unenrol"),
        bookkeeping=(("enrolments", "Moodle_Course_ID", "moodle_course_id"),),
        derived_identity=True,
        description="One Moodle manual enrolment per Zoho enrolment (student role) and per class teacher "
        "(editing-teacher role); deleted enrolments and withdrawn students are unenrolled, enrolments "
        "removed by hand restored, enrolments made by hand reported. The map is `moodle_enrolment_map`.",
    ),
)
ENTITIES_BY_NAME: dict[str, EntitySpec] = {e.name: e for e in ENTITIES}
#: Moodle core event (short name) → the entities it makes run.
EVENT_ENTITIES: dict[str, tuple[str, ...]] = {
    ev: tuple(e.name for e in ENTITIES if ev in e.events) for ev in {ev for e in ENTITIES for ev in e.events}
}


def entity(name: str) -> EntitySpec:
    """The spec of one entity, by name (``users``) or by its map name (``user``)."""
    for e in ENTITIES:
        if name in (e.name, e.entity):
            return e
    raise KeyError(f"unknown Moodle entity {name!r}: expected one of {', '.join(ENTITIES_BY_NAME)}")


def downstream(name: str) -> tuple[str, ...]:
    """The entities that run after ``name`` (directly or not), in table order."""
    out: list[str] = []
    frontier = {name}
    for e in ENTITIES:
        if frontier & set(e.after):
            out.append(e.name)
            frontier.add(e.name)
    return tuple(out)


def fed_by(zoho_module: str) -> tuple[str, ...]:
    """The entities made from a Zoho module, and those that run after them."""
    direct = [e.name for e in ENTITIES if zoho_module in e.sources]
    out = list(direct)
    for d in direct:
        out += [n for n in downstream(d) if n not in out]
    return tuple(n for n in ENTITIES_BY_NAME if n in out)


# --- what runs for what: derived from the table ----------------------------------------------------

DRIFT_ASSET = "moodle/drift"
GRADES_ASSET = "moodle/grades"
RUBRICS_ASSET = "moodle/rubrics"
#: The Zoho modules the unit rubrics are made from (a unit's criteria, a class's unit).
RUBRIC_SOURCES = ("units", "classes")
GRADE_WRITEBACK_ASSET = "zoho/grade_writeback"
BOOKKEEPING_ASSET = "zoho/sync_bookkeeping"
#: The plugin events that make the grade read run (for the event's course) and the write-back.
GRADE_EVENTS = ("user_graded",)


def _with_downstream(names: Sequence[str]) -> tuple[str, ...]:
    out = list(dict.fromkeys(names))
    for n in list(out):
        out += [d for d in downstream(n) if d not in out]
    return tuple(n for n in ENTITIES_BY_NAME if n in out)


def entity_assets(names: Sequence[str]) -> set[str]:
    """The assets a run refreshes for these entities: each one, what runs after it, the drift
    report, and the bookkeeping write-back where an entity has bookkeeping fields."""
    names = _with_downstream(names)
    if not names:
        return set()
    out = {ENTITIES_BY_NAME[n].asset for n in names} | {DRIFT_ASSET}
    if any(ENTITIES_BY_NAME[n].bookkeeping for n in names):
        out.add(BOOKKEEPING_ASSET)
    return out


def zoho_route(zoho_module: str) -> set[str]:
    """The assets to refresh after a record of a Zoho module (module table name) changed."""
    out = {f"zoho/{zoho_module}"} | entity_assets(fed_by(zoho_module))
    if zoho_module in RUBRIC_SOURCES:
        out.add(RUBRICS_ASSET)
    return out


def moodle_route(event_short_name: str) -> set[str]:
    """The assets to refresh for a plugin event (``user_enrolment_deleted``)."""
    out = entity_assets(EVENT_ENTITIES.get(event_short_name, ()))
    if event_short_name in GRADE_EVENTS:
        out |= {GRADES_ASSET, GRADE_WRITEBACK_ASSET}
    return out
