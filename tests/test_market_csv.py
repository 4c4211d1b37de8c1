"""The csv provider: the file format, the replay, and the bundled sample."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from papertrader.config import Settings
from papertrader.market.csvfile import SAMPLE, CsvFormatError, read_series
from papertrader.market.providers import ProviderError, provider_from_settings
from papertrader.market.providers.csv_replay import CsvReplayProvider

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
FILE = """symbol,time,open,high,low,close,volume
AAPL,2026-01-05,10.00,11.00,9.50,10.50,100
MSFT,2026-01-05,20.00,21.00,19.00,20.50,200
AAPL,2026-01-02,9.00,10.00,8.50,9.50,90
AAPL,2026-01-06T14:30:00Z,10.50,12.00,10.00,11.75,110
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_each_interval_serves_the_next_row_and_loops_at_the_end(tmp_path: Path) -> None:
    provider = CsvReplayProvider(write(tmp_path, FILE))
    closes = []
    for i in range(4):
        start = T0 + timedelta(seconds=5 * i)
        bars = provider.fetch(["AAPL", "MSFT", "TSLA"], start, {})
        assert set(bars) == {"AAPL", "MSFT"}  # TSLA is not in the file: left out
        assert bars["AAPL"].time == start  # the interval's time, the row's prices
        closes.append(bars["AAPL"].close)
    assert closes == [Decimal("9.50"), Decimal("10.50"), Decimal("11.75"), Decimal("9.50")]
    assert provider.loops == {"AAPL": 1, "MSFT": 3}
    history = provider.history()
    assert len(history) == 4
    assert min(q.time for q in history) == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert datetime(2026, 1, 6, 14, 30, tzinfo=timezone.utc) in {q.time for q in history}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sym,time,open\nAAPL,2026-01-01,1\n", "line 1: the header"),
        (FILE + "AAPL,2026-13-01,1,1,1,1,1\n", "line 6: time"),
        (FILE + "AAPL,2026-02-01,1.0,0.5,0.4,1.0,1\n", "line 6: prices are inconsistent"),
        (FILE + "AAPL,2026-02-01,1e3,1,1,1,1\n", "line 6: open"),
        (FILE + "AAPL,2026-02-01,1,1,1,1,-5\n", "line 6: volume"),
        (FILE + "AAPL,2026-02-01,1,1,1\n", "line 6: expected 7 fields"),
        (FILE + "AAPL,2026-01-05,1,1,1,1,1\n", "two bars"),
    ],
)
def test_a_malformed_file_names_the_line(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(CsvFormatError, match=problem):
        read_series(write(tmp_path, text))
    with pytest.raises(ProviderError, match=problem):
        CsvReplayProvider(write(tmp_path, text))


def test_the_sample_fills_every_view_for_the_default_assets() -> None:
    series = read_series(SAMPLE)
    assert set(series) == set(Settings().assets)
    for bars in series.values():
        days = [bar.time.date() for bar in bars]
        assert len(days) >= 260 and len({(d.year, d.month) for d in days}) >= 12


def test_the_sample_is_what_the_script_makes(tmp_path: Path) -> None:
    out = tmp_path / "sample.csv"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample_csv.py"), "--output", str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_settings_choose_the_provider(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    chosen = provider_from_settings(Settings(market_provider="csv", market_csv_path=path))
    assert isinstance(chosen, CsvReplayProvider) and chosen.path == path
    sample = provider_from_settings(Settings(market_provider="csv"))
    assert isinstance(sample, CsvReplayProvider) and sample.path == SAMPLE
    with pytest.raises(ProviderError, match="cannot be read"):
        provider_from_settings(Settings(market_provider="csv", market_csv_path=tmp_path / "no"))
    assert "abc123" not in repr(Settings(market_provider="http", market_api_key="abc123"))
