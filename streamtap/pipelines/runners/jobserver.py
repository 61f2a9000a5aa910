"""One builder of Beam job-server launchers, for Flink and Spark alike: `ensure_job_server(spec)`.

Beam's shaded job-server jars (`beam-runners-flink-<X.Y>-job-server`,
`beam-runners-spark-3-job-server`) are not served by Maven Central for any version we tried
(2.62..2.77), so streamtap assembles the job server itself, the same way for both runners:

1. a generated POM names the plain runner artifact (`spec.runner_artifact`, at
   BEAM_JOB_SERVER_VERSION) and `beam-runners-java-job-service` at JOB_SERVICE_VERSION in place
   of the 2.70.0 one that is not served (a small jar of job-service plumbing; the Python SDK
   submits and runs pipelines through it fine), plus `spec.extra_dependencies`;
2. `mvn dependency:copy-dependencies` fetches them into `cache_dir()/<spec.name>/jars`, once;
3. the spec's Beam patches (streamtap.pipelines.runners.patches) are compiled with
   `javac --release 8` against the class path (left out, with a warning, without a JDK or when
   an edit does not match);
4. the launcher is a tiny jar whose manifest names the main class (`spec.main_class`) and lists
   the class path (`spec.class_path(jars)`: relative `jars/...` entries, or absolute file: URLs
   with `absolute_class_path`) and that carries the patched classes, so `java -jar <launcher>`
   runs the job server and Beam's Python `--flink_job_server_jar` / `--spark_job_server_jar`
   accept it too. A stamp beside it names the patches and the class path; when they change the
   launcher is rebuilt, without fetching the jars again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamtap.errors import ServiceError
from streamtap.pipelines.runners.java import copy_dependencies, javac, last_lines, maven
from streamtap.pipelines.runners.local import cache_dir
from streamtap.pipelines.runners.patches import Patch

__all__ = ["BEAM_JOB_SERVER_VERSION", "JOB_SERVICE_VERSION", "JobServerSpec", "ensure_job_server"]

log = logging.getLogger(__name__)

BEAM_JOB_SERVER_VERSION = "2.70.0"
# beam-runners-java-job-service 2.70.0 is not served; 2.65.0 is the newest that is.
JOB_SERVICE_VERSION = "2.65.0"
# Raise when the build changes in a way the stamp does not show, to rebuild cached launchers.
_BUILD_LEVEL = 4

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamtap</groupId>
  <artifactId>{runner}-job-server-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>{runner}</artifactId>
      <version>{beam}</version>
      <exclusions>
        <exclusion>
          <groupId>org.apache.beam</groupId>
          <artifactId>beam-runners-java-job-service</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-java-job-service</artifactId>
      <version>{job_service}</version>
      <exclusions>
        <exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion>
      </exclusions>
    </dependency>{extra}
  </dependencies>
</project>
"""

_DEPENDENCY = """
    <dependency>
      <groupId>{0}</groupId>
      <artifactId>{1}</artifactId>
      <version>{2}</version>
    </dependency>"""


@dataclass(frozen=True)
class JobServerSpec:
    """What differs between the Flink and the Spark job server; the build is the same.

    Attributes:
      title: what it is called in messages, e.g. "the Beam Flink job server".
      runner_artifact: the Beam runner's Maven artifact id, e.g. "beam-runners-flink-1.19".
      main_class: the job server driver the launcher runs.
      launcher_name: file name of the launcher jar in the cache dir.
      patches: Beam classes compiled into the launcher.
      extra_dependencies: more (group, artifact, version) for the POM, e.g. an slf4j binding.
      class_path: the launcher's class path, in order, from the directory of fetched jars
        (default: all of them); also what the patches are compiled against.
      absolute_class_path: the manifest names the jars by absolute file: URL (the launcher then
        also works where it is copied to, e.g. shipped to Spark executors) instead of jars/....
      beam_version: version of the Beam runner artifacts.
    """

    title: str
    runner_artifact: str
    main_class: str
    launcher_name: str
    patches: tuple[Patch, ...] = ()
    extra_dependencies: tuple[tuple[str, str, str], ...] = ()
    class_path: Callable[[Path], list[Path]] | None = None
    absolute_class_path: bool = False
    beam_version: str = BEAM_JOB_SERVER_VERSION

    @property
    def name(self) -> str:
        """The cache directory: <runner artifact>-job-server-<Beam version>."""
        return f"{self.runner_artifact}-job-server-{self.beam_version}"

    def pom(self) -> str:
        extra = "".join(_DEPENDENCY.format(*dependency) for dependency in self.extra_dependencies)
        return _POM.format(runner=self.runner_artifact, beam=self.beam_version,
                           job_service=JOB_SERVICE_VERSION, extra=extra)

    def jars(self, directory: Path) -> list[Path]:
        if self.class_path is not None:
            return self.class_path(directory)
        return sorted(directory.glob("*.jar"))


