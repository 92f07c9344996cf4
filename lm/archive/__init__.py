"""The archive of run records, by concern: `from lm import archive` gives all of it.

    records.py   write once, read back, find, group into series (the JSON files)
    verdict.py   the verdict rules (a numbered list in its docstring) and the budgeted forecast
    report.py    the list, one record, report.md with tables, plots and the backtest
    replay.py    the loop re-decided in the order it ran, seeing only the records before each
"""

from lm.archive.records import (  # noqa: F401
    COMPARATORS, DEFAULT_ARCHIVE, SCHEMA, VERDICTS, ArchiveWarning, created_order, eval_noise,
    find_record, finite, group_series, is_main_process, load_records, lower_is_better, meets,
    new_id, point_key, seed_noise, series_key, series_points, write_record)
from lm.archive.verdict import (  # noqa: F401
    BUDGET_FACTOR, CONFIDENCE, decide_verdict,
    seed_band, trend_of)
from lm.archive.report import (  # noqa: F401
    backtests, format_backtests, format_list, format_show, plot_backtests, plot_series,
    predictions_table, report, report_table, summary_row)
