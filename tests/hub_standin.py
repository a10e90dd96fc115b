"""A STAND-IN for the Hugging Face Hub's write API, for tests only: it is not the Hub and not a mirror.

It speaks just enough of the Hub's HTTP API for huggingface_hub's ``HfApi.create_repo``, ``create_branch`` and
``upload_folder`` (legacy LFS path; Xet is not spoken, so tests set ``HF_HUB_DISABLE_XET``):

- ``POST /api/repos/create``: a model repository with an empty ``main`` branch (409 if it exists);
- ``POST /api/models/ORG/NAME/branch/BRANCH``: a branch from ``main`` (409 if it exists);
- ``POST /api/validate-yaml``: the README metadata block must be a YAML mapping;
- ``POST /api/models/ORG/NAME/preupload/REV``: LFS for weights / images / binaries, regular for text;
- ``POST /ORG/NAME.git/info/lfs/objects/batch``, ``PUT /lfs/OID``, ``POST /lfs/verify``: the basic LFS transfer, the
  uploaded bytes checked against their sha256;
- ``POST /api/models/ORG/NAME/commit/REV``: the NDJSON commit (``file`` base64 and ``lfsFile`` entries).

Every API call needs ``Authorization: Bearer TOKEN``. It listens on 127.0.0.1 only and shuts itself down after
``lifetime`` seconds even if a test forgets to stop it.
"""
import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = ('.safetensors', '.png', '.onnx', '.pt', '.pt2', '.bin', '.pth')
_REPO = r'(?P<repo>[\w.-]+/[\w.-]+)'


@dataclass
class StandInRepo:
    private: bool
    branches: Dict[str, Dict[str, bytes]] = field(default_factory=lambda: {'main': {}})
    commits: List[Dict[str, Any]] = field(default_factory=list)  # summary, branch, files (path -> upload mode)


