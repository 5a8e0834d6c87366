import hashlib
import json

import pandas as pd
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipelines import diff as diff_module
from sync_pipelines.diff import Status, diff, field_changes, fingerprint, mirror_fingerprint

COLS = ["first_name", "last_name", "email"]


def _incoming(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["zoho_id", *COLS, "invalid_reason"], dtype=object)
    return frame.astype(object).where(frame.notna(), None)


def _state(incoming: pd.DataFrame, deleted: tuple[str, ...] = ()) -> pd.DataFrame:
    """What the warehouse hands the diff: fingerprints in the current format (sp2, version 2)."""
    return pd.DataFrame(
        {
            "zoho_id": incoming["zoho_id"],
            "fingerprint": mirror_fingerprint(incoming, COLS),
            "fingerprint_version": 2,
            "deleted": incoming["zoho_id"].isin(deleted),
            "email": incoming["email"],
        }
    )


def _legacy_state(incoming: pd.DataFrame) -> pd.DataFrame:
    """A warehouse fingerprinted before the version was stored: sp1 text, version NULL."""
    state = _state(incoming)
    state["fingerprint"] = fingerprint(incoming, COLS)
    state["fingerprint_version"] = None
    return state


def test_mirror_fingerprint_matches_the_documented_format_recomputed_by_hand():
    row = {"zoho_id": "1", "first_name": "Amal", "last_name": None, "email": "a@school.example"}
    got = mirror_fingerprint(pd.DataFrame([row], dtype=object), COLS).iloc[0]
    seed = xxhash.xxh3_64_intdigest(b"sp2\x1eemail\x1efirst_name\x1elast_name")
    text = "a@school.example\x1fAmal\x1f\x00"
    assert got == xxhash.xxh3_128_hexdigest(text.encode(), seed)
    # The layout is in the seed: the same values under other column names differ.
    renamed = pd.DataFrame([row], dtype=object).rename(columns={"email": "e_mail"})
    assert mirror_fingerprint(renamed, ["first_name", "last_name", "e_mail"]).iloc[0] != got


def test_pushed_fingerprint_stays_the_sp1_format_recomputed_by_hand():
    row = {"zoho_id": "1", "first_name": "Amal", "last_name": None, "email": "a@school.example"}
    got = fingerprint(pd.DataFrame([row], dtype=object), COLS).iloc[0]
    text = "sp1" + "\x1eemail\x1fa@school.example" + "\x1efirst_name\x1fAmal" + "\x1elast_name\x1f\x00"
    assert got == hashlib.sha256(text.encode()).hexdigest()


def test_fingerprint_does_not_depend_on_column_order_or_string_dtype():
    frame = pd.DataFrame(
        {"first_name": ["عمر", "Ayşe"], "last_name": ["Haddad", None], "email": ["x@y.z", "q@r.s"]}
    )
    for method in (fingerprint, mirror_fingerprint):
        as_object = method(frame.astype(object), COLS)
        as_string = method(frame.astype("string")[["email", "last_name", "first_name"]], list(reversed(COLS)))
        assert as_object.tolist() == as_string.tolist()
        assert as_object.iloc[0] != as_object.iloc[1]


def test_missing_and_empty_string_are_different_values():
    frame = pd.DataFrame(
        {"first_name": [None, ""], "last_name": ["a", "a"], "email": ["b", "b"]}, dtype=object
    )
    for method in (fingerprint, mirror_fingerprint):
        fp = method(frame, COLS)
        assert fp.iloc[0] != fp.iloc[1]


