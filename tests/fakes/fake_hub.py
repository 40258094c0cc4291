"""A loopback Hugging Face Hub: the real `huggingface_hub` client talks to it over HTTP on 127.0.0.1.

    >>> from fake_hub import FakeHub
    >>> with FakeHub() as hub:                         # a free port on 127.0.0.1, in a background thread
    ...     env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": hub.token, "HF_HUB_DISABLE_XET": "1"}
    ...     subprocess.run([sys.executable, "-m", "bot", "publish", "out/alice"], env=env)
    ...     repo = hub.repos["huggingtweets/alice"]
    ...     [c.title for c in repo.commits]            # ['initial commit', 'Train on 2,105 posts from @alice (234 held out)']
    ...     sorted(repo.files), hub.read("huggingtweets/alice", "config.json")
    ...     hub.fail_next("/api/models/huggingtweets/alice/commit/", 500)   # the next matching request fails

`huggingface_hub` reads `HF_ENDPOINT` once, at import. Inside the pytest process the library therefore
points at the session Hub that `conftest.py` starts before anything imports it (fixture `fake_hub`);
a bot in a subprocess can be pointed at any `FakeHub` through its environment.

What it implements is what `huggingface_hub` 2.x sends when Xet is off (`HF_HUB_DISABLE_XET=1`):
`GET /api/whoami-v2`, `POST /api/repos/create` (409 when it exists), `DELETE /api/repos/delete`,
`POST /api/validate-yaml`, `GET /api/models` (`author`, `search`, `limit`), `GET /api/models/{repo}[/revision/{rev}]`,
`GET /api/models/{repo}/tree/{rev}[/{path}]`, `GET /api/models/{repo}/commits/{rev}`,
`POST /api/models/{repo}/preupload/{rev}`, `POST /api/models/{repo}/commit/{rev}` (ndjson `header`, `file`,
`lfsFile`, `deletedFile`, `deletedFolder`; `parentCommit` is checked: 412 when the branch moved),
the LFS batch `POST /{repo}.git/info/lfs/objects/batch` with the PUT and verify URLs it hands out, and
`HEAD`/`GET /{repo}/resolve/{rev}/{path}` (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`/`X-Linked-Size` for LFS
files, `Range`). Space repos are served as on the Hub: `POST /api/repos/create` with `type: "space"` and an
`sdk` (its first commit holds `.gitattributes` and a `README.md` naming the SDK), and the same endpoints under
`/api/spaces/{repo}/...`, `/spaces/{repo}.git/...` and `/spaces/{repo}/resolve/...`; they are kept in `repos`
as `spaces/{org}/{name}`, apart from the models; dataset repos likewise (`type: "dataset"`, `/api/datasets/...`,
`/datasets/{repo}/resolve/...`, kept as `datasets/{org}/{name}`). Large files are streamed to disk, never
held in memory.

The Jobs service, as `huggingface_hub` 2.4 calls it: `POST /api/jobs/{namespace}` (`run_job`: the spec's
`dockerImage`, `command`, `environment`, `secrets`, `flavor`, `timeoutSeconds`, `labels`), `GET
/api/jobs/{namespace}` (`list_jobs`, `stage` and `label=key=value` filters), `GET /api/jobs/{namespace}/{id}`
(`inspect_job`: stage SCHEDULING, RUNNING, then COMPLETED, ERROR with a message, or CANCELED; secrets by name
only), `GET .../logs` (`fetch_job_logs`: server-sent events `data: {"data": LINE, "timestamp": ...}`, opening
with "===== Job started ... =====") and `POST .../cancel`. Each job's command runs as a local process
standing in for its container (`FakeHub.run_container` says how); `jobs` keeps them for tests to read,
`scheduling_seconds` is the wait for a machine.

Access: a request with an unknown token gets 401 ("Invalid credentials in Authorization header"), as on the
Hub; writing needs a token allowed on the namespace (`add_token`), else 403. `hub.token` may write anywhere.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from loopback import LoopbackServer

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
# The .gitattributes a new model repo starts with on the Hub (abridged): these patterns go to LFS.
INITIAL_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.pt", "*.pth", "*.safetensors",
                    "*.tar.*", "*.tflite", "*.zip", "*.zst", "*tfevents*")
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # bigger files always go to LFS, as on the Hub
REPO_NAME_RE = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,94}[A-Za-z0-9]$|^[A-Za-z0-9]$")
CHUNK = 1024 * 1024


def repo_key(repo_id: str, repo_type: str = "model") -> str:
    """Where a repo is kept in `FakeHub.repos`: 'org/name' for a model, 'spaces/org/name' for a Space."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit: its size, git blob id, LFS sha256 (None for a regular file) and content on disk."""

    size: int
    blob_id: str
    sha256: str | None
    blob: Path

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