def ensure_job_server(spec: JobServerSpec) -> Path:
    """The launcher jar of the job server `spec` describes, built (and fetched) the first time.

    Raises ServiceError when the jars are missing and cannot be fetched (no Maven, no network).
    """
    target = cache_dir() / spec.name
    jars_dir = target / "jars"
    launcher = target / spec.launcher_name
    stamp = target / f"{launcher.stem}.stamp"
    built = jars_dir.is_dir() and launcher.is_file() and stamp.is_file()
    if built and stamp.read_text() == _stamp(spec, _manifest_class_path(spec, jars_dir)):
        return launcher
    mvn = maven(spec.title, target)
    if not jars_dir.is_dir():
        log.info("fetching the jars of %s (Beam %s) from Maven Central into %s", spec.title,
                 spec.beam_version, target)
        copy_dependencies(spec.pom(), jars_dir, f"{spec.runner_artifact}-*.jar", spec.title)
    class_path = _manifest_class_path(spec, jars_dir)
    with tempfile.TemporaryDirectory(prefix=".launcher-", dir=target) as tmp:
        work = Path(tmp)
        classes, applied = _compile_patches(spec, mvn, spec.jars(jars_dir), work)
        _write_launcher(work / "launcher.jar", spec.main_class, class_path, classes)
        os.replace(work / "launcher.jar", launcher)
    stamp.write_text(_stamp(spec, class_path))
    log.info("%s launcher %s built (%d jars) with patches: %s", spec.title, launcher,
             len(class_path), ", ".join(applied) or "none")
    return launcher


def _manifest_class_path(spec: JobServerSpec, jars_dir: Path) -> list[str]:
    jars = spec.jars(jars_dir)
    if spec.absolute_class_path:
        return [jar.as_uri() for jar in jars]
    return [jar.relative_to(jars_dir.parent).as_posix() for jar in jars]


def _stamp(spec: JobServerSpec, class_path: list[str]) -> str:
    """Identifies the build: patches and class path, so a launcher built otherwise is rebuilt."""
    digest = hashlib.sha256(
        (repr(spec.patches) + spec.main_class + "\n".join(class_path)).encode()
    ).hexdigest()[:16]
    return f"{spec.beam_version} level {_BUILD_LEVEL} {digest}\n"


def _compile_patches(
    spec: JobServerSpec, mvn: str, jars: list[Path], work: Path
) -> tuple[dict[str, bytes], list[str]]:
    """Compiles the patches that apply; returns {class file path in jar: bytes} and their names."""
    if not spec.patches:
        return {}, []
    compiler = javac()
    if compiler is None:
        log.warning("javac not found (install a JDK, e.g. openjdk-17-jdk-headless): %s runs "
                    "unpatched: %s", spec.title, "; ".join(p.without for p in spec.patches))
        return {}, []
    # javac takes a class path of one directory's jars (dir/*), so gather them in one.
    class_path = work / "class-path"
    class_path.mkdir()
    for jar in jars:
        if not (class_path / jar.name).exists():
            os.symlink(jar, class_path / jar.name)
    results: dict[str, bytes] = {}
    applied: list[str] = []
    for index, patch in enumerate(spec.patches):
        try:
            sources = dict(patch.files)
            sources.update(_edited_sources(patch, mvn, spec.beam_version, work / "sources"))
        except (OSError, KeyError, ValueError, ServiceError) as error:
            log.warning("Beam patch %r left out (%s): %s", patch.name, patch.without, error)
            continue
        compiled = _compile(compiler, class_path, work / f"patch-{index}", sources) or {}
        kept = {
            path: data for path, data in compiled.items()
            if any(path == f"{c}.class" or path.startswith(f"{c}$") for c in patch.classes)
        }
        if not kept:
            log.warning("Beam patch %r left out (%s): it did not compile", patch.name,
                        patch.without)
            continue
        results.update(kept)
        applied.append(patch.name)
    return results, applied


