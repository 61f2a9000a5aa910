"""Java services' jars from Maven Central, and the Java runtime that runs them.

`fetch_jars` writes a small pom naming the wanted artifacts, runs `mvn dependency:copy-dependencies`
on it and moves the jars (with every runtime dependency) into `cache_dir()/<name>-<version>`, once:
later calls return that directory at once. A download is made in a temporary directory beside the
target and renamed into place, so an interrupted fetch never leaves half a jar set behind and two
concurrent fetches do not mix.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.services import process

__all__ = ["fetch_jars", "java", "last_lines", "tail"]

log = logging.getLogger(__name__)

_POM_HEAD = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamtap</groupId>
  <artifactId>{name}-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
"""
_POM_DEPENDENCY = """    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>
"""
_POM_TAIL = """  </dependencies>
</project>
"""


def pom(name: str, artifacts: Sequence[str]) -> str:
    """A pom whose runtime dependencies are `artifacts` ("group:artifact:version" each)."""
    parts = [_POM_HEAD.format(name=name)]
    for coordinate in artifacts:
        group, artifact, version = coordinate.split(":")
        parts.append(_POM_DEPENDENCY.format(group=group, artifact=artifact, version=version))
    parts.append(_POM_TAIL)
    return "".join(parts)


def fetch_jars(name: str, version: str, artifacts: Sequence[str], marker: str) -> Path:
    """The directory of `artifacts`' jars and their runtime dependencies, fetched the first time.

    Args:
      name: short name of the jar set ("hadoop"); the directory is `cache_dir()/<name>-<version>`.
      version: the version the set is named after (part of the directory name).
      artifacts: Maven coordinates "group:artifact:version".
      marker: a glob that must match a jar of a complete download ("hadoop-hdfs-*.jar").
    """
    target = process.cache_dir() / f"{name}-{version}"
    if target.is_dir():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            f"{name} {version} jars are not in {target} and Maven is not installed to fetch "
            "them: install it (apt-get install maven)"
        )
    log.info("fetching %s %s jars from Maven Central into %s", name, version, target)
    with tempfile.TemporaryDirectory(prefix=f".{name}-{version}-", dir=target.parent) as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(pom(name, artifacts))
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'jars'}",
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not any((work / "jars").glob(marker)):
            raise ServiceError(
                f"fetching {name} {version} from Maven Central failed (mvn exit "
                f"{result.returncode}):\n{last_lines(result.stdout + result.stderr)}"
            )
        try:
            os.rename(work / "jars", target)
        except OSError:
            if not target.is_dir():  # not a concurrent download that won the race
                raise
    return target


def java(service: str = "this service") -> str:
    """The `java` of $JAVA_HOME, else the one on PATH; ServiceError saying what to install."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise ServiceError(
            f"java not found: {service} needs a Java 17+ runtime on PATH or in JAVA_HOME "
            "(apt-get install openjdk-17-jre-headless)"
        )
    return found


def tail(path: Path, lines: int = 20) -> str:
    """The last non-empty lines of a log file, for error messages."""
    try:
        return last_lines(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"


def last_lines(text: str, lines: int = 20) -> str:
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