def test_every_status_with_reasons_and_field_changes():
    stored = _incoming(
        [
            {"zoho_id": "1", "first_name": "Amal", "last_name": "Haddad", "email": "amal@s.e"},
            {"zoho_id": "2", "first_name": "Omar", "last_name": "Nasser", "email": "omar@s.e"},
            {"zoho_id": "3", "first_name": "Lina", "last_name": "Saleh", "email": "lina@s.e"},
        ]
    )
    incoming = _incoming(
        [
            {"zoho_id": "1", "first_name": "Amal", "last_name": "Haddad", "email": "amal@s.e"},
            {"zoho_id": "2", "first_name": "Omar", "last_name": "Al-Nasser", "email": "omar@s.e"},
            {"zoho_id": "4", "first_name": "Sara", "last_name": "Kaya", "email": "sara@s.e"},
            {
                "zoho_id": "5",
                "first_name": None,
                "last_name": "X",
                "email": "x@s.e",
                "invalid_reason": "First_Name: required",
            },
            {"zoho_id": "6", "first_name": "Yusuf", "last_name": "Demir", "email": "amal@s.e"},
            {"zoho_id": "7", "first_name": "Ali", "last_name": "Veli", "email": "ali@s.e"},
        ]
    )
    result = diff(
        incoming,
        _state(stored),
        fingerprint_columns=COLS,
        deleted_ids=["3"],
        natural_key=["email"],
    )
    by_id = result.records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {
        "1": "UNCHANGED",
        "2": "UPDATED",
        "4": "NEW",
        "5": "INVALID",
        "6": "INVALID",
        "7": "NEW",
        "3": "DELETED",
    }
    # INVALID records are kept, and what happened to their stored row is said too.
    assert by_id["change"].to_dict() == {
        "1": "UNCHANGED",
        "2": "UPDATED",
        "4": "NEW",
        "5": "NEW",
        "6": "NEW",
        "7": "NEW",
        "3": "DELETED",
    }
    assert by_id.loc["5", "sync_reason"] == "First_Name: required"
    assert by_id.loc["6", "sync_reason"] == "duplicate email 'amal@s.e': already on 1"
    assert json.loads(by_id.loc["6", "findings"]) == [
        {"rule": "duplicate_natural_key", "field": "email", "value": "amal@s.e", "holder": "1"}
    ]
    assert result.counts() == {
        "NEW": 2,
        "UNCHANGED": 1,
        "UPDATED": 1,
        "REFRESHED": 0,
        "INVALID": 2,
        "DELETED": 1,
    }

    updated = result.of(Status.UPDATED).set_index("zoho_id")
    changes = field_changes(updated, stored.set_index("zoho_id"), COLS)
    assert changes.to_dict("records") == [
        {"zoho_id": "2", "field": "last_name", "old": "Nasser", "new": "Al-Nasser"}
    ]


def test_deletion_wins_over_a_fetched_copy_and_unknown_deletions_are_ignored():
    stored = _incoming([{"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"}])
    result = diff(stored, _state(stored), fingerprint_columns=COLS, deleted_ids=["1", "999"])
    assert result.records[["zoho_id", "sync_status"]].to_dict("records") == [
        {"zoho_id": "1", "sync_status": "DELETED"}
    ]


def test_a_deleted_record_that_comes_back_is_new_and_two_new_duplicates_keep_the_older():
    stored = _incoming([{"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"}])
    incoming = _incoming(
        [
            {"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"},
            {"zoho_id": "9", "first_name": "C", "last_name": "D", "email": "same@b.c"},
            {"zoho_id": "8", "first_name": "E", "last_name": "F", "email": "same@b.c"},
        ]
    )
    result = diff(incoming, _state(stored, deleted=("1",)), fingerprint_columns=COLS, natural_key=["email"])
    by_id = result.records.set_index("zoho_id")
    assert by_id.loc["1", "sync_status"] == "NEW"
    assert by_id.loc["8", "sync_status"] == "NEW"
    assert (by_id.loc["9", "sync_status"], by_id.loc["9", "sync_reason"]) == (
        "INVALID",
        "duplicate email 'same@b.c': already on 8",
    )


@pytest.mark.parametrize("n", [0, 1, 1000])
def test_diff_of_identical_state_is_all_unchanged(n: int):
    frame = _incoming(
        [{"zoho_id": str(i), "first_name": f"n{i}", "last_name": "x", "email": f"{i}@s.e"} for i in range(n)]
    )
    result = diff(frame, _state(frame), fingerprint_columns=COLS, natural_key=["email"])
    assert result.counts()["UNCHANGED"] == n
    assert sum(result.counts().values()) == n