def _edited_sources(patch: Patch, mvn: str, version: str, directory: Path) -> dict[str, str]:
    """The patch's Beam source files from their sources jars, with its edits made."""
    sources: dict[str, str] = {}
    for artifact, paths in patch.sources.items():
        sources_jar = _fetch_sources(mvn, artifact, version, directory)
        with zipfile.ZipFile(sources_jar) as archive:
            for path in paths:
                sources[path] = archive.read(path).decode()
    for path in list(sources):
        # SpotBugs annotations are a compile-only dependency of Beam, not in the jars.
        sources[path] = re.sub(
            r"^import edu\.umd\.cs\.findbugs\.annotations\.[A-Za-z]+;$", "",
            sources[path], flags=re.MULTILINE,
        )
        sources[path] = re.sub(r"@SuppressFBWarnings(\([^)]*\))?", "", sources[path])
        for old, new in patch.edits.get(Path(path).name, ()):
            if sources[path].count(old) != 1:
                raise ValueError(f"{Path(path).name}: the text to replace is not there")
            sources[path] = sources[path].replace(old, new)
    return sources


def _fetch_sources(mvn: str, artifact: str, version: str, directory: Path) -> Path:
    path = directory / f"{artifact}-{version}-sources.jar"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-B", "-q", "dependency:copy",
         f"-Dartifact=org.apache.beam:{artifact}:{version}:jar:sources",
         f"-DoutputDirectory={directory}"],
        cwd=directory, capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0 or not path.is_file():
        raise ServiceError(f"cannot fetch the sources of {artifact} {version}: "
                           f"{last_lines(result.stdout + result.stderr, 5)}")
    return path


def _compile(
    compiler: str, jars: Path, work: Path, sources: dict[str, str]
) -> dict[str, bytes] | None:
    """javac --release 8 (Beam's own target) of `sources` against the jars in `jars`."""
    source_root, classes = work / "src", work / "classes"
    files = []
    for path, text in sources.items():
        file = source_root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        files.append(str(file))
    classes.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [compiler, "--release", "8", "-g", "-proc:none", "-nowarn", "-encoding", "UTF-8",
         "-cp", f"{jars}/*", "-d", str(classes), *files],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        log.warning("javac failed:\n%s", last_lines(result.stdout + result.stderr))
        return None
    return {
        str(path.relative_to(classes)): path.read_bytes() for path in classes.rglob("*.class")
    }


def _write_launcher(
    path: Path, main_class: str, class_path: list[str], classes: dict[str, bytes]
) -> None:
    """A jar with a manifest (Main-Class, Class-Path) and the patched classes."""
    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {main_class}",
        "Created-By: streamtap",
        "Class-Path: " + " ".join(class_path),
    ]
    manifest = "".join(_wrap_manifest_line(line) for line in lines) + "\r\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as jar:
        jar.writestr("META-INF/MANIFEST.MF", manifest)
        for name, data in sorted(classes.items()):
            jar.writestr(name, data)


def _wrap_manifest_line(line: str) -> str:
    """A manifest header split into lines of at most 72 bytes (continuations start with a space)."""
    data = line.encode()
    parts = [data[:72]]
    data = data[72:]
    while data:
        parts.append(b" " + data[:71])
        data = data[71:]
    return "".join(part.decode() + "\r\n" for part in parts)
