"""A real ComfyUI server for the workflow tests: the pack and the test stand-in nodes are linked
into a temporary --base-directory, workflows go through POST /prompt and GET /history."""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]


class ComfyServer:
    def __init__(self, comfyui: pathlib.Path, base: pathlib.Path):
        self.comfyui, self.base = comfyui, base
        (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        (base / "input").mkdir(exist_ok=True)
        os.symlink(ROOT, base / "custom_nodes" / "comfyui-conceptattention")
        os.symlink(ROOT / "tests" / "support" / "stand_in_nodes", base / "custom_nodes" / "test_stand_ins")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(base / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
             "--base-directory", str(base), "--disable-auto-launch"],
            cwd=comfyui, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited: {self.read_log()[-3000:]}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not start: {self.read_log()[-3000:]}")

    def read_log(self) -> str:
        self.log.flush()
        return (self.base / "server.log").read_text()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def get_bytes(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return response.read()

    def run(self, prompt: dict, timeout=300) -> dict:
        """Queue an API-format workflow, wait, and return its history entry (raises on error)."""
        return self.wait(self.queue(prompt), timeout)

    def queue(self, prompt: dict) -> str:
        body = json.dumps({"prompt": prompt}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())["prompt_id"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"/prompt refused the workflow: {error.read().decode()}") from None

    def wait(self, prompt_id: str, timeout=300) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history:
                entry = history[prompt_id]
                status = entry.get("status", {})
                if status.get("status_str") == "error":
                    raise WorkflowError(status.get("messages"))
                if status.get("completed", True):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"workflow did not finish: {self.read_log()[-3000:]}")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def cached_nodes(entry) -> set[str]:
    """The nodes the server took from its cache instead of executing, for this history entry."""
    return {node for event, data in entry["status"]["messages"] if event == "execution_cached"
            for node in data["nodes"]}


class WorkflowError(RuntimeError):
    def __init__(self, messages):
        self.messages = messages
        details = [m[1] for m in messages or [] if m[0] == "execution_error"]
        text = details[0].get("exception_message", "") if details else str(messages)
        super().__init__(text)