def test_a_change_outside_the_business_fields_is_refreshed_not_updated():
    """Bookkeeping, formula fields, Modified_Time and findings have a fingerprint of their own: a
    change there alone rewrites the row (REFRESHED) and is no business change."""
    aux = ["student_moodle_id", "zoho_modified_time", "findings"]
    rows = [
        {"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"},
        {"zoho_id": "2", "first_name": "C", "last_name": "D", "email": "c@d.e"},
        {"zoho_id": "3", "first_name": "E", "last_name": "F", "email": "e@f.g"},
    ]
    stored = _incoming(rows).assign(
        student_moodle_id=None, zoho_modified_time="2026-01-01T00:00:00Z", findings=None
    )
    state = _state(stored).assign(aux_fingerprint=mirror_fingerprint(stored, aux))
    incoming = stored.copy()
    incoming.loc[0, "student_moodle_id"] = "77"  # written back by the pipeline, or edited in Zoho
    incoming.loc[1, "last_name"] = "Dee"
    result = diff(incoming, state, fingerprint_columns=COLS, aux_columns=aux)
    by_id = result.records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {"1": "REFRESHED", "2": "UPDATED", "3": "UNCHANGED"}
    # Without a stored aux fingerprint (a warehouse from before it existed) the row is refreshed once.
    again = diff(stored, _state(stored), fingerprint_columns=COLS, aux_columns=aux)
    assert set(again.records["sync_status"]) == {"REFRESHED"}


# --- the two formats, recomputed the plain way ----------------------------------------------------

_awkward_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates: tested on their own
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | _awkward_text, st.none() | _awkward_text, st.none() | _awkward_text),
        max_size=30,
    )
)
def test_both_formats_are_the_documented_text_hashed_the_plain_way(rows):
    frame = pd.DataFrame(rows, columns=COLS, dtype=object)
    frame = frame.astype(object).where(frame.notna(), None)
    sp2 = diff_module.mirror_digests(frame, COLS)
    sp1 = diff_module.python_digests(frame, COLS)
    assert sp2.shape == (len(rows), 16)
    assert sp1.shape == (len(rows), 32)
    seed = diff_module.sp2_seed(COLS)
    for i, row in enumerate(rows):
        pairs = sorted(zip(COLS, row, strict=True))
        text = "\x1f".join("\x00" if v is None else v for _, v in pairs)
        assert sp2[i].tobytes() == xxhash.xxh3_128_digest(text.encode(), seed)
        text = "sp1" + "".join(f"\x1e{c}\x1f" + ("\x00" if v is None else v) for c, v in pairs)
        assert sp1[i].tobytes() == hashlib.sha256(text.encode()).digest()


def test_mirror_digests_of_long_values_strided_columns_str_subclasses_and_many_batches(monkeypatch):
    class Name(str):
        pass

    long_value = "ü" * 5000 + "x" * 70_000
    frame = pd.DataFrame(
        {
            "first_name": [long_value, Name("Amal"), "\x1d\x1e", None] * 3,
            "last_name": ["a", "", "عمر", "😀"] * 3,
            "email": [None] * 12,
        },
        dtype=object,
    )
    seed = diff_module.sp2_seed(COLS)
    expected = [
        xxhash.xxh3_128_digest("\x1f".join("\x00" if v is None else v for v in r).encode(), seed)
        for r in frame[sorted(COLS)].itertuples(index=False)
    ]
    monkeypatch.setattr(diff_module, "_SP2_BATCH", 5)  # batches of 5: the last one short
    for part, want in ((frame, expected), (frame.iloc[::2], expected[::2])):
        got = diff_module.mirror_digests(part, COLS)
        assert [bytes(r) for r in got] == want


def test_other_missing_markers_and_lone_surrogates_behave_as_in_python():
    as_string = pd.DataFrame(
        {"first_name": ["a", None], "last_name": ["b", "c"], "email": [None, "d"]}, dtype="string"
    )
    as_object = as_string.astype(object).where(as_string.notna(), None)
    # pd.NA, NaN and NaT are missing values, as None is: the same fingerprints.
    for method in (fingerprint, mirror_fingerprint):
        assert method(as_string, COLS).tolist() == method(as_object, COLS).tolist()
    marked = as_object.copy()
    marked.loc[0, "email"], marked.loc[1, "first_name"] = float("nan"), pd.NaT
    assert mirror_fingerprint(marked, COLS).tolist() == mirror_fingerprint(as_object, COLS).tolist()
    surrogate = pd.DataFrame({"first_name": ["\ud800"], "last_name": ["x"], "email": ["y"]}, dtype=object)
    with pytest.raises(UnicodeEncodeError):
        diff_module.mirror_digests(surrogate, COLS)
    with pytest.raises(UnicodeEncodeError):
        diff_module.python_digests(surrogate, COLS)


def test_the_diff_has_no_native_module_of_its_own():
    # The fingerprints come from pyarrow and xxhash: nothing is compiled at install.
    import sync_pipelines

    package = __import__("pathlib").Path(sync_pipelines.__file__).parent
    assert not [p.name for p in package.rglob("*") if p.suffix in {".c", ".so", ".pyd"}]


