"""Many ComfyUI servers through their HTTP API: /upload/image, /prompt, /history, /view.

Each server gets `in_flight` workers (a few prompts queued, so its GPU never waits for the
network). A server that stops answering has its items put back for the others; every task
gives exactly one result, and a late answer from a server that was given up on is never read."""
from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from . import images, workflow
from .tasks import (EngineError, ItemError, Settings, describe_refusal, execution_error, failed, finished, prepare,
                    unreadable)

log = logging.getLogger(__name__)

SUBFOLDER = "concept_masks_cli"
MAX_ATTEMPTS = 3  # servers an item may be tried on before it counts as failed
POLL_SECONDS = (0.02, 0.5)  # first and longest wait between /history polls (each poll costs the server a little)


class ServerGone(RuntimeError):
    """The server did not answer (refused, reset, timed out): its items go to the others."""


class Server:
    def __init__(self, url: str, timeout: float):
        url = url.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url, self.timeout = url, timeout
        self.dead: str | None = None  # why it was given up on
        self.queued: set[str] = set()  # prompts of this run on the server, not finished yet
        self.withdrawing = False  # the run stopped early: a prompt queued from now on is taken off at once
        self.lock = threading.Lock()

    def _open(self, path: str, data: bytes | None = None, headers=None, timeout: float = 30):
        request = urllib.request.Request(self.url + path, data=data, headers=headers or {})
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as error:  # refused, reset, timeout, DNS
            raise ServerGone(f"{self.url} does not answer ({getattr(error, 'reason', error)})") from None

    def get_json(self, path: str, timeout: float = 30):
        with self._open(path, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: dict):
        data = json.dumps(body).encode()
        with self._open(path, data, {"Content-Type": "application/json"}) as response:
            raw = response.read()
            return json.loads(raw) if raw else None

    def check(self, template: dict) -> None:
        """Reachable, and has every node the workflow uses (the pack among them)."""
        try:
            self.get_json("/system_stats", timeout=10)
        except urllib.error.HTTPError as error:
            raise ServerGone(f"{self.url} is not a ComfyUI server (/system_stats: HTTP {error.code})") from None
        needed = sorted({n["class_type"] for n in template.values()} | set(workflow.TOOL_NODES))
        missing = [name for name in needed if not self.get_json(f"/object_info/{urllib.parse.quote(name)}")]
        if missing:
            raise ServerGone(f"{self.url} lacks the nodes {missing} (is the ConceptAttention pack installed there?)")

    def upload(self, png: bytes) -> str:
        boundary = uuid.uuid4().hex
        name = f"{uuid.uuid4().hex}.png"
        parts = []
        for field, value in (("type", "temp"), ("subfolder", SUBFOLDER), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode())
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + png + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        try:
            with self._open("/upload/image", b"".join(parts),
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"}) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ServerGone(f"{self.url} refused the upload (HTTP {error.code})") from None
        subfolder = answer.get("subfolder") or ""
        return f"{subfolder + '/' if subfolder else ''}{answer['name']} [{answer.get('type', 'temp')}]"

    def queue_prompt(self, prompt: dict, client_id: str) -> str:
        try:
            return self.post_json("/prompt", {"prompt": prompt, "client_id": client_id})["prompt_id"]
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            raise Refused(f"{self.url} refused the workflow: {refusal_text(body)}") from None

    def wait(self, prompt_id: str, stop: threading.Event) -> dict:
        deadline = time.monotonic() + self.timeout
        failures = 0
        pause = POLL_SECONDS[0]
        while time.monotonic() < deadline and not stop.is_set():
            try:
                history = self.get_json(f"/history/{prompt_id}")
                failures = 0
            except ServerGone:
                failures += 1
                if failures >= 3:
                    raise
                time.sleep(0.5)
                continue
            entry = history.get(prompt_id)
            if entry:
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    raise ItemError(execution_error(status.get("messages")))
                if status.get("completed", True) and workflow.MASKS_OUT in entry.get("outputs", {}):
                    return entry
                if status.get("completed"):
                    raise ItemError("the workflow finished without masks")
            time.sleep(pause)
            pause = min(pause * 1.5, POLL_SECONDS[1])
        if stop.is_set():
            raise ServerGone("stopped")
        raise ServerGone(f"{self.url} did not finish an item within {self.timeout:.0f} s")

    def withdraw(self) -> int:
        """Take this run's unfinished prompts off the server (an interrupted run): the queued ones
        are deleted, a running one is interrupted (only if it is ours: /interrupt with its id), and
        the history of those that finished before the run could collect them (a busy machine
        finishes several between the last collection and the stop) is deleted, as collecting would
        have. Returns how many were withdrawn; a server that does not answer is left as it is."""
        with self.lock:
            self.withdrawing = True
            prompt_ids, self.queued = sorted(self.queued), set()
        return self.take_off(prompt_ids)

    def take_off(self, prompt_ids: list[str]) -> int:
        if not prompt_ids:
            return 0
        try:
            self.post_json("/queue", {"delete": prompt_ids})
            for prompt_id in prompt_ids:
                self.post_json("/interrupt", {"prompt_id": prompt_id})
            self.post_json("/history", {"delete": prompt_ids})
        except (ServerGone, urllib.error.HTTPError):
            return 0
        return len(prompt_ids)

    def track(self, prompt_id: str) -> bool:
        """Count a just-queued prompt as this run's; False (and taken off the server) when the run
        is being withdrawn: a worker that was uploading while the run stopped queued it too late."""
        with self.lock:
            if not self.withdrawing:
                self.queued.add(prompt_id)
                return True
        self.take_off([prompt_id])
        return False

    def fetch(self, files: list[dict]) -> list[bytes]:
        out = []
        for f in files:
            query = urllib.parse.urlencode({"filename": f["filename"], "subfolder": f.get("subfolder", ""),
                                            "type": f.get("type", "temp")})
            try:
                with self._open(f"/view?{query}") as response:
                    out.append(response.read())
            except urllib.error.HTTPError as error:
                raise ServerGone(f"{self.url} could not send {f['filename']} (HTTP {error.code})") from None
        return out

    def forget(self, prompt_id: str) -> None:
        try:
            self.post_json("/history", {"delete": [prompt_id]})
        except (ServerGone, urllib.error.HTTPError):
            pass


class Refused(ServerGone):
    """The server's validation refused the workflow (a model file it lacks, say): not this item's fault."""


def refusal_text(body: str) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:500]
    return describe_refusal(answer.get("error"), answer.get("node_errors"), {})


