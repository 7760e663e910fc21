"""Start workers as real processes (``python -m services.<name>``), wait until they are ready,
and stop them with SIGTERM like an orchestrator would. Used by the demo, e2e tests and bench."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    http_port: int | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def kill(self) -> None:
        """The crash case: no graceful shutdown, nothing committed that was not already."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@dataclass
class Fleet:
    """A set of processes sharing one environment (addresses, topic prefix)."""

    env: Mapping[str, str]
    log_dir: Path
    processes: list[Process] = field(default_factory=list)
    # Whose code the processes run: another checkout (an older commit) for a before/after
    # benchmark under the same harness; this interpreter and its packages either way.
    code_dir: Path = REPO

    def start_worker(self, service: str, **extra_env: str) -> Process:
        port = free_port()
        prefix = service.upper()
        env = {
            **self.env,
            f"{prefix}_HTTP_PORT": str(port),
            **extra_env,
        }
        process = self._spawn(service, [sys.executable, "-m", f"services.{service}"], env)
        process.http_port = port
        return process

    def start_ticker(self, interval: float = 1.0) -> Process:
        command = [sys.executable, "-m", "shared.runtime.ticker", "--interval", str(interval)]
        return self._spawn("ticker", command, dict(self.env))

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str]) -> Process:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        count = sum(1 for p in self.processes if p.name.startswith(name))
        log_path = self.log_dir / f"{name}-{count}.log"
        log_file = log_path.open("wb")
        popen = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            cwd=self.code_dir,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        process = Process(f"{name}-{count}", popen, log_path)
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()
