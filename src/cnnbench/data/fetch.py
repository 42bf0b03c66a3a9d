"""fetch: bring one raw source into a directory, whole or not at all.

Everything is built in a temporary sibling directory and renamed into place at the end, so a
download that breaks (network, checksum, Ctrl-C) never leaves something that looks complete.
The output holds one archive file plus `source.json` saying where it came from.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import posixpath
import shutil
import socket
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cnnbench.core.errors import CnnbenchError, FetchError, one_line
from cnnbench.core.files import read_json_object, staging_dir
from cnnbench.params.config import SourceConfig

MANIFEST = "source.json"
# What a failed connection raises besides the builtin ConnectionError/TimeoutError/socket.gaierror:
# requests wraps urllib3's errors, which the Kaggle client uses; errnos of an unreachable network or a
# failed name lookup when they come as a plain OSError.
_NETWORK_ERROR_TYPES = ("requests.exceptions.ConnectionError", "requests.exceptions.Timeout",
                        "urllib3.exceptions.NewConnectionError", "urllib3.exceptions.ConnectTimeoutError")
_NETWORK_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, socket.EAI_NONAME, socket.EAI_AGAIN}
# Seconds a connection may stay silent before the download fails (not a limit on the whole download).
URL_TIMEOUT_S = 60
# A fetched zip is refused before it is read when its central directory is not that of a dataset: more
# members than any image set here needs (the butterflies have 13,594; 1 M is 70x that), or more bytes
# declared uncompressed than 64 GiB (the butterflies are about 0.5 GB, ImageNet's train set 140 GB).
MAX_ZIP_MEMBERS = 1_000_000
MAX_ZIP_BYTES = 64 << 30


def fetch_source(source: SourceConfig, out_dir: str | Path) -> Path:
    """Fetch `source` into `out_dir` (replaced atomically); return the fetched file's path."""
    out_dir = Path(out_dir)
    uri = source.uri
    with staging_dir(out_dir) as tmp:
        if uri.startswith("sklearn:"):
            path, extra = _fetch_sklearn(uri.split(":", 1)[1], tmp), {}
        elif uri.startswith("kaggle:"):
            path, extra = _fetch_kaggle(uri.split(":", 1)[1], tmp)
        elif uri.startswith(("http://", "https://")):
            path, extra = _fetch_url(uri, tmp, source.md5), {}
            if source.md5 is None:  # config allows this only with unverified_http (plain http) or over https
                extra["unverified"] = "no md5: the download's content is not checked" + (
                    " and it came over plain http (no TLS)" if uri.startswith("http://") else "")
        else:
            path, extra = _fetch_local(Path(uri).expanduser(), tmp)
        if source.md5 and not uri.startswith(("http://", "https://")):
            _verify_md5(path, source.md5, uri)
        # Whatever the uri, a zip is tested before it is kept: an HTML error page saved as x.zip fails here.
        if path.suffix == ".zip" or source.format in ("image-csv", "image-folder"):
            _check_zip(path, uri)
        manifest = {"uri": uri, "format": source.format, "file": path.name,
                    "bytes": path.stat().st_size, "md5": _md5(path), **extra}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir / path.name


def read_manifest(raw_dir: str | Path) -> dict:
    """The `source.json` of a fetched source, or a clear error when the fetch never completed or it is damaged."""
    path = Path(raw_dir) / MANIFEST
    manifest = read_json_object(path)
    if manifest is None:
        raise CnnbenchError(f"{raw_dir} holds no complete fetch ({MANIFEST} is missing): run its fetch stage first.")
    fmt, name = manifest.get("format"), manifest.get("file")
    # `file` must name a file inside raw_dir: a manifest from elsewhere must not point prepare outside it.
    if not isinstance(fmt, str) or not isinstance(name, str) or name in ("", "..") or name != Path(name).name:
        raise CnnbenchError(f"{path}: not a fetch manifest (it needs a `format` and a `file` name); "
                            f"re-run the stage that writes it.")
    return manifest


# ------------------------------------------------------------------ one function per kind of uri


def _fetch_sklearn(name: str, tmp: Path) -> Path:
    """The datasets that ship inside scikit-learn (no network): today, `digits`."""
    if name != "digits":
        raise FetchError(f"sklearn:{name}: unknown embedded dataset; the only one is sklearn:digits.")
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are counts 0..16 of an 8x8 grid: scale to the 0..255 of every other image source.
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)
    path = tmp / "digits.npz"
    np.savez_compressed(path, images=images, labels=digits.target.astype(np.int64),
                        classes=np.array([str(c) for c in digits.target_names]))
    return path