class Dispatcher:
    """The shared work list: tasks go out to workers, come back when a server fails, and each
    ends as exactly one result."""

    def __init__(self, tasks, servers: list[Server]):
        self.tasks = list(tasks)
        self.pending = collections.deque((task, 0) for task in self.tasks)
        self.total = len(self.pending)
        self.servers = servers
        self.results: queue.Queue = queue.Queue()
        self.condition = threading.Condition()
        self.outstanding = 0  # taken by a worker, neither finished nor given back
        self.stop = threading.Event()

    def take(self, server: Server):
        with self.condition:
            # with nothing pending, wait while a task out on another server may still come back
            while not self.pending and self.outstanding and not server.dead and not self.stop.is_set():
                self.condition.wait(0.5)
            if server.dead or self.stop.is_set() or not self.pending:
                return None
            self.outstanding += 1
            return self.pending.popleft()

    def give_back(self, task, attempts: int, why: str) -> None:
        with self.condition:
            self.outstanding -= 1
            if attempts >= MAX_ATTEMPTS:
                self.results.put(failed(task, "servers", time.perf_counter(),
                                           f"failed on {attempts} servers; last: {why}"))
            else:
                self.pending.appendleft((task, attempts))
            self._fail_leftovers()
            self.condition.notify_all()

    def finish(self, result) -> None:
        with self.condition:
            self.outstanding -= 1
            self.results.put(result)
            self.condition.notify_all()

    def server_died(self, server: Server, why: str) -> None:
        with self.condition:
            if server.dead is None:
                server.dead = why
            self._fail_leftovers()
            self.condition.notify_all()

    def _fail_leftovers(self) -> None:
        if all(s.dead for s in self.servers):
            reasons = "; ".join(sorted({s.dead for s in self.servers}))
            while self.pending:
                task, _ = self.pending.popleft()
                self.results.put(failed(task, "servers", time.perf_counter(), f"no server left ({reasons})"))


