"""The Java side of the runners: finding java and javac, the JVM options, fetching jars with Maven.

Flink, Spark, their Beam job servers and Kafka are JVMs. This module finds the JDK
($JAVA_HOME, else the `java` on PATH), holds the module opens Flink and Spark need on Java 17,
and fetches a generated POM's runtime dependencies from Maven Central into a directory of the
cache (`mvn dependency:copy-dependencies`), atomically, so concurrent first runs do not clash.
Failures raise ServiceError with what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamtap.errors import ServiceError

__all__ = [
    "JAVA17_OPTS",
    "SPARK_JAVA17_OPTS",
    "copy_dependencies",
    "java",
    "java_home",
    "javac",
    "last_lines",
    "maven",
]

# JVM options Flink 1.19 uses on Java 17 (from its default config.yaml), also used for the job
# server: Kryo and Flink's closure cleaner reflect into these packages.
JAVA17_OPTS = (
    "--add-exports=java.base/sun.net.util=ALL-UNNAMED "
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED "
    "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED "
    "--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED "
    "--add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
    "--add-opens=java.base/java.text=ALL-UNNAMED --add-opens=java.base/java.time=ALL-UNNAMED "
    "--add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED"
)

# The module opens Spark 3.5's launcher adds on Java 17 (JavaModuleOptions), for the daemons and
# the driver; executors get them from SparkContext itself.
SPARK_JAVA17_OPTS = (
    "-XX:+IgnoreUnrecognizedVMOptions "
    "--add-opens=java.base/java.lang=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED "
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED "
    "--add-opens=java.base/java.io=ALL-UNNAMED "
    "--add-opens=java.base/java.net=ALL-UNNAMED "
    "--add-opens=java.base/java.nio=ALL-UNNAMED "
    "--add-opens=java.base/java.util=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED "
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED "
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED "
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED "
    "--add-opens=java.base/sun.security.action=ALL-UNNAMED "
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED "
    "-Djdk.reflect.useDirectMethodHandle=false "
    "-Dio.netty.tryReflectionSetAccessible=true"
)


def java_home() -> str | None:
    """$JAVA_HOME when it has bin/java, else the home of the `java` on PATH, else None."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return home
    found = shutil.which("java")
    if found:
        return str(Path(os.path.realpath(found)).parents[1])
    return None


def java(needed_by: str = "Flink", package: str = "openjdk-17-jdk-headless") -> str:
    """Path of the java binary; ServiceError naming who needs it and what to install if none."""
    home = java_home()
    if home is None:
        raise ServiceError(
            f"java not found: {needed_by} needs a Java 17 runtime on PATH or in JAVA_HOME "
            f"(apt-get install {package})"
        )
    return str(Path(home) / "bin" / "java")


def javac() -> str | None:
    """Path of javac (a JDK, not only a runtime), or None."""
    home = java_home()
    if home and (Path(home) / "bin" / "javac").exists():
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def maven(what: str, where: Path) -> str:
    """Path of mvn; ServiceError saying that `what` (not in `where`) needs it if none."""
    found = shutil.which("mvn")
    if found is None:
        raise ServiceError(
            f"{what}: not in {where}, and Maven is not installed to fetch it: install it "
            "(apt-get install maven)"
        )
    return found


def copy_dependencies(
    pom: str, destination: Path, expect: str, what: str, timeout: float = 1800
) -> None:
    """Fetches the runtime dependencies of the POM text `pom` into the directory `destination`.

    They are downloaded into a temporary directory beside it and renamed into place, so
    `destination` is complete or absent; when a concurrent fetch got there first, its copy is
    kept. `expect` is a glob of a jar that must be among them (else the fetch failed); `what`
    names the download in errors.
    """
    mvn = maven(what, destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{destination.name}-", dir=destination.parent) as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(pom)
        jars = work / "jars"
        result = subprocess.run(
            [mvn, "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={jars}"],
            cwd=work, capture_output=True, text=True, timeout=timeout, check=False,
        )
        if result.returncode != 0 or not any(jars.glob(expect)):
            raise ServiceError(
                f"fetching {what} from Maven Central failed (mvn exit {result.returncode}):\n"
                f"{last_lines(result.stdout + result.stderr)}"
            )
        try:
            os.rename(jars, destination)
        except OSError:
            if not destination.is_dir():  # not a concurrent download that won the race
                raise


def last_lines(text: str, lines: int = 20) -> str:
    """The last `lines` non-blank lines of a tool's output, for error messages."""
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])
