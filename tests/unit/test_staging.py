"""associate.staging: staged files appear whole or not at all, and read back as written."""

from __future__ import annotations

import pandas as pd
import pytest

from associate import staging


@pytest.fixture(autouse=True)
def staging_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ASSOCIATE_STAGING_BASE", "file://" + str(tmp_path / "staging"))
    return tmp_path / "staging"


EMPTY = pd.DataFrame({"key": pd.Series([], dtype="str"), "n": pd.Series([], dtype="int64"),
                      "note": pd.Series([], dtype="str")})


def test_frame_writer_appends_frames_into_one_file():
    path = staging.run_path("manual__2026-01-01T00:00:00+00:00", "changes", "rows.parquet")
    with staging.FrameWriter(path, EMPTY) as sink:
        sink.write(pd.DataFrame({"note": [None, "b"], "n": [1, 2], "key": ["k1", "k2"]}))
        sink.write(EMPTY)
        # A slice whose text column is all missing still fits the file's schema.
        sink.write(pd.DataFrame({"key": ["k3"], "n": [3], "note": pd.Series([None], dtype=object)}))
        assert not path.exists()  # nothing visible until the block ends
    assert sink.rows == 3
    back = staging.read_frame(sink.uri)
    assert list(back.columns) == ["key", "n", "note"]
    assert back["key"].tolist() == ["k1", "k2", "k3"] and back["n"].tolist() == [1, 2, 3]
    assert back["note"].isna().tolist() == [True, False, True]


def test_frame_writer_without_rows_stages_an_empty_frame():
    with staging.FrameWriter(staging.run_path("r", "empty.parquet"), EMPTY) as sink:
        pass
    back = staging.read_frame(sink.uri)
    assert back.empty and list(back.columns) == ["key", "n", "note"]


def test_frame_writer_leaves_nothing_behind_when_the_block_fails():
    path = staging.run_path("r", "broken.parquet")
    with pytest.raises(RuntimeError):
        with staging.FrameWriter(path, EMPTY) as sink:
            sink.write(pd.DataFrame({"key": ["k1"], "n": [1], "note": ["a"]}))
            raise RuntimeError("killed mid-stage")
    assert not path.exists()
    assert not list(path.parent.iterdir())  # no partial file either