# --- a warehouse fingerprinted the old way ------------------------------------------------------


def test_rows_fingerprinted_the_old_way_are_re_fingerprinted_once_without_a_false_update():
    stored = _incoming(
        [
            {"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"},
            {"zoho_id": "2", "first_name": "C", "last_name": "D", "email": "c@d.e"},
            {"zoho_id": "3", "first_name": "E", "last_name": "F", "email": "e@f.g"},
        ]
    )
    state = _legacy_state(stored)
    state.loc[2, "fingerprint_version"] = 2  # one row already in the new format
    state.loc[2, "fingerprint"] = mirror_fingerprint(stored, COLS).iloc[2]
    incoming = stored.copy()
    incoming.loc[1, "last_name"] = "D-edited"
    result = diff(incoming, state, fingerprint_columns=COLS)
    by_id = result.records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {"1": "UNCHANGED", "2": "UPDATED", "3": "UNCHANGED"}
    assert list(result.refingerprinted) == ["1"]
    # Every record leaves with its sp2 fingerprint: the next diff is in sp2 and finds nothing.
    assert by_id["fingerprint"].tolist() == mirror_fingerprint(incoming, COLS).tolist()
    again = _state(incoming)
    assert diff(incoming, again, fingerprint_columns=COLS).counts()["UNCHANGED"] == 3


def test_legacy_aux_fingerprints_are_compared_in_their_format_too():
    aux, business = ["email"], ["first_name", "last_name"]
    stored = _incoming([{"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"}])
    state = _legacy_state(stored)
    state["fingerprint"] = fingerprint(stored, business)
    state["aux_fingerprint"] = fingerprint(stored, aux)
    same = diff(stored, state, fingerprint_columns=business, aux_columns=aux)
    assert same.records["sync_status"].tolist() == ["UNCHANGED"]
    assert list(same.refingerprinted) == ["1"]
    assert same.records["aux_fingerprint"].iloc[0] == mirror_fingerprint(stored, aux).iloc[0]
    moved = stored.assign(email="new@b.c")
    got = diff(moved, state, fingerprint_columns=business, aux_columns=aux)
    assert got.records["sync_status"].tolist() == ["REFRESHED"]
    assert list(got.refingerprinted) == []


def test_unchanged_records_keep_the_stored_fingerprint_text_and_others_get_fresh_ones():
    stored = _incoming(
        [
            {"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"},
            {"zoho_id": "2", "first_name": "C", "last_name": "D", "email": "c@d.e"},
        ]
    )
    state = _state(stored)
    # A stored fingerprint of another format is never taken for a match: the record is UPDATED.
    state.loc[1, "fingerprint"] = "legacy-md5-0123"
    result = diff(stored, state, fingerprint_columns=COLS)
    by_id = result.records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {"1": "UNCHANGED", "2": "UPDATED"}
    assert by_id["fingerprint"].tolist() == mirror_fingerprint(stored, COLS).tolist()


def test_a_stored_state_holding_an_id_twice_is_refused_not_guessed_at():
    stored = _incoming([{"zoho_id": "1", "first_name": "A", "last_name": "B", "email": "a@b.c"}])
    state = pd.concat([_state(stored), _state(stored)], ignore_index=True)
    with pytest.raises(ValueError, match="twice"):
        diff(stored, state, fingerprint_columns=COLS)
    # A deleted copy beside the live one is no conflict: only live records are matched.
    state.loc[1, "deleted"] = True
    assert diff(stored, state, fingerprint_columns=COLS).counts()["UNCHANGED"] == 1


@pytest.mark.parametrize(
    "ids",
    [
        ["12", "012"],  # a leading zero: another id
        ["12", "１２"],  # full-width digits: another id
        ["12", "+12"],
        ["12", "1_2"],
        ["12", " 12"],
        ["5843017000000100056", "abc"],
    ],
)
def test_ids_that_read_as_the_same_number_stay_different_records(ids):
    stored = _incoming([{"zoho_id": ids[0], "first_name": "A", "last_name": "B", "email": "a@b.c"}])
    incoming = _incoming([{"zoho_id": i, "first_name": "A", "last_name": "B", "email": "a@b.c"} for i in ids])
    by_id = diff(incoming, _state(stored), fingerprint_columns=COLS).records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {ids[0]: "UNCHANGED", ids[1]: "NEW"}
