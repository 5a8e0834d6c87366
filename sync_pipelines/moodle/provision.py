"""Zoho (as mirrored in the warehouse) → Moodle, and Moodle grades → Zoho. No Dagster here.

Idempotence. Every Moodle object carries the Zoho id in its ``idnumber``. A Zoho record not in
the id map is first looked up in Moodle (users by idnumber, then by e-mail; courses by idnumber,
then by shortname; categories by idnumber) and linked when found, so a re-run, a crash between a
Moodle write and the id map, or an account made by hand never produces a duplicate. A mapped
record is written again only when the payload it would send differs from the one last sent.

Users: ``username`` is the academic e-mail, lower-cased (Moodle accepts ``a-z 0-9 _ - . @``);
where that has other characters it is ``zoho-<zoho id>``. Stable while the e-mail is; if the
e-mail changes, the username follows it (the account is matched by idnumber, not by username).
A student whose ``Status`` is one of :data:`SUSPENDED_STATUSES`, or who was deleted in Zoho, is
suspended in Moodle, never deleted; such a student who never had an account gets none.

Dry run: every function takes ``dry_run``; then Moodle and Zoho are only read, never written,
the warehouse is not changed, and the report lists the writes that would have been made.
"""

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from sync_pipelines.btec import btec_grades, percentage
from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.client import ItemResult, MoodleClient
from sync_pipelines.warehouse import Push, Warehouse
from sync_pipelines.zoho.client import UpsertResult, ZohoClient
from sync_pipelines.zoho.modules import module

logger = logging.getLogger(__name__)

STUDENT_ROLE = 5
TEACHER_ROLE = 3
DEFAULT_CATEGORY = 1  # Moodle's "Miscellaneous": classes without a synced programme go there
#: Student statuses (Zoho ``BTEC_Students.Status``) that suspend the Moodle account.
SUSPENDED_STATUSES = frozenset({"Withdraw", "Blocked", "Freezed"})
_USERNAME = r"^[a-z0-9_.@-]+$"

USER_FIELDS = ["username", "firstname", "lastname", "email", "idnumber", "suspended"]
COURSE_FIELDS = ["fullname", "shortname", "idnumber", "categoryid", "startdate", "enddate", "visible"]


@dataclass
class PushReport:
    """What one provisioning step did, or would do in a dry run."""

    entity: str
    dry_run: bool
    plan: pd.DataFrame  # key, action, detail — one row per write made or planned
    pushes: list[Push] = field(default_factory=list)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "reason"]))
    unchanged: int = 0

    def counts(self) -> dict[str, int]:
        out = (
            {f"planned_{a}": int(n) for a, n in self.plan["action"].value_counts().items()}
            if self.dry_run
            else {}
        )
        if not self.dry_run:
            for p in self.pushes:
                k = f"{p.action}_{'ok' if p.ok else 'failed'}"
                out[k] = out.get(k, 0) + 1
        out["unchanged"] = self.unchanged
        out["skipped"] = len(self.skipped)
        return out

    @property
    def failures(self) -> pd.DataFrame:
        rows = [(p.key, p.action, p.errorcode, p.message) for p in self.pushes if not p.ok]
        return pd.DataFrame(rows, columns=["key", "action", "errorcode", "message"])


def log_skipped(store: Warehouse, tenant_id: str, report: PushReport, run_id: str | None) -> None:
    """Record each record the step could not use in ``moodle_push_results`` (outcome ``skipped``,
    the reason as the message), so that "why has this student no account?" has an answer there."""
    if report.dry_run or report.skipped.empty:
        return
    store.moodle.log(
        tenant_id,
        [
            Push("moodle", report.entity, str(k), "skip", False, message=str(r), outcome="skipped")
            for k, r in report.skipped[["key", "reason"]].itertuples(index=False)
        ],
        run_id,
    )


def _plan(rows: pd.DataFrame, action: str, detail: pd.Series | str = "") -> pd.DataFrame:
    return pd.DataFrame({"key": rows["zoho_id"].to_numpy(), "action": action, "detail": detail})


