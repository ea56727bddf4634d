"""Config loading: validation errors are one line naming file and key path, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from datahubsync.core.errors import ConfigError
from datahubsync.schema import load_config
from tests.helpers import run_cli, write_yaml


def test_defaults_without_any_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_config(None, {})
    assert loaded.source is None
    assert loaded.config.hub.timeout == 300
    assert loaded.config.serve.newer_ratio == 0.85
    assert loaded.config.serve.keep_packages == 2


def test_env_override_nested_and_list_index(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {
        "hub": {"url": "http://hub:8080"},
        "datasets": [{"name": "a", "local_dir": "data/a"}],
    })
    loaded = load_config(cfg, {"DATAHUBSYNC_HUB__TIMEOUT": "42",
                               "DATAHUBSYNC_DATASETS__0__MODE": "overlay",
                               "DATAHUBSYNC_CONFIG": "ignored-here"})
    assert loaded.config.hub.timeout == 42
    assert loaded.config.datasets[0].mode == "overlay"
    # relative paths are relative to the config file, not the working directory
    assert loaded.config.datasets[0].local_dir == tmp_path / "data" / "a"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"hub": {"url": "http://x", "timeot": 5}}, "hub.timeot: unknown key"),
        ({"hub": {"timeout": "soon"}}, "hub.timeout: Input should be a valid number"),
        ({"datasets": [{"name": "a"}]}, "datasets.0.local_dir: required key is missing"),
        ({"hub": {"url": "ftp://x"}}, "hub.url: must start with http://, https:// or s3://"),
        ({"pictures_typo": {}}, "pictures_typo: unknown key"),
    ],
)
def test_invalid_values_name_file_and_key(tmp_path: Path, content: dict, expected: str) -> None:
    cfg = write_yaml(tmp_path / "bad.yaml", content)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, {})
    assert str(info.value).startswith(f"{cfg}: ")
    assert expected in str(info.value)


def test_env_override_error_names_the_variable(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {})
    with pytest.raises(ConfigError, match=r"hub.retries \(from DATAHUBSYNC_HUB__RETRIES\)"):
        load_config(cfg, {"DATAHUBSYNC_HUB__RETRIES": "many"})
    with pytest.raises(ConfigError, match="DATAHUBSYNC_HBU__URL: unknown config section"):
        load_config(cfg, {"DATAHUBSYNC_HBU__URL": "http://x"})


def test_bad_yaml_names_line(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("hub:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ column \d+: invalid YAML"):
        load_config(cfg, {})


def test_missing_named_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", {})


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("hub:\n  url: http://x\n  bogus: 1\n", "hub.bogus: unknown key"),
        ("hub: {timeout: abc}\n", "hub.timeout"),
        ("hub: [\n", "invalid YAML"),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path: Path, content: str, needle: str) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(content)
    result = run_cli(["datasets", "sync"], config=cfg, expect=2)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert str(cfg) in lines[0] and needle in lines[0]
    assert "Traceback" not in result.err


def test_cli_missing_config_exit_2(tmp_path: Path) -> None:
    result = run_cli(["datasets", "status"], config=tmp_path / "absent.yaml", expect=2)
    assert "absent.yaml: config file not found" in result.err


def test_cli_json_error_document(tmp_path: Path) -> None:
    import json

    cfg = write_yaml(tmp_path / "c.yaml", {"hub": {"nope": 1}})
    result = run_cli(["--json", "datasets", "status"], config=cfg, expect=2)
    doc = json.loads(result.err.strip().splitlines()[-1])
    assert doc["message_type"] == "exit_error" and doc["code"] == 2
    assert "hub.nope: unknown key" in doc["message"]


def _models_in(annotation: object) -> list[tuple[str, type]]:
    """(key infix, model) pairs inside an annotation; dict values are keyed by ``*``."""
    import typing

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is dict:
        return [("*.", model) for _, model in _models_in(args[1])]
    return [found for arg in args for found in _models_in(arg)]


def _model_keys(model: type, prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        path = f"{prefix}{name}"
        keys.add(path)
        for infix, inner in _models_in(info.annotation):
            if infix:
                keys.add(f"{path}.{infix}".rstrip("."))
            keys |= _model_keys(inner, f"{path}.{infix}")
    return keys


# Mappings whose keys are names chosen by the user (in the example, any name).
NAMED_KEYS = ("batch.jobs",)


def _yaml_keys(node: object, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            name = "*" if prefix.rstrip(".") in NAMED_KEYS else key
            keys.add(f"{prefix}{name}")
            keys |= _yaml_keys(value, f"{prefix}{name}.")
    elif isinstance(node, list):
        for item in node:
            keys |= _yaml_keys(item, prefix)
    return keys


def _uncommented(text: str) -> str:
    """The example with its optional blocks (lines starting ``#~``) switched on: each
    replaces the active ``key: <default>`` line just before it."""
    lines = text.splitlines()
    out: list[str] = []
    for n, line in enumerate(lines):
        if line.startswith("#~"):
            out.append(line[2:])
            continue
        key = line.split(":", 1)[0]
        following = next((x for x in lines[n + 1:] if not x.strip().startswith("#")
                          or x.startswith("#~")), "")
        if following.startswith("#~") and following[2:].split(":", 1)[0] == key:
            continue
        out.append(line)
    return "\n".join(out)


def test_example_config_documents_every_key_and_loads() -> None:
    import yaml

    from datahubsync.schema import Config
    from tests.helpers import ROOT

    example = ROOT / "config_client_example.yaml"
    documented = _yaml_keys(yaml.safe_load(_uncommented(example.read_text())))
    assert _model_keys(Config) == documented
    load_config(example, {})  # and it is valid


def test_a_copied_example_opens_no_port_and_runs_no_job_nobody_asked_for(
        tmp_path: Path) -> None:
    """Optional listeners and jobs are documented commented out; switched on, the
    optional blocks are valid too."""
    from tests.helpers import ROOT

    text = (ROOT / "config_client_example.yaml").read_text()
    loaded = load_config(ROOT / "config_client_example.yaml", {})
    serve = loaded.config.serve
    assert serve.legacy_tcp is None and serve.picture_roots == []
    assert loaded.config.batch.jobs == {}
    assert serve.host == "0.0.0.0" and serve.port == 8080  # serve's own, only when run
    switched_on = tmp_path / "all.yaml"
    switched_on.write_text(_uncommented(text))
    everything = load_config(switched_on, {})
    assert everything.config.serve.legacy_tcp is not None
    assert set(everything.config.batch.jobs) == {"stock-daily", "nightly-export"}


def test_example_values_are_the_true_defaults() -> None:
    """Every active value in the example is what the tool uses when the key is left out,
    except the few that show how a value looks (addresses, names, paths)."""
    import yaml

    from datahubsync.schema import Config
    from tests.helpers import ROOT

    shown = {"hub.url", "hub.timezone", "datasets", "logging.file", "logging.level",
             "state_dir", "serve.data_root", "serve.timezone", "logs.log_dir",
             "pictures.local_root", "pictures.database_url", "pictures.source"}
    example = yaml.safe_load((ROOT / "config_client_example.yaml").read_text())
    defaults = Config().model_dump(mode="json")
    different = []
    for section, body in example.items():
        if not isinstance(body, dict):
            if section not in shown and body != defaults.get(section):
                different.append(section)
            continue
        for key, value in body.items():
            path = f"{section}.{key}"
            if path in shown or isinstance(value, dict):
                continue
            if value != defaults[section][key]:
                different.append(f"{path}: example {value!r}, default {defaults[section][key]!r}")
    assert different == []