class StandInHub:
    """The stand-in server. Use as a context manager; ``url`` is its endpoint.

    Attributes:
        repos: repository id -> :class:`StandInRepo` (what was created and committed).
        requests: (method, path) of every request received, in order.
        fail_commit: answer the commit call with a 500 error (a simulated server failure).
    """

    def __init__(self, token: str, lifetime: float = 120.0):
        self.token = token
        self.lifetime = lifetime
        self.repos: Dict[str, StandInRepo] = {}
        self.lfs_objects: Dict[str, bytes] = {}
        self.requests: List[Tuple[str, str]] = []
        self.fail_commit = False
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f'http://{host}:{port}'

    def __enter__(self) -> 'StandInHub':
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name='stand-in-hub', daemon=True)
        self._thread.start()
        self._deadline = threading.Timer(self.lifetime, self._server.shutdown)
        self._deadline.daemon = True
        self._deadline.start()
        return self

    def __exit__(self, *exc) -> None:
        self._deadline.cancel()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- the API ---

    def create_repo(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        repo_id = f'{body.get("organization")}/{body["name"]}'
        if body.get('type') not in (None, 'model'):
            return 400, {'error': 'the stand-in hosts model repositories only'}
        with self._lock:
            if repo_id in self.repos:
                return 409, {'error': 'You already created this model repo', 'url': f'{self.url}/{repo_id}'}
            private = body.get('visibility') == 'private' or bool(body.get('private'))
            self.repos[repo_id] = StandInRepo(private=private)
        return 200, {'url': f'{self.url}/{repo_id}', 'name': repo_id}

    def create_branch(self, repo_id: str, branch: str, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        repo = self.repos[repo_id]
        with self._lock:
            if branch in repo.branches:
                return 409, {'error': f'Reference refs/heads/{branch} already exists'}
            start = body.get('startingPoint') or 'main'
            repo.branches[branch] = dict(repo.branches[start])
        return 200, {}

    def preupload(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        files = []
        for entry in body['files']:
            lfs = entry['path'].endswith(LFS_SUFFIXES) or entry['size'] >= 10 * 1024 * 1024
            files.append(dict(path=entry['path'], uploadMode='lfs' if lfs else 'regular', shouldIgnore=False))
        return 200, {'files': files}

    def lfs_batch(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        objects = []
        for obj in body['objects']:
            entry = dict(oid=obj['oid'], size=obj['size'], authenticated=True)
            if obj['oid'] not in self.lfs_objects:
                entry['actions'] = dict(upload=dict(href=f'{self.url}/lfs/{obj["oid"]}'),
                                        verify=dict(href=f'{self.url}/lfs/verify'))
            objects.append(entry)
        return 200, {'transfer': 'basic', 'objects': objects}

    def lfs_put(self, oid: str, data: bytes) -> Tuple[int, Dict[str, Any]]:
        if hashlib.sha256(data).hexdigest() != oid:
            return 400, {'error': f'the uploaded bytes do not hash to {oid}'}
        with self._lock:
            self.lfs_objects[oid] = data
        return 200, {}

    def lfs_verify(self, body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
        data = self.lfs_objects.get(body['oid'])
        if data is None or len(data) != body['size']:
            return 404, {'error': f'LFS object {body["oid"]} was not uploaded'}
        return 200, {}

    def commit(self, repo_id: str, branch: str, lines: List[Dict[str, Any]]) -> Tuple[int, Dict[str, Any]]:
        if self.fail_commit:
            return 500, {'error': 'stand-in: simulated server failure while committing'}
        repo = self.repos[repo_id]
        header = next((line['value'] for line in lines if line['key'] == 'header'), {})
        tree, modes = dict(repo.branches[branch]), {}
        for line in lines:
            key, value = line['key'], line['value']
            if key == 'file':
                tree[value['path']] = base64.b64decode(value['content'])
                modes[value['path']] = 'regular'
            elif key == 'lfsFile':
                data = self.lfs_objects.get(value['oid'])
                if data is None or len(data) != value['size']:
                    return 400, {'error': f'LFS object {value["oid"]} for {value["path"]} was not uploaded'}
                tree[value['path']] = data
                modes[value['path']] = 'lfs'
            elif key == 'deletedFile':
                tree.pop(value['path'], None)
            elif key != 'header':
                return 400, {'error': f'the stand-in does not implement commit operation {key!r}'}
        oid = hashlib.sha1(json.dumps([branch, header, sorted(modes), len(repo.commits)]).encode()).hexdigest()
        with self._lock:
            repo.branches[branch] = tree
            repo.commits.append(dict(oid=oid, branch=branch, summary=header.get('summary'), files=modes))
        return 200, {'commitUrl': f'{self.url}/{repo_id}/commit/{oid}', 'commitOid': oid, 'success': True,
                     'pullRequestUrl': None}


def _validate_yaml(body: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    match = re.match(r'^\s*---\r?\n(.*?)\r?\n---', body.get('content', ''), flags=re.S)
    try:
        meta = yaml.safe_load(match.group(1)) if match else None
    except yaml.YAMLError as e:
        return 400, {'errors': [{'message': f'invalid YAML: {e}'}], 'warnings': []}
    if not isinstance(meta, dict):
        return 400, {'errors': [{'message': 'the metadata block must be a YAML mapping'}], 'warnings': []}
    return 200, {'errors': [], 'warnings': []}


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub
    protocol_version = 'HTTP/1.1'

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_POST(self) -> None:
        self._dispatch('POST')

    def do_PUT(self) -> None:
        self._dispatch('PUT')

    def do_GET(self) -> None:
        self._dispatch('GET')

    def _dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        body = self._read_body()
        self.hub.requests.append((method, path))
        try:
            status, payload = self._route(method, path, body)
        except (KeyError, ValueError) as e:  # malformed request or unknown repository / branch
            status, payload = 400, {'error': f'stand-in: bad request ({type(e).__name__}: {e})'}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        if status == 404 and 'Repository' in payload.get('error', ''):
            self.send_header('X-Error-Code', 'RepoNotFound')
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str, path: str, body: bytes) -> Tuple[int, Dict[str, Any]]:
        hub = self.hub
        if method == 'PUT' and (m := re.fullmatch(r'/lfs/(?P<oid>[0-9a-f]{64})', path)):
            return hub.lfs_put(m['oid'], body)  # a pre-signed storage URL: no token, as on the Hub
        if self.headers.get('authorization') != f'Bearer {hub.token}':
            return 401, {'error': 'Invalid credentials in Authorization header'}
        if method != 'POST':
            return 405, {'error': f'the stand-in does not implement {method} {path}'}
        ndjson = 'ndjson' in self.headers.get('content-type', '')  # the commit call; every other call sends JSON
        data = json.loads(body) if body and not ndjson else {}
        if path == '/api/repos/create':
            return hub.create_repo(data)
        if path == '/api/validate-yaml':
            return _validate_yaml(data)
        if path == '/lfs/verify':
            return hub.lfs_verify(data)
        if m := re.fullmatch(rf'/{_REPO}\.git/info/lfs/objects/batch', path):
            return self._known(m['repo']) or hub.lfs_batch(data)
        if m := re.fullmatch(rf'/api/models/{_REPO}/branch/(?P<branch>.+)', path):
            return self._known(m['repo']) or hub.create_branch(m['repo'], m['branch'], data)
        if m := re.fullmatch(rf'/api/models/{_REPO}/preupload/(?P<rev>.+)', path):
            return self._known(m['repo'], m['rev']) or hub.preupload(data)
        if m := re.fullmatch(rf'/api/models/{_REPO}/commit/(?P<rev>.+)', path):
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]  # NDJSON
            return self._known(m['repo'], m['rev']) or hub.commit(m['repo'], m['rev'], lines)
        return 404, {'error': f'the stand-in does not implement POST {path}'}

    def _known(self, repo_id: str, branch: Optional[str] = None) -> Optional[Tuple[int, Dict[str, Any]]]:
        if repo_id not in self.hub.repos:
            return 404, {'error': 'Repository not found'}
        if branch is not None and branch not in self.hub.repos[repo_id].branches:
            return 404, {'error': f'Invalid rev id: {branch}'}
        return None

    def _read_body(self) -> bytes:
        if self.headers.get('transfer-encoding', '').lower() == 'chunked':
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    self.rfile.readline()
                    return b''.join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get('content-length') or 0))
