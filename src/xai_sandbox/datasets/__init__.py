"""Real data sets shipped with the package (no network), and the readers of tables a user
brings (CSV, Parquet)."""

from xai_sandbox.datasets.german_credit import GermanCredit, load_german_credit
from xai_sandbox.datasets.rows import schema_rows, value_code
from xai_sandbox.datasets.tables import iter_table, read_table

__all__ = ["GermanCredit", "iter_table", "load_german_credit", "read_table", "schema_rows",
           "value_code"]