def epoch_seconds(dates: pd.Series) -> pd.Series:
    """Dates → Unix seconds (Moodle's ``startdate``/``enddate``), 0 for a missing date.

    Whatever unit pandas parsed them in: pandas 3 gives ``datetime64[s]`` for dates read from the
    warehouse and ``[ns]`` for others, so the integer value of a timestamp is no fixed multiple of
    a second; converting the unit first is.
    """
    parsed = pd.to_datetime(dates, errors="coerce", utc=True)
    seconds = parsed.dt.as_unit("s").astype("int64")
    return seconds.where(parsed.notna(), 0).astype(int)


def _results_to_pushes(
    entity: str, action: str, keys: Sequence[str], results: Sequence[ItemResult], remote: Sequence[str | None]
) -> list[Push]:
    return [
        Push(
            "moodle",
            entity,
            k,
            action,
            r.ok,
            remote_id=(str(r.value["id"]) if r.ok and isinstance(r.value, dict) and "id" in r.value else m),
            errorcode=r.errorcode,
            message=r.message,
        )
        for k, r, m in zip(keys, results, remote, strict=True)
    ]


# --- what a step cannot use ------------------------------------------------------------------------

#: Per Zoho module, the fields without which its Moodle object cannot be made, and the natural key
#: Moodle needs unique. The warehouse mirrors every record; this step decides what it can use.
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


# --- users -----------------------------------------------------------------------------------------


def usernames(email: pd.Series, zoho_id: pd.Series) -> pd.Series:
    """The username rule (module docstring): lower-cased e-mail, else ``zoho-<id>``."""
    candidate = email.astype(object).where(email.notna(), "").str.strip().str.lower()
    ok = candidate.str.match(_USERNAME).fillna(False).astype(bool)
    return candidate.where(ok, "zoho-" + zoho_id.astype(str))


def desired_users(store: Warehouse, tenant_id: str) -> pd.DataFrame:
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
    users["username"] = usernames(users["email"], users["zoho_id"])
    users["idnumber"] = users["zoho_id"]
    users["suspended"] = users["suspended"].astype(int)
    users["fingerprint"] = fingerprint(users.astype({"suspended": str}), USER_FIELDS)
    blocked = pd.concat([unusable(s, "students"), unusable(t, "teachers")])
    users["unusable"] = users["zoho_id"].map(blocked).astype(object)
    return users