def worker(server: Server, dispatcher: Dispatcher, template: dict, settings: Settings, say) -> None:
    client_id = uuid.uuid4().hex
    while True:
        taken = dispatcher.take(server)
        if taken is None:
            return
        task, attempts = taken
        started = time.perf_counter()
        try:
            prepared = prepare(task, settings)
        except images.ImageReadError as error:
            dispatcher.finish(unreadable(task, server.url, started, error))
            continue
        try:
            name = server.upload(prepared.png)
            prompt = workflow.build_prompt(template, name, task.concepts, task.caption, settings)
            prompt_id = server.queue_prompt(prompt, client_id)
            if not server.track(prompt_id):
                return
            entry = server.wait(prompt_id, dispatcher.stop)
            with server.lock:
                server.queued.discard(prompt_id)
            pngs = server.fetch(entry["outputs"][workflow.MASKS_OUT]["images"])
            server.forget(prompt_id)
        except ItemError as error:
            dispatcher.finish(failed(task, server.url, started, str(error), prepared.size))
            continue
        except ServerGone as error:
            if dispatcher.stop.is_set():
                return
            if server.dead is None:
                say(f"server {server.url} failed ({error}); its items go to the other servers")
            dispatcher.server_died(server, str(error))
            dispatcher.give_back(task, attempts + 1, str(error))
            return
        except Exception as error:  # a bug or an unexpected answer: this item fails, the run goes on
            log.exception("item %s on %s", task.key, server.url)
            dispatcher.finish(failed(task, server.url, started, f"{type(error).__name__}: {error}",
                                            prepared.size))
            continue
        dispatcher.finish(finished(prepared, pngs, server.url, started))


def run_on_servers(tasks, settings: Settings, template: dict, urls: list[str], say):
    """Check the servers now (raise EngineError when none can be used), then return the results' generator."""
    servers, problems = [], []
    for url in dict.fromkeys(urls):
        server = Server(url, settings.timeout)
        try:
            server.check(template)
            servers.append(server)
        except ServerGone as error:
            problems.append(str(error))
            say(f"not using {server.url}: {error}")
    if not servers:
        raise EngineError("no usable ComfyUI server: " + "; ".join(problems) +
                                 ". Start ComfyUI there (python main.py --listen) or fix the --server URL.")
    return _results(Dispatcher(list(tasks), servers), template, settings, say)


def _results(dispatcher: Dispatcher, template, settings, say):
    threads = [threading.Thread(target=worker, args=(server, dispatcher, template, settings, say), daemon=True)
               for server in dispatcher.servers for _ in range(max(1, settings.in_flight))]
    for thread in threads:
        thread.start()
    given = set()
    try:
        while len(given) < dispatcher.total:
            try:
                result = dispatcher.results.get(timeout=1.0)
            except queue.Empty:
                if any(thread.is_alive() for thread in threads):
                    continue
                # every worker has stopped and some tasks gave no result: say so rather than wait forever
                for task in dispatcher.tasks:
                    if id(task) not in given:
                        given.add(id(task))
                        yield failed(task, "servers", time.perf_counter(), "lost by the dispatcher (a bug)")
                return
            given.add(id(result.task))
            yield result
    finally:
        dispatcher.stop.set()
        with dispatcher.condition:
            dispatcher.condition.notify_all()
        if len(given) < dispatcher.total:  # stopped early (Ctrl-C): leave the servers' queues as we found them
            withdrawn = sum(server.withdraw() for server in dispatcher.servers)
            if withdrawn:
                say(f"withdrew {withdrawn} unfinished prompts from the servers")
