"""Where the data comes from: the `sources:` and `local_sources:` sections of params.yaml.

`sources:` holds what is downloaded (`sklearn:`, `kaggle:`, `https://` uris); `local_sources:` holds
folders and files on this machine. Each local source is a DVC dependency of its own fetch stage
(`fetch_local` in dvc.yaml), so an edit to it (a class folder added, an image replaced) makes
`dvc status` report it and `dvc repro` fetch it again and rerun everything downstream; under
`sources:` a path would be a string to DVC, and its edits would leave every result silently stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnbench.params.validation import Validated, build, check, mapping, named_table, require

SOURCE_FORMATS = ("cifar10-python", "image-csv", "image-folder", "npz")
REMOTE = ("sklearn:", "kaggle:", "http://", "https://")  # any other uri is a path on this machine


@dataclass(frozen=True)
class SourceConfig(Validated):
    """A raw source: where `fetch` gets it and how `prepare` reads it."""

    name: str
    uri: str
    format: str
    md5: str | None = None
    unverified_http: bool = False  # accept http:// with no md5 (no TLS, no checksum); the fetch manifest says so

    def validate(self) -> None:
        require(self.format in SOURCE_FORMATS, "format",
                 f"must be one of {', '.join(SOURCE_FORMATS)}, not {self.format!r}")
        require(bool(self.uri), "uri", "must not be empty")
        require(not self.uri.startswith("http://") or self.md5 is not None or self.unverified_http, "uri",
                "is plain http:// with no md5: neither TLS nor a checksum protects the download. Use https://, "
                "set `md5`, or set `unverified_http: true` to accept it (the data report records it)")

    @property
    def local(self) -> bool:
        """A folder or file on this machine, rather than something to download."""
        return not self.uri.startswith(REMOTE)


def parse_sources(raw: dict) -> dict[str, SourceConfig]:
    """Both sections as one table by name; a path under `sources:` or a download under `local_sources:` is refused."""
    tables = {section: named_table(raw, section, _parse_source, required=False)
              for section in ("sources", "local_sources")}
    check(any(tables.values()), "sources", "declares no source (nor does local_sources:): nothing to fetch")
    for section, table in tables.items():
        for name, source in table.items():
            if section == "sources":
                check(not source.local, f"sources.{name}.uri", "is a path on this machine: declare it under "
                      "local_sources:, whose fetch stage DVC reruns when the folder or file changes")
            else:
                check(source.local, f"local_sources.{name}.uri", "is not a path on this machine: it belongs "
                      "under sources:")
                check(name not in tables["sources"], f"local_sources.{name}", "is also a name under sources:")
    return {**tables["sources"], **tables["local_sources"]}


def _parse_source(name: str, raw, where: str) -> SourceConfig:
    return build(SourceConfig, {"name": name, **mapping(raw, where)}, where)
