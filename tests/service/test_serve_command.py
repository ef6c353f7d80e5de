"""`uvidm serve`'s command line: it refuses to listen beyond loopback without a token."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from uvidm_backend.commands import serve
from uvidm_backend.service.settings import TOKEN_ENV, ServiceSettings, SettingsError, default_jobs_dir, is_loopback


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    serve.add_parser(commands)
    return parser.parse_args(["serve", *argv])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org", "10.0.0.1"])
def test_cli_refuses_other_addresses_without_a_token(host, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = parse("--host", host, "--jobs-dir", str(tmp_path), "--weights", str(tmp_path / "nowhere"))
    assert args.run(args) == 2
    message = capsys.readouterr().err
    assert f"refusing to listen on {host} without a token" in message and "--token" in message
    assert TOKEN_ENV in message
    assert not any(tmp_path.iterdir())  # refused before anything was created or loaded

    monkeypatch.setenv(TOKEN_ENV, "   ")  # blank is no token
    assert args.run(args) == 2


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_token_allows_other_addresses(how, monkeypatch, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    argv = ["--host", "0.0.0.0", "--weights", str(tmp_path / "w"), "--bfm", str(tmp_path / "b")]
    token = "t0ken-of-20-chars-xx"
    if how == "option":
        argv += ["--token", token]
    else:
        monkeypatch.setenv(TOKEN_ENV, token)
    args = parse(*argv)
    settings = serve.settings_from_args(args)
    assert settings.token == token
    settings.check_exposure()  # past the exposure check (the service then starts; see test_model_download.py)


def test_settings():
    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
        ServiceSettings(host=host).check_exposure()
    for host in ("0.0.0.0", "::", "192.168.0.2", "localhost.example.org", ""):
        assert not is_loopback(host), host
    default = ServiceSettings()
    assert default.host == "127.0.0.1" and default.token is None and default.jobs_dir == default_jobs_dir()
    assert default_jobs_dir().parts[-2:] == ("uvidm", "jobs") or default_jobs_dir().parts[-3:] == (
        "uvidm", "Cache", "jobs")
    assert isinstance(ServiceSettings(jobs_dir="~/x").jobs_dir, Path)
    for bad in ({"queue_capacity": 0}, {"keep_hours": -1}, {"max_pixels": 10**9}, {"max_upload_bytes": 10},
                {"port": 70000}, {"cleanup_interval_s": 0}):
        with pytest.raises(SettingsError):
            ServiceSettings(**bad)
    args = parse("--max-upload-mb", "5", "--max-megapixels", "12.5", "--queue-capacity", "3", "--keep-hours", "2")
    settings = serve.settings_from_args(args)
    assert (settings.max_upload_bytes, settings.max_pixels, settings.queue_capacity, settings.keep_hours) == (
        5 * 1024 * 1024, 12_500_000, 3, 2.0)


def test_fast_mode_option():
    assert parse().fast == "auto"
    assert parse("--fast", "compile").fast == "compile"
    with pytest.raises(SystemExit):
        parse("--fast", "turbo")


@pytest.mark.parametrize("token", ["x", "t0ken", "a" * 15])
def test_short_tokens_are_refused_off_loopback(token, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = parse("--host", "0.0.0.0", "--token", token, "--jobs-dir", str(tmp_path), "--weights", str(tmp_path / "w"))
    assert args.run(args) == 2
    message = capsys.readouterr().err
    assert f"a token of {len(token)} characters" in message and "at least 16" in message
    assert not any(tmp_path.iterdir())
    ServiceSettings(host="127.0.0.1", token=token).check_exposure()  # on loopback any token guards


def test_network_options():
    args = parse("--host", "[::1]", "--allow-host", "studio.local", "--allow-host", "[fe80::1]",
                 "--allow-origin", "http://localhost:3000/", "--header-timeout", "3", "--body-timeout", "30")
    settings = serve.settings_from_args(args)
    assert settings.host == "::1" and settings.url == "http://[::1]:8765"
    assert settings.allow_hosts == ("studio.local", "fe80::1")
    assert settings.allow_origins == ("http://localhost:3000",)
    assert (settings.header_timeout_s, settings.body_timeout_s) == (3.0, 30.0)
    defaults = serve.settings_from_args(parse())
    assert defaults.allow_hosts == () and defaults.allow_origins == () and defaults.url == "http://127.0.0.1:8765"
    for bad in ({"allow_origins": ("localhost:3000",)}, {"header_timeout_s": 0}, {"body_timeout_s": -1},
                {"decode_budget_bytes": 1024}):
        with pytest.raises(SettingsError):
            ServiceSettings(**bad)
