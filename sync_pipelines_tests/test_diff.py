import hashlib
import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipelines import diff as diff_module
from sync_pipelines.diff import Status, diff, field_changes, fingerprint

COLS = ["first_name", "last_name", "email"]


def _incoming(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["zoho_id", *COLS, "invalid_reason"], dtype=object)
    return frame.astype(object).where(frame.notna(), None)


def _state(incoming: pd.DataFrame, deleted: tuple[str, ...] = ()) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "zoho_id": incoming["zoho_id"],
            "fingerprint": fingerprint(incoming, COLS),
            "deleted": incoming["zoho_id"].isin(deleted),
            "email": incoming["email"],
        }
    )


def test_fingerprint_matches_the_documented_format_recomputed_by_hand():
    row = {"zoho_id": "1", "first_name": "Amal", "last_name": None, "email": "a@school.example"}
    got = fingerprint(pd.DataFrame([row], dtype=object), COLS).iloc[0]
    text = "sp1" + "\x1eemail\x1fa@school.example" + "\x1efirst_name\x1fAmal" + "\x1elast_name\x1f\x00"
    assert got == hashlib.sha256(text.encode()).hexdigest()


def test_fingerprint_does_not_depend_on_column_order_or_string_dtype():
    frame = pd.DataFrame(
        {"first_name": ["عمر", "Ayşe"], "last_name": ["Haddad", None], "email": ["x@y.z", "q@r.s"]}
    )
    as_object = fingerprint(frame.astype(object), COLS)
    as_string = fingerprint(
        frame.astype("string")[["email", "last_name", "first_name"]], list(reversed(COLS))
    )
    assert as_object.tolist() == as_string.tolist()
    assert as_object.iloc[0] != as_object.iloc[1]


def test_missing_and_empty_string_are_different_values():
    frame = pd.DataFrame(
        {"first_name": [None, ""], "last_name": ["a", "a"], "email": ["b", "b"]}, dtype=object
    )
    fp = fingerprint(frame, COLS)
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
    state = _state(stored).assign(aux_fingerprint=fingerprint(stored, aux))
    incoming = stored.copy()
    incoming.loc[0, "student_moodle_id"] = "77"  # written back by the pipeline, or edited in Zoho
    incoming.loc[1, "last_name"] = "Dee"
    result = diff(incoming, state, fingerprint_columns=COLS, aux_columns=aux)
    by_id = result.records.set_index("zoho_id")
    assert by_id["sync_status"].to_dict() == {"1": "REFRESHED", "2": "UPDATED", "3": "UNCHANGED"}
    # Without a stored aux fingerprint (a warehouse from before it existed) the row is refreshed once.
    again = diff(stored, _state(stored), fingerprint_columns=COLS, aux_columns=aux)
    assert set(again.records["sync_status"]) == {"REFRESHED"}


# --- the native fingerprint module and its pure-Python twin ----------------------------------

_awkward_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates: tested on their own
    max_size=40,
)


def test_the_native_fingerprint_module_is_built_in_this_install():
    # `make install` compiles it (setup.py); without it every sync takes the slower Python path.
    assert diff_module._native_digests is not None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.none() | _awkward_text, st.none() | _awkward_text, st.none() | _awkward_text),
        max_size=30,
    )
)
def test_native_and_python_digests_agree_on_any_text(rows):
    frame = pd.DataFrame(rows, columns=COLS, dtype=object)
    frame = frame.astype(object).where(frame.notna(), None)
    native = diff_module.digests(frame, COLS)
    python = diff_module.python_digests(frame, COLS)
    assert native.shape == (len(rows), 32)
    assert native.tobytes() == python.tobytes()
    # And both are the documented text, hashed the plain way.
    for i, row in enumerate(rows):
        text = "sp1" + "".join(
            f"\x1e{c}\x1f" + ("\x00" if v is None else v) for c, v in sorted(zip(COLS, row, strict=True))
        )
        assert native[i].tobytes() == hashlib.sha256(text.encode()).digest()


def test_native_digests_of_long_values_strided_columns_and_str_subclasses():
    class Name(str):
        pass

    long_value = "ü" * 5000 + "x" * 70_000  # past the native module's first buffer, twice
    frame = pd.DataFrame(
        {
            "first_name": [long_value, Name("Amal"), "\x1d\x1e\x1f", None] * 3,
            "last_name": ["a", "", "عمر", "😀"] * 3,
            "email": [None] * 12,
        },
        dtype=object,
    )
    strided = frame.iloc[::2]  # columns that are views with a step
    for part in (frame, strided):
        assert diff_module.digests(part, COLS).tobytes() == diff_module.python_digests(part, COLS).tobytes()


def test_other_missing_markers_and_lone_surrogates_behave_as_in_python():
    as_string = pd.DataFrame(
        {"first_name": ["a", None], "last_name": ["b", "c"], "email": [None, "d"]}, dtype="string"
    )
    as_object = as_string.astype(object).where(as_string.notna(), None)
    # pd.NA is a missing value, as None is: the same fingerprints.
    assert fingerprint(as_string, COLS).tolist() == fingerprint(as_object, COLS).tolist()
    surrogate = pd.DataFrame({"first_name": ["\ud800"], "last_name": ["x"], "email": ["y"]}, dtype=object)
    with pytest.raises(UnicodeEncodeError):
        diff_module.digests(surrogate, COLS)
    with pytest.raises(UnicodeEncodeError):
        diff_module.python_digests(surrogate, COLS)


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
    assert by_id["fingerprint"].tolist() == fingerprint(stored, COLS).tolist()


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
