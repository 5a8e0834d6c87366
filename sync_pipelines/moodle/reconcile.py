"""One reconciliation for every Moodle entity: what Zoho says (from the warehouse) against what
Moodle holds (read from its web services), then the writes that make them agree.

For an entity of :data:`sync_pipelines.moodle.entities.ENTITIES` the procedure is always:

1. **desired**: the rows Zoho says Moodle should hold (``EntitySpec.desired``), and the records
   that cannot have an object yet (their reason goes to ``moodle_push_results`` as ``skipped``);
2. **held**: what the pipeline made before (the id map, or the enrolment map);
3. **actual**: what Moodle holds (``EntitySpec.read``);
4. **match**: a desired row is its mapped object if Moodle still holds it, else the first object
   found by ``find_by`` (idnumber, then e-mail or shortname) that is no one else's — an account
   or a course made by hand is linked, never duplicated;
5. **compare** the ``compared`` fields (text normalised as Moodle answers it) and **plan**:
   ``create``, ``update`` (Zoho changed), ``link``, ``unchanged``, ``skip``; and the **drift**:

   * side ``zoho`` — Zoho holds what Moodle lacks (``missing``: an enrolment removed by hand, an
     account deleted) or contradicts (``differs``: a course renamed, the account of an active
     student suspended) while Zoho did not change: healed (``restored``) when the school's
     :class:`~sync_pipelines.tenants.DriftPolicy` says ``restore`` (the default), else
     ``reported``;
   * side ``moodle`` — Moodle holds what Zoho does not say (an enrolment or an account made by
     hand, a course without a class): the policy's action for Moodle-only objects of the entity
     (``keep``, the default: ``reported``; ``suspend``, ``hide`` or ``unenrol`` where the entity
     allows it). Nothing is ever deleted;

6. **write** (unless ``dry_run``), then save the maps, every write's outcome
   (``moodle_push_results``) and the drift (``moodle_drift``, the current differences of the
   entity) in one transaction.

A mapped object Moodle does not answer is only taken as removed when Moodle answered some of the
others: when it answers none of them (a role that lost a capability sees nothing, see the
preflight), nothing is restored and the drift says why.

**In full or by change** (``full``). In full, every desired row is compared with everything Moodle
holds: the nightly reconciliation, the first run, a plugin event, and any run when the last full
one is older than a day (:mod:`sync_pipelines.moodle.assets` decides). By change (every other
run), the warehouse alone says what is to be written (:func:`pending`: a row without its object,
a row whose fingerprint is not the one pushed, an enrolment the map does not hold as it is or
holds and Zoho no longer has); with nothing, Moodle is not read at all. Otherwise only that is
read: those accounts (the mapped ones by id), all categories or courses (one call), the
enrolments of those courses only. Drift of what was not read, and objects only in Moodle (but
for the enrolments of the courses read, which are read whole), are the full reconciliation's to
find; the drift it recorded for them is kept.
"""

from dataclasses import dataclass, field

import pandas as pd

from sync_pipelines.moodle.client import ItemResult, MoodleClient
from sync_pipelines.moodle.entities import Context, EntitySpec, ident, normalised
from sync_pipelines.tenants import DriftPolicy
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.moodle import Push

#: A mapped object missing from Moodle's answer is not restored when Moodle answered none of at
#: least this many mapped objects of the entity (see the module docstring).
BLIND_READ_MINIMUM = 3
DRIFT_COLUMNS = ["key", "moodle_id", "side", "kind", "detail", "action", "healed"]
_PAST = {"restore": "restored", "suspend": "suspended", "hide": "hidden", "unenrol": "unenrolled"}