def push_users(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
) -> PushReport:
    """Create, link, update or suspend the Moodle account of every Zoho student and teacher."""
    users = desired_users(store, tenant_id)
    idmap = store.moodle.id_map(tenant_id, "user")
    users = users.join(idmap[["moodle_id", "pushed_fingerprint"]], on="zoho_id")
    mapped = users["moodle_id"].notna()
    same = mapped & (users["fingerprint"] == users["pushed_fingerprint"])
    inactive_new = ~mapped & users["suspended"].eq(1)
    blocked = users["unusable"]
    cannot = blocked.notna() & ~same & ~inactive_new
    skipped = pd.concat(
        [
            pd.DataFrame({"key": users.loc[inactive_new, "zoho_id"], "reason": "inactive_not_provisioned"}),
            pd.DataFrame(
                {"key": users.loc[cannot, "zoho_id"], "reason": "no Moodle account: " + blocked[cannot]}
            ),
        ],
        ignore_index=True,
    )
    update = users[mapped & ~same & ~cannot].copy()
    new = users[~mapped & ~inactive_new & ~cannot].astype({"moodle_id": object})

    # Link accounts that already exist: by idnumber, then by e-mail (never one that is another's).
    linked = pd.DataFrame(columns=[*users.columns])
    conflicts: list[Push] = []
    if len(new):
        found = {
            str(u.get("idnumber")): u for u in client.get_users_by_field("idnumber", new["zoho_id"].tolist())
        }
        by_id = new["zoho_id"].isin(found)
        new.loc[by_id, "moodle_id"] = new.loc[by_id, "zoho_id"].map(lambda z: found[z]["id"])
        rest = new[~by_id]
        emails = rest["email"].dropna().str.lower().tolist()
        by_email = (
            {str(u.get("email", "")).lower(): u for u in client.get_users_by_field("email", emails)}
            if emails
            else {}
        )
        hit = rest["email"].str.lower().isin(by_email)
        owner = rest.loc[hit, "email"].str.lower().map(lambda e: by_email[e])
        foreign = owner.map(lambda u: bool(u.get("idnumber")))
        new.loc[owner[~foreign].index, "moodle_id"] = owner[~foreign].map(lambda u: u["id"])
        for idx, u in owner[foreign].items():
            z = new.at[idx, "zoho_id"]
            conflicts.append(
                Push(
                    "moodle",
                    "user",
                    z,
                    "link",
                    False,
                    errorcode="email_in_use",
                    message=f"e-mail belongs to Moodle user {u['id']} with idnumber {u.get('idnumber')}",
                )
            )
        linked = new[new["moodle_id"].notna()]
        new = new[new["moodle_id"].isna() & ~new.index.isin(owner[foreign].index)]

    to_update = pd.concat([update, linked])
    plan = pd.concat(
        [
            _plan(new, "create", new["username"]),
            _plan(update, "update", update["username"]),
            _plan(linked, "link", "moodle user " + linked["moodle_id"].astype(str)),
        ],
        ignore_index=True,
    )
    report = PushReport(
        "user", dry_run, plan, skipped=skipped, unchanged=int(same.sum()), pushes=list(conflicts)
    )
    if dry_run:
        return report

    saved: list[dict] = []
    if len(new):
        payload = new[["username", "firstname", "lastname", "email", "idnumber"]].to_dict("records")
        for p in payload:
            p.update(auth="manual", createpassword=1)
        results = _recover_lost_creates(
            client.create_users(payload),
            new["zoho_id"].tolist(),
            lambda ids: {str(u.get("idnumber")): u["id"] for u in client.get_users_by_field("idnumber", ids)},
        )
        report.pushes += _results_to_pushes(
            "user", "create", new["zoho_id"].tolist(), results, [None] * len(new)
        )
        for (_, row), r in zip(new.iterrows(), results, strict=True):
            if r.ok:
                saved.append(_id_row(row, r.value["id"], row["fingerprint"]))
    if len(to_update):
        payload = to_update[USER_FIELDS].assign(id=to_update["moodle_id"].astype(int)).to_dict("records")
        results = client.update_users(payload)
        actions = ["update"] * len(update) + ["link"] * len(linked)
        ids = to_update["moodle_id"].astype(int).astype(str).tolist()
        for (_, row), r, action, mid in zip(to_update.iterrows(), results, actions, ids, strict=True):
            report.pushes.append(
                Push(
                    "moodle",
                    "user",
                    row["zoho_id"],
                    action,
                    r.ok,
                    remote_id=mid,
                    errorcode=r.errorcode,
                    message=r.message,
                )
            )
            if r.ok:
                saved.append(_id_row(row, int(row["moodle_id"]), row["fingerprint"]))
            elif action == "link":  # linked but not updated: keep the link, push again next time
                saved.append(_id_row(row, int(row["moodle_id"]), None))
    store.moodle.save_ids(tenant_id, "user", saved, report.pushes, run_id)
    log_skipped(store, tenant_id, report, run_id)
    return report


def _recover_lost_creates(
    results: list[ItemResult], zoho_ids: list[str], lookup: Callable[[list[str]], dict[str, int]]
) -> list[ItemResult]:
    """Creates Moodle refused may have happened already: a retried create whose first answer was lost.

    Every refused create is looked up by idnumber (one call for all of them), and one Moodle holds
    is taken as created. Without this the record would wait, unmapped, for the next run's look-up,
    and its enrolments and write-backs with it.
    """
    failed = [z for z, r in zip(zoho_ids, results, strict=True) if not r.ok]
    if not failed:
        return results
    found = lookup(failed)
    return [
        ItemResult(index=r.index, ok=True, value={"id": int(found[z])}) if not r.ok and z in found else r
        for z, r in zip(zoho_ids, results, strict=True)
    ]


def _id_row(row: pd.Series, moodle_id: int, fp: str | None) -> dict:
    return {
        "zoho_id": row["zoho_id"],
        "zoho_module": row["zoho_module"],
        "moodle_id": int(moodle_id),
        "pushed_fingerprint": fp,
    }


# --- categories and courses ------------------------------------------------------------------------


