from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import box

from rasterflow.engine.build_gti_mosaic.query import apply_query, validate_query_syntax
from rasterflow.errors import InvalidParameterError


@pytest.fixture
def frame() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "location": ["a.tif", "b.tif", "c.tif", "d.tif", "e.tif"],
            "year": [2019, 2020, 2020, 2021, 2022],
            "cloud cover": [0.1, 0.5, 0.9, 0.2, 0.0],
            "clear": [True, False, False, True, True],
            "sensor": ["L8", "L8", "S2", "S2", "L9"],
            "datetime": pd.to_datetime(["2019-12-31", "2020-05-18", "2020-11-01", "2021-01-01",
                                        "2022-06-30"]),
        },
        geometry=[box(i, 0, i + 1, 1) for i in range(5)],
        crs="EPSG:4326",
    )


def _mask(frame, values) -> list[str]:
    return frame.loc[np.asarray(values, dtype=bool), "location"].tolist()


@pytest.mark.parametrize(
    "query, expected",
    [
        ("year > 2020", lambda f: f["year"] > 2020),
        ("year == 2020", lambda f: f["year"] == 2020),
        ("year != 2020", lambda f: f["year"] != 2020),
        ("year <= 2020", lambda f: f["year"] <= 2020),
        ("year >= 2020 and sensor == 'S2'", lambda f: (f["year"] >= 2020) & (f["sensor"] == "S2")),
        ("year < 2020 or sensor == \"L9\"", lambda f: (f["year"] < 2020) | (f["sensor"] == "L9")),
        ("not year > 2020", lambda f: ~(f["year"] > 2020)),
        ("(year > 2019) & ~(sensor == 'L8')", lambda f: (f["year"] > 2019) & ~(f["sensor"] == "L8")),
        ("(year == 2019) | (year == 2022)", lambda f: f["year"].isin([2019, 2022])),
        ("sensor in ['L8', 'L9']", lambda f: f["sensor"].isin(["L8", "L9"])),
        ("sensor not in ('L8',)", lambda f: ~f["sensor"].isin(["L8"])),
        ("year in [2020, 2022]", lambda f: f["year"].isin([2020, 2022])),
        ("`cloud cover` < 0.3", lambda f: f["cloud cover"] < 0.3),
        ("`cloud cover` <= 0.5 and `year` > 2019", lambda f: (f["cloud cover"] <= 0.5) & (f["year"] > 2019)),
        ("clear == True", lambda f: f["clear"]),
        ("clear == False and year >= 2020", lambda f: ~f["clear"] & (f["year"] >= 2020)),
        ("-year < -2020", lambda f: -f["year"] < -2020),
        ("datetime >= '2020-05-18'", lambda f: f["datetime"] >= pd.Timestamp("2020-05-18")),
        ("datetime < '2021-01-01T00:00:00'", lambda f: f["datetime"] < pd.Timestamp("2021-01-01")),
        ("year > 3000", lambda f: f["year"] > 3000),
    ],
)
def test_accepted_query_filters_rows(frame, query, expected):
    result = apply_query(frame, query)
    assert result["location"].tolist() == _mask(frame, expected(frame))
    assert isinstance(result, gpd.GeoDataFrame)
    assert result.crs == frame.crs


def test_query_on_plain_dataframe():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "x"]})
    assert apply_query(frame, "a > 1 and b == 'x'").index.tolist() == [2]


def test_validate_accepts_safe_query_without_columns():
    validate_query_syntax("anything > 1 and `other name` in ['x', 'y']")


@pytest.mark.parametrize(
    "query, why",
    [
        ("@year > 2020", "'@' variable"),
        ("year > @limit", "'@' variable"),
        ("len(sensor) > 1", "function calls"),
        ("__import__('os')", "function calls"),
        ("sensor.str.len() > 1", "function calls"),
        ("sensor.str == 'x'", "attribute access"),
        ("year.real > 1", "attribute access"),
        ("sensor[0] == 'L'", "indexing"),
        ("__class__ == 1", "dunder name"),
        ("`__class__` == 1", "dunder name"),
        ("year + 1 > 2020", "arithmetic"),
        ("year * 2 > 4000", "arithmetic"),
        ("year - 1 > 2020", "arithmetic"),
        ("year ** 2 > 1", "arithmetic"),
        ("year // 2 > 1", "arithmetic"),
        ("lambda: 1", "'Lambda' expressions"),
        ("year if clear else 0", "'IfExp' expressions"),
        ("[x for x in sensor]", "'ListComp' expressions"),
        ("{'a': 1}", "'Dict' expressions"),
        ("year ==", "malformed expression"),
        ("year > 1; year < 3", "malformed expression"),
        ("(year > 1", "malformed expression"),
        ("", "empty expression"),
        ("   ", "empty expression"),
        ("cloud_cover < 0.5", "unknown column 'cloud_cover'"),
        ("`cloud cover` < 0.5 and `no such` == 1", "unknown column 'no such'"),
    ],
)
def test_refused_query(frame, query, why):
    with pytest.raises(InvalidParameterError) as info:
        validate_query_syntax(query, frame.columns)
    assert info.value.param == "query"
    assert why in str(info.value)
    with pytest.raises(InvalidParameterError) as info:
        apply_query(frame, query)
    assert info.value.param == "query"
    assert why in str(info.value)


def test_unknown_column_not_checked_without_columns():
    validate_query_syntax("no_such_column > 1")


def test_uncomparable_types_raise_invalid_parameter(frame):
    with pytest.raises(InvalidParameterError, match="cannot be evaluated") as info:
        apply_query(frame, "year > 'abc'")
    assert info.value.param == "query"


@pytest.mark.parametrize(
    "template",
    [
        "__import__('pathlib').Path({path!r}).touch()",
        "year > 0 or __import__('pathlib').Path({path!r}).touch()",
        "sensor.to_csv({path!r}) == 1",
        "`sensor`.to_csv({path!r}) == 1",
    ],
)
def test_code_in_query_never_runs(frame, tmp_path, template):
    target = tmp_path / "pwned"
    query = template.format(path=str(target))
    with pytest.raises(InvalidParameterError):
        apply_query(frame, query)
    assert not target.exists()


# A backtick inside a string literal pairs with a later one, so the checker sees
# `'<placeholder>'` where pandas sees the whole expression between them.
SMUGGLED = "sensor == '`' or sensor.to_csv({path!r}) or '`' == sensor"


def test_backtick_in_string_literal_does_not_hide_a_call(frame, tmp_path):
    query = SMUGGLED.format(path=str(tmp_path / "pwned.csv"))
    with pytest.raises(InvalidParameterError, match="function calls") as info:
        validate_query_syntax(query, frame.columns)
    assert info.value.param == "query"


def test_backtick_in_string_literal_never_runs_code(frame, tmp_path):
    target = tmp_path / "pwned.csv"
    with pytest.raises(InvalidParameterError):
        apply_query(frame, SMUGGLED.format(path=str(target)))
    assert not target.exists()


def test_backtick_inside_string_literal_is_an_ordinary_value():
    frame = pd.DataFrame({"name": ["a`b", "c"]})
    assert apply_query(frame, "name == 'a`b'").index.tolist() == [0]