@dataclass
class PushReport:
    """What one reconciliation did, or would do in a dry run."""

    entity: str
    dry_run: bool
    plan: pd.DataFrame  # key, action, detail — one row per write made or planned
    pushes: list[Push] = field(default_factory=list)
    skipped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["key", "reason"]))
    unchanged: int = 0
    drift: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DRIFT_COLUMNS))

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
        out["drift"] = len(self.drift)
        out["drift_unhealed"] = int((~self.drift["healed"].astype(bool)).sum()) if len(self.drift) else 0
        return out

    @property
    def failures(self) -> pd.DataFrame:
        rows = [(p.key, p.action, p.errorcode, p.message) for p in self.pushes if not p.ok]
        return pd.DataFrame(rows, columns=["key", "action", "errorcode", "message"])


def _held(spec: EntitySpec, store: Warehouse, tenant_id: str) -> pd.DataFrame:
    """What the pipeline made before: ``key`` → ``moodle_id`` (text), ``pushed_fingerprint``."""
    if spec.derived_identity:
        held = store.moodle.enrolments(tenant_id)
        held["moodle_id"] = (
            ident(held["moodle_user_id"], held["moodle_course_id"], held["role_id"])
            if len(held)
            else pd.Series(dtype=object)
        )
        held["pushed_fingerprint"] = None
        return held
    held = store.moodle.id_map(tenant_id, spec.entity)
    held["moodle_id"] = held["moodle_id"].astype("int64").astype(str) if len(held) else held["moodle_id"]
    return held


@dataclass(frozen=True)
class Pending:
    """What the warehouse says is to be written for an entity, without reading Moodle.

    Attributes:
        keys: the rows to create or update (entities with Moodle ids).
        courses: the Moodle courses whose enrolments change (enrolments: a new, moved or dropped
            one; the course it was in is read too).
    """

    keys: frozenset[str] = frozenset()
    courses: frozenset[int] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.keys or self.courses)


def pending(spec: EntitySpec, rows: pd.DataFrame, held: pd.DataFrame) -> Pending:
    """What a reconciliation by change must read for (see the module docstring): ``rows`` are the
    desired rows, ``held`` what :func:`_held` answers."""
    if spec.derived_identity:
        held_ident = rows["key"].map(held["moodle_id"]) if len(held) else pd.Series(None, index=rows.index)
        new = held_ident.isna() | (held_ident != rows["ident"])
        moved = rows.loc[new & held_ident.notna(), "key"]
        dropped = held[~held.index.isin(rows["key"])] if len(held) else held
        courses = (
            {int(c) for c in rows.loc[new, "moodle_course_id"]}
            | {int(c) for c in held.loc[held.index.isin(moved), "moodle_course_id"]}
            | {int(c) for c in dropped.get("moodle_course_id", [])}
        )
        return Pending(courses=frozenset(courses))
    mapped = rows["key"].isin(held.index)
    pushed = rows["key"].map(held["pushed_fingerprint"]) if len(held) else pd.Series(None, index=rows.index)
    blocked = rows["unusable"].notna()
    active = rows["active"].astype(bool)
    create = ~mapped & active & ~blocked
    update = mapped & (rows["fingerprint"] != pushed) & ~blocked
    return Pending(keys=frozenset(rows.loc[create | update, "key"]))


def _quiet_skips(spec: EntitySpec, rows: pd.DataFrame, held: pd.DataFrame) -> pd.DataFrame:
    """The records a reconciliation by change leaves unread that it could not use anyway (no
    object made for an inactive or unusable record), so that its log still names every one."""
    mapped = rows["key"].isin(held.index)
    active = rows["active"].astype(bool)
    inactive_new = ~mapped & ~active
    cannot = rows["unusable"].notna() & ~mapped & ~inactive_new
    return _skips(spec, rows, inactive_new, cannot)


def _skips(spec: EntitySpec, rows: pd.DataFrame, inactive_new: pd.Series, cannot: pd.Series) -> pd.DataFrame:
    """The log's SKIPPED rows: records no object is made for (inactive), or cannot be (unusable)."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "key": rows.loc[inactive_new, "key"],
                    "reason": f"inactive: no Moodle {spec.label} is made for it",
                }
            ),
            pd.DataFrame(
                {
                    "key": rows.loc[cannot, "key"],
                    "reason": f"no Moodle {spec.label}: " + rows.loc[cannot, "unusable"].astype(str),
                }
            ),
        ],
        ignore_index=True,
    )


def _differences(spec: EntitySpec, rows: pd.DataFrame, actual: pd.DataFrame) -> pd.Series:
    """Per row holding a Moodle object: ``field: Moodle 'x', Zoho 'y'; ...``, or ``""``."""
    found = actual.reindex(rows["moodle_id"])
    found.index = rows.index
    said = pd.Series("", index=rows.index, dtype=object)
    for col in spec.compared:
        if col not in actual:
            continue
        ours, theirs = normalised(rows[col]), normalised(found[col])
        if col == "email":
            ours, theirs = ours.str.lower(), theirs.str.lower()
        diff = ours != theirs
        text = col + ": Moodle " + theirs.map(repr) + ", Zoho " + ours.map(repr)
        said = said.where(~diff, said.where(said == "", said + "; ") + text)
    return said


def _find(
    spec: EntitySpec, rows: pd.DataFrame, actual: pd.DataFrame, claimed: set[str]
) -> tuple[pd.Series, list[Push]]:
    """Objects Moodle holds for unmapped rows, by ``find_by`` in order: ``moodle_id`` per row
    (NaN where none), and a failed ``link`` for an object that is someone else's."""
    found = pd.Series(None, index=rows.index, dtype=object)
    conflicts: list[Push] = []
    for key in spec.find_by:
        column = "moodle_id" if key == "ident" else key
        if column not in actual or (key != "ident" and key not in rows):
            continue
        todo = rows[found.isna()]
        values = todo[key] if key != "ident" else todo["ident"]
        values = normalised(values).str.lower()
        todo, values = todo[values != ""], values[values != ""]
        if todo.empty:
            continue
        candidates = actual[~actual["moodle_id"].isin(claimed)]
        lookup = pd.Series(
            candidates["moodle_id"].to_numpy(), index=normalised(candidates[column]).str.lower().to_numpy()
        )
        lookup = lookup[~lookup.index.duplicated()]
        hits = values.map(lookup).dropna()
        for idx, mid in hits.items():
            owner = str(actual.at[mid, "idnumber"]) if "idnumber" in actual else ""
            zid = rows.at[idx, "zoho_id"]
            if key != "idnumber" and owner and owner != zid:
                conflicts.append(
                    Push(
                        "moodle",
                        spec.entity,
                        rows.at[idx, "key"],
                        "link",
                        False,
                        errorcode=f"{key}_in_use",
                        message=f"{key} {rows.at[idx, key]!r} belongs to Moodle {spec.label} {mid} "
                        f"with idnumber {owner}",
                    )
                )
                found[idx] = ""  # no object for it, and no create either
                continue
            if mid in claimed:
                continue
            claimed.add(mid)
            found[idx] = mid
    return found, conflicts