def _fetch_url(url: str, tmp: Path, md5: str | None) -> Path:
    """Stream an http(s) file into `tmp`; a short read or a wrong md5 is an error, never a file.

    urllib (not torchvision's download_url): a connection that closes early ends `read()` quietly,
    so the byte count is checked against Content-Length here, and https is never retried as http.
    """
    filename = posixpath.basename(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    path = tmp / (filename if filename not in ("", ".", "..") else "download")
    advice = ("Check the network connection and the URL; on a machine without access, download the file "
              "elsewhere and set the source's `uri` to its local path.")
    digest = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": "cnnbench"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response, open(path, "wb") as fh:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            # disable=None: a bar on a terminal only, so a log's stderr holds just the messages.
            with tqdm(total=expected, unit="B", unit_scale=True, desc=path.name, mininterval=2, leave=False,
                      disable=None) as bar:
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            received = fh.tell()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) and not isinstance(
            err, urllib.error.HTTPError) else err
        raise FetchError(f"could not download {url}: {reason}. {advice}") from None
    if expected is not None and received != expected:
        raise FetchError(f"could not download {url}: the connection closed after {received} of {expected} "
                         f"bytes; nothing was kept. {advice}")
    if md5 and digest.hexdigest() != md5.lower():
        raise FetchError(
            f"{url}: the download's md5 is {digest.hexdigest()}, expected {md5}. The file is corrupt or has changed "
            f"upstream; nothing was kept. Retry, or update `md5` in params.yaml if the change is intended."
        )
    return path


def _fetch_kaggle(ref: str, tmp: Path) -> tuple[Path, dict]:
    parts = ref.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise FetchError(f"kaggle:{ref}: expected kaggle:<owner>/<slug> or kaggle:<owner>/<slug>/<version>.")
    api = _kaggle_api()
    try:
        api.dataset_download_files(ref, path=str(tmp), unzip=False, quiet=False)
    except (Exception, SystemExit) as err:  # the client raises many types, and exits on some
        _raise_if_unreachable(err)
        raise FetchError(
            f"the Kaggle download of {ref} failed: {one_line(err)}. Check the network, the dataset name and that your "
            f"account accepted the dataset's terms on kaggle.com. Alternatively download the zip by hand and "
            f"set the source's `uri` to its local path."
        ) from None
    zips = sorted(tmp.glob("*.zip"))
    if len(zips) != 1:
        raise FetchError(f"the Kaggle download of {ref} produced {len(zips)} zip files, expected one.")
    path = zips[0].rename(tmp / "archive.zip")
    return path, {"kaggle_ref": ref, "kaggle_version": parts[2] if len(parts) == 3 else "latest (unpinned)"}


def _kaggle_api():
    """The authenticated Kaggle client; imported here because `import kaggle` authenticates at once."""
    advice = (
        "Kaggle credentials are missing or invalid. Create an API token on kaggle.com (Settings > API) and "
        "either export KAGGLE_API_TOKEN, or save it as ~/.kaggle/access_token; the legacy kaggle.json "
        "(in $KAGGLE_CONFIG_DIR or ~/.kaggle/, mode 600) or KAGGLE_USERNAME and KAGGLE_KEY also work. "
        "Without an account, download the dataset zip by hand and set the source's `uri` to its path."
    )
    try:
        import kaggle  # old clients authenticate here already
        api = kaggle.api
        api.authenticate()
    except ImportError as err:
        raise FetchError(f"the Kaggle client cannot be imported ({err}): `pip install kaggle`, or download the "
                         f"dataset zip by hand and set the source's `uri` to its path.") from None
    except (Exception, SystemExit) as err:  # older clients call exit(1) on missing credentials
        _raise_if_unreachable(err)  # new clients check a token online: a network failure is not bad credentials
        detail = f" ({one_line(err)})" if str(err) and not isinstance(err, SystemExit) else ""
        raise FetchError(advice + detail) from None
    return api


def _raise_if_unreachable(err: BaseException) -> None:
    """A FetchError saying Kaggle could not be reached, when `err` comes from a network failure."""
    failure = _network_failure(err)
    if failure is not None:
        raise FetchError(f"could not reach Kaggle: {one_line(failure)}. Check the network (and any proxy); on a "
                         f"machine without access, download the dataset zip elsewhere and set the source's `uri` "
                         f"to its local path.") from None


