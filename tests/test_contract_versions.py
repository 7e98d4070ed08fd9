"""Schema contract versions: `ensure_table` creates, checks and evolves a table by its contract.

pyiceberg only (no Spark): each test has its own table in the module's catalog.
"""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa
import pytest

from wap import tables
from wap.contract import Contract
from wap.tables import CONTRACT_VERSION, ContractVersionError

COLUMNS = {"id": "string", "d": "date", "amount": "decimal(12,2)", "channel": "string", "n": "int"}


def contract(version: int, columns: dict[str, str] | None = None, partition_column: str = "d") -> Contract:
    return Contract(version=version, partition_column=partition_column, columns=dict(columns or COLUMNS))


def changed(drop: tuple[str, ...] = (), **columns: str) -> dict[str, str]:
    """COLUMNS with `drop` removed and `columns` added or retyped."""
    return {**{k: v for k, v in COLUMNS.items() if k not in drop}, **columns}


@pytest.fixture
def table_id(data_dir, request) -> str:
    """A table of its own for each test, in the module's catalog."""
    return "contracts." + re.sub(r"\W+", "_", request.node.name).strip("_")


def state(identifier: str) -> tuple[str, int, dict[str, str], dict[str, str]]:
    """What must not move when a contract is refused: metadata file, schema, properties."""
    table = tables.load_table(identifier)
    schema = {f.name: tables.type_name(f.field_type) for f in table.schema().fields}
    return table.metadata_location, table.schema().schema_id, schema, dict(table.properties)


def test_create_records_the_contract_version(table_id):
    table = tables.ensure_table(table_id, contract(3))
    assert table.properties[CONTRACT_VERSION] == "3"
    assert {f.name: tables.type_name(f.field_type) for f in table.schema().fields} == COLUMNS
    assert not any(f.required for f in table.schema().fields)
    (field,) = table.spec().fields
    assert table.schema().find_column_name(field.source_id) == "d"
    loaded = tables.load_table(table_id)
    assert loaded.properties[CONTRACT_VERSION] == "3"
    assert loaded.metadata.metadata_log == []  # made with it, not set by a second commit


def test_an_unchanged_contract_changes_nothing(table_id):
    tables.ensure_table(table_id, contract(1))
    before = state(table_id)
    tables.ensure_table(table_id, contract(1))
    reordered = dict(reversed(COLUMNS.items()))  # column order is not part of the contract
    table = tables.ensure_table(table_id, contract(1, reordered))
    assert state(table_id) == before
    assert table.current_snapshot() is None
    assert len(tables.load_table(table_id).metadata.metadata_log) == 0


def test_a_change_without_a_version_bump_is_refused_and_named(table_id):
    tables.ensure_table(table_id, contract(1))
    before = state(table_id)
    columns = changed(drop=("channel",), coupon="string", amount="string")
    with pytest.raises(ContractVersionError) as refused:
        tables.ensure_table(table_id, contract(1, columns))
    message = str(refused.value)
    for words in (
        "added column coupon (string)",
        "removed column channel",
        "column amount: decimal(12,2) -> string",
        f"meta.contract.version in expectations/{table_id}.json to 2",
    ):
        assert words in message
    assert state(table_id) == before


def test_a_bumped_contract_adds_a_column_in_one_commit(table_id):
    table = tables.ensure_table(table_id, contract(1))
    table.append(
        pa.table(
            {
                "id": ["a"],
                "d": [dt.date(2024, 1, 1)],
                "amount": pa.array([1], pa.decimal128(12, 2)),
                "channel": ["web"],
                "n": pa.array([7], pa.int32()),
            }
        )
    )
    before = tables.load_table(table_id)
    evolved = tables.ensure_table(table_id, contract(2, changed(coupon="string")))
    after = tables.load_table(table_id)
    assert after.properties[CONTRACT_VERSION] == "2"
    coupon = after.schema().find_field("coupon")
    assert tables.type_name(coupon.field_type) == "string" and not coupon.required
    assert after.schema().schema_id != before.schema().schema_id
    # One commit: one new metadata file with both the schema and the property.
    assert len(after.metadata.metadata_log) == len(before.metadata.metadata_log) + 1
    assert after.metadata.metadata_log[-1].metadata_file == before.metadata_location
    assert evolved.schema() == after.schema()  # the returned table is the evolved one
    assert after.scan().to_arrow().to_pylist()[0]["coupon"] is None  # old rows read as null
    tables.ensure_table(table_id, contract(2, changed(coupon="string")))  # and now it matches
    assert tables.load_table(table_id).metadata_location == after.metadata_location


def test_a_bumped_contract_removes_a_column(table_id):
    tables.ensure_table(table_id, contract(1))
    tables.ensure_table(table_id, contract(2, changed(drop=("channel",))))
    table = tables.load_table(table_id)
    assert "channel" not in {f.name for f in table.schema().fields}
    assert table.properties[CONTRACT_VERSION] == "2"