@dataclass(frozen=True)
class Commit:
    oid: str
    title: str
    description: str
    author: str
    date: datetime
    files: dict[str, StoredFile]  # the whole tree after this commit


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: datetime
    commits: list[Commit] = field(default_factory=list)  # oldest first
    repo_type: str = "model"  # "model" or "space"
    sdk: str | None = None  # a Space's SDK ("gradio", ...)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    @property
    def files(self) -> dict[str, StoredFile]:
        return self.head.files

    def commit(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


@dataclass
class Fault:
    path_prefix: str
    status: int
    method: str | None
    times: int
    after: bool  # handle the request first, then answer with the error (a lost response)
    message: str  # "{authorization}" in it is replaced by the request's Authorization header (format specs cut it)
    body: bytes | None = None  # answer with exactly these bytes instead of the error JSON


# What the loopback Jobs service hands a container besides the job's own environment and secrets: the
# test machine's stand-ins for what the image would hold (see `FakeHub.run_container`).
HARNESS_ENV = ("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_TELEMETRY", "HUGGINGTWEETS_CACHE", "TOKENIZERS_PARALLELISM",
               "LANG", "LC_ALL", "TMPDIR")
CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class Job:
    """One job of the loopback Jobs service: its spec as submitted, its stage, its container and its log."""

    id: str
    namespace: str
    owner: str
    spec: dict
    created_at: datetime
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    process: subprocess.Popen | None = None
    log: list[tuple[datetime, str]] = field(default_factory=list)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("labels") or {})