def reconcile(
    spec: EntitySpec,
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    policy: DriftPolicy | None = None,
    dry_run: bool = False,
    run_id: str | None = None,
    service_user_id: int | None = None,
    full: bool = True,
) -> PushReport:
    """Reconcile one entity of one school (module docstring): in full, or by change (``full=False``)."""
    policy = policy or DriftPolicy()
    desired = spec.desired(store, tenant_id)
    rows = desired.rows.reset_index(drop=True).copy()
    held = _held(spec, store, tenant_id)
    ctx = Context(store, tenant_id, service_user_id)
    scope: Pending | None = None
    claimed_elsewhere: set[str] = set()
    quiet = pd.DataFrame(columns=["key", "reason"])
    if not full:
        scope = pending(spec, rows, held)
        if spec.derived_identity:
            inside = rows["moodle_course_id"].astype(int).isin(scope.courses)
            held_inside = (
                held["moodle_course_id"].astype(int).isin(scope.courses)
                if len(held)
                else pd.Series(False, index=held.index)
            )
            ctx = Context(store, tenant_id, service_user_id, scoped=True, courses=scope.courses)
        else:
            inside = rows["key"].isin(scope.keys)
            held_inside = held.index.isin(scope.keys)
            ctx = Context(store, tenant_id, service_user_id, scoped=True)
            quiet = _quiet_skips(spec, rows[~inside], held)
        claimed_elsewhere = set(held.loc[~held_inside, "moodle_id"].astype(str))
        rows, held = rows[inside].reset_index(drop=True), held[held_inside]
        if not scope:  # nothing to write: Moodle is not read
            return PushReport(
                spec.entity,
                dry_run,
                pd.DataFrame(columns=["key", "action", "detail"]),
                skipped=pd.concat([quiet, desired.waiting], ignore_index=True),
                unchanged=int(len(desired.rows) - len(quiet)),
            )
    actual = spec.read(client, rows, held, ctx)

    rows["moodle_id"] = rows["key"].map(held["moodle_id"]).astype(object)
    rows["pushed"] = rows["key"].map(held["pushed_fingerprint"]).astype(object)
    if spec.derived_identity:  # the row now names another user, course or role: a new enrolment
        moved = rows["moodle_id"].notna() & (rows["moodle_id"] != rows["ident"])
        rows.loc[moved, ["moodle_id", "pushed"]] = None
    mapped = rows["moodle_id"].notna()
    present = mapped & rows["moodle_id"].isin(actual.index)
    missing = mapped & ~present
    blind = bool(missing.sum() >= BLIND_READ_MINIMUM and not present.any())

    claimed = set(rows.loc[present, "moodle_id"]) | claimed_elsewhere
    found, conflicts = _find(spec, rows[~mapped], actual, claimed)
    conflicted = pd.Series(False, index=rows.index)
    conflicted[found.index] = found.eq("")
    linked = pd.Series(False, index=rows.index)
    linked[found.index] = found.notna() & found.ne("")
    rows.loc[linked, "moodle_id"] = found[linked[linked].index]
    if spec.derived_identity:  # an enrolment made by hand that Zoho also holds: just recorded
        rows.loc[linked, "pushed"] = rows.loc[linked, "fingerprint"]

    on_moodle = present | linked
    differences = _differences(spec, rows, actual).where(on_moodle, "")
    differs = differences != ""
    zoho_changed = rows["fingerprint"] != rows["pushed"]
    blocked = rows["unusable"].notna()
    active = rows["active"].astype(bool)

    unchanged = on_moodle & ~differs
    if spec.derived_identity:
        unchanged = unchanged & ~linked
    update = on_moodle & differs & (linked | zoho_changed) & ~blocked
    contradicts = present & differs & ~zoho_changed & ~blocked
    lacks = missing & active & ~blocked
    create = ~mapped & ~on_moodle & ~conflicted & active & ~blocked

    inactive_new = ~mapped & ~on_moodle & ~active
    cannot = blocked & ~unchanged & ~inactive_new
    skipped = pd.concat([_skips(spec, rows, inactive_new, cannot), quiet, desired.waiting], ignore_index=True)

    # --- drift ------------------------------------------------------------------------------------
    drift_parts: list[pd.DataFrame] = []
    heal = policy.restore and not blind
    if contradicts.any():
        verb = "restored" if policy.restore else "reported"
        drift_parts.append(_drift(rows[contradicts], "zoho", "differs", differences[contradicts], verb))
    if lacks.any():
        why = f"Moodle holds no such {spec.label} any more"
        if blind:
            why += (
                f" (Moodle answered none of the {int(missing.sum())} mapped: not restored; run the preflight)"
            )
        drift_parts.append(_drift(rows[lacks], "zoho", "missing", why, "restored" if heal else "reported"))

    # What Moodle holds that no desired row took: made by the pipeline and dropped by Zoho, or made by hand.
    taken = set(rows.loc[on_moodle, "moodle_id"])
    spare = actual[~actual["moodle_id"].isin(taken)]
    remove = pd.DataFrame(columns=actual.columns)
    if spec.writes.remove is not None and len(held):
        ours = held[~held.index.isin(rows.loc[~rows["moodle_id"].isna() & ~linked, "key"])]
        remove = spare[spare["moodle_id"].isin(ours["moodle_id"])]
        spare = spare[~spare["moodle_id"].isin(ours["moodle_id"])]
    else:
        spare = spare[~spare["moodle_id"].isin(held["moodle_id"])]
    needed_pairs = set()
    if spec.derived_identity:
        needed_pairs = {m.rsplit(":", 1)[0] for m in rows.loc[on_moodle | create | lacks, "ident"]}
        if len(remove):  # never unenrol a (user, course) that a wanted enrolment still needs
            remove = remove[~remove["moodle_id"].str.rsplit(":", n=1).str[0].isin(needed_pairs)]
    only_action = policy.moodle_only_action(spec.name) if spec.reports_moodle_only else "keep"
    # By change, only the enrolments of a course are read whole: Moodle-only accounts, courses and
    # categories are the full reconciliation's to find.
    sees_all = scope is None or spec.derived_identity
    moodle_only = spare if spec.reports_moodle_only and sees_all else spare.iloc[0:0]
    act_on = moodle_only.iloc[0:0]
    if len(moodle_only):
        kept = pd.Series(False, index=moodle_only.index)
        if spec.derived_identity and only_action == "unenrol":
            kept = moodle_only["moodle_id"].str.rsplit(":", n=1).str[0].isin(needed_pairs)
        act_on = moodle_only[~kept] if only_action != "keep" else moodle_only.iloc[0:0]
        detail = f"only in Moodle: Zoho has no record for this {spec.label}"
        frame = pd.DataFrame(
            {
                "key": "moodle:" + moodle_only["moodle_id"].astype(str),
                "moodle_id": moodle_only["moodle_id"].astype(str),
                "side": "moodle",
                "kind": "moodle_only",
                "detail": detail + _describe(spec, moodle_only),
                "action": "reported",
                "healed": False,
            }
        )
        if only_action != "keep":
            frame.loc[~kept.to_numpy(), "action"] = _PAST[only_action]
            frame.loc[kept.to_numpy(), "action"] = "kept: the user holds a role here that Zoho gives"
        drift_parts.append(frame)
    drift = pd.concat(drift_parts, ignore_index=True) if drift_parts else pd.DataFrame(columns=DRIFT_COLUMNS)

    # --- plan -------------------------------------------------------------------------------------
    restore_update = contradicts & policy.restore
    restore_create = lacks & heal
    plan = pd.concat(
        [
            _plan(rows[create], "create", spec),
            _plan(rows[restore_create], "restore", spec),
            _plan(rows[update & ~linked], "update", spec, differences[update & ~linked]),
            _plan(
                rows[linked & ~conflicted],
                "link",
                spec,
                "Moodle " + spec.label + " " + rows.loc[linked, "moodle_id"].astype(str),
            ),
            _plan(rows[restore_update], "restore", spec, differences[restore_update]),
            pd.DataFrame(
                {"key": remove.index.map(str), "action": "remove", "detail": remove["moodle_id"].astype(str)}
            )
            if len(remove)
            else None,
            pd.DataFrame(
                {
                    "key": "moodle:" + act_on["moodle_id"].astype(str),
                    "action": only_action,
                    "detail": act_on["moodle_id"].astype(str),
                }
            )
            if len(act_on)
            else None,
        ],
        ignore_index=True,
    )
    report = PushReport(
        spec.entity,
        dry_run,
        plan,
        pushes=list(conflicts),
        skipped=skipped.reset_index(drop=True),
        unchanged=int(unchanged.sum()),
        drift=drift,
    )
    if dry_run:
        if len(drift):
            report.drift["action"] = report.drift["action"].map(
                lambda a: a if a in ("reported",) or a.startswith("kept") else f"would be {a}"
            )
            report.drift["healed"] = False
        return report

    # --- write ------------------------------------------------------------------------------------
    saved: dict[str, tuple[str, str | None]] = {}  # key -> (moodle_id, pushed fingerprint)
    removed: list[str] = []
    healed: dict[str, bool] = {}

    to_create = rows[create | restore_create]
    if len(to_create):
        results = spec.writes.create(client, to_create)
        if not spec.derived_identity and not all(r.ok for r in results):
            results = _recover_lost_creates(spec, client, to_create, results, held, ctx)
        for (idx, row), r in zip(to_create.iterrows(), results, strict=True):
            action = "restore" if restore_create[idx] else "create"
            mid = row["ident"] if spec.derived_identity else _new_id(r)
            report.pushes.append(_push(spec, row["key"], action, r, mid))
            if r.ok and mid:
                saved[row["key"]] = (mid, row["fingerprint"])
            if action == "restore":
                healed[row["key"]] = r.ok

    to_update = rows[update | restore_update | (linked & ~differs)]
    if len(to_update):
        writes = rows[update | restore_update]
        results = spec.writes.update(client, writes) if len(writes) and spec.writes.update else []
        if len(writes) and spec.writes.update is None:  # nothing to write: the fields are Moodle's
            results = [ItemResult(index=i, ok=True) for i in range(len(writes))]
        by_key = dict(zip(writes["key"], results, strict=True))
        for idx, row in to_update.iterrows():
            r = by_key.get(row["key"])
            action = "restore" if restore_update[idx] else "link" if linked[idx] else "update"
            if r is None:  # linked and equal: nothing to write
                r = ItemResult(index=0, ok=True)
            report.pushes.append(_push(spec, row["key"], action, r, row["moodle_id"]))
            if r.ok:
                saved[row["key"]] = (row["moodle_id"], row["fingerprint"])
            elif action == "link":  # linked but not updated: keep the link, write again next time
                saved[row["key"]] = (row["moodle_id"], None)
            if action == "restore":
                healed[row["key"]] = r.ok

    if len(remove) and spec.writes.remove is not None:
        results = spec.writes.remove(client, remove)
        for (key, obj), r in zip(remove.iterrows(), results, strict=True):
            owner = held.index[held["moodle_id"] == obj["moodle_id"]]
            report.pushes.append(
                _push(spec, str(owner[0]) if len(owner) else str(key), "remove", r, obj["moodle_id"])
            )
            if r.ok:
                removed += list(owner)
    # held entries whose object is gone and that no desired row keeps: forget them
    if spec.derived_identity and len(held):
        keep_keys = set(rows.loc[rows["moodle_id"].notna(), "key"]) | set(saved)
        gone = held[~held.index.isin(keep_keys) & ~held["moodle_id"].isin(actual.index)]
        removed += list(gone.index)
        moved_keys = rows.loc[
            rows["key"].isin(held.index) & (rows["key"].map(held["moodle_id"]) != rows["ident"]), "key"
        ]
        removed += [k for k in moved_keys if k not in saved]

    removed = [k for k in dict.fromkeys(removed) if k not in saved]
    if len(act_on):
        results = spec.writes.moodle_only[only_action](client, act_on)
        for obj_id, r in zip(act_on["moodle_id"].astype(str), results, strict=True):
            key = f"moodle:{obj_id}"
            report.pushes.append(_push(spec, key, only_action, r, obj_id))
            healed[key] = r.ok

    if len(drift):
        ok = drift["key"].map(healed)
        acted = ok.notna()
        drift.loc[acted, "healed"] = ok[acted].astype(bool)
        failed = ok.map(lambda v: v is False)
        drift.loc[failed, "action"] = drift["action"] + " (failed)"
        report.drift = drift

    saved_drift = report.drift
    if scope is not None:  # the drift of what was not read stays as the last reconciliation found it
        before = store.moodle.drift(tenant_id, spec.entity)
        if len(before):
            if spec.derived_identity:
                course = before["moodle_id"].astype(str).str.split(":").str[1]
                kept = before[~course.isin({str(c) for c in scope.courses})]
            else:
                kept = before[~before["key"].isin(scope.keys)]
            saved_drift = pd.concat([kept[DRIFT_COLUMNS], report.drift[DRIFT_COLUMNS]], ignore_index=True)
    source = rows.drop_duplicates("key").set_index("key")[["zoho_id", "zoho_module"]]
    store.moodle.save_reconciliation(
        tenant_id,
        spec.entity,
        maps=[
            {
                "key": k,
                "zoho_id": str(source.at[k, "zoho_id"]),
                "zoho_module": str(source.at[k, "zoho_module"]),
                "moodle_id": m,
                "pushed_fingerprint": fp,
            }
            for k, (m, fp) in saved.items()
        ],
        removed=removed,
        derived=spec.derived_identity,
        pushes=report.pushes + _skipped_pushes(spec, report.skipped),
        drift=saved_drift,
        run_id=run_id,
    )
    return report