@pytest.mark.parametrize(
    ("column", "old", "new"),
    [("n", "int", "bigint"), ("amount", "decimal(12,2)", "decimal(18,2)"), ("f", "float", "double")],
)
def test_a_bumped_contract_may_widen_a_type(table_id, column, old, new):
    tables.ensure_table(table_id, contract(1, changed(**{column: old})))
    tables.ensure_table(table_id, contract(2, changed(**{column: new})))
    table = tables.load_table(table_id)
    assert tables.type_name(table.schema().find_field(column).field_type) == new
    assert table.properties[CONTRACT_VERSION] == "2"


@pytest.mark.parametrize(
    ("column", "new"),
    [
        ("id", "bigint"),
        ("n", "string"),
        ("amount", "decimal(10,2)"),  # narrower
        ("amount", "decimal(14,4)"),  # another scale (pyiceberg itself would let it through)
        ("d", "timestamp"),
    ],
)
def test_a_bumped_contract_may_not_change_a_type_otherwise(table_id, column, new):
    tables.ensure_table(table_id, contract(1))
    before = state(table_id)
    # The added column must not be added either: all or nothing.
    with pytest.raises(ContractVersionError) as refused:
        tables.ensure_table(table_id, contract(2, changed(coupon="string", **{column: new})))
    message = str(refused.value)
    assert f"column {column} cannot change type from {COLUMNS[column]} to {new}" in message
    assert "add a new column instead" in message
    assert state(table_id) == before


def test_the_partition_column_cannot_be_removed_or_replaced(table_id):
    tables.ensure_table(table_id, contract(1))
    before = state(table_id)
    with pytest.raises(ContractVersionError, match="column d is the partition column and cannot be removed"):
        tables.ensure_table(table_id, contract(2, changed(drop=("d",), coupon="string")))
    with pytest.raises(ContractVersionError, match="partitioned by d, not id"):
        tables.ensure_table(table_id, contract(2, partition_column="id"))
    assert state(table_id) == before


def test_a_contract_older_than_the_table_is_refused(table_id):
    tables.ensure_table(table_id, contract(3))
    before = state(table_id)
    for columns in (COLUMNS, changed(coupon="string")):
        with pytest.raises(ContractVersionError) as refused:
            tables.ensure_table(table_id, contract(2, columns))
        assert "version 2, older than the table's version 3" in str(refused.value)
    assert state(table_id) == before


def test_a_bump_alone_sets_the_version(table_id):
    tables.ensure_table(table_id, contract(1))
    _, schema_id, schema, _ = state(table_id)
    tables.ensure_table(table_id, contract(4))
    _, schema_id_after, schema_after, properties = state(table_id)
    assert (schema_id_after, schema_after, properties[CONTRACT_VERSION]) == (schema_id, schema, "4")


def test_concurrent_runs_with_a_bumped_contract_evolve_the_table_once(table_id):
    import threading

    tables.ensure_table(table_id, contract(1))
    errors = []

    def run() -> None:
        try:
            tables.ensure_table(table_id, contract(2, changed(coupon="string")))
        except Exception as exc:  # a loser must re-check the evolved table, not fail
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    table = tables.load_table(table_id)
    assert len(table.metadata.metadata_log) == 1 and len(table.schemas()) == 2
    assert table.properties[CONTRACT_VERSION] == "2"


def test_a_table_made_before_contract_versions_is_version_1(table_id):
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import DateType, NestedField, StringType

    catalog = tables.get_catalog()
    catalog.create_namespace_if_not_exists("contracts")
    catalog.create_table(  # as the first release made it: no version property
        table_id,
        Schema(NestedField(1, "id", StringType(), required=False), NestedField(2, "d", DateType(), required=False)),
        partition_spec=PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "d")),
    )
    columns = {"id": "string", "d": "date"}
    tables.ensure_table(table_id, contract(1, columns))
    assert CONTRACT_VERSION not in tables.load_table(table_id).properties
    with pytest.raises(ContractVersionError, match="keeps version 1"):
        tables.ensure_table(table_id, contract(1, {**columns, "coupon": "string"}))
    tables.ensure_table(table_id, contract(2, {**columns, "coupon": "string"}))
    assert tables.load_table(table_id).properties[CONTRACT_VERSION] == "2"


def test_schema_changes_lists_each_difference():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DecimalType, NestedField, StringType

    schema = Schema(
        NestedField(1, "id", StringType(), required=False),
        NestedField(2, "amount", DecimalType(12, 2), required=False),
        NestedField(3, "channel", StringType(), required=False),
    )
    wanted = contract(2, {"id": "string", "amount": "string", "coupon": "string"}, partition_column="id")
    assert sorted(map(str, tables.schema_changes(schema, wanted))) == [
        "added column coupon (string)",
        "column amount: decimal(12,2) -> string",
        "removed column channel",
    ]
    assert (
        tables.schema_changes(schema, contract(2, {"channel": "string", "amount": "decimal(12,2)", "id": "string"}))
        == []
    )
