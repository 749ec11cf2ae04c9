"""Deployment settings: Airflow's [associate] section first, the ASSOCIATE_* variable as fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from associate import config
from associate.exceptions import ConfigurationError, PermanentError


def test_airflow_setting_wins_over_the_plain_variable(monkeypatch):
    monkeypatch.setenv("ASSOCIATE_REPORTS_DIR", "/from/fallback")
    assert config.reports_dir() == Path("/from/fallback")
    monkeypatch.setenv("AIRFLOW__ASSOCIATE__REPORTS_DIR", "/from/airflow")
    assert config.reports_dir() == Path("/from/airflow")


def test_defaults_live_under_airflow_home_and_the_dags_folder(monkeypatch, tmp_path):
    for name in config.SETTINGS:
        monkeypatch.delenv(config.env_name(name), raising=False)
        monkeypatch.delenv(f"AIRFLOW__ASSOCIATE__{name.upper()}", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    dags = tmp_path / "dags"
    (dags / "sql").mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
    assert config.staging_base() == "file://" + str(tmp_path / "associate" / "staging")
    assert config.reports_dir() == tmp_path / "associate" / "reports"
    assert config.sql_dir() == dags / "sql"
    # A deployment without its own suites still finds the ones shipped beside the DAG file.
    assert (config.expectations_dir() / "customers.json").is_file()
    assert config.payload_processes() is None


def test_malformed_setting_fails_for_good_and_names_itself(monkeypatch):
    monkeypatch.setenv("AIRFLOW__ASSOCIATE__PAYLOAD_PROCESSES", "many")
    with pytest.raises(ConfigurationError, match="payload_processes") as caught:
        config.payload_processes()
    assert isinstance(caught.value, PermanentError)


def test_unknown_setting_is_refused():
    with pytest.raises(KeyError, match="staging_base"):
        config.get("stagingbase")
