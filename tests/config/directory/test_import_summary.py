"""What `jiaoying import` and `sample-data` say they did: one sentence, naming only what happened."""

from __future__ import annotations

from config.directory.store import ImportResult


def result(**counts: int) -> ImportResult:
    zero = dict.fromkeys(
        ("units_created", "units_updated", "people_created", "people_updated", "responsibilities"), 0
    ) | dict.fromkeys(("devices_created", "devices_updated", "paths_moved"), 0)
    return ImportResult(**(zero | counts))  # type: ignore[arg-type]


def test_a_first_import_counts_what_it_created() -> None:
    said = str(result(units_created=1333, people_created=1666, devices_created=600, responsibilities_added=2666))
    assert said == "units: 1,333 created; people: 1,666 created; devices: 600 created; responsibilities: 2,666 added"


def test_an_update_names_the_removed_and_the_moved() -> None:
    said = str(result(people_updated=2, responsibilities_updated=2, responsibilities_removed=1, paths_moved=4))
    assert said == "people: 2 updated; responsibilities: 2 updated, 1 removed; 4 units moved under a new parent"


def test_nothing_to_do_says_so() -> None:
    assert str(result()) == "nothing changed"