def push_categories(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
) -> PushReport:
    """One Moodle course category per Zoho programme (idnumber = the programme's Zoho id)."""
    p = store.read_table(tenant_id, module("programmes"))
    wanted = pd.DataFrame({"zoho_id": p["zoho_id"], "zoho_module": "programmes", "name": p["product_name"]})
    wanted["fingerprint"] = fingerprint(wanted, ["name", "zoho_id"])
    idmap = store.moodle.id_map(tenant_id, "category")
    wanted = wanted.join(idmap[["moodle_id", "pushed_fingerprint"]], on="zoho_id")
    mapped = wanted["moodle_id"].notna()
    same = mapped & (wanted["fingerprint"] == wanted["pushed_fingerprint"])
    new = wanted[~mapped].astype({"moodle_id": object})
    if len(new):
        existing = {str(c.get("idnumber")): c for c in client.get_categories() if c.get("idnumber")}
        hit = new["zoho_id"].isin(existing)
        new.loc[hit, "moodle_id"] = new.loc[hit, "zoho_id"].map(lambda z: existing[z]["id"])
    linked, create = new[new["moodle_id"].notna()], new[new["moodle_id"].isna()]
    plan = pd.concat([_plan(create, "create", create["name"]), _plan(linked, "link")], ignore_index=True)
    report = PushReport("category", dry_run, plan, unchanged=int(same.sum()))
    # Renamed programmes keep their category: a category's name is the school's to curate in Moodle.
    saved = [_id_row(r, int(r["moodle_id"]), r["fingerprint"]) for _, r in linked.iterrows()]
    if dry_run:
        return report
    if len(create):
        payload = [{"name": r["name"], "parent": 0, "idnumber": r["zoho_id"]} for _, r in create.iterrows()]
        results = _recover_lost_creates(
            client.create_categories(payload),
            create["zoho_id"].tolist(),
            lambda ids: {
                str(c.get("idnumber")): c["id"] for c in client.get_categories() if c.get("idnumber") in ids
            },
        )
        report.pushes += _results_to_pushes(
            "category", "create", create["zoho_id"].tolist(), results, [None] * len(create)
        )
        saved += [
            _id_row(r, res.value["id"], r["fingerprint"])
            for (_, r), res in zip(create.iterrows(), results, strict=True)
            if res.ok
        ]
    store.moodle.save_ids(tenant_id, "category", saved, report.pushes, run_id)
    return report


