"""BrainWeb downloader and loader against a fake BrainWeb server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import gzip
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest

from simulation.anatomy import load_anatomy
from simulation.brainweb import (
    CLASS_NAMES,
    FUZZY_CLASSES,
    SPLIT_SUBJECTS,
    SUBJECTS,
    BrainWebDownloadError,
    default_cache_dir,
    download_brainweb,
    load_brainweb,
)

SHAPE = (6, 8, 10)  # (z, y, x) instead of (362, 434, 362)
FAST = dict(shape=SHAPE, timeout=2.0, retries=2, retry_wait=0.0)


def fake_memberships(subject: str) -> np.ndarray:
    """(12, Z, Y, X) memberships summing to 1: a 'brain' block of csf/gm/wm in background."""
    rng = np.random.default_rng(int(subject))
    m = rng.random((12, *SHAPE)) ** 4
    m[1:4, 1:5, 2:6, 2:8] += 3.0  # csf, gm, wm dominate a central block
    return m / m.sum(0)


def raw_gz(subject: str, k: int) -> bytes:
    data = np.rint(fake_memberships(subject)[k] * 4095).astype("<u2")
    return gzip.compress(data.tobytes())


class FakeBrainWeb:
    """Serves ``?do_download_alias=subjectNN_<class>``; behaviour per (alias, attempt) is scriptable."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.mode: dict[str, str] = {}  # alias -> "truncate_once" | "truncate" | "sleep" | "corrupt" | "short"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                try:
                    self._get()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

            def _get(self) -> None:
                url = urllib.parse.urlparse(self.path)
                if url.path != "/cgi/brainweb1":
                    self.send_error(404)
                    return
                query = urllib.parse.parse_qs(url.query)
                alias = query["do_download_alias"][0]
                fake.requests[alias] += 1
                subject, tissue = alias[len("subject"):].split("_", 1)
                body = raw_gz(subject, FUZZY_CLASSES.index(tissue))
                mode = fake.mode.get(alias, "")
                if mode == "sleep":
                    time.sleep(1.0)
                if mode == "corrupt":
                    body = b"<html>not gzip</html>" + body[:10]
                if mode == "short":  # valid gzip, too few samples
                    body = gzip.compress(b"\0" * 8)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncate" or (mode == "truncate_once" and fake.requests[alias] == 1):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cgi/brainweb1"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[FakeBrainWeb]:
    fake = FakeBrainWeb()
    yield fake
    fake.close()


def looks_complete(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.suffix in (".h5", ".gz") and not p.name.startswith(".")]


def test_download_builds_one_valid_hdf5_per_subject_and_reuses_it(server: FakeBrainWeb, tmp_path: Path) -> None:
    paths = download_brainweb(["04", 5], tmp_path, base_url=server.url, **FAST)
    assert paths == [tmp_path / "subject04.h5", tmp_path / "subject05.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subject04.h5", "subject05.h5"]  # class files removed
    assert sum(server.requests.values()) == 24
    with h5py.File(paths[0], "r") as f:
        ds = f["fractions"]
        assert ds.shape == (12, *SHAPE) and ds.dtype == np.uint8
        assert tuple(n.decode() if isinstance(n, bytes) else n for n in f.attrs["classnames"]) == CLASS_NAMES
        assert f.attrs["subject"] == "04" and int(f.attrs["version"]) == 1
        assert "subject04_<class>" in f.attrs["source_url"]
        # memberships normalised to sum 1, stored x255
        expected = fake_memberships("04")
        np.testing.assert_allclose(ds[()] / 255.0, expected, atol=1.5 / 255 + 1 / 4095)
    # present valid caches are never downloaded again
    again = download_brainweb(["04", "05"], tmp_path, base_url=server.url, **FAST)
    assert again == paths and sum(server.requests.values()) == 24


def test_interrupted_transfer_is_retried(server: FakeBrainWeb, tmp_path: Path) -> None:
    server.mode["subject04_gry"] = "truncate_once"
    download_brainweb(["04"], tmp_path, base_url=server.url, **FAST)
    assert server.requests["subject04_gry"] == 2 and server.requests["subject04_wht"] == 1
    assert (tmp_path / "subject04.h5").is_file()


@pytest.mark.parametrize("mode,message", [("truncate", "interrupted"), ("corrupt", "corrupt gzip"),
                                          ("short", "decompressed size")])
