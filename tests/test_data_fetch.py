"""fetch: every kind of uri lands whole or not at all, and every expected failure reads as one clear message.

Nothing here touches the internet: HTTP is a server on 127.0.0.1 and Kaggle is a fake `kaggle` module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench.core.entry_point import stage_main
from cnnbench.core.errors import FetchError
from cnnbench.data.fetch import MANIFEST, fetch_source, read_manifest
from cnnbench.data.readers import read_source
from cnnbench.params.config import SourceConfig
from fixtures import (
    CIFAR10_ARCHIVE,
    closed_port_url,
    make_cifar10_tarball,
    make_kaggle_tree,
    md5_of,
    serve_directory,
    serve_truncated,
    zip_tree,
)

ROOT = Path(__file__).resolve().parents[1]
KAGGLE_ADVICE = ("KAGGLE_API_TOKEN", "~/.kaggle/access_token", "kaggle.json")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    return make_cifar10_tarball(tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def cifar10_url(cifar10):
    with serve_directory(cifar10.path.parent) as base:
        yield f"{base}/{CIFAR10_ARCHIVE}"


@pytest.fixture(scope="module")
def kaggle_zip(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle")
    fx = make_kaggle_tree(root / "tree")
    return zip_tree(fx.root, root / "butterfly-images40-species.zip")


@pytest.fixture
def raw(tmp_path):
    """data/raw/ of a fresh project: fetch must leave nothing here but complete outputs."""
    return tmp_path / "data" / "raw"


class FakeKaggleApi:
    """The Kaggle client at its boundary: authenticate() and dataset_download_files()."""

    def __init__(self, zip_path: Path, auth_error: BaseException | None = None,
                 download_error: BaseException | None = None, payload: bytes | None = None):
        self.zip_path, self.auth_error = zip_path, auth_error
        self.download_error, self.payload = download_error, payload
        self.calls: list[tuple] = []

    def authenticate(self):
        self.calls.append(("authenticate",))
        if self.auth_error is not None:
            raise self.auth_error

    def dataset_download_files(self, dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
        self.calls.append(("download", dataset, path, unzip))
        if self.download_error is not None:
            raise self.download_error
        slug = dataset.split("/")[1]  # the real client names the file after the slug, version or not
        data = self.payload if self.payload is not None else self.zip_path.read_bytes()
        Path(path, f"{slug}.zip").write_bytes(data)


@pytest.fixture
def fake_kaggle(monkeypatch, kaggle_zip):
    """Install a fake `kaggle` module; returns a function that configures its api."""
    def install(**kwargs) -> FakeKaggleApi:
        api = FakeKaggleApi(kaggle_zip, **kwargs)
        monkeypatch.setitem(sys.modules, "kaggle", types.SimpleNamespace(api=api))
        return api
    return install


def source(uri: str, md5: str | None = None, fmt: str = "image-csv") -> SourceConfig:
    """A source; the fixtures serve plain http from 127.0.0.1, declared unverified where they have no md5."""
    return SourceConfig(name="src", uri=uri, format=fmt, md5=md5,
                        unverified_http=uri.startswith("http://") and md5 is None)


def assert_nothing_left(raw: Path) -> None:
    """No output and no partial directory: nothing a later stage could mistake for a fetch."""
    assert not raw.exists() or sorted(p.name for p in raw.iterdir()) == []


# ------------------------------------------------------------------ http(s)


def test_http_download_checks_md5_and_writes_manifest(cifar10, cifar10_url, raw):
    path = fetch_source(source(cifar10_url, cifar10.md5, "cifar10-python"), raw / "cifar10")

    assert path == raw / "cifar10" / CIFAR10_ARCHIVE
    assert sorted(p.name for p in (raw / "cifar10").iterdir()) == [CIFAR10_ARCHIVE, MANIFEST]
    assert path.read_bytes() == cifar10.path.read_bytes()
    manifest = read_manifest(raw / "cifar10")
    assert manifest == {"uri": cifar10_url, "format": "cifar10-python", "file": CIFAR10_ARCHIVE,
                        "bytes": cifar10.path.stat().st_size, "md5": cifar10.md5}
    assert sorted(p.name for p in raw.iterdir()) == ["cifar10"]  # no staging directory left beside it


def test_http_wrong_md5_keeps_nothing(cifar10_url, raw):
    with pytest.raises(FetchError, match="md5") as err:
        fetch_source(source(cifar10_url, "0" * 32, "cifar10-python"), raw / "cifar10")
    assert "expected 00000000000000000000000000000000" in str(err.value)
    assert_nothing_left(raw)


def test_http_unreachable_host_is_a_clear_error(raw):
    url = closed_port_url()
    with pytest.raises(FetchError) as err:
        fetch_source(source(url, fmt="cifar10-python"), raw / "cifar10")
    message = str(err.value)
    assert message.startswith(f"could not download {url}: ")
    assert "refused" in message.lower()
    assert "local path" in message  # says what to do without network
    assert_nothing_left(raw)


def test_http_missing_file_is_a_clear_error(cifar10_url, raw):
    url = cifar10_url.replace(CIFAR10_ARCHIVE, "no-such-file.tar.gz")
    with pytest.raises(FetchError, match="404"):
        fetch_source(source(url, fmt="cifar10-python"), raw / "cifar10")
    assert_nothing_left(raw)


@pytest.mark.parametrize("with_md5", [False, True], ids=["no-md5", "md5"])
def test_http_connection_dropped_mid_file_keeps_nothing(cifar10, raw, with_md5):
    payload = cifar10.path.read_bytes()
    with serve_truncated(payload) as base:
        url = f"{base}/{CIFAR10_ARCHIVE}"
        with pytest.raises(FetchError, match=f"closed after {len(payload) // 2} of {len(payload)} bytes"):
            fetch_source(source(url, cifar10.md5 if with_md5 else None, "cifar10-python"), raw / "cifar10")
    assert_nothing_left(raw)


@pytest.mark.parametrize("name, fmt", [("archive.zip", "image-csv"), ("archive.zip", "npz"), ("download", "image-csv")])
def test_http_zip_that_is_an_error_page_keeps_nothing(tmp_path, raw, name, fmt):
    (tmp_path / name).write_bytes(b"<html><body>502 Bad Gateway</body></html>")
    with serve_directory(tmp_path) as base:
        url = f"{base}/{name}"
        with pytest.raises(FetchError, match=f"^{url}: not a valid zip archive"):
            fetch_source(source(url, fmt=fmt), raw / "butterflies")
    assert_nothing_left(raw)


def test_failed_refetch_leaves_the_previous_fetch_intact(cifar10, cifar10_url, raw):
    out = raw / "cifar10"
    fetch_source(source(cifar10_url, cifar10.md5, "cifar10-python"), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    with pytest.raises(FetchError, match="md5"):
        fetch_source(source(cifar10_url, "f" * 32, "cifar10-python"), out)
    with pytest.raises(FetchError, match="could not download"):
        fetch_source(source(closed_port_url(), None, "cifar10-python"), out)

    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in raw.iterdir()) == ["cifar10"]


def test_successful_refetch_replaces_the_whole_directory(cifar10, cifar10_url, kaggle_zip, raw):
    out = raw / "src"
    fetch_source(source(str(kaggle_zip)), out)
    fetch_source(source(cifar10_url, cifar10.md5, "cifar10-python"), out)
    assert sorted(p.name for p in out.iterdir()) == [CIFAR10_ARCHIVE, MANIFEST]  # the old zip is gone
    assert read_manifest(out)["format"] == "cifar10-python"


# ------------------------------------------------------------------ kaggle


@pytest.mark.parametrize("ref, version", [("gpiosenka/butterfly-images40-species/3", "3"),
                                          ("gpiosenka/butterfly-images40-species", "latest (unpinned)")],
                         ids=["pinned", "unpinned"])
def test_kaggle_download_becomes_archive_zip(fake_kaggle, kaggle_zip, raw, ref, version):
    api = fake_kaggle()
    path = fetch_source(source(f"kaggle:{ref}"), raw / "butterflies")

    assert path == raw / "butterflies" / "archive.zip"
    assert sorted(p.name for p in path.parent.iterdir()) == ["archive.zip", MANIFEST]
    assert path.read_bytes() == kaggle_zip.read_bytes()
    manifest = read_manifest(path.parent)
    assert manifest["kaggle_ref"] == ref
    assert manifest["kaggle_version"] == version
    assert manifest["md5"] == md5_of(kaggle_zip)
    assert api.calls[0] == ("authenticate",)
    assert api.calls[1][1] == ref and api.calls[1][3] is False  # the zip is kept whole, not unzipped
    assert read_source(path.parent).archive == path  # and prepare can read what fetch wrote


@pytest.mark.parametrize("error", [OSError("Could not find kaggle.json. Make sure it's located in /root/.kaggle."),
                                   SystemExit(1)],
                         ids=["OSError", "SystemExit"])
def test_kaggle_missing_credentials_says_how_to_provide_them(fake_kaggle, raw, error):
    api = fake_kaggle(auth_error=error)
    with pytest.raises(FetchError) as err:
        fetch_source(source("kaggle:gpiosenka/butterfly-images40-species"), raw / "butterflies")
    for hint in KAGGLE_ADVICE:
        assert hint in str(err.value)
    assert "\n" not in str(err.value)
    assert [call[0] for call in api.calls] == ["authenticate"]  # no download attempted
    assert_nothing_left(raw)


def test_kaggle_download_error_keeps_nothing(fake_kaggle, raw):
    fake_kaggle(download_error=RuntimeError("403 Client Error: Forbidden for url: /api/v1/datasets/download"))
    with pytest.raises(FetchError, match="the Kaggle download of gpiosenka/x failed: 403 Client Error") as err:
        fetch_source(source("kaggle:gpiosenka/x"), raw / "butterflies")
    assert "accepted the dataset's terms" in str(err.value)
    assert_nothing_left(raw)


def requests_failure(url: str) -> Exception:
    """What the Kaggle client (requests over urllib3) raises when `url` cannot be reached, chain and all."""
    import requests

    try:
        requests.get(url, timeout=5)
    except requests.exceptions.ConnectionError as err:
        return err
    raise AssertionError(f"{url} was reached")


def network_failure(case: str, monkeypatch) -> tuple[BaseException, str]:
    """(an exception as the Kaggle client raises it on `case`, the text the user must see)."""
    if case == "dns":
        def no_dns(*args, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        with monkeypatch.context() as patch:
            patch.setattr(socket, "getaddrinfo", no_dns)
            return requests_failure("https://www.kaggle.com/api/v1/datasets/download/a/b"), "Name or service not known"
    if case == "refused":
        return requests_failure(closed_port_url("api/v1")), "Connection refused"
    if case == "urllib3-max-retries":
        from urllib3.exceptions import MaxRetryError, NewConnectionError

        reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 101] Network is unreachable")
        return MaxRetryError(None, "/api/v1/datasets/download", reason), "Network is unreachable"
    if case == "oserror-name-resolution":
        return OSError(socket.EAI_AGAIN, "Temporary failure in name resolution"), "Temporary failure in name resolution"
    return ConnectionError("connection reset\nby peer"), "connection reset by peer"


@pytest.mark.parametrize("case", ["dns", "refused", "urllib3-max-retries", "oserror-name-resolution", "builtin"])
@pytest.mark.parametrize("step", ["authenticate", "download"])
def test_kaggle_unreachable_is_a_network_error_not_bad_credentials(fake_kaggle, raw, monkeypatch, case, step):
    error, detail = network_failure(case, monkeypatch)
    fake_kaggle(**{"auth_error" if step == "authenticate" else "download_error": error})
    with pytest.raises(FetchError) as err:
        fetch_source(source("kaggle:gpiosenka/x"), raw / "butterflies")
    message = str(err.value)
    assert message.startswith("could not reach Kaggle: ") and detail in message, message
    assert "Check the network" in message and "local path" in message
    assert "credentials" not in message and "0x" not in message and "\n" not in message
    assert_nothing_left(raw)


def test_kaggle_corrupt_zip_keeps_nothing(fake_kaggle, raw):
    fake_kaggle(payload=b"PK\x03\x04 this is not really a zip")
    with pytest.raises(FetchError, match="not a valid zip"):
        fetch_source(source("kaggle:gpiosenka/x"), raw / "butterflies")
    assert_nothing_left(raw)


@pytest.mark.parametrize("ref", ["gpiosenka", "gpiosenka/", "a/b/c/d"])
def test_kaggle_malformed_ref(fake_kaggle, raw, ref):
    api = fake_kaggle()
    with pytest.raises(FetchError, match="expected kaggle:<owner>/<slug>"):
        fetch_source(source(f"kaggle:{ref}"), raw / "butterflies")
    assert api.calls == []


def test_importing_fetch_does_not_import_kaggle():
    # A fresh interpreter: `import kaggle` authenticates at once, so only a Kaggle fetch may import it.
    code = "import sys, cnnbench.data.fetch; print('kaggle' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------ local paths and sklearn


def test_local_zip_is_copied_and_checked(kaggle_zip, raw):
    path = fetch_source(source(str(kaggle_zip)), raw / "butterflies")
    assert path == raw / "butterflies" / kaggle_zip.name
    assert path.read_bytes() == kaggle_zip.read_bytes()
    assert read_manifest(path.parent)["md5"] == md5_of(kaggle_zip)


def test_local_zip_with_wrong_md5_keeps_nothing(kaggle_zip, raw):
    with pytest.raises(FetchError, match="md5"):
        fetch_source(source(str(kaggle_zip), md5="0" * 32), raw / "butterflies")
    assert_nothing_left(raw)


def test_local_directory_is_zipped_whole(tmp_path, raw):
    fx = make_kaggle_tree(tmp_path / "tree")
    path = fetch_source(source(str(fx.root)), raw / "butterflies")
    assert path.name == "archive.zip"
    on_disk = {p.relative_to(fx.root).as_posix(): p.read_bytes() for p in fx.root.rglob("*") if p.is_file()}
    with zipfile.ZipFile(path) as zf:
        assert {name: zf.read(name) for name in zf.namelist()} == on_disk  # junk included: prepare reports it
    assert "train/ADONIS/.DS_Store" in on_disk


def test_local_path_that_does_not_exist(tmp_path, raw):
    missing = tmp_path / "nowhere" / "archive.zip"
    with pytest.raises(FetchError, match="no such file or directory"):
        fetch_source(source(str(missing)), raw / "butterflies")
    assert_nothing_left(raw)


def test_local_file_that_is_not_a_zip(tmp_path, raw):
    bad = tmp_path / "archive.zip"
    bad.write_bytes(b"<html>Please sign in</html>")  # what a login page saved as .zip looks like
    with pytest.raises(FetchError, match="not a valid zip"):
        fetch_source(source(str(bad)), raw / "butterflies")
    assert_nothing_left(raw)


def test_sklearn_digits_is_embedded(raw):
    path = fetch_source(source("sklearn:digits", fmt="npz"), raw / "digits")
    assert path == raw / "digits" / "digits.npz"
    with np.load(path) as data:
        images, labels, classes = data["images"], data["labels"], data["classes"]
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0  # 0..16 counts scaled to the 0..255 of other sources
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert classes.tolist() == [str(i) for i in range(10)]


def test_sklearn_unknown_dataset(raw):
    with pytest.raises(FetchError, match="sklearn:digits"):
        fetch_source(source("sklearn:iris", fmt="npz"), raw / "iris")
    assert_nothing_left(raw)


# ------------------------------------------------------------------ the manifest


@pytest.mark.parametrize("text", ['{"uri": "x", "form', "[]", '{"uri": "x", "file": "archive.zip"}',
                                  '{"format": "image-csv", "file": "../../../etc/passwd"}',
                                  '{"format": "image-csv", "file": ".."}'],
                         ids=["truncated", "a-list", "no-format", "file-outside", "file-dotdot"])
def test_a_damaged_manifest_exits_2_with_one_line(kaggle_zip, raw, capsys, text):
    out = raw / "src"
    fetch_source(source(str(kaggle_zip)), out)
    (out / MANIFEST).write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        stage_main(lambda argv: read_source(out), [])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {out / MANIFEST}: ") and "re-run the stage that writes it" in err


# ------------------------------------------------------------------ the stage's door


def failing_source(case: str, cifar10_url: str, fake_kaggle) -> SourceConfig:
    """One expected failure per case (installing a fake Kaggle client where the case needs one)."""
    if case == "wrong-md5":
        return source(cifar10_url, "0" * 32, "cifar10-python")
    if case == "unreachable":
        return source(closed_port_url(), None, "cifar10-python")
    if case == "missing-local":
        return source("/nonexistent/archive.zip")
    if case == "kaggle-oserror":
        fake_kaggle(auth_error=OSError("Could not find kaggle.json"))
    elif case == "kaggle-exit":
        fake_kaggle(auth_error=SystemExit(1))
    elif case == "kaggle-network":
        fake_kaggle(download_error=ConnectionError("connection reset\nby peer"))  # a two-line message
    return source("kaggle:owner/slug")


@pytest.mark.parametrize("case", ["wrong-md5", "unreachable", "missing-local", "kaggle-oserror", "kaggle-exit",
                                  "kaggle-network"])
def test_stage_door_turns_expected_failures_into_exit_2(case, cifar10_url, fake_kaggle, raw, capsys):
    src = failing_source(case, cifar10_url, fake_kaggle)
    with pytest.raises(SystemExit) as exit_info:
        stage_main(lambda argv: fetch_source(src, raw / "out"), [])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err
    assert_nothing_left(raw)


def test_fetch_stage_script_exits_2_without_traceback(tmp_path):
    """The real `stages/fetch.py` in its own process, with a Kaggle client that calls exit(1) while
    being imported (as older clients do without credentials): exit 2 and our message, not exit 1."""
    fake = tmp_path / "fake_site" / "kaggle"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import sys\nprint('Could not find kaggle.json', file=sys.stderr)\n"
                                      "raise SystemExit(1)\n")
    repo_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = {
        "sources": {"bfly": {"uri": "kaggle:gpiosenka/butterfly-images40-species", "md5": None, "format": "image-csv"}},
        "datasets": {"bfly": {"source": "bfly", "image_size": 32}},
        "models": {"resnet18": repo_params["models"]["resnet18"]},  # params need one model; any will do
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "fetch.py"), "bfly", str(tmp_path / "raw" / "bfly"),
         "--params", str(tmp_path / "params.yaml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Kaggle credentials are missing"), result.stderr
    assert all(hint in last for hint in KAGGLE_ADVICE)
    assert result.stdout == ""
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []
