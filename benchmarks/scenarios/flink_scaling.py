"""Scenario 6: Flink scaling. The same bounded capture with 1 and 2 TaskManager slots.

One real Flink 1.19 cluster (streamtap.services.flink: a JobManager, `taskmanagers` TaskManagers
with `slots_per_taskmanager` slots each, the Beam job server, and a Beam worker pool on loopback)
is started once. Then, per repeat and per setup, the same capture runs with `--parallelism=1`
(the job occupies one task slot) and `--parallelism=2` (two slots), in alternating order:

- `loopback`: what `streamtap run --runner=FlinkRunner --flink_master=...` does by default.
  The Python SDK workers run inside the `streamtap run` process, whatever the slot count.
- `worker_pool`: `--environment_type=EXTERNAL`; streamtap fills in the cluster's worker pool,
  which starts a Python SDK worker process per SDK environment (`--sdk_worker_parallelism` per
  TaskManager, which streamtap sets to min(slots per TaskManager, --parallelism)). With one slot
  per TaskManager each slot's reading task gets a process of its own.

The capture: `streams` TCP streams, each served by its own feeder process (this module's `feed`
command) as fast as the socket takes them, `stream_bytes` each (seeded pseudo-random bytes, so
the expected content is known), cut into `chunk_bytes` chunks, to local Parquet; every source
has `max_bytes`, so the job is bounded (Flink batch) and ends by itself.

Throughput is bytes / data span, where the data span runs from the first byte any stream
received (the earliest chunk event_time) to the last Parquet file written (latest mtime): job
submission, staging and worker start-up are excluded (they are reported as `wall_s`). Every run
is verified before it counts: `streamtap.captures.verify` (seq and offsets contiguous, CRCs
right, one session, no discontinuity, exactly `stream_bytes` per stream) and every chunk's
payload compared with the bytes the feeder sent. CPU time per process group (psutil, sampled
every `sample_interval` s) is interpolated to the data span: the streamtap client process
(LOOPBACK workers run in it), the worker-pool processes, the TaskManager JVM(s), the JobManager
and job server JVMs, and the feeders; the TCP connections of the Python processes show which
process read which stream.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.feeders import feeder_block

NAME = "flink_scaling"
_BLOCK = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


# --- CPU per process group ----------------------------------------------------------------------


class _GroupSampler:
    """Samples cumulative CPU seconds of process groups, each process, and the whole machine.

    groups: {name: callable returning root pids}; a root's descendants count too, except pids
    claimed by an earlier group. The machine's busy time (psutil.cpu_times: all but idle and
    iowait) shows how much CPU everything else on the machine took meanwhile. Also records which
    Python process holds a TCP connection to each watched port (which process read which stream).
    """

    def __init__(self, groups: dict, interval: float, watch_ports: dict[int, str]):
        self._groups = groups
        self._interval = interval
        self._watch = dict(watch_ports)
        self.readers: dict[str, int] = {}
        # (wall-clock time, {(group, pid): cumulative CPU s}, machine busy s, machine steal s)
        self.samples: list[tuple[float, dict, float, float]] = []
        self._last: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flink-sampler", daemon=True)

    def start(self) -> None:
        self._sample()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        import psutil

        now = time.time()
        seen: set[int] = set()
        for group, roots in self._groups.items():
            for root in roots():
                try:
                    procs = [psutil.Process(root)]
                    procs += procs[0].children(recursive=True)
                except psutil.NoSuchProcess:
                    continue
                for proc in procs:
                    if proc.pid in seen:
                        continue
                    seen.add(proc.pid)
                    try:
                        with proc.oneshot():
                            times = proc.cpu_times()
                            name = proc.name()
                        # A process that exits keeps the CPU of its last sample.
                        self._last[(group, proc.pid)] = times.user + times.system
                        if len(self.readers) < len(self._watch) and name.startswith("python"):
                            for conn in proc.net_connections(kind="tcp"):
                                port = conn.raddr.port if conn.raddr else None
                                if port in self._watch:
                                    self.readers.setdefault(self._watch[port], proc.pid)
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        continue
        machine = psutil.cpu_times()
        busy = sum(getattr(machine, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))
        self.samples.append((now, dict(self._last), busy, getattr(machine, "steal", 0.0)))

    def _at(self, moment: float) -> tuple[dict, float, float]:
        """Cumulative CPU per (group, pid), machine busy and steal seconds at `moment`
        (linear between samples; a process not yet seen had used 0)."""
        samples = self.samples
        if moment <= samples[0][0]:
            return samples[0][1], samples[0][2], samples[0][3]
        for (t0, a, busy0, steal0), (t1, b, busy1, steal1) in zip(samples, samples[1:]):
            if t0 <= moment <= t1:
                share = 0.0 if t1 == t0 else (moment - t0) / (t1 - t0)
                keys = set(a) | set(b)
                values = {k: a.get(k, 0.0) + (b.get(k, 0.0) - a.get(k, 0.0)) * share for k in keys}
                return (values, busy0 + (busy1 - busy0) * share,
                        steal0 + (steal1 - steal0) * share)
        return samples[-1][1], samples[-1][2], samples[-1][3]

    def between(self, first: float, last: float) -> dict:
        """CPU in cores (CPU seconds / wall seconds) from `first` to `last`: per group, the
        busiest process of each group, the machine, and the rest of the machine."""
        a, busy0, steal0 = self._at(first)
        b, busy1, steal1 = self._at(last)
        span = max(last - first, 1e-9)
        used = {k: max(0.0, b.get(k, 0.0) - a.get(k, 0.0)) for k in set(a) | set(b)}
        groups = {g: round(sum(v for (gg, _), v in used.items() if gg == g) / span, 2)
                  for g in self._groups}
        busiest = {}
        for (group, pid), value in used.items():
            if value / span > busiest.get(group, (0, 0.0))[1]:
                busiest[group] = (pid, value / span)
        ours = sum(used.values()) / span
        machine = (busy1 - busy0) / span
        return {
            "cpu_cores_in_span": groups,
            "cpu_cores_total_in_span": round(ours, 2),
            "busiest_process_cores": {g: round(v, 2) for g, (_, v) in sorted(busiest.items())},
            "processes_with_cpu": {g: sum(1 for (gg, _), v in used.items()
                                          if gg == g and v / span > 0.05)
                                   for g in self._groups},
            "machine_busy_cores": round(machine, 2),
            "other_processes_cores": round(max(0.0, machine - ours), 2),
            "steal_cores": round((steal1 - steal0) / span, 2),
            "cpu_seconds_in_span": round(sum(used.values()), 2),
        }


# --- one capture run ----------------------------------------------------------------------------


def wait_for_quiet(threshold_cores: float, max_wait: float, window: float = 2.0) -> dict:
    """Waits (at most max_wait s) until the whole machine was busy less than threshold_cores
    over `window` s; returns the wait and the last reading. On this shared machine other
    engineers' builds come and go: a run started in a quiet moment is less likely to share its
    2 cores, and the CPU other processes took during each run is recorded anyway."""
    import psutil

    def busy() -> float:
        times = psutil.cpu_times()
        return sum(getattr(times, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))

    started = time.monotonic()
    while True:
        before, t0 = busy(), time.monotonic()
        time.sleep(window)
        cores = (busy() - before) / (time.monotonic() - t0)
        waited = time.monotonic() - started
        if cores < threshold_cores or waited >= max_wait:
            return {"waited_s": round(waited, 1), "machine_busy_cores_before": round(cores, 2),
                    "quiet": cores < threshold_cores}


def _start_feeders(count: int, total: int, seed_base: int, hold: float) -> list[dict]:
    from streamtap.services.process import free_port

    feeders = []
    for index in range(count):
        port = free_port()
        seed = seed_base + index
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.feeders", "tcp", "--port", str(port),
             "--bytes", str(total), "--seed", str(seed), "--hold", str(hold),
             "--accept-timeout", "300"],
            stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
        )
        feeders.append({"id": f"s{index}", "port": port, "seed": seed, "process": proc})
    for feeder in feeders:
        if feeder["process"].stdout.readline().strip() != "listening":
            raise RuntimeError(f"feeder {feeder['id']} did not start")
    return feeders


def _check_capture(location: str, feeders: list[dict], total: int) -> dict:
    """verify() every stream and compare every chunk's payload with what its feeder sent (one
    pass over the capture)."""
    from streamtap.captures import read_capture, verify

    expected = {}
    for feeder in feeders:
        block = feeder_block(feeder["seed"])
        expected[feeder["id"]] = block + block  # any slice of <= 1 MiB, wherever it starts
    mismatched: dict[str, int] = {}

    def compared(chunks):
        for chunk in chunks:
            doubled = expected.get(chunk.stream_id)
            if doubled is not None:
                payload, start = chunk.payload, chunk.offset % _BLOCK
                for piece in range(0, len(payload), _BLOCK):
                    part = payload[piece:piece + _BLOCK]
                    begin = (start + piece) % _BLOCK
                    if part != doubled[begin:begin + len(part)]:
                        mismatched[chunk.stream_id] = mismatched.get(chunk.stream_id, 0) + 1
                        break
            yield chunk

    reports = verify(compared(read_capture(location)))
    problems = []
    streams = {}
    for feeder in feeders:
        report = reports.get(feeder["id"])
        if report is None:
            problems.append(f"{feeder['id']}: not in the capture")
            continue
        if not report.ok:
            problems.append(f"{feeder['id']}: {report.problems[:3]}")
        if report.sessions != 1 or report.discontinuities or report.bytes != total:
            problems.append(f"{feeder['id']}: {report.summary()} (expected {total} bytes, one "
                            "session, no discontinuity)")
        if mismatched.get(feeder["id"]):
            problems.append(f"{feeder['id']}: {mismatched[feeder['id']]} chunk(s) differ from "
                            "the bytes sent")
        streams[feeder["id"]] = {"bytes": report.bytes, "chunks": report.chunks,
                                 "first_event_time": report.first_event_time,
                                 "last_event_time": report.last_event_time}
    extra = sorted(set(reports) - {f["id"] for f in feeders})
    if extra:
        problems.append(f"unexpected streams {extra}")
    return {"ok": not problems, "problems": problems, "streams": streams,
            "bytes": sum(s["bytes"] for s in streams.values())}


def _rest(service, path: str) -> dict:
    with urllib.request.urlopen(f"{service.rest_url}{path}", timeout=10) as response:
        return json.loads(response.read().decode())


def _job_facts(service, job_name: str) -> dict:
    try:
        jobs = [j for j in _rest(service, "/jobs/overview")["jobs"] if j.get("name") == job_name]
        if not jobs:
            return {}
        job = _rest(service, f"/jobs/{jobs[0]['jid']}")
        return {"state": job.get("state"), "duration_s": round(job.get("duration", 0) / 1000, 2),
                "vertices": [{"name": v["name"][:120], "parallelism": v["parallelism"],
                              "duration_s": round(v.get("duration", 0) / 1000, 2)}
                             for v in job.get("vertices", [])]}
    except (OSError, ValueError, KeyError) as error:
        return {"error": str(error)}


def capture_run(service, state_root: Path, cfg: dict, setup: str, parallelism: int,
                capture_root: Path, seed_base: int) -> dict:
    """One verified capture run with fresh feeders; raises if it fails or is not byte-exact."""
    from benchmarks.measure import load_average

    total, count = cfg["stream_bytes"], cfg["streams"]
    capture_dir = capture_root / f"capture-{setup}-{parallelism}-{seed_base}"
    shutil.rmtree(capture_dir, ignore_errors=True)
    quiet = wait_for_quiet(cfg["quiet_below_cores"], cfg["quiet_max_wait_s"])
    load = load_average()
    feeders = _start_feeders(count, total, seed_base, hold=cfg["timeout_s"])
    try:
        return _run_with_feeders(service, state_root, cfg, setup, parallelism, capture_root,
                                 seed_base, capture_dir, feeders, quiet, load)
    finally:
        for feeder in feeders:
            feeder["process"].kill()
            feeder["process"].wait()


def _run_with_feeders(service, state_root, cfg, setup, parallelism, capture_root, seed_base,
                      capture_dir, feeders, quiet, load) -> dict:
    import yaml

    from benchmarks.measure import load_average

    total = cfg["stream_bytes"]
    config = {
        "sources": [{"id": f["id"], "type": "tcp", "address": f"127.0.0.1:{f['port']}",
                     "max_bytes": total} for f in feeders],
        "chunk": {"max_bytes": cfg["chunk_bytes"], "max_seconds": 1.0},
        "window_seconds": cfg["window_seconds"],
        "resume": False,
        "sinks": [{"type": "parquet", "path": str(capture_dir),
                   "compression": cfg["compression"]}],
    }
    config_path = capture_root / f"pipeline-{setup}-{parallelism}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    job_name = f"flink-scaling-{setup}-p{parallelism}-{seed_base}"
    args = [sys.executable, "-m", "streamtap.cli", "run", str(config_path), "--status-interval",
            "0", "--runner=FlinkRunner", f"--flink_master={service.flink_master}",
            f"--parallelism={parallelism}", f"--job_name={job_name}"]
    if setup == "worker_pool":
        # streamtap fills in the cluster's worker pool and --sdk_worker_parallelism.
        args.append("--environment_type=EXTERNAL")
    env = {**os.environ, "STREAMTAP_STATE": str(state_root)}
    pids = service.process_ids()
    client: dict[str, int] = {}
    groups = {
        "streamtap_client": lambda: [client["pid"]] if "pid" in client else [],
        "python_workers": lambda: [pids["worker-pool"]] if "worker-pool" in pids else [],
        "taskmanagers": lambda: [p for n, p in pids.items() if n.startswith("taskmanager")],
        "jobmanager": lambda: [pids["jobmanager"]] if "jobmanager" in pids else [],
        "job_server": lambda: [pids["job-server"]] if "job-server" in pids else [],
        "feeders": lambda: [f["process"].pid for f in feeders],
        # This process (sampling, waiting); its children are claimed by the groups above.
        "benchmark": lambda: [os.getpid()],
    }
    sampler = _GroupSampler(groups, cfg["sample_interval"], {f["port"]: f["id"] for f in feeders})
    sampler.start()
    started = time.time()
    proc = subprocess.Popen(args, cwd=str(capture_root), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client["pid"] = proc.pid
    try:
        output, _ = proc.communicate(timeout=cfg["timeout_s"])
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        output += f"\n(killed after {cfg['timeout_s']} s)"
    ended = time.time()
    sampler.stop()
    row = {"setup": setup, "slots": parallelism, "load_average_1m": load, **quiet,
           "wall_s": round(ended - started, 2), "exit_code": proc.returncode,
           "flink_job": _job_facts(service, job_name)}
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"capture exited {proc.returncode}:\n{output[-3000:]}")
        check = _check_capture(str(capture_dir), feeders, total)
        files = [p for p in capture_dir.rglob("*.parquet") if not p.name.startswith(".")]
        first = min(s["first_event_time"] for s in check["streams"].values())
        last = max(p.stat().st_mtime for p in files)
        span = last - first
        cpu = sampler.between(first, last)
        worker_pids = sorted(set(sampler.readers.values()))
        row.update({
            "verified": check["ok"], "problems": check["problems"], "bytes": check["bytes"],
            "files": len(files), "span_s": round(span, 3),
            "startup_s": round(first - started, 2),
            "mb_per_s": round(check["bytes"] / span / 1e6, 1),
            **cpu,
            "cpu_us_per_kb": round(cpu["cpu_seconds_in_span"] / (check["bytes"] / 1000) * 1e6, 2),
            "reader_processes": len(worker_pids),
            "streams_per_reader_process": sorted(
                (sum(1 for p in sampler.readers.values() if p == pid) for pid in worker_pids),
                reverse=True),
            "reader_in_client": sum(1 for p in sampler.readers.values() if p == proc.pid),
            "load_average_1m_end": load_average(),
        })
        if not check["ok"]:
            raise RuntimeError(f"capture not byte-exact: {check['problems'][:5]}")
    finally:
        shutil.rmtree(capture_dir, ignore_errors=True)
        config_path.unlink(missing_ok=True)
    return row


# --- the scenario -------------------------------------------------------------------------------


def _capture_root(cfg: dict, workdir: Path) -> Path:
    if cfg.get("capture_on_tmpfs") and Path("/dev/shm").is_dir():
        return Path(tempfile.mkdtemp(prefix="streamtap-flink-scaling-", dir="/dev/shm"))
    path = workdir / "captures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _summarise(runs: list[dict], setup: str, slots: int) -> dict | None:
    from benchmarks.measure import median

    mine = [r for r in runs if r["setup"] == setup and r["slots"] == slots]
    if not mine:
        return None
    groups = mine[0]["cpu_cores_in_span"].keys()
    return {
        "runs": len(mine),
        "mb_per_s": median([r["mb_per_s"] for r in mine]),
        "mb_per_s_all": [r["mb_per_s"] for r in mine],
        "span_s": median([r["span_s"] for r in mine]),
        "wall_s": median([r["wall_s"] for r in mine]),
        "cpu_cores_total": median([r["cpu_cores_total_in_span"] for r in mine]),
        "cpu_cores": {g: median([r["cpu_cores_in_span"][g] for r in mine]) for g in groups},
        "busiest_process_cores": {
            g: median([r["busiest_process_cores"].get(g, 0.0) for r in mine]) for g in groups},
        "machine_busy_cores": median([r["machine_busy_cores"] for r in mine]),
        "other_processes_cores": median([r["other_processes_cores"] for r in mine]),
        "steal_cores": median([r["steal_cores"] for r in mine]),
        "cpu_us_per_kb": median([r["cpu_us_per_kb"] for r in mine]),
        "reader_processes": max(r["reader_processes"] for r in mine),
        "streams_per_reader_process": mine[0]["streams_per_reader_process"],
        "load_average_1m": median([r["load_average_1m"] for r in mine]),
    }


def _log_row(log, index: int, setup: str, slots: int, row: dict) -> None:
    log(f"{NAME} #{index + 1} {setup} {slots} slot(s): {row['mb_per_s']} MB/s "
        f"({row['bytes'] >> 20} MiB in {row['span_s']} s, wall {row['wall_s']} s), CPU "
        f"{row['cpu_cores_total_in_span']} cores {json.dumps(row['cpu_cores_in_span'])}, busiest "
        f"process {json.dumps(row['busiest_process_cores'])}, machine busy "
        f"{row['machine_busy_cores']} (others {row['other_processes_cores']}, steal "
        f"{row['steal_cores']}), readers in {row['reader_processes']} process(es) "
        f"{row['streams_per_reader_process']}, byte-exact, load {row['load_average_1m']}")


def run(cfg: dict, repeats: int, workdir: Path, log) -> dict:
    from benchmarks.measure import median
    from streamtap.services.flink import FlinkService
    from streamtap.services.process import free_port

    capture_root = _capture_root(cfg, workdir)
    runs: list[dict] = []
    failures: list[dict] = []
    try:
        for number, setup in enumerate(cfg["setups"]):
            topology = cfg["topologies"][setup]
            state_root = workdir / f"state-{setup}"
            service = FlinkService(
                state_dir=state_root / "flink", port=free_port(), job_port=free_port(),
                rpc_port=free_port(), worker_pool_port=free_port(),
                taskmanagers=topology["taskmanagers"], slots=topology["slots_per_taskmanager"],
            )
            started = time.monotonic()
            try:
                service.up()
                log(f"{NAME}: {setup}: Flink up in {time.monotonic() - started:.0f} s "
                    f"({topology['taskmanagers']} TaskManager(s) x "
                    f"{topology['slots_per_taskmanager']} slot(s), worker pool "
                    f"{service.worker_pool})")
                for index in range(repeats):
                    order = list(cfg["slot_counts"])
                    if (index + number) % 2:
                        order.reverse()
                    for slots in order:
                        seed = 1000 + 1000 * number + 100 * (index * len(order) + slots)
                        try:
                            row = capture_run(service, state_root, cfg, setup, slots,
                                              capture_root, seed)
                        except Exception as error:  # noqa: BLE001 - recorded; the rest still run
                            failures.append({"setup": setup, "slots": slots,
                                             "repeat": index + 1,
                                             "error": f"{type(error).__name__}: {error}"[:3000]})
                            log(f"{NAME} #{index + 1} {setup} {slots} slot(s): FAILED: "
                                f"{str(error)[:300]}")
                            continue
                        row["repeat"] = index + 1
                        row["topology"] = dict(topology)
                        runs.append(row)
                        _log_row(log, index, setup, slots, row)
            finally:
                service.down()
    finally:
        if capture_root.is_relative_to("/dev/shm"):
            shutil.rmtree(capture_root, ignore_errors=True)

    setups = {}
    for setup in cfg["setups"]:
        one = _summarise(runs, setup, 1)
        two = _summarise(runs, setup, 2)
        pair_ratios = []
        for index in range(1, repeats + 1):
            same = [r for r in runs if r["setup"] == setup and r["repeat"] == index]
            a = [r for r in same if r["slots"] == 1]
            b = [r for r in same if r["slots"] == 2]
            if a and b:
                pair_ratios.append(round(b[0]["mb_per_s"] / a[0]["mb_per_s"], 3))
        setups[setup] = {
            "topology": cfg["topologies"][setup],
            "one_slot": one, "two_slots": two,
            "scaling": round(two["mb_per_s"] / one["mb_per_s"], 3) if one and two else None,
            "scaling_per_repeat": pair_ratios,
        }
    expected = cfg.get("expected_scaling")
    pool = setups.get("worker_pool", {})
    result = {
        "runs": runs, "failures": failures, "setups": setups,
        "total_bytes_per_run": cfg["streams"] * cfg["stream_bytes"],
        "capture_on_tmpfs": capture_root.is_relative_to("/dev/shm") if capture_root else False,
        "expected_scaling": expected,
        "ratio": pool.get("scaling"),
        "loopback_ratio": setups.get("loopback", {}).get("scaling"),
        "load_average_1m": median([r["load_average_1m"] for r in runs]),
    }
    if failures and not runs:
        raise RuntimeError(f"every run failed; first: {failures[0]['error']}")
    # The issue sets no target; the stated expectation is for separate Python workers only.
    result["pass"] = (None if expected is None or pool.get("scaling") is None
                      else pool["scaling"] >= expected and not failures)
    return result
