"""Java services' jars from Maven Central, and the Java runtime that runs them.

`fetch_jars` writes a small pom naming the wanted artifacts and fetches them with every runtime
dependency into `cache_dir()/<name>-<version>`, once (`pipelines.runners.java.copy_dependencies`,
which the runners' job servers use too: a temporary directory renamed into place, so an
interrupted fetch never leaves half a jar set behind).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from streamtap.pipelines.runners import java as runners_java
from streamtap.pipelines.runners.java import copy_dependencies, last_lines
from streamtap.services import process

__all__ = ["fetch_jars", "java", "last_lines", "pom", "tail"]

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
    if not target.is_dir():
        log.info("fetching %s %s jars from Maven Central into %s", name, version, target)
        copy_dependencies(pom(name, artifacts), target, marker, f"{name} {version}'s jars",
                          timeout=900)
    return target


def java(service: str = "this service") -> str:
    """The `java` of $JAVA_HOME, else the one on PATH; ServiceError saying what to install."""
    return runners_java.java(service, package="openjdk-17-jre-headless")


def tail(path: Path, lines: int = 20) -> str:
    """The last non-empty lines of a log file, for error messages."""
    try:
        return last_lines(path.read_text(errors="replace"), lines)
    except OSError:
        return "(no log)"
