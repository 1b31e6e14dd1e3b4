from __future__ import annotations

from pathlib import Path

import pytest

from rasterflow.config import CONFIG_ENV_VAR, RasterflowConfig, load_config, parse_config
from rasterflow.enums import RuntimeEnum
from rasterflow.errors import ConfigError


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """No config from the environment or the real home; cwd is the test's own."""
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def _named_file(monkeypatch, tmp_path, text: str) -> Path:
    path = tmp_path / "rasterflow.yaml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    return path


def test_defaults_without_file():
    config = load_config()
    assert config.execution == "local"
    assert config.task_runner == "threads"
    assert config.dask_address is None
    assert config.max_workers is None
    assert config.process_pool is False
    assert config.task_pixels == 2**28
    assert config.retries == 3
    assert config.retry_delay_seconds == 2.0
    assert config.storage_options == {}
    assert config.work_pools == {size: f"rasterflow-{size.value}" for size in RuntimeEnum}


def test_default_output_uri_is_absolute(tmp_path):
    """Resolved once, so tasks in other threads or processes (other cwd) agree on it."""
    assert load_config().output_uri == str(tmp_path / "rasterflow-output")


def test_file_named_by_env_var(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "retries: 5\ntask_runner: dask\ndask_address: tcp://10.0.0.1:8786\n")
    config = load_config()
    assert config.retries == 5
    assert config.task_runner == "dask"
    assert config.dask_address == "tcp://10.0.0.1:8786"


def test_file_in_home_config(tmp_path):
    path = tmp_path / "home" / ".config" / "rasterflow.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("retries: 7\n")
    assert load_config().retries == 7


def test_env_var_wins_over_home_config(monkeypatch, tmp_path):
    home = tmp_path / "home" / ".config" / "rasterflow.yaml"
    home.parent.mkdir(parents=True)
    home.write_text("retries: 7\n")
    _named_file(monkeypatch, tmp_path, "retries: 1\n")
    assert load_config().retries == 1


def test_process_pool_can_be_turned_on(tmp_path):
    path = tmp_path / "rasterflow.yaml"
    path.write_text("process_pool: true\n")
    assert load_config(path).process_pool is True