def _network_failure(err: BaseException) -> BaseException | None:
    """The innermost exception behind `err` that says the network failed (DNS, refused, unreachable, timeout).

    Told by type along the chain (causes, contexts, and the `reason` that urllib and urllib3 keep), never
    by message; requests' and urllib3's types only when imported, since none of theirs can exist before.
    """
    kinds = [ConnectionError, TimeoutError, socket.gaierror]
    for dotted in _NETWORK_ERROR_TYPES:
        module, _, name = dotted.rpartition(".")
        kind = getattr(sys.modules.get(module), name, None)
        if isinstance(kind, type):
            kinds.append(kind)
    found, queue, seen = None, [err], set()
    while queue:
        current = queue.pop(0)
        if isinstance(current, BaseException) and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, tuple(kinds)) or getattr(current, "errno", None) in _NETWORK_ERRNOS:
                found = current
            queue += [current.__cause__, current.__context__, getattr(current, "reason", None)]
    return found


def _fetch_local(path: Path, tmp: Path) -> tuple[Path, dict]:
    """A local file copied, or a local directory zipped; what a directory holds that is not read is listed."""
    if not path.exists():
        raise FetchError(
            f"{path}: no such file or directory. Set the source's `uri` to an existing .zip or directory, "
            f"an http(s) URL, or kaggle:<owner>/<slug>."
        )
    if path.is_dir():
        outputs = Path("data").resolve()
        if outputs == path.resolve() or path.resolve() in outputs.parents:
            raise FetchError(f"{path}: holds the pipeline's own outputs (data/): a source must be a folder of its "
                             f"own, or fetch would read what it writes.")
        return _zip_directory(path, tmp / "archive.zip")
    if not path.is_file():
        raise FetchError(f"{path}: not a regular file or a directory (a device, a FIFO or a socket is never read "
                         f"as a source).")
    out = tmp / path.name
    shutil.copyfile(path, out)
    return out, {}


def _zip_directory(root: Path, out: Path) -> tuple[Path, dict]:
    """`root` as one stored zip (JPEGs do not shrink), regular files only: symbolic links are never followed
    (a link could point anywhere, /etc/passwd included) and special files never read; each is listed."""
    skipped = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for folder, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                entry = Path(folder) / name
                rel = entry.relative_to(root).as_posix()
                mode = entry.lstat().st_mode
                if stat.S_ISLNK(mode):
                    skipped.append({"id": rel, "reason": "symbolic link: not followed"})
                elif stat.S_ISREG(mode):
                    zf.write(entry, rel)
                elif not stat.S_ISDIR(mode):
                    skipped.append({"id": rel, "reason": "special file (device, FIFO or socket): not read"})
    return out, {"skipped": skipped} if skipped else {}


# ------------------------------------------------------------------ helpers


def _check_zip(path: Path, what: str) -> None:
    """A zip whose central directory is that of a dataset, and whose members all read back with their CRC."""
    try:
        with zipfile.ZipFile(path) as zf:
            check_zip_directory(zf.infolist(), what)
            bad = zf.testzip()
    except zipfile.BadZipFile:
        raise FetchError(f"{what}: not a valid zip archive (truncated or not a zip). Nothing was kept.") from None
    if bad is not None:
        raise FetchError(f"{what}: the zip is corrupt (first bad member: {bad}). Nothing was kept.")


def check_zip_directory(infos: list[zipfile.ZipInfo], what: str) -> None:
    """Refuse, before any member is read, a central directory no dataset has: too many members or bytes,
    a name twice, or members whose data overlap (how a few KB of zip expand into a hang or gigabytes)."""
    refuse = f"{what}: refused before reading it: "
    if len(infos) > MAX_ZIP_MEMBERS:
        raise FetchError(f"{refuse}{len(infos):,} members, more than the limit of {MAX_ZIP_MEMBERS:,}.")
    total = sum(i.file_size for i in infos)
    if total > MAX_ZIP_BYTES:
        raise FetchError(f"{refuse}its members declare {total:,} bytes uncompressed, more than the limit of "
                         f"{MAX_ZIP_BYTES:,}.")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise FetchError(f"{refuse}the member name {twice!r} appears twice.")
    # A member's data end at least at its local header (30 bytes and the name) plus its compressed size.
    spans = sorted((i.header_offset, i.header_offset + 30 + len(_stored_name(i)) + i.compress_size, i.filename)
                   for i in infos)
    for (_, end, name), (start, _, following) in zip(spans, spans[1:]):
        if start < end:
            raise FetchError(f"{refuse}members {name!r} and {following!r} overlap (a zip bomb's layout).")



def _stored_name(info: zipfile.ZipInfo) -> bytes:
    """The member name as the archive stores it: UTF-8 when flagged so, else code page 437."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _verify_md5(path: Path, expected: str, what: str) -> None:
    actual = _md5(path)
    if actual != expected.lower():
        raise FetchError(f"{what}: md5 is {actual}, expected {expected}. Nothing was kept.")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