def _describe(spec: EntitySpec, objects: pd.DataFrame) -> pd.Series:
    shown = [c for c in ("username", "email", "shortname", "fullname", "name") if c in objects]
    if spec.derived_identity:
        return (
            " (user "
            + objects["moodle_user_id"].astype(str)
            + ", course "
            + objects["moodle_course_id"].astype(str)
            + ", role "
            + objects["role_id"].astype(str)
            + ")"
        )
    if not shown:
        return pd.Series("", index=objects.index)
    return " (" + objects[shown[0]].astype(str) + ")"


def _drift(rows: pd.DataFrame, side: str, kind: str, detail: pd.Series | str, action: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": rows["key"],
            "moodle_id": rows["moodle_id"].astype(str),
            "side": side,
            "kind": kind,
            "detail": detail,
            "action": action,
            "healed": False,
        }
    )


def _plan(
    rows: pd.DataFrame, action: str, spec: EntitySpec, detail: pd.Series | str | None = None
) -> pd.DataFrame:
    if detail is None:
        label = next((c for c in ("username", "shortname", "name", "ident") if c in rows), None)
        detail = rows[label].astype(str) if label else ""
    return pd.DataFrame(
        {
            "key": rows["key"].to_numpy(),
            "action": action,
            "detail": pd.Series(detail).to_numpy() if not isinstance(detail, str) else detail,
        }
    )