def test_explicit_path_argument(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("max_workers: 4\n")
    assert load_config(path).max_workers == 4


def test_empty_file_gives_defaults(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "")
    assert load_config().retries == RasterflowConfig().retries


def test_unknown_key(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "retries: 2\nretrys: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'retrys'"):
        load_config()


@pytest.mark.parametrize(
    "text, key, bad",
    [
        ("retries: -1", "retries", "-1"),
        ("retries: 21", "retries", "21"),
        ("task_runner: spark", "task_runner", "'spark'"),
        ("execution: cluster", "execution", "'cluster'"),
        ("max_workers: 0", "max_workers", "0"),
        ("task_pixels: 0", "task_pixels", "0"),
        ("task_pixels: -4096", "task_pixels", "-4096"),
        ("retry_delay_seconds: -0.5", "retry_delay_seconds", "-0.5"),
        ("work_pools: {huge: my-pool}", "work_pools", "'huge'"),
    ],
)
def test_bad_value_names_key(monkeypatch, tmp_path, text, key, bad):
    path = _named_file(monkeypatch, tmp_path, text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert str(path) in message
    assert f"{key}" in message
    assert bad in message


def test_bad_value_in_code_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="task_pixels=0") as info:
        RasterflowConfig(task_pixels=0)
    assert "greater than 0" in str(info.value)


def test_not_a_mapping(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "- retries\n- 3\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config()


def test_malformed_yaml(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "retries: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config()


def test_missing_file_named_by_env_var(monkeypatch, tmp_path):
    missing = tmp_path / "nope.yaml"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(missing))
    with pytest.raises(ConfigError, match=CONFIG_ENV_VAR) as info:
        load_config()
    assert str(missing) in str(info.value)
    assert "no such file" in str(info.value)


def test_work_pools_override_keeps_other_sizes():
    config = parse_config({"work_pools": {"gpu-small": "gpus"}})
    assert config.work_pools[RuntimeEnum.GPU_SMALL] == "gpus"
    assert config.work_pools[RuntimeEnum.SMALL] == "rasterflow-small"


def test_storage_options_for_scheme():
    config = parse_config({"storage_options": {"s3": {"anon": True}, "file": {"auto_mkdir": True},
                                               "gs": {"token": "x"}}})
    assert config.storage_options_for("s3://bucket/key.zarr") == {
        "anon": True, "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}},
    }
    assert config.storage_options_for("gs://bucket/key") == {"token": "x"}
    assert config.storage_options_for("/local/path") == {"auto_mkdir": True}
    assert config.storage_options_for("relative/path") == {"auto_mkdir": True}
    assert config.storage_options_for("file:///local/path") == {"auto_mkdir": True}
    assert config.storage_options_for("memory://x") == {}


def test_storage_options_for_returns_a_copy():
    config = parse_config({"storage_options": {"s3": {"anon": True}}})
    config.storage_options_for("s3://b/k")["anon"] = False
    config.storage_options_for("s3://b/k")["config_kwargs"]["retries"]["max_attempts"] = 1
    assert config.storage_options_for("s3://b/k") == {
        "anon": True, "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}}


def test_storage_options_not_in_repr():
    config = parse_config({"storage_options": {"s3": {"secret": "hunter2"}}})
    assert "hunter2" not in repr(config)


def test_relative_output_uri_resolved(monkeypatch, tmp_path):
    _named_file(monkeypatch, tmp_path, "output_uri: out/mosaics\n")
    config = load_config()
    assert Path(config.output_uri).is_absolute()
    assert config.output_uri == str(tmp_path / "out" / "mosaics")


def test_home_output_uri_expanded(tmp_path):
    assert parse_config({"output_uri": "~/rf"}).output_uri == str(tmp_path / "home" / "rf")


@pytest.mark.parametrize("uri", ["s3://bucket/prefix/", "memory://out", "file:///data/out/"])
def test_url_output_uri_kept(uri):
    assert parse_config({"output_uri": uri}).output_uri == uri.rstrip("/")


def test_dataset_sources_are_checked():
    from rasterflow.enums import DatasetEnum

    config = parse_config({"datasets": {"s2med_harvest": {"stac_url": "http://mirror", "collection": "s2"}}})
    assert config.datasets[DatasetEnum.S2_MED_HARVEST].stac_url == "http://mirror"
    with pytest.raises(ConfigError, match="datasets.s2med_harvest.url"):
        parse_config({"datasets": {"s2med_harvest": {"url": "http://mirror"}}})
    with pytest.raises(ConfigError, match="datasets.landsat"):
        parse_config({"datasets": {"landsat": {"stac_url": "http://mirror"}}})
def test_s3_retries_default_but_configured_ones_win():
    config = parse_config({"storage_options": {"s3": {"config_kwargs": {
        "retries": {"max_attempts": 3}, "connect_timeout": 5}}}})
    assert config.storage_options_for("s3://b/k")["config_kwargs"] == {"retries": {"max_attempts": 3},
                                                                       "connect_timeout": 5}
    assert RasterflowConfig().storage_options_for("s3://b/k") == {
        "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}}}


def test_output_uri_env_var_replaces_the_files(monkeypatch, tmp_path):
    """What `rasterflow deploy --output-uri` sets in a pool's job template."""
    _named_file(monkeypatch, tmp_path, f"output_uri: {tmp_path / 'from-file'}\n")
    monkeypatch.setenv("RASTERFLOW_OUTPUT_URI", "s3://bucket/runs/")
    assert load_config().output_uri == "s3://bucket/runs"


def test_a_relative_output_uri_is_remembered_as_written():
    assert RasterflowConfig().relative_output_uri == "rasterflow-output"
    assert RasterflowConfig(output_uri="out").relative_output_uri == "out"
    assert RasterflowConfig(output_uri="/data/out").relative_output_uri is None
    assert RasterflowConfig(output_uri="memory://x").relative_output_uri is None
    # Replaced since: the copy's output_uri is not the relative one any more.
    assert RasterflowConfig().model_copy(update={"output_uri": "/abs"}).relative_output_uri is None


def test_run_config_sends_the_run_keys_set_and_nothing_relative():
    from rasterflow.config import RunConfig

    assert RasterflowConfig().run_config() == RunConfig()
    config = RasterflowConfig(output_uri="s3://b/p", retries=1, max_workers=3,
                              storage_options={"s3": {"k": "v"}})
    assert config.run_config().model_dump(exclude_none=True) == {"output_uri": "s3://b/p", "retries": 1}
    assert RasterflowConfig(output_uri="rel", retries=2).run_config().model_dump(exclude_none=True) == {
        "retries": 2}
    merged = RasterflowConfig(output_uri="/w", retries=5).with_run(RunConfig(output_uri="/caller"))
    assert (merged.output_uri, merged.retries) == ("/caller", 5)
    with pytest.raises(ValueError, match="absolute"):
        RunConfig(output_uri="relative/out")


def test_config_errors_never_show_credentials(monkeypatch, tmp_path):
    with pytest.raises(ConfigError) as raised:
        parse_config({"storage_options": {"s3": "hunter2"}})
    assert "hunter2" not in str(raised.value) and "storage_options.s3" in str(raised.value)
    _named_file(monkeypatch, tmp_path, "storage_options:\n  s3: {secret: 'hunter2\n")
    with pytest.raises(ConfigError) as raised:
        load_config()
    assert "hunter2" not in str(raised.value) and "line 3" in str(raised.value)


def test_an_unknown_output_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match="output_uri='nosuch://b/x'.*unknown URI scheme 'nosuch'"):
        parse_config({"output_uri": "nosuch://b/x"})