class HubError(Exception):
    """An HTTP error answer: status, JSON body {"error": message}, optional X-Error-Code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _RawAnswer(Exception):
    def __init__(self, response):
        super().__init__("raw answer")
        self.response = response


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed from disk instead of `body`
    start: int = 0
    length: int = 0

    @classmethod
    def json(cls, value, status: int = 200, content_type: str = "application/json") -> Response:
        return cls(status, json.dumps(value).encode(), {"Content-Type": content_type})


class FakeHub(LoopbackServer):
    """The loopback Hub. State is plain attributes, for tests to inspect: `repos`, `requests`."""

    thread_name = "fake-hub"

    def __init__(self) -> None:
        self._storage = tempfile.TemporaryDirectory(prefix="fake-hub-")
        self.blobs = Path(self._storage.name)
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), never headers or tokens
        self.faults: list[Fault] = []
        self.tokens: dict[str, tuple[str, frozenset[str] | None]] = {}
        self.token = "hf_" + secrets.token_hex(16)  # random, as real ones are: no word of it in any name
        self.add_token(self.token, user="loopback-tester")
        self.jobs: dict[str, Job] = {}  # the Jobs service's jobs by id, in the order they were submitted
        self.scheduling_seconds = 0.2  # how long a job waits for a machine before it runs

    # -- life cycle -------------------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def stop(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                self._end_job(job, "CANCELED", "the loopback Hub stopped")
        super().stop()

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self._storage.cleanup()

    @property
    def url(self) -> str:
        return self.base_url

    def reset(self) -> None:
        """Forget every repo, request, fault and job (ending those still running); keep the tokens and the
        stored blobs."""
        with self.lock:
            for job in self.jobs.values():
                self._end_job(job, "CANCELED", "the loopback Hub was reset")
            self.repos.clear()
            self.requests.clear()
            self.faults.clear()
            self.jobs.clear()
            self.scheduling_seconds = 0.2

    # -- test controls ----------------------------------------------------------------------------------

    def add_token(self, token: str, user: str = "tester", namespaces: set[str] | None = None) -> None:
        """Accept `token` as `user`, allowed to write to `namespaces` (None: everywhere)."""
        with self.lock:
            self.tokens[token] = (user, frozenset(namespaces) if namespaces is not None else None)

    def fail_next(self, path_prefix: str, status: int = 500, *, method: str | None = None, times: int = 1,
                  after: bool = False, message: str | None = None, body: bytes | None = None) -> None:
        """The next `times` requests whose path starts with `path_prefix` get `status`.

        With `after=True` the request is carried out first and only its answer is replaced: a response
        lost on the way back. A 401 says "Invalid credentials in Authorization header", like the Hub.
        `message` may echo the request's credentials, whole or cut: "Bad token {authorization:.20}".
        `body` answers with those bytes as they are (say, a 200 that is not JSON).
        """
        if message is None:
            message = "Invalid credentials in Authorization header" if status == 401 else f"injected error {status}"
        with self.lock:
            self.faults.append(Fault(path_prefix, status, method.upper() if method else None, times, after, message,
                                     body))

    def create_repo(self, repo_id: str, private: bool = False, author: str = "tester", repo_type: str = "model",
                    sdk: str | None = None) -> Repo:
        """Create a repo directly (its initial commit holds .gitattributes, as on the Hub, and for a Space a
        README.md that names its SDK)."""
        with self.lock:
            repo = Repo(repo_id, private, _now(), repo_type=repo_type, sdk=sdk)
            files = {".gitattributes": self._store_regular(INITIAL_GITATTRIBUTES.encode())}
            if repo_type == "space":
                readme = f"---\ntitle: {repo_id.split('/')[1]}\nsdk: {sdk}\npinned: false\n---\n"
                files["README.md"] = self._store_regular(readme.encode())
            repo.commits.append(self._new_commit(repo, "initial commit", "", author, files))
            self.repos[repo_key(repo_id, repo_type)] = repo
            return repo

    def read(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """A file's content at a revision."""
        commit = self.repos[repo_key(repo_id, repo_type)].commit(revision)
        assert commit is not None, f"no revision {revision} in {repo_id}"
        return commit.files[path].blob.read_bytes()

    def commit_requests(self, repo_id: str, repo_type: str = "model") -> list[tuple[str, str, int]]:
        """The commit requests made to a repo, with their answers."""
        prefix = f"/api/{repo_type}s/{repo_id}/commit/"
        return [r for r in self.requests if r[0] == "POST" and r[1].startswith(prefix)]

    # -- the Jobs service -------------------------------------------------------------------------------

    def jobs_for(self, label: str, value: str) -> list[Job]:
        """The jobs submitted with this label, oldest first."""
        with self.lock:
            return [j for j in self.jobs.values() if j.labels.get(label) == value]

    def end_job(self, job_id: str, stage: str, message: str | None = None, forget: bool = False) -> None:
        """End a job from outside, as the service or an operator would (DELETED, CANCELED, ERROR); with
        `forget`, the service no longer knows it either (404)."""
        with self.lock:
            self._end_job(self.jobs[job_id], stage, message)
            if forget:
                del self.jobs[job_id]

    def submit_job(self, namespace: str, owner: str, spec: dict) -> Job:
        with self.lock:
            job = Job(secrets.token_hex(12), namespace, owner, spec, _now())
            self.jobs[job.id] = job
        threading.Thread(target=self.run_container, args=(job,), name=f"fake-job-{job.id}", daemon=True).start()
        return job

    def run_container(self, job: Job) -> None:
        """Run a job's command as a local process, standing in for its container.

        The stand-in for the image: the command runs as given (argv, no shell of ours) in a folder of its
        own, with the job's environment and its secrets as environment variables, as the service passes them;
        `python` on its PATH is this test's interpreter with the checkout importable (the code under test
        stands in for the huggingtweets the image would install), and `pip` only says what it would install.
        A few of the test machine's variables (HARNESS_ENV) keep it off the network and share the tiny base
        model's cache. The service's time limit (`timeoutSeconds`) kills the process group: stage ERROR.
        """
        time.sleep(self.scheduling_seconds)
        home = self.blobs / f"job-{job.id}"
        bin_dir = home / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        (bin_dir / "pip").write_text('#!/bin/sh\necho "(loopback image) pip $*: huggingtweets comes from the checkout"\n')
        for tool in bin_dir.iterdir():
            tool.chmod(0o755)
        env = {name: os.environ[name] for name in HARNESS_ENV if name in os.environ}
        env.update(PATH=f"{bin_dir}:/usr/local/bin:/usr/bin:/bin", HOME=str(home), PYTHONPATH=str(CHECKOUT),
                   HF_HOME=str(home / "hf-home"))
        env.update({k: str(v) for k, v in (job.spec.get("environment") or {}).items()})
        env.update({k: str(v) for k, v in (job.spec.get("secrets") or {}).items()})
        with self.lock:
            if job.stage != "SCHEDULING":  # cancelled while it waited
                return
            try:
                job.process = subprocess.Popen(job.spec["command"] + list(job.spec.get("arguments") or []),
                                               env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                job.log.append((_now(), f"cannot start the container: {e}"))
                job.stage, job.message, job.finished_at = "ERROR", f"cannot start the container: {e}", _now()
                return
            job.stage, job.started_at = "RUNNING", _now()
            job.log.append((_now(), f"===== Job started at {_iso(job.started_at)} ====="))
        reader = threading.Thread(target=self._read_log, args=(job,), daemon=True)
        reader.start()
        limit = job.spec.get("timeoutSeconds")
        try:
            code = job.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            with self.lock:
                self._end_job(job, "ERROR", f"Job timed out after {limit} seconds")
            return
        reader.join(timeout=5)
        with self.lock:
            if job.stage != "RUNNING":
                return
            job.finished_at = _now()
            if code == 0:
                job.stage = "COMPLETED"
            else:
                job.stage, job.message = "ERROR", f"Job failed with exit code: {code if code >= 0 else 128 - code}"

    def _read_log(self, job: Job) -> None:
        for raw in job.process.stdout:
            with self.lock:
                job.log.append((_now(), raw.decode("utf-8", errors="replace").rstrip("\n")))

    def _end_job(self, job: Job, stage: str, message: str) -> None:
        """Stop a job's container, if it runs, and set its final stage (the caller holds the lock)."""
        if job.stage not in ("SCHEDULING", "RUNNING"):
            return
        job.stage, job.message, job.finished_at = stage, message, _now()
        if job.process is not None and job.process.poll() is None:
            try:
                os.killpg(job.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def job_json(self, job: Job) -> dict:
        """A job as the service describes it (`huggingface_hub.JobInfo`); secrets by name only."""
        spec = job.spec
        now = job.finished_at or _now()
        running = int((now - job.started_at).total_seconds()) if job.started_at else None
        return {
            "id": job.id, "createdAt": _iso(job.created_at),
            "startedAt": _iso(job.started_at) if job.started_at else None,
            "finishedAt": _iso(job.finished_at) if job.finished_at else None,
            "dockerImage": spec.get("dockerImage"), "spaceId": spec.get("spaceId"),
            "command": spec.get("command"), "arguments": spec.get("arguments") or [],
            "environment": spec.get("environment") or {},
            "secrets": {name: None for name in spec.get("secrets") or {}},
            "flavor": spec.get("flavor"), "labels": spec.get("labels"),
            "status": {"stage": job.stage, "message": job.message},
            "durations": {"runningSecs": running, "totalSecs": int((now - job.created_at).total_seconds())},
            "owner": {"id": hashlib.sha1(job.namespace.encode()).hexdigest()[:24], "name": job.namespace,
                      "type": "user" if job.namespace == job.owner else "org"},
            "initiator": {"type": "user", "id": hashlib.sha1(job.owner.encode()).hexdigest()[:24], "name": job.owner},
        }

    # -- storage ----------------------------------------------------------------------------------------

    def _store_regular(self, content: bytes) -> StoredFile:
        blob_id = git_blob_id(content)
        path = self.blobs / f"git-{blob_id}"
        if not path.exists():
            tmp = self.blobs / f"tmp-{secrets.token_hex(8)}"
            tmp.write_bytes(content)
            tmp.replace(path)
        return StoredFile(len(content), blob_id, None, path)

    def _lfs_blob(self, oid: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", oid):
            raise HubError(400, f"invalid LFS oid {oid!r}")
        return self.blobs / f"lfs-{oid}"

    def _stored_lfs(self, oid: str) -> StoredFile | None:
        path = self._lfs_blob(oid)
        if not path.exists():
            return None
        size = path.stat().st_size
        pointer = LFS_POINTER.format(oid=oid, size=size).encode()
        return StoredFile(size, git_blob_id(pointer), oid, path)

    def _new_commit(self, repo: Repo, title: str, description: str, author: str, files: dict) -> Commit:
        seed = f"{repo.repo_id}\n{len(repo.commits)}\n{title}\n{secrets.token_hex(8)}".encode()
        return Commit(hashlib.sha1(seed).hexdigest(), title, description, author, _now(), dict(sorted(files.items())))


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to a method of this class; every answer is JSON or a file."""

    fake: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects
    server_version = "FakeHub/1.0"

    ROUTES = [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("DELETE", r"/api/repos/delete", "delete_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", r"/api/models", "list_models"),
        ("GET", r"/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?", "model_info"),
        ("GET", r"/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("GET", r"/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)/commits/(?P<rev>[^/]+)", "commits"),
        ("POST", r"/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", r"/api/(?P<kind>models|spaces|datasets)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", r"/(?:(?P<kind>spaces|datasets)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs/upload/(?P<oid>[^/]+)", "lfs_upload"),
        ("POST", r"/lfs/verify/(?P<oid>[^/]+)", "lfs_verify"),
        ("HEAD", r"/(?:(?P<kind>spaces|datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("GET", r"/(?:(?P<kind>spaces|datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("POST", r"/api/jobs/(?P<namespace>[^/]+)", "run_job"),
        ("GET", r"/api/jobs/(?P<namespace>[^/]+)", "list_jobs"),
        ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)", "inspect_job"),
        ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/logs", "job_logs"),
        ("POST", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/cancel", "cancel_job"),
    ]

    def log_message(self, format, *args) -> None:  # quiet: tests read `fake.requests` instead
        pass

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    # -- plumbing ---------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._body_read = False
        split = urlsplit(self.path)
        path, self.query = split.path, parse_qs(split.query)
        fault = self._take_fault(path)
        try:
            if fault is not None and not fault.after:
                raise self._fault_answer(fault)
            self._check_token()
            response = self._route(path)
            if fault is not None:
                raise self._fault_answer(fault)
        except _RawAnswer as raw:
            response = raw.response
        except HubError as e:
            headers = dict(e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            response = Response.json({"error": e.message}, e.status)
            response.headers.update(headers)
        except Exception as e:  # a bug in the fake shows as a 500 with the reason, not a hung client
            response = Response.json({"error": f"fake hub: {type(e).__name__}: {e}"}, 500)
        self._drain()
        with self.fake.lock:
            self.fake.requests.append((self.command, path, response.status))
        self._send(response)

    def _fault_answer(self, fault: Fault) -> Exception:
        if fault.body is not None:
            return _RawAnswer(Response(fault.status, fault.body, {"Content-Type": "application/json"}))
        return HubError(fault.status, fault.message.format(authorization=self.headers.get("Authorization", "")))

    def _take_fault(self, path: str) -> Fault | None:
        with self.fake.lock:
            for fault in self.fake.faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, self.command):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.fake.faults.remove(fault)
                    return fault
        return None

    def _route(self, path: str) -> Response:
        known_path = False
        for method, pattern, name in self.ROUTES:
            match = re.fullmatch(pattern, path)
            if match:
                known_path = True
                if method == self.command:
                    args = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    return getattr(self, name)(**args)
        if known_path:
            raise HubError(405, f"{self.command} not allowed on {path}")
        raise HubError(404, f"no such endpoint: {path}")

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        length = response.length if response.file is not None else len(response.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.file is not None:
            with open(response.file, "rb") as f:
                f.seek(response.start)
                left = response.length
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
        else:
            self.wfile.write(response.body)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, piece by piece (Content-Length or chunked); read once."""
        if self._body_read:
            return
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield from self._read_exactly(size)
                self.rfile.readline()
        else:
            yield from self._read_exactly(int(self.headers.get("Content-Length") or 0))

    def _read_exactly(self, size: int):
        """`size` bytes of the body, in chunks (less if the client hangs up)."""
        while size > 0:
            chunk = self.rfile.read(min(CHUNK, size))
            if not chunk:
                return
            size -= len(chunk)
            yield chunk

    def _drain(self) -> None:
        for _ in self._body_chunks():
            pass

    def _body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _json(self) -> dict:
        try:
            value = json.loads(self._body() or b"{}")
        except ValueError:
            raise HubError(400, "request body is not JSON") from None
        if not isinstance(value, dict):
            raise HubError(400, "request body is not a JSON object")
        return value

    # -- access -----------------------------------------------------------------------------------------

    def _check_token(self) -> None:
        self.user, self.namespaces = None, frozenset()
        auth = self.headers.get("Authorization")
        if not auth:
            return
        token = auth.removeprefix("Bearer ").strip()
        known = self.fake.tokens.get(token)
        if known is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self.user, self.namespaces = known

    def _may_write(self, namespace: str) -> bool:
        return self.user is not None and (self.namespaces is None or namespace in self.namespaces)

    def _require_write(self, namespace: str, what: str) -> None:
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this")
        if not self._may_write(namespace):
            raise HubError(403, f"You don't have the rights to {what} under the namespace \"{namespace}\"")

    def _repo(self, repo_id: str, *, write: bool = False, kind: str = "models") -> Repo:
        repo = self.fake.repos.get(repo_key(repo_id, kind.removesuffix("s")))
        if repo is None or (repo.private and not self._may_write(repo_id.split("/")[0])):
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if write:
            self._require_write(repo_id.split("/")[0], "write to this model")
        return repo

    def _revision(self, repo: Repo, rev: str) -> Commit:
        commit = repo.commit(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        return commit

    # -- endpoints --------------------------------------------------------------------------------------

    def whoami(self) -> Response:
        if self.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": ns, "roleInOrg": "write"} for ns in sorted(self.namespaces or ())]
        return Response.json({
            "type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24], "name": self.user,
            "fullname": self.user, "orgs": orgs,
            "auth": {"type": "access_token", "accessToken": {"displayName": "loopback", "role": "write"}},
        })

    def create_repo(self) -> Response:
        payload = self._json()
        repo_type = payload.get("type") or "model"
        if repo_type not in ("model", "space", "dataset"):
            raise HubError(400, "this loopback Hub only has model, dataset and Space repos")
        sdk = payload.get("sdk")
        if repo_type == "space" and sdk not in ("gradio", "docker", "static"):
            raise HubError(400, f"A Space needs an sdk (gradio, docker or static), not {sdk!r}")
        name = str(payload.get("name") or "")
        namespace = payload.get("organization") or self.user or ""
        self._require_write(namespace, f"create a {repo_type}")
        if not REPO_NAME_RE.fullmatch(name) or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name: {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.fake.url}/{repo_id}" if repo_type == "model" else f"{self.fake.url}/{repo_type}s/{repo_id}"
        with self.fake.lock:
            if repo_key(repo_id, repo_type) in self.fake.repos:
                return Response.json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            private = payload.get("private") is True or payload.get("visibility") == "private"
            self.fake.create_repo(repo_id, private=private, author=self.user or "tester", repo_type=repo_type,
                                  sdk=sdk if repo_type == "space" else None)
        return Response.json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def delete_repo(self) -> Response:
        payload = self._json()
        namespace = payload.get("organization") or self.user or ""
        repo_id = f"{namespace}/{payload.get('name')}"
        kind = f"{payload.get('type') or 'model'}s"
        with self.fake.lock:
            self._repo(repo_id, write=True, kind=kind)
            del self.fake.repos[repo_key(repo_id, kind.removesuffix("s"))]
        return Response()

    def validate_yaml(self) -> Response:
        content = str(self._json().get("content", ""))
        errors = []
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as e:
                errors.append({"message": f"Invalid YAML: {e}"})
            else:
                if metadata is not None and not isinstance(metadata, dict):
                    errors.append({"message": "metadata must be a mapping"})
        return Response.json({"errors": errors, "warnings": []}, 400 if errors else 200)

    def _model_json(self, repo: Repo, commit: Commit, full: bool = True) -> dict:
        card = self._card_data(commit)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
            "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
            "lastModified": _iso(commit.date), "createdAt": _iso(repo.created_at), "private": repo.private,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": list(card.get("tags") or []), "pipeline_tag": card.get("pipeline_tag"),
            "library_name": card.get("library_name"),
        }
        if repo.repo_type == "space":
            info["sdk"] = repo.sdk
        if full:
            info["cardData"] = card
            info["siblings"] = [{"rfilename": path} for path in commit.files]
        return info

    @staticmethod
    def _card_data(commit: Commit) -> dict:
        readme = commit.files.get("README.md")
        if readme is None:
            return {}
        match = re.match(r"^---\s*\n(.*?)\n---", readme.blob.read_text(encoding="utf-8", errors="replace"), re.S)
        try:
            data = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    def list_models(self) -> Response:
        author = self.query.get("author", [None])[0]
        search = (self.query.get("search", [""])[0]).lower()
        limit = int(self.query.get("limit", ["0"])[0] or 0)
        full = self.query.get("full", ["false"])[0].lower() in ("true", "1")
        with self.fake.lock:
            repos = sorted((r for r in self.fake.repos.values() if r.repo_type == "model"), key=lambda r: r.repo_id)
            found = [
                self._model_json(r, r.head, full=full) for r in repos
                if (author is None or r.repo_id.split("/")[0] == author)
                and search in r.repo_id.lower()
                and (not r.private or self._may_write(r.repo_id.split("/")[0]))
            ]
        return Response.json(found[:limit] if limit > 0 else found)

    def model_info(self, repo: str, rev: str = "main", kind: str = "models") -> Response:
        with self.fake.lock:
            found = self._repo(repo, kind=kind)
            return Response.json(self._model_json(found, self._revision(found, rev)))

    def tree(self, repo: str, rev: str, path: str = "", kind: str = "models") -> Response:
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        with self.fake.lock:
            commit = self._revision(self._repo(repo, kind=kind), rev)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(404, f"{path} does not exist on \"{rev}\"", code="EntryNotFound")
        entries, folders = [], set()
        for file_path, stored in commit.files.items():
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix):].split("/")
            for depth in range(1, len(rest)):
                folders.add(prefix + "/".join(rest[:depth]))
            if len(rest) > 1 and not recursive:
                continue
            entry = {"type": "file", "oid": stored.blob_id, "size": stored.size, "path": file_path}
            if stored.is_lfs:
                pointer = LFS_POINTER.format(oid=stored.sha256, size=stored.size)
                entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": len(pointer)}
            entries.append(entry)
        if not recursive:
            folders = {f for f in folders if "/" not in f[len(prefix):]}
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                    for f in sorted(folders)]
        return Response.json(sorted(entries, key=lambda e: e["path"]))

    def commits(self, repo: str, rev: str, kind: str = "models") -> Response:
        with self.fake.lock:
            found = self._repo(repo, kind=kind)
            head = self._revision(found, rev)
            history = found.commits[: found.commits.index(head) + 1]
        return Response.json([
            {"id": c.oid, "title": c.title, "message": c.description, "authors": [{"user": c.author}],
             "date": _iso(c.date)}
            for c in reversed(history)
        ])

    def preupload(self, repo: str, rev: str, kind: str = "models") -> Response:
        payload = self._json()
        with self.fake.lock:
            found = self._repo(repo, write=True, kind=kind)
            head = self._revision(found, rev)
        lfs_patterns = [
            line.split()[0] for line in head.files[".gitattributes"].blob.read_text().splitlines()
            if "filter=lfs" in line
        ] if ".gitattributes" in head.files else []
        answers = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            is_binary = b"\0" in sample or not _is_utf8(sample)
            by_pattern = any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p) or fnmatch.fnmatch(path, p) for p in lfs_patterns)
            mode = "lfs" if size >= LFS_SIZE_THRESHOLD or is_binary or by_pattern else "regular"
            existing = head.files.get(path)
            oid = None if existing is None else (existing.sha256 if existing.is_lfs else existing.blob_id)
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return Response.json({"files": answers, "commitOid": head.oid})

    def lfs_batch(self, repo: str, kind: str | None = None) -> Response:
        payload = self._json()
        with self.fake.lock:
            self._repo(repo, write=True, kind=kind or "models")
        if payload.get("operation") != "upload":
            raise HubError(400, "this loopback Hub only takes uploads through the LFS batch API")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = str(obj.get("oid")), int(obj.get("size", -1))
            stored = self.fake._stored_lfs(oid)
            answer = {"oid": oid, "size": size, "authenticated": True}
            if stored is None or stored.size != size:
                answer["actions"] = {
                    "upload": {"href": f"{self.fake.url}/lfs/upload/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{self.fake.url}/lfs/verify/{oid}", "header": {}},
                }
            objects.append(answer)
        return Response.json({"transfer": "basic", "objects": objects}, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, oid: str) -> Response:
        target = self.fake._lfs_blob(oid)
        tmp = self.fake.blobs / f"tmp-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for chunk in self._body_chunks():
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != oid:
            tmp.unlink()
            raise HubError(400, "uploaded content does not match its sha256")
        tmp.replace(target)
        return Response()

    def lfs_verify(self, oid: str) -> Response:
        payload = self._json()
        stored = self.fake._stored_lfs(oid)
        if stored is None or stored.size != int(payload.get("size", -1)):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        return Response.json({"success": True})

    def commit(self, repo: str, rev: str, kind: str = "models") -> Response:
        if self.query.get("create_pr"):
            raise HubError(400, "this loopback Hub has no pull requests")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        with self.fake.lock:
            found = self._repo(repo, write=True, kind=kind)
            head = self._revision(found, rev)
            if rev != "main":
                raise HubError(400, "commits go to the main branch")
            parent = header.get("parentCommit")
            if parent and not head.oid.startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    files[path] = self.fake._store_regular(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    stored = self.fake._stored_lfs(value["oid"])
                    if stored is None:
                        raise HubError(422, f"Your push was rejected because an LFS pointer pointed to a file that "
                                            f"does not exist: {path}")
                    files[path] = stored
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, "A file with this name doesn't exist", code="EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    for gone in [p for p in files if p.startswith(path.rstrip("/") + "/")]:
                        del files[gone]
                else:
                    raise HubError(400, f"unsupported commit operation {key!r}")
            commit = self.fake._new_commit(found, str(header.get("summary", "")), str(header.get("description", "")),
                                           self.user or "tester", files)
            found.commits.append(commit)
        url_prefix = self.fake.url if kind == "models" else f"{self.fake.url}/{kind}"
        return Response.json({"success": True, "commitOid": commit.oid,
                              "commitUrl": f"{url_prefix}/{repo}/commit/{commit.oid}", "hookOutput": ""})

    def resolve(self, repo: str, rev: str, path: str, kind: str | None = None) -> Response:
        with self.fake.lock:
            commit = self._revision(self._repo(repo, kind=kind or "models"), rev)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        stored = commit.files.get(path)
        if stored is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers=headers)
        headers["ETag"] = f'"{stored.sha256 or stored.blob_id}"'
        if stored.is_lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        headers["Content-Type"] = "application/octet-stream"
        start, status = 0, 200
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        end = stored.size - 1
        if ranged:
            start = int(ranged.group(1))
            end = min(int(ranged.group(2)), end) if ranged.group(2) else end
            if start > end:
                raise HubError(416, "range not satisfiable", headers={"Content-Range": f"bytes */{stored.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{stored.size}"
        return Response(status, headers=headers, file=stored.blob, start=start, length=end - start + 1)

    # -- the Jobs service -------------------------------------------------------------------------------

    def run_job(self, namespace: str) -> Response:
        spec = self._json()
        self._require_write(namespace, "run jobs")
        command = spec.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(c, str) for c in command):
            raise HubError(400, "command must be a non-empty list of strings")
        if not spec.get("dockerImage") and not spec.get("spaceId"):
            raise HubError(400, "a job needs a dockerImage or a spaceId")
        job = self.fake.submit_job(namespace, self.user, spec)
        with self.fake.lock:
            return Response.json(self.fake.job_json(job))

    def _job(self, namespace: str, job_id: str) -> Job:
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this")
        job = self.fake.jobs.get(job_id)
        if job is None or job.namespace != namespace or not self._may_write(namespace):
            raise HubError(404, "Job not found")
        return job

    def list_jobs(self, namespace: str) -> Response:
        if self.user is None:
            raise HubError(401, "You must be authenticated to do this")
        stages = set(self.query.get("stage", []))
        labels = [tuple(pair.split("=", 1)) for pair in self.query.get("label", []) if "=" in pair]
        with self.fake.lock:
            found = [self.fake.job_json(j) for j in self.fake.jobs.values()
                     if j.namespace == namespace and self._may_write(namespace)
                     and (not stages or j.stage in stages) and all(j.labels.get(k) == v for k, v in labels)]
        return Response.json(found)

    def inspect_job(self, namespace: str, job_id: str) -> Response:
        with self.fake.lock:
            return Response.json(self.fake.job_json(self._job(namespace, job_id)))

    def job_logs(self, namespace: str, job_id: str) -> Response:
        """The log as server-sent events, one `data: {"data": LINE, "timestamp": ...}` each; the stream
        ends with what there is (the real one stays open while the job runs, with keep-alive comments)."""
        with self.fake.lock:
            lines = list(self._job(namespace, job_id).log)
        tail = self.query.get("tail", [None])[0]
        if tail is not None:
            lines = lines[-int(tail):] if int(tail) > 0 else []
        body = "".join(f"data: {json.dumps({'data': line, 'timestamp': _iso(at)})}\n\n" for at, line in lines)
        return Response(200, body.encode(), {"Content-Type": "text/event-stream"})

    def cancel_job(self, namespace: str, job_id: str) -> Response:
        with self.fake.lock:
            job = self._job(namespace, job_id)
            if not self._may_write(namespace):
                raise HubError(403, "You don't have the rights to cancel this job")
            self.fake._end_job(job, "CANCELED", None)
        return Response()


def _is_utf8(sample: bytes) -> bool:
    # A 512-byte sample may end inside a multi-byte character: allow a cut of up to 3 bytes.
    for cut in range(4):
        try:
            sample[: len(sample) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


__all__ = ["FakeHub", "Job", "Repo", "Commit", "StoredFile", "git_blob_id", "repo_key"]
