"""Flink and Spark distributions, unpacked from their PyPI packages into the cache, never installed.

- Flink (`ensure_flink`): the wheel `apache-flink` has bin/ and conf/, the sdist
  `apache-flink-libraries` has lib/ (and bin/, plugins/) under deps/. The local Flink cluster of
  `streamtap services up flink` runs from it.
- Spark (`ensure_spark`): the sdist `pyspark` has the distribution's bin/, sbin/ and jars/ under
  deps/. The local Spark cluster runs from it, and the Beam Spark job server (the Spark driver)
  runs on its jars, so the runner needs it too (streamtap.pipelines.runners.spark).

Both are fetched with `pip download --no-deps` into a temporary directory beside the target and
renamed into place, so a distribution is complete or absent.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.pipelines.runners.java import last_lines
from streamtap.pipelines.runners.local import cache_dir

__all__ = ["FLINK_VERSION", "SPARK_VERSION", "ensure_flink", "ensure_spark"]

log = logging.getLogger(__name__)

FLINK_VERSION = "1.19.3"
SPARK_VERSION = "3.5.9"


def ensure_flink(version: str = FLINK_VERSION) -> Path:
    """FLINK_HOME of Flink `version`, unpacked from the PyPI packages the first time."""
    target = cache_dir() / f"flink-{version}"
    if (target / "lib").is_dir() and (target / "bin" / "taskmanager.sh").is_file():
        return target
    log.info("fetching Flink %s from PyPI into %s", version, target)
    with tempfile.TemporaryDirectory(prefix=f".flink-{version}-", dir=target.parent) as tmp:
        work = Path(tmp)
        downloads = work / "downloads"
        # bin/ and conf/ are the same in every wheel of a release: take the CPython 3.11 one,
        # whatever Python runs this.
        _pip_download("Flink", downloads, "--only-binary=:all:", "--python-version", "3.11",
                      "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                      f"apache-flink=={version}")
        _pip_download("Flink", downloads, "--no-binary=:all:",
                      f"apache-flink-libraries=={version}")
        home = work / "home"
        wheel = next(downloads.glob("apache_flink-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                for sub in ("bin", "conf"):
                    prefix = f"pyflink/{sub}/"
                    if member.startswith(prefix) and not member.endswith("/"):
                        destination = home / sub / member[len(prefix):]
                        destination.parent.mkdir(parents=True, exist_ok=True)
                        destination.write_bytes(archive.read(member))
        _unpack_deps(next(downloads.glob("apache-flink-libraries-*.tar.gz")), home,
                     ("lib", "bin", "plugins"))
        for script in (home / "bin").glob("*.sh"):
            script.chmod(0o755)
        (home / "bin" / "flink").chmod(0o755)
        (home / "log").mkdir(exist_ok=True)
        if not any((home / "lib").glob("flink-dist-*.jar")):
            raise ServiceError(f"apache-flink-libraries {version} has no flink-dist jar")
        _move_into_place(home, target, "lib")
    return target


def ensure_spark(version: str = SPARK_VERSION) -> Path:
    """SPARK_HOME of Spark `version`, unpacked from the PyPI sdist `pyspark` the first time."""
    target = cache_dir() / f"spark-{version}"
    if (target / "jars").is_dir() and (target / "RELEASE").is_file():
        return target
    log.info("fetching Spark %s (PyPI pyspark sdist) into %s", version, target)
    with tempfile.TemporaryDirectory(prefix=f".spark-{version}-", dir=target.parent) as tmp:
        work = Path(tmp)
        downloads = work / "downloads"
        _pip_download("Spark", downloads, "--no-binary=:all:", f"pyspark=={version}")
        home = work / "home"
        _unpack_deps(next(downloads.glob("pyspark-*.tar.gz")), home, ("jars", "bin", "sbin"))
        if not any((home / "jars").glob("spark-core_*.jar")):
            raise ServiceError(f"pyspark {version} has no spark-core jar in deps/jars")
        (home / "conf").mkdir(exist_ok=True)
        (home / "RELEASE").write_text(
            f"Spark {version} (unpacked from PyPI pyspark by streamtap)\n"
        )
        _move_into_place(home, target, "RELEASE")
    return target


def _pip_download(what: str, directory: Path, *args: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", "-q", "-d", str(directory), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        raise ServiceError(
            f"downloading {what} from PyPI failed ({' '.join(args)}):\n"
            f"{last_lines(result.stdout + result.stderr)}"
        )


def _unpack_deps(sdist: Path, home: Path, subdirs: tuple[str, ...]) -> None:
    """Unpacks <sdist>/deps/<subdir>/... of the given subdirs into home/<subdir>/..."""
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 4 or parts[1] != "deps" or not member.isfile():
                continue
            if parts[2] not in subdirs:
                continue
            destination = home.joinpath(*parts[2:])
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.extractfile(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            if member.mode & 0o111:
                destination.chmod(0o755)


def _move_into_place(home: Path, target: Path, marker: str) -> None:
    try:
        os.rename(home, target)
    except OSError:
        if not (target / marker).exists():  # not a concurrent download that won the race
            raise