def _new_id(r: ItemResult) -> str | None:
    if r.ok and isinstance(r.value, dict) and "id" in r.value:
        return str(int(r.value["id"]))
    return None


def _push(spec: EntitySpec, key: str, action: str, r: ItemResult, moodle_id: object) -> Push:
    return Push(
        "moodle",
        spec.entity,
        str(key),
        action,
        r.ok,
        remote_id=str(moodle_id) if moodle_id not in (None, "") and not pd.isna(moodle_id) else None,
        errorcode=r.errorcode,
        message=r.message,
    )


def _skipped_pushes(spec: EntitySpec, skipped: pd.DataFrame) -> list[Push]:
    """Each record the step could not use, for ``moodle_push_results`` (outcome ``skipped``, the
    reason as the message): "why has this student no account?" has an answer there."""
    return [
        Push("moodle", spec.entity, str(k), "skip", False, message=str(r), outcome="skipped")
        for k, r in skipped[["key", "reason"]].itertuples(index=False)
    ]


def _recover_lost_creates(
    spec: EntitySpec,
    client: MoodleClient,
    rows: pd.DataFrame,
    results: list[ItemResult],
    held: pd.DataFrame,
    ctx: Context,
) -> list[ItemResult]:
    """Creates Moodle refused may have happened already: a retried create whose first answer was
    lost. Moodle is read again (once), and an object holding a refused row's Zoho id as idnumber
    is taken as created. Without this the record would wait, unmapped, for the next run."""
    again = spec.read(client, rows, held, ctx)
    by_idnumber = {str(i): m for m, i in zip(again["moodle_id"], again["idnumber"], strict=True) if i}
    return [
        ItemResult(index=r.index, ok=True, value={"id": int(by_idnumber[z])})
        if not r.ok and z in by_idnumber
        else r
        for z, r in zip(rows["zoho_id"], results, strict=True)
    ]
