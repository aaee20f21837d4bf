"""A DVC workspace for releases (no Dagster here): find or create the repo, point it at a
remote, track a directory through a ``.dvc`` file, push it, and tag it in git.

Where the repo is: an explicit path (``repo``; the ``dvc`` resource's ``UHR_DVC_REPO``), else the nearest folder above the
data root that holds ``.dvc/`` (the project repository, whose ``dvc.yaml`` materialises the
assets), else the data root itself, initialised on first use (``git init`` + ``dvc init``).

Release ``.dvc`` files live in ``<repo>/releases/<name>.dvc`` -- DVC refuses ``.dvc`` files in
git-ignored folders, and the data root usually is one -- and name their output by a path
relative to that file (``../data/demo/releases/<name>``).

The tag is made without touching the checkout: a commit whose tree is ``HEAD``'s plus the
release's ``.dvc`` file (and the DVC config when ``HEAD`` lacks it), built in a temporary git
index, and an annotated tag ``release/<name>`` on it. ``git checkout release/<name> && dvc
pull releases/<name>.dvc`` brings the release back; the branch and working tree are unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TAG_PREFIX = "release/"
_IDENTITY = {"GIT_AUTHOR_NAME": "uhrforge", "GIT_AUTHOR_EMAIL": "uhrforge@localhost",
             "GIT_COMMITTER_NAME": "uhrforge", "GIT_COMMITTER_EMAIL": "uhrforge@localhost"}
# folders of a data root that a data-root repo never tracks (walks stay short)
_DATA_ROOT_DVCIGNORE = ["cache/", "corpus/", "dagster_home/", "thumbs/", "views/", "raw/", "reports/",
                        "store/", "dvc-remote/", "mlflow/", "bench*/"]


class DvcError(RuntimeError):
    """A dvc or git command failed; the message holds the command and the tail of its output."""


#: DVC's closing advert, dropped from error messages (it hid the real error line)
_DVC_FOOTER = "Having any troubles? Hit us up at https://dvc.org/support, we are always happy to help!"
#: what a remote that is briefly away looks like in ``dvc push`` / ``dvc status --cloud`` output
_TRANSIENT_REMOTE = re.compile(r"Could not connect|Connection (?:refused|reset|aborted)|timed? ?out|"
                               r"EndpointConnectionError|ServiceUnavailable|SlowDown|InternalError|"
                               r"Service Unavailable|\b50[0234]\b|Max retries|RemoteDisconnected|"
                               r"Connection was closed", re.I)


def is_transient_remote_error(exc: BaseException) -> bool:
    """A failed dvc command whose output says the remote could not be reached (worth a retry)."""
    return isinstance(exc, DvcError) and bool(_TRANSIENT_REMOTE.search(str(exc)))


def _exe(name: str) -> str:
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise DvcError(f"`{name}` is not installed (pip install dvc dvc-s3)" if name == "dvc" else f"`{name}` not found")
    return found


def find_repo(start: str | os.PathLike) -> Path | None:
    """The nearest folder at or above ``start`` holding ``.dvc/`` (None when there is none)."""
    p = Path(start).resolve()
    for d in (p, *p.parents):
        if (d / ".dvc").is_dir():
            return d
    return None


@dataclass
class DvcRepo:
    """One DVC repository; every call runs ``dvc`` / ``git`` with ``cwd=root``."""

    root: Path
    env: dict = field(default_factory=lambda: dict(os.environ))
    #: ``dvc push`` / ``dvc status --cloud`` are retried within this budget when the remote is
    #: unreachable (a restarting S3 server); None: the default :class:`RetryPolicy`
    retry: object = None

    # -- finding / creating -------------------------------------------------------------
    @classmethod
    def for_data_root(cls, data_root: str | os.PathLike, repo: str | os.PathLike | None = None,
                      env: dict | None = None) -> "DvcRepo":
        """The repo that versions ``data_root`` (see the module docstring); created when missing."""
        env = dict(os.environ if env is None else env)
        data_root = Path(data_root).resolve()
        explicit = repo
        root = Path(explicit).resolve() if explicit else (find_repo(data_root) or data_root)
        try:
            data_root.relative_to(root)
        except ValueError:
            raise DvcError(f"data root {data_root} is outside the DVC repo {root}: DVC tracks paths inside its repo") from None
        r = cls(root, env)
        r.ensure_initialised(data_root_repo=(root == data_root))
        return r

    def ensure_initialised(self, data_root_repo: bool = False) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.has_git() and (data_root_repo or not (self.root / ".dvc").is_dir()):
            self.git("init", "-q")
        if not (self.root / ".dvc").is_dir():
            self.dvc("init", "-q", *([] if self.has_git() else ["--no-scm"]))
            self.dvc("config", "core.analytics", "false")
            if data_root_repo:
                ign = self.root / ".dvcignore"
                ign.write_text(ign.read_text() + "\n".join(_DATA_ROOT_DVCIGNORE) + "\n")

    def has_git(self) -> bool:
        return (self.root / ".git").exists() or subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=self.root, capture_output=True, text=True
        ).stdout.strip() == str(self.root)

    # -- running ----------------------------------------------------------------------------
    def _run(self, argv: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        e = dict(self.env if env is None else env)
        e.setdefault("DVC_NO_ANALYTICS", "1")
        res = subprocess.run(argv, cwd=self.root, env=e, capture_output=True, text=True)
        if check and res.returncode != 0:
            tail = (res.stderr or res.stdout or "").replace(_DVC_FOOTER, "").strip()[-1500:]
            raise DvcError(f"`{' '.join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv))}` "
                           f"in {self.root} failed ({res.returncode}): {tail}")
        return res

    def dvc(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([_exe("dvc"), *args], env, check)

    def git(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        e = dict(self.env if env is None else env)
        for k, v in _IDENTITY.items():  # only where git has no identity configured
            e.setdefault(k, v)
        return self._run(["git", *args], e, check)

    # -- remotes -----------------------------------------------------------------------------
    def configure_remote(self, name: str, url: str, endpoint_url: str | None = None) -> None:
        """Make ``name`` the default remote, in ``.dvc/config.local`` (never committed)."""
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        self.dvc("remote", "add", "--local", "-f", "-d", name, url)
        if endpoint_url:
            self.dvc("remote", "modify", "--local", name, "endpointurl", endpoint_url)

    # -- tracking ------------------------------------------------------------------------------
    def dvc_file_for(self, name: str) -> Path:
        return self.root / "releases" / f"{name}.dvc"

    def track(self, dvc_file: Path, out: Path) -> dict:
        """Track the folder ``out`` through ``dvc_file`` (created or rewritten), put it in the DVC
        cache; returns the ``.dvc`` file's output entry (``md5`` ending ``.dir``, ``size``, ``nfiles``)."""
        dvc_file.parent.mkdir(parents=True, exist_ok=True)
        rel = os.path.relpath(out.resolve(), dvc_file.parent.resolve())
        current = yaml.safe_load(dvc_file.read_text()) if dvc_file.exists() else None
        if not current or current.get("outs", [{}])[0].get("path") != rel:
            dvc_file.write_text(yaml.safe_dump({"outs": [{"path": rel}]}, sort_keys=False))
        self.dvc("commit", "-f", "-q", str(dvc_file.relative_to(self.root)))
        return self.tracked(dvc_file)

    @staticmethod
    def tracked(dvc_file: Path) -> dict:
        data = yaml.safe_load(Path(dvc_file).read_text()) or {}
        outs = data.get("outs") or [{}]
        return dict(outs[0])

    def _retrying(self, what: str, fn):
        """``fn()`` retried while the remote is unreachable; :class:`DvcError` (one line) when the
        budget is spent. ``dvc push`` is idempotent: a retry sends only what the remote lacks."""
        from curation.retry import RetryPolicy, ServiceUnavailable, call_with_retry

        try:
            return call_with_retry(fn, what, self.retry or RetryPolicy(), transient=is_transient_remote_error)
        except ServiceUnavailable as exc:
            raise DvcError(str(exc).splitlines()[0]) from exc.__cause__

    def push(self, dvc_file: Path, remote: str | None = None) -> str:
        """``dvc push`` of one ``.dvc`` file, retried while the remote is unreachable."""
        args = ["push", str(dvc_file.relative_to(self.root))]  # not -q: it hides the error line
        if remote:
            args += ["-r", remote]
        return self._retrying(f"dvc push {args[1]}", lambda: self.dvc(*args)).stdout

    def in_remote(self, dvc_file: Path, remote: str | None = None) -> bool:
        """True when every file of ``dvc_file`` is in the remote (``dvc status --cloud``)."""
        args = ["status", "--cloud", "--json", str(dvc_file.relative_to(self.root))]
        if remote:
            args += ["-r", remote]
        out = self._retrying(f"dvc status --cloud {args[3]}", lambda: self.dvc(*args)).stdout.strip()
        import json

        return not json.loads(out or "{}")

    # -- git tag ---------------------------------------------------------------------------------
    def tag_commit(self, tag: str) -> str | None:
        """The commit a tag points to, or None."""
        if not self.has_git():
            return None
        res = self.git("rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False)
        return res.stdout.strip() or None

    def head(self) -> str | None:
        if not self.has_git():
            return None
        res = self.git("rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)
        return res.stdout.strip() or None

    def tag_release(self, tag: str, files: list[Path], message: str) -> str:
        """Annotated tag ``tag`` on a new commit = ``HEAD``'s tree + ``files`` (+ DVC config files
        missing from ``HEAD``). HEAD, the index and the working tree are left as they are.
        Returns the commit id; an existing tag is an error (release tags are immutable)."""
        if not self.has_git():
            raise DvcError(f"{self.root} is not a git repository: no tag can be made")
        if self.tag_commit(tag):
            raise DvcError(f"tag {tag} already exists in {self.root}")
        extra = [self.root / ".dvc" / "config", self.root / ".dvc" / ".gitignore", self.root / ".dvcignore"]
        head = self.head()
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(self.env, GIT_INDEX_FILE=str(Path(tmp) / "index"))
            if head:
                self.git("read-tree", head, env=env)
            for p in list(files) + [x for x in extra if x.exists()]:
                rel = p.resolve().relative_to(self.root).as_posix()
                if p not in files and head and self.git("cat-file", "-e", f"{head}:{rel}", check=False).returncode == 0:
                    continue  # HEAD already holds this DVC config file
                blob = self.git("hash-object", "-w", "--", rel).stdout.strip()
                self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", env=env)
            tree = self.git("write-tree", env=env).stdout.strip()
        commit = self.git("commit-tree", tree, *(["-p", head] if head else []), "-m", message).stdout.strip()
        self.git("tag", "-a", tag, commit, "-m", message)
        return commit

    def describe(self) -> dict:
        return {"repo": str(self.root), "git": self.has_git()}