def desired_courses(store: Warehouse, tenant_id: str) -> pd.DataFrame:
    """The Moodle course every Zoho class should have (hidden once the class is deleted)."""
    c = store.read_table(tenant_id, module("classes"), include_deleted=True)
    categories = store.moodle.id_map(tenant_id, "category")["moodle_id"]
    courses = pd.DataFrame(
        {
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
    courses["fingerprint"] = fingerprint(courses.astype(str), COURSE_FIELDS)
    courses["unusable"] = courses["zoho_id"].map(unusable(c, "classes")).astype(object)
    return courses


def push_courses(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
) -> PushReport:
    """Create, link or update the Moodle course of every Zoho class."""
    courses = desired_courses(store, tenant_id)
    idmap = store.moodle.id_map(tenant_id, "course")
    courses = courses.join(idmap[["moodle_id", "pushed_fingerprint"]], on="zoho_id")
    mapped = courses["moodle_id"].notna()
    same = mapped & (courses["fingerprint"] == courses["pushed_fingerprint"])
    gone_new = ~mapped & courses["visible"].eq(0)
    blocked = courses["unusable"]
    cannot = blocked.notna() & ~same & ~gone_new
    update = courses[mapped & ~same & ~cannot].copy()
    new = courses[~mapped & ~gone_new & ~cannot].astype({"moodle_id": object})
    conflicts: list[Push] = []
    if len(new):
        # The answer includes the site's front page (format "site"): it is no class's course.
        existing = [c for c in client.get_courses_by_field() if c.get("format") != "site"]
        by_idnumber = {str(c["idnumber"]): c for c in existing if c.get("idnumber")}
        by_short = {str(c["shortname"]): c for c in existing}
        for idx, row in new.iterrows():
            course = by_idnumber.get(row["zoho_id"]) or by_short.get(row["shortname"])
            if course is None:
                continue
            if course.get("idnumber") and str(course["idnumber"]) != row["zoho_id"]:
                conflicts.append(
                    Push(
                        "moodle",
                        "course",
                        row["zoho_id"],
                        "link",
                        False,
                        errorcode="shortnametaken",
                        message=f"shortname {row['shortname']!r} is course {course['id']} "
                        f"with idnumber {course['idnumber']}",
                    )
                )
                new = new.drop(idx)
                continue
            new.at[idx, "moodle_id"] = course["id"]
    linked, create = new[new["moodle_id"].notna()], new[new["moodle_id"].isna()]
    to_update = pd.concat([update, linked])
    plan = pd.concat(
        [
            _plan(create, "create", create["shortname"]),
            _plan(update, "update", update["shortname"]),
            _plan(linked, "link", linked["shortname"]),
        ],
        ignore_index=True,
    )
    skipped = pd.concat(
        [
            pd.DataFrame({"key": courses.loc[gone_new, "zoho_id"], "reason": "class_deleted"}),
            pd.DataFrame(
                {"key": courses.loc[cannot, "zoho_id"], "reason": "no Moodle course: " + blocked[cannot]}
            ),
        ],
        ignore_index=True,
    )
    report = PushReport("course", dry_run, plan, pushes=conflicts, skipped=skipped, unchanged=int(same.sum()))
    if dry_run:
        return report
    saved: list[dict] = []
    if len(create):
        payload = create[COURSE_FIELDS].astype(
            {"categoryid": int, "startdate": int, "enddate": int, "visible": int}
        )
        results = _recover_lost_creates(
            client.create_courses(payload.to_dict("records")),
            create["zoho_id"].tolist(),
            lambda ids: {
                str(c.get("idnumber")): c["id"]
                for c in client.get_courses_by_field()
                if c.get("idnumber") in ids
            },
        )
        report.pushes += _results_to_pushes(
            "course", "create", create["zoho_id"].tolist(), results, [None] * len(create)
        )
        saved += [
            _id_row(r, res.value["id"], r["fingerprint"])
            for (_, r), res in zip(create.iterrows(), results, strict=True)
            if res.ok
        ]
    if len(to_update):
        payload = to_update[COURSE_FIELDS].assign(id=to_update["moodle_id"].astype(int))
        results = client.update_courses(payload.to_dict("records"))
        actions = ["update"] * len(update) + ["link"] * len(linked)
        for (_, r), res, action in zip(to_update.iterrows(), results, actions, strict=True):
            report.pushes.append(
                Push(
                    "moodle",
                    "course",
                    r["zoho_id"],
                    action,
                    res.ok,
                    remote_id=str(int(r["moodle_id"])),
                    errorcode=res.errorcode,
                    message=res.message,
                )
            )
            if res.ok or action == "link":
                saved.append(_id_row(r, int(r["moodle_id"]), r["fingerprint"] if res.ok else None))
    store.moodle.save_ids(tenant_id, "course", saved, report.pushes, run_id)
    log_skipped(store, tenant_id, report, run_id)
    return report


# --- enrolments ------------------------------------------------------------------------------------


def desired_enrolments(store: Warehouse, tenant_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(enrolments wanted in Moodle, Zoho enrolments that cannot be placed yet with the reason)."""
    users = store.moodle.id_map(tenant_id, "user")["moodle_id"]
    courses = store.moodle.id_map(tenant_id, "course")["moodle_id"]
    e = store.read_table(tenant_id, module("enrolments"))
    s = store.read_table(tenant_id, module("students"))
    c = store.read_table(tenant_id, module("classes"))
    c_all = c
    withdrawn = set(s.loc[s["status"].isin(SUSPENDED_STATUSES), "zoho_id"])
    e = e[~e["student_id"].isin(withdrawn)]
    students = pd.DataFrame(
        {
            "key": "enrolment:" + e["zoho_id"],
            "user": e["student_id"],
            "course": e["class_id"],
            "role_id": STUDENT_ROLE,
        }
    )
    c = c[c["teacher_id"].notna()]
    teachers = pd.DataFrame(
        {
            "key": "teacher:" + c["zoho_id"],
            "user": c["teacher_id"],
            "course": c["zoho_id"],
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
    course_wait = _waits(wanted["course"], "classes", c_all["zoho_id"], unusable(c_all, "classes"), "course")
    reason = np.select(
        [wanted["moodle_user_id"].isna(), wanted["moodle_course_id"].isna()],
        [user_wait.astype(object), course_wait.astype(object)],
        default="",
    )
    waiting = pd.DataFrame({"key": wanted["key"], "reason": reason})[reason != ""]
    ready = wanted[reason == ""].astype({"moodle_user_id": int, "moodle_course_id": int})
    return ready[["key", "moodle_user_id", "moodle_course_id", "role_id"]], waiting


def push_enrolments(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
) -> PushReport:
    """Enrol students (role 5) and class teachers (role 3); unenrol what Zoho no longer has."""
    wanted, waiting = desired_enrolments(store, tenant_id)
    held = store.moodle.enrolments(tenant_id)
    cols = ["moodle_user_id", "moodle_course_id", "role_id"]
    merged = wanted.merge(held[cols].add_suffix("_held"), left_on="key", right_index=True, how="left")
    same = merged["moodle_user_id_held"].notna() & (
        merged[cols].to_numpy() == merged[[f"{c}_held" for c in cols]].to_numpy()
    ).all(axis=1)
    add = merged[~same][["key", *cols]]
    changed = held.index.isin(add["key"])
    stale = held[~held.index.isin(wanted["key"]) | changed]
    # Never unenrol a (user, course) that another wanted enrolment still needs.
    needed = set(zip(wanted["moodle_user_id"], wanted["moodle_course_id"], strict=True))
    keep = [(u, c) in needed for u, c in zip(stale["moodle_user_id"], stale["moodle_course_id"], strict=True)]
    drop = stale[~np.array(keep, dtype=bool)] if len(stale) else stale
    plan = pd.concat(
        [
            pd.DataFrame(
                {
                    "key": add["key"],
                    "action": "enrol",
                    "detail": "user "
                    + add["moodle_user_id"].astype(str)
                    + " → course "
                    + add["moodle_course_id"].astype(str),
                }
            ),
            pd.DataFrame(
                {
                    "key": drop.index,
                    "action": "unenrol",
                    "detail": "user "
                    + drop["moodle_user_id"].astype(str)
                    + " ← course "
                    + drop["moodle_course_id"].astype(str),
                }
            ),
        ],
        ignore_index=True,
    )
    report = PushReport("enrolment", dry_run, plan, skipped=waiting, unchanged=int(same.sum()))
    if dry_run:
        return report
    added: list[dict] = []
    if len(add):
        payload = [
            {"roleid": int(r), "userid": int(u), "courseid": int(c)}
            for u, c, r in add[cols].itertuples(index=False)
        ]
        results = client.enrol(payload)
        report.pushes += _results_to_pushes(
            "enrolment", "enrol", add["key"].tolist(), results, [None] * len(add)
        )
        added = [
            dict(zip(["key", *cols], (k, int(u), int(c), int(r)), strict=True))
            for (k, u, c, r), res in zip(add.itertuples(index=False), results, strict=True)
            if res.ok
        ]
    removed: list[str] = list(stale.index[np.array(keep, dtype=bool)]) if len(stale) else []
    if len(drop):
        payload = [
            {"userid": int(u), "courseid": int(c), "roleid": int(r)}
            for u, c, r in drop[cols].itertuples(index=False)
        ]
        results = client.unenrol(payload)
        report.pushes += _results_to_pushes(
            "enrolment", "unenrol", drop.index.tolist(), results, [None] * len(drop)
        )
        removed += [k for k, res in zip(drop.index, results, strict=True) if res.ok]
    store.moodle.save_enrolments(tenant_id, added, removed, report.pushes, run_id)
    log_skipped(store, tenant_id, report, run_id)
    return report


# --- grades ----------------------------------------------------------------------------------------


def collect_grades(
    client: MoodleClient, store: Warehouse, tenant_id: str, *, course_ids: Sequence[int] = ()
) -> pd.DataFrame:
    """Read synced courses' gradebooks and store each graded item with its BTEC grade.

    ``course_ids`` (Moodle ids) limits the read to those courses (a grading event names one);
    empty reads every synced course. Course-total items (``itemtype == "course"``) are never
    counted as an assignment grade.
    """
    courses = store.moodle.id_map(tenant_id, "course")
    users = store.moodle.id_map(tenant_id, "user")
    students = users[users["zoho_module"] == "students"]
    user_to_zoho = pd.Series(students.index, index=students["moodle_id"].astype(int))
    course_to_zoho = pd.Series(courses.index, index=courses["moodle_id"].astype(int))
    rows: list[dict] = []
    wanted = sorted(course_to_zoho.index)
    if course_ids:
        wanted = [c for c in wanted if c in {int(i) for i in course_ids}]
    for course_id in wanted:
        for usergrade in client.get_grade_items(int(course_id)):
            uid = int(usergrade["userid"])
            for item in usergrade.get("gradeitems") or []:
                if item.get("itemtype") == "course" or item.get("graderaw") is None:
                    continue
                rows.append(
                    {
                        "moodle_user_id": uid,
                        "moodle_course_id": int(course_id),
                        "grade_item_id": int(item["id"]),
                        "item_name": item.get("itemname"),
                        "grade_raw": float(item["graderaw"]),
                        "grade_max": float(item.get("grademax") or 0),
                    }
                )
    cols = ["moodle_user_id", "moodle_course_id", "grade_item_id", "item_name", "grade_raw", "grade_max"]
    grades = pd.DataFrame(rows, columns=cols)
    grades["composite_key"] = grades["moodle_user_id"].astype(str) + "_" + grades["grade_item_id"].astype(str)
    grades["student_zoho_id"] = grades["moodle_user_id"].map(user_to_zoho)
    grades["class_zoho_id"] = grades["moodle_course_id"].map(course_to_zoho)
    grades["percentage"] = percentage(grades["grade_raw"], grades["grade_max"])
    grades["btec_grade"] = btec_grades(grades["percentage"])["btec_grade"]
    grades["fingerprint"] = fingerprint(
        grades.astype(str),
        ["composite_key", "grade_raw", "grade_max", "item_name", "student_zoho_id", "class_zoho_id"],
    )
    grades = grades.astype(object).where(grades.notna(), None)
    store.moodle.save_grades(tenant_id, grades.to_dict("records"))
    return grades


def write_back_grades(
    zoho: ZohoClient, store: Warehouse, tenant_id: str, *, dry_run: bool = False, run_id: str | None = None
) -> PushReport:
    """Upsert changed BTEC grades into Zoho ``BTEC_Grades``, keyed by ``Moodle_Grade_Composite_Key``."""
    g = store.moodle.grades(tenant_id)
    todo = g[
        (g["fingerprint"] != g["written_fingerprint"])
        & g["student_zoho_id"].notna()
        & g["class_zoho_id"].notna()
    ]
    unplaced = g[g["student_zoho_id"].isna() | g["class_zoho_id"].isna()]
    letters = btec_grades(todo["percentage"])["letter"]
    plan = pd.DataFrame(
        {
            "key": todo["composite_key"],
            "action": "upsert",
            "detail": todo["item_name"].astype(str) + ": " + letters.astype(str),
        }
    )
    skipped = pd.DataFrame({"key": unplaced["composite_key"], "reason": "not_a_synced_student_or_class"})
    report = PushReport(
        "grade", dry_run, plan, skipped=skipped, unchanged=int(len(g) - len(todo) - len(unplaced))
    )
    if dry_run or todo.empty:
        return report
    records = [
        {
            "Moodle_Grade_Composite_Key": k,
            "Student": {"id": s},
            "Class": {"id": c},
            "Grade": letter,
            "BTEC_Grade_Name": name,
            "Moodle_Grade_ID": str(item),
        }
        for k, s, c, letter, name, item in zip(
            todo["composite_key"],
            todo["student_zoho_id"],
            todo["class_zoho_id"],
            letters,
            todo["item_name"],
            todo["grade_item_id"],
            strict=True,
        )
    ]
    results = zoho.upsert("BTEC_Grades", records, duplicate_check_fields=["Moodle_Grade_Composite_Key"])
    report.pushes = [
        _zoho_push("grade", k, "upsert", r) for k, r in zip(todo["composite_key"], results, strict=True)
    ]
    written = [
        {"composite_key": k, "written_fingerprint": fp, "zoho_grade_id": r.record_id}
        for k, fp, r in zip(todo["composite_key"], todo["fingerprint"], results, strict=True)
        if r.ok
    ]
    store.moodle.mark_grades_written(tenant_id, written, report.pushes, run_id)
    return report


def _zoho_push(entity: str, key: str, action: str, r: UpsertResult) -> Push:
    return Push(
        "zoho",
        entity,
        key,
        action,
        r.ok,
        remote_id=r.record_id,
        errorcode=None if r.ok else r.code,
        message=None if r.ok else r.message,
    )


# --- sync bookkeeping back to Zoho -----------------------------------------------------------------

#: (Zoho module, Zoho field for the Moodle id, warehouse column mirroring it)
BOOKKEEPING = (
    ("students", "Student_Moodle_ID", "student_moodle_id"),
    ("teachers", "Teacher_Moodle_ID", "teacher_moodle_id"),
    ("classes", "Moodle_Class_ID", "moodle_class_id"),
    ("enrolments", "Moodle_Course_ID", "moodle_course_id"),
)


def _moodle_ids(store: Warehouse, tenant_id: str, name: str) -> pd.Series:
    """Zoho id → the Moodle id to record on it (as text), for one module."""
    if name == "enrolments":
        held = store.moodle.enrolments(tenant_id)
        held = held[held.index.str.startswith("enrolment:")]
        return pd.Series(
            held["moodle_course_id"].astype(int).astype(str).to_numpy(), index=held.index.str[10:]
        )
    ids = store.moodle.id_map(tenant_id, "course" if name == "classes" else "user")
    return ids[ids["zoho_module"] == name]["moodle_id"].astype(int).astype(str)


def write_back_bookkeeping(
    zoho: ZohoClient, store: Warehouse, tenant_id: str, *, dry_run: bool = False, run_id: str | None = None
) -> PushReport:
    """Write Moodle ids and sync flags onto the Zoho records, batched, only where they changed.

    A value is written when it differs both from what the warehouse mirror of Zoho holds and
    from what this step last wrote (the mirror catches up on the next Zoho sync).
    """
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    report = PushReport("bookkeeping", dry_run, pd.DataFrame(columns=["key", "action", "detail"]))
    plans = []
    for name, api_field, column in BOOKKEEPING:
        spec = module(name)
        ids = _moodle_ids(store, tenant_id, name)
        mirror = store.read_table(tenant_id, spec).set_index("zoho_id")
        desired = pd.DataFrame({api_field: ids})
        if "synced_to_moodle" in spec.columns:
            desired["Synced_to_Moodle"] = True
        desired = desired[desired.index.isin(mirror.index)]
        same_in_zoho = mirror[column].reindex(desired.index).astype(object) == desired[api_field]
        if "synced_to_moodle" in spec.columns:
            same_in_zoho &= mirror["synced_to_moodle"].reindex(desired.index).fillna(False).astype(bool)
        desired["_fp"] = fingerprint(
            desired.astype(str).reset_index(), [c for c in desired.columns if c != "_fp"]
        ).to_numpy()
        written = store.moodle.writeback_state(tenant_id, name)
        todo = desired[~same_in_zoho & (desired["_fp"] != written.reindex(desired.index))]
        report.unchanged += len(desired) - len(todo)
        plans.append(
            pd.DataFrame(
                {
                    "key": todo.index,
                    "action": f"update {spec.api_name}",
                    "detail": api_field + "=" + todo[api_field],
                }
            )
        )
        if dry_run or todo.empty:
            continue
        fields = [c for c in todo.columns if c != "_fp"]
        records = [
            {
                "id": z,
                **{f: row[f] for f in fields},
                **({"Last_Sync_Date": now} if "last_sync_date" in spec.columns else {}),
            }
            for z, row in todo.iterrows()
        ]
        results = zoho.update(spec.api_name, records)
        pushes = [_zoho_push(name, z, "update", r) for z, r in zip(todo.index, results, strict=True)]
        report.pushes += pushes
        store.moodle.save_writeback(
            tenant_id,
            name,
            {z: fp for z, fp, r in zip(todo.index, todo["_fp"], results, strict=True) if r.ok},
            pushes,
            run_id,
        )
    report.plan = pd.concat(plans, ignore_index=True) if plans else report.plan
    return report
