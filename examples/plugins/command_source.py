"""`type: command`: captures what a program writes to its stdout (arecord, rtl_sdr, a sensor CLI)."""

import asyncio
from dataclasses import dataclass, field
from typing import ClassVar

from streamtap.config import SourceConfig, doc
from streamtap.errors import SourceError
from streamtap.io.connector import ByteSink, Connector


@dataclass(kw_only=True)
class CommandSource(SourceConfig):
    type_name: ClassVar[str] = "command"

    command: list[str] = doc("Program and arguments, e.g. [arecord, -f, cd].", default_factory=list)
    read_bytes: int = doc("Bytes asked for per read.", 65536, min=1, max=16 * 2**20)

    def validate(self, path: str) -> list[str]:
        errors = super().validate(path)
        if not self.command:
            errors.append(f"{path}.command: give the program to run and its arguments")
        return errors

    def connector(self) -> Connector:
        return _CommandConnector(self)


class _CommandConnector(Connector):
    ends_at_eof = True  # the program's exit ends the stream (on_eof: reconnect runs it again)

    def __init__(self, config: CommandSource):
        self._config = config

    def describe(self) -> str:
        return f"command {self._config.command[0]}"

    async def run_session(self, sink: ByteSink, resume_offset: int) -> None:
        try:
            program = await asyncio.create_subprocess_exec(
                *self._config.command,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as error:
            raise SourceError(f"cannot start {self._config.command[0]}: {error.strerror}") from None
        try:
            while data := await program.stdout.read(self._config.read_bytes):
                await sink.wait_for_room()
                sink.write(data)
            if await program.wait() != 0:
                message = (await program.stderr.read()).decode(errors="replace").strip()
                raise SourceError(f"{self._config.command[0]} exited {program.returncode}: {message}")
        finally:
            if program.returncode is None:
                program.kill()
                await program.wait()