def test_failed_transfer_leaves_nothing_complete(server: FakeBrainWeb, tmp_path: Path, mode: str, message: str) -> None:
    server.mode["subject04_wht"] = mode
    with pytest.raises(BrainWebDownloadError, match=f"failed after 3 attempts; last error: .*{message}"):
        download_brainweb(["04"], tmp_path, base_url=server.url, **FAST)
    assert server.requests["subject04_wht"] == 3
    assert not (tmp_path / "subject04.h5").exists() and not list(tmp_path.glob("*.part"))
    # only the verified earlier classes remain; a rerun resumes without fetching them again
    assert sorted(p.name for p in looks_complete(tmp_path)) == ["subject04_bck.raw.gz", "subject04_csf.raw.gz",
                                                                 "subject04_gry.raw.gz"]
    server.mode.clear()
    download_brainweb(["04"], tmp_path, base_url=server.url, **FAST)
    assert server.requests["subject04_bck"] == 1 and server.requests["subject04_wht"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["subject04.h5"]


def test_timeout(server: FakeBrainWeb, tmp_path: Path) -> None:
    server.mode["subject04_bck"] = "sleep"
    t0 = time.perf_counter()
    with pytest.raises(BrainWebDownloadError, match="timed out after 0.2 s"):
        download_brainweb(["04"], tmp_path, base_url=server.url, shape=SHAPE, timeout=0.2, retries=1, retry_wait=0.0)
    assert time.perf_counter() - t0 < 1.9  # two attempts of 0.2 s, not the server's 1 s each
    assert server.requests["subject04_bck"] == 2 and not looks_complete(tmp_path)


def test_invalid_cache_is_replaced(server: FakeBrainWeb, tmp_path: Path) -> None:
    with h5py.File(tmp_path / "subject04.h5", "w") as f:  # e.g. an older cache version
        f.create_dataset("fractions", data=np.zeros((12, *SHAPE), np.uint8))
        f.attrs["version"] = 0
    (tmp_path / "subject05.h5").write_bytes(b"truncated")
    download_brainweb(["04", "05"], tmp_path, base_url=server.url, **FAST)
    assert sum(server.requests.values()) == 24
    with h5py.File(tmp_path / "subject04.h5", "r") as f:
        assert int(f.attrs["version"]) == 1


def test_http_404_is_not_retried(server: FakeBrainWeb, tmp_path: Path) -> None:
    with pytest.raises(BrainWebDownloadError, match="HTTP 404"):
        download_brainweb(["04"], tmp_path, base_url=server.url.replace("/cgi/brainweb1", "/nothing"), **FAST)


def test_load_anatomy_from_cache(server: FakeBrainWeb, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pinqi simulate --download-brainweb.*download_brainweb\(\)"):
        load_anatomy("brainweb", "test", cache_dir=tmp_path, subjects=["04"])
    a = load_anatomy("brainweb", "test", cache_dir=tmp_path, download=True, subjects=["04", "06"],
                     min_brain_fraction=0.0, base_url=server.url, **FAST)
    assert a.source == "brainweb" and a.split == "test" and a.class_names == CLASS_NAMES[1:]
    assert a.fractions.shape == (11, 6, 4, 5) and a.voxel_size_mm == (1.0, 1.0)
    assert a.slice_ids[:3] == ("brainweb:subject04:z=0", "brainweb:subject04:z=1", "brainweb:subject04:z=2")
    assert a.slice_ids[3] == "brainweb:subject06:z=0"
    f = a.fractions
    assert f.min() >= 0 and f.sum(0).max() <= 1 + 1e-6
    # 2x2x2 block means of the memberships (without background), y flipped (anterior first)
    m = fake_memberships("04")[1:]
    block = m.reshape(11, 3, 2, 4, 2, 5, 2).mean(axis=(2, 4, 6))[:, :, ::-1]
    np.testing.assert_allclose(f[:, :3].numpy(), block, atol=2.5 / 255)
    # no download on a second load, and the brain filter drops the empty-ish slices
    n = sum(server.requests.values())
    strict = load_brainweb("test", cache_dir=tmp_path, subjects=["04"], min_brain_fraction=0.9)
    assert sum(server.requests.values()) == n and 1 <= strict.n_slices < 3


def test_subject_split_and_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parts = [set(SPLIT_SUBJECTS[s]) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [16, 1, 3]
    assert set.union(*parts) == set(SUBJECTS) and len(SUBJECTS) == 20
    monkeypatch.setenv("PINQI_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "brainweb"
    with pytest.raises(ValueError, match="unknown BrainWeb subject '07'"):
        download_brainweb(["07"], tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "brainweb")):
        load_anatomy("brainweb", "val")
